"""Group algebra: identity, compose, inverse, elements / sampling. No knowledge of data layouts.

Elements are tensors of shape ``(*batch, *code_shape)`` so that whole batches of elements are
composed, inverted and acted on at once. Which data an element moves, and how, is the business of
an :class:`symwrap.actions.Action`; a group only carries the name of its default action.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import Tensor

from symwrap.caches import keep_newest
from symwrap.tracing import caches_off

if TYPE_CHECKING:
    from symwrap.actions.base import Action

__all__ = ["ContinuousGroup", "FiniteGroup", "Group", "cached_per_group"]


class Group(ABC):
    """A group whose elements are tensors of shape ``code_shape``.

    Attributes:
        name: The registry name (``"rot90"``, ``"o3"``...).
        exact: ``False`` when the group's action on data is only approximate (interpolated rotations).
        code_shape: Shape of one element's code (``(2, 2)`` for planar matrices, ``(n,)`` for permutations).
    """

    name: str = "group"
    exact: bool = True
    code_shape: tuple[int, ...] = ()
    code_dtype: torch.dtype = torch.float32

    @property
    def is_finite(self) -> bool:
        return self.order() is not None

    @abstractmethod
    def order(self) -> int | None:
        """Number of elements, or ``None`` for a continuous group."""

    @abstractmethod
    def identity(self) -> Tensor:
        """The identity element, shape ``code_shape``."""

    @abstractmethod
    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        """The product ``a·b`` (apply ``b`` first, then ``a``). Shapes ``(*batch, *code_shape)`` broadcast."""

    @abstractmethod
    def inverse(self, a: Tensor) -> Tensor:
        """The inverse of each element, shape ``(*batch, *code_shape)``."""

    def equal(self, a: Tensor, b: Tensor) -> Tensor:
        """Elementwise equality of codes ``(*batch, *code_shape)`` -> bool ``(*batch,)``."""
        dims = tuple(range(-len(self.code_shape), 0))
        if a.dtype.is_floating_point or b.dtype.is_floating_point:
            diff = (a.double() - b.double()).abs()
            return diff.amax(dim=dims) < 1e-5 if dims else diff < 1e-5
        eq = a == b
        return eq.all(dim=dims) if dims else eq

    def default_action(self) -> Action:
        """The action used on model inputs when the user does not choose one."""
        raise NotImplementedError(f"group {self.name!r} has no default action; pass action=... to symwrap.wrap")

    def default_output_action(self) -> Action:
        """The action used to pull back equivariant outputs (defaults to the input action)."""
        return self.default_action()

    def for_input(self, shape: tuple[int, ...], action: Action) -> Group:
        """The concrete group for inputs of ``shape`` (groups sized by the data, like ``shift``, override)."""
        return self

    def __repr__(self) -> str:
        try:
            order = self.order()
        except RuntimeError:  # groups sized by their input (shift, perm) before for_input()
            size = "order=sized by the input"
        else:
            size = f"order={order}" if order is not None else "continuous"
        exact = "" if self.exact else ", exact=False"
        return f"{type(self).__name__}(name={self.name!r}, {size}{exact})"


class FiniteGroup(Group):
    """A finite group: all elements can be listed, in a fixed documented order (index 0 is the identity)."""

    @property
    def is_finite(self) -> bool:
        return True

    @abstractmethod
    def elements(self) -> Tensor:
        """All elements, shape ``(|G|, *code_shape)``; ``elements()[0]`` is the identity."""

    def order(self) -> int:
        return int(self.elements().shape[0])

    def identity(self) -> Tensor:
        return self.elements()[0]

    def elements_on(self, device: torch.device) -> Tensor:
        """:meth:`elements` on ``device``, ``(|G|, *code_shape)``, copied there once and kept.

        A copy from host memory on every call would make the host wait for the device (the copy synchronises),
        so nothing could be queued behind the running kernels.
        """
        if caches_off():  # recorded (torch.export, jit.trace): a placeholder must never stay in the cache
            return self.elements().to(device)
        cache: dict[torch.device, Tensor] = self.__dict__.setdefault("_elements_on", {})
        found = cache.get(device)
        if found is None:
            found = cache[device] = self.elements().to(device)
        return found

    def index_of(self, codes: Tensor) -> Tensor:
        """Index in :meth:`elements` of each code ``(*batch, *code_shape)`` -> ``(*batch,)`` int64."""
        elements = self.elements_on(codes.device)
        n_code = len(self.code_shape)
        flat = codes.reshape(-1, *self.code_shape)
        match = self.equal(flat[:, None], elements[None])  # (n, |G|)
        if not bool(match.any(dim=1).all()):
            raise ValueError(f"some codes are not elements of group {self.name!r}")
        return match.float().argmax(dim=1).reshape(codes.shape[: codes.ndim - n_code])

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` uniformly drawn elements, shape ``(n, *code_shape)``."""
        idx = torch.randint(self.order(), (n,), generator=generator)
        return self.elements()[idx]


class ContinuousGroup(Group):
    """A continuous (compact, or compact × translations) group that can be sampled."""

    def order(self) -> None:
        return None

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` elements drawn from the Haar measure (see each group for non-compact parts), ``(n, *code_shape)``."""

    def sample_for(self, x: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` sampled elements for each of the ``B`` inputs in ``x``: ``(B, n, *code_shape)``.

        The default ignores ``x``; groups with a non-compact part (translations) use it to fix that part.
        """
        batch = x.shape[0]
        return self.sample(batch * n, generator=generator).reshape(batch, n, *self.code_shape)


_T = TypeVar("_T")


def cached_per_group(
    cache: dict[tuple, tuple[Group, _T]], group: Group, compute: Callable[[Group], _T], extra: Hashable = ()
) -> _T:
    """``compute(group)``, kept in ``cache`` for the last 8 (group, ``extra``) keys.

    Keyed by the group's identity (groups are not hashable by value); the entry holds the group itself, so its id
    cannot be reused by another group while cached. ``extra`` adds what else the value depends on (options).
    """
    key = (id(group), extra)
    if caches_off():
        return compute(group)
    cached = cache.get(key)
    if cached is not None and cached[0] is group:
        return cached[1]
    value = compute(group)
    keep_newest(cache, key, (group, value), 8)
    return value
