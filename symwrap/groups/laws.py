"""Checks of the group laws on a group's own elements, run once per group before it is used.

A group whose ``inverse`` is wrong, whose elements are not closed under ``compose`` or that lists an element twice
gives outputs that are not invariant to it, and :func:`symwrap.check` cannot see that (it uses the same inverse).
So every group met by name (the registry), as an object (``wrap``/``check``) or sized by its input (``shift``,
``perm``) is checked first:

* finite groups: ``identity()`` is ``elements()[0]`` and is neutral for every element; the ``inverse`` of every
  element composes to the identity on both sides and is an element; products of element pairs are elements
  (every pair up to order 64, else a seeded sample); associativity on triples (every triple up to order 16, else a
  seeded sample); no element listed twice (all pairs up to order 2048, else by codes rounded to 1e-5);
* continuous groups, and finite groups too large to list (above ``max_group_order``), on seeded samples:
  identity, inverse and associativity.

The work is bounded (about 2²² code comparisons per law), vectorised, and done once per group object.
Equality is the group's own :meth:`~symwrap.groups.Group.equal` (absolute tolerance 1e-5 for float codes).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from symwrap.errors import GroupLawError
from symwrap.groups.base import ContinuousGroup, FiniteGroup, Group
from symwrap.limits import current_limits

__all__ = ["check_group_laws", "ensure_group_laws"]

#: Pairs / triples checked exhaustively up to these orders, sampled (seeded) beyond.
_ALL_PAIRS_UP_TO, _ALL_TRIPLES_UP_TO, _SAMPLED = 64, 16, 4096
#: Pairwise distinctness up to this order; rounded codes beyond.
_PAIRWISE_DISTINCT_UP_TO = 2048
#: Code comparisons per chunk of a membership / distinctness test (bounds the memory, ~16 MB in float64).
_COMPARISONS_PER_CHUNK = 1 << 21
#: Code comparisons a sampled membership test may make in all (sets how many codes are sampled for large groups).
_COMPARISONS = 1 << 22
_CONTINUOUS_SAMPLES = 8
_CHECKED = "_symwrap_laws_checked"


def ensure_group_laws(group: Group) -> Group:
    """:func:`check_group_laws` once per group object (the result is remembered on it); returns ``group``.

    A group sized by its input (``shift``, ``perm`` before :meth:`~symwrap.groups.Group.for_input`) is checked
    when it is sized.
    """
    if getattr(group, "__dict__", {}).get(_CHECKED):
        return group
    if isinstance(group, FiniteGroup) and not _sized(group):
        return group
    check_group_laws(group)
    with contextlib.suppress(AttributeError, TypeError):  # a group without an instance dict is checked on every use
        group.__dict__[_CHECKED] = True
    return group


def _sized(group: FiniteGroup) -> bool:
    try:
        group.order()
    except RuntimeError:  # "sized by its input: call group.for_input(...) first"
        return False
    return True


def check_group_laws(group: Group, *, seed: int = 0) -> None:
    """Raise :class:`~symwrap.errors.GroupLawError` naming the law and the elements if ``group`` breaks one.

    A finite group above ``max_group_order`` (see :mod:`symwrap.limits`) is checked on samples like a continuous
    one: it is never listed here (a method that lists it meets the bound there).

    Raises:
        GroupLawError: A law does not hold (the message names it and shows the offending element codes).
    """
    generator = torch.Generator().manual_seed(seed)
    if isinstance(group, FiniteGroup) or (group.is_finite and hasattr(group, "elements")):
        if int(group.order()) > current_limits().max_group_order:
            # too many to list (S_10 for monte_carlo or sorting frames, which never list it): checked on samples
            _check_sampled(group, generator)
        else:
            _check_finite(group, generator)  # type: ignore[arg-type]
    elif isinstance(group, ContinuousGroup):
        _check_sampled(group, generator)


def _name(group: Group) -> str:
    return f"group {getattr(group, 'name', type(group).__name__)!r} ({type(group).__qualname__})"


def _show(codes: Tensor, index: Tensor | list[int]) -> str:
    """A few offending elements by index and code."""
    index = [int(i) for i in (index.tolist() if isinstance(index, Tensor) else index)][:3]
    shown = "; ".join(f"#{i} = {codes[i].tolist()}" for i in index)
    return shown


def _fail(group: Group, law: str, detail: str) -> GroupLawError:
    return GroupLawError(
        f"{_name(group)} breaks the {law} law: {detail}. Its outputs would not be invariant to it (and "
        "symwrap.check, which uses the same operations, could not tell). Fix the group's elements()/compose()/"
        "inverse()/identity(), or report it to the plugin that registers it (symwrap plugins lists them)."
    )


def _equal(group: Group, a: Tensor, b: Tensor) -> Tensor:
    return group.equal(a, b).reshape(a.shape[: a.ndim - len(group.code_shape)])


def _members(group: Group, codes: Tensor, elements: Tensor) -> Tensor:
    """``(m,)`` bool: which codes ``(m, *code)`` equal some element ``(n, *code)``.

    A group with its own ``index_of`` (shifts, permutations: a formula) is asked for the index, which is then
    verified; other groups are compared with every element in bounded chunks.
    """
    if isinstance(group, FiniteGroup) and type(group).index_of is not FiniteGroup.index_of:
        try:
            index = group.index_of(codes).long()
        except Exception:  # an index_of that refuses a non-member: compared element by element below
            index = None
        if index is not None and index.shape == codes.shape[: codes.ndim - len(group.code_shape)]:
            inside = (index >= 0) & (index < elements.shape[0])
            found = _equal(group, elements[index.clamp(0, elements.shape[0] - 1)], codes)
            return inside & found
    per_row = max(1, elements.shape[0] * max(1, elements[0].numel()))
    chunk = max(1, _COMPARISONS_PER_CHUNK // per_row)
    found = [group.equal(part[:, None], elements[None]).any(dim=1) for part in codes.split(chunk)]
    return torch.cat(found) if found else torch.zeros(0, dtype=torch.bool)


def _membership_samples(n: int, numel: int) -> int:
    """How many codes a membership test against ``n`` elements checks within :data:`_COMPARISONS`."""
    return max(32, min(_SAMPLED, _COMPARISONS // (n * max(1, numel))))


def _pairs(n: int, numel: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    if n <= _ALL_PAIRS_UP_TO:
        i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        return i.reshape(-1), j.reshape(-1)
    m = _membership_samples(n, numel)
    return torch.randint(n, (m,), generator=generator), torch.randint(n, (m,), generator=generator)


def _triples(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    if n <= _ALL_TRIPLES_UP_TO:
        grid = torch.meshgrid(torch.arange(n), torch.arange(n), torch.arange(n), indexing="ij")
        return grid[0].reshape(-1), grid[1].reshape(-1), grid[2].reshape(-1)
    return tuple(torch.randint(n, (_SAMPLED,), generator=generator) for _ in range(3))  # type: ignore[return-value]


def _check_finite(group: FiniteGroup, generator: torch.Generator) -> None:
    order = int(group.order())
    elements = group.elements()
    if elements.shape[0] != order:
        raise _fail(group, "order", f"order() is {order} but elements() lists {elements.shape[0]}")
    if order == 0:
        raise _fail(group, "identity", "elements() is empty")
    identity = group.identity().to(elements.dtype)
    if not bool(_equal(group, identity, elements[0])):
        raise _fail(
            group, "identity", f"identity() = {identity.tolist()} is not elements()[0] = {elements[0].tolist()}"
        )
    left, right = group.compose(identity[None], elements), group.compose(elements, identity[None])
    bad = (~(_equal(group, left, elements) & _equal(group, right, elements))).nonzero().flatten()
    if len(bad):
        raise _fail(group, "identity", f"e·g = g·e = g fails for element(s) {_show(elements, bad)}")
    inverses = group.inverse(elements)
    neutral = _equal(group, group.compose(elements, inverses), identity) & _equal(
        group, group.compose(inverses, elements), identity
    )
    bad = (~neutral).nonzero().flatten()
    if len(bad):
        raise _fail(
            group,
            "inverse",
            f"g·inverse(g) = inverse(g)·g = e fails for element(s) {_show(elements, bad)} "
            f"(inverse: {inverses[bad[0]].tolist()})",
        )
    numel = max(1, elements[0].numel())
    tested = torch.arange(order)
    if order * order * numel > _COMPARISONS:
        tested = torch.randint(order, (_membership_samples(order, numel),), generator=generator)
    outside = tested[~_members(group, inverses[tested], elements)]
    if len(outside):
        raise _fail(group, "inverse", f"the inverse of element(s) {_show(elements, outside)} is not an element")
    i, j = _pairs(order, numel, generator)
    products = group.compose(elements[i], elements[j])
    outside = (~_members(group, products, elements)).nonzero().flatten()
    if len(outside):
        k = int(outside[0])
        raise _fail(
            group,
            "closure",
            f"the product of elements {_show(elements, [int(i[k])])} and {_show(elements, [int(j[k])])} is "
            f"{products[k].tolist()}, not an element",
        )
    a, b, c = _triples(order, generator)
    ab_c = group.compose(group.compose(elements[a], elements[b]), elements[c])
    a_bc = group.compose(elements[a], group.compose(elements[b], elements[c]))
    bad = (~_equal(group, ab_c, a_bc)).nonzero().flatten()
    if len(bad):
        k = int(bad[0])
        raise _fail(
            group,
            "associativity",
            f"(a·b)·c ≠ a·(b·c) for a, b, c = {_show(elements, [int(a[k]), int(b[k]), int(c[k])])}",
        )
    _check_distinct(group, elements)


def _check_distinct(group: FiniteGroup, elements: Tensor) -> None:
    n = elements.shape[0]
    if n <= _PAIRWISE_DISTINCT_UP_TO:
        chunk = max(1, _COMPARISONS_PER_CHUNK // (n * max(1, elements[0].numel())))
        for start in range(0, n, chunk):
            same = group.equal(elements[start : start + chunk, None], elements[None])  # (c, n)
            same[torch.arange(same.shape[0]), torch.arange(start, start + same.shape[0])] = False
            rows, cols = same.nonzero(as_tuple=True)
            if len(rows):
                first = int(rows[0]) + start
                raise _fail(group, "distinct elements", f"elements {_show(elements, [first, int(cols[0])])} are equal")
        return
    flat = elements.reshape(n, -1)
    keys = flat if not flat.is_floating_point() else torch.round(flat.double() * 1e5).long()
    unique, inverse, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
    if len(unique) < n:
        repeated = (counts[inverse] > 1).nonzero().flatten()
        raise _fail(group, "distinct elements", f"elements {_show(elements, repeated[:2])} are equal")


def _check_sampled(group: Group, generator: torch.Generator) -> None:
    samples = group.sample(_CONTINUOUS_SAMPLES, generator=generator)
    identity = group.identity().to(samples.dtype)
    left, right = group.compose(identity[None], samples), group.compose(samples, identity[None])
    bad = (~(_equal(group, left, samples) & _equal(group, right, samples))).nonzero().flatten()
    if len(bad):
        raise _fail(group, "identity", f"e·g = g·e = g fails for sampled element(s) {_show(samples, bad)}")
    inverses = group.inverse(samples)
    neutral = _equal(group, group.compose(samples, inverses), identity) & _equal(
        group, group.compose(inverses, samples), identity
    )
    bad = (~neutral).nonzero().flatten()
    if len(bad):
        raise _fail(
            group, "inverse", f"g·inverse(g) = inverse(g)·g = e fails for sampled element(s) {_show(samples, bad)}"
        )
    a, b, c = samples, samples.roll(1, 0), samples.roll(2, 0)
    bad = (~_equal(group, group.compose(group.compose(a, b), c), group.compose(a, group.compose(b, c)))).nonzero()
    if len(bad):
        raise _fail(group, "associativity", f"(a·b)·c ≠ a·(b·c) for sampled a = {_show(samples, bad.flatten())}")
