"""Pull-back and reduction of dense equivariant outputs in one pass per orbit slot, as cheap as flip-and-add.

The general pull-back gathers every output value through a pixel index (one index read per value) and the reduction
then reads every pulled-back copy again. For exact image groups (rot90, flips, D4: signed permutation matrices) and a
plan whose copies are the same elements for every input (group averaging, equizero, Monte-Carlo with one draw for all
rows), slot ``j`` of every input is pulled back by the same element, and that move is a ``torch.flip`` and/or a
``transpose`` of the ``(B, C, H, W)`` slice. So the reduction is, per slot, one flip (a copy, or nothing for the
identity and pure transposes) and one fused multiply-add into the accumulator::

    out = Σ_j w[:, j] · g_j⁻¹ · y[:, j]

which moves the data as often as test-time augmentation's own flip-and-add loop. The values are the same as the
gather's (a permutation moves values exactly); only the order of the floating-point sum over the copies may differ.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from symwrap.actions.base import Action
from symwrap.actions.image import ImageAction, _signed_permutation_index
from symwrap.caches import keep_newest
from symwrap.groups.base import Group
from symwrap.reduce import _in_space, finish

__all__ = ["FUSED_SPACES", "native_moves", "pull_back_and_reduce"]

#: The reduction spaces done here (the others keep the general pull-back and reduction).
FUSED_SPACES = ("logits", "probs", "max", "gmean")


def _identity(x: Tensor) -> Tensor:
    return x


def _flip_w(x: Tensor) -> Tensor:
    return x.flip(-1)


def _flip_h(x: Tensor) -> Tensor:
    return x.flip(-2)


def _flip_hw(x: Tensor) -> Tensor:
    return x.flip(-2, -1)


def _transpose(x: Tensor) -> Tensor:
    return x.transpose(-2, -1)


def _transpose_flip_w(x: Tensor) -> Tensor:
    return x.transpose(-2, -1).flip(-1)


def _transpose_flip_h(x: Tensor) -> Tensor:
    return x.transpose(-2, -1).flip(-2)


def _transpose_flip_hw(x: Tensor) -> Tensor:
    return x.transpose(-2, -1).flip(-2, -1)


#: The eight moves of a square's pixels, identity and pure transpose first (they copy nothing).
_MOVES = (_identity, _transpose, _flip_w, _flip_h, _flip_hw, _transpose_flip_w, _transpose_flip_h, _transpose_flip_hw)


def native_moves(
    action: Action, elements: Tensor, group: Group, h: int, w: int, cache: dict | None = None
) -> list[Callable[[Tensor], Tensor]] | None:
    """For each element ``(k, 2, 2)`` the flip/transpose that moves an ``(..., H, W)`` map exactly as ``action``
    does, or ``None`` when the action is not the image action or an element is not a signed permutation matrix.

    Each move is found by comparing, on the ``H × W`` grid of pixel numbers, the image action's own source index
    (:func:`~symwrap.actions.image._signed_permutation_index`) with the eight moves of a square; ``cache`` (a dict)
    keeps the answer per elements and size.
    """
    if type(action) is not ImageAction or elements.shape[1:] != (2, 2) or not elements.is_floating_point():
        return None
    key = (elements.detach().cpu().numpy().tobytes(), tuple(elements.shape), h, w)
    if cache is not None and key in cache:
        return cache[key]
    found: list[Callable[[Tensor], Tensor]] | None = []
    matrices = elements.detach().cpu()
    if not bool((matrices - matrices.round()).abs().amax() < 1e-6):
        found = None
    else:
        index = _signed_permutation_index(matrices.round(), h, w)
        grid = torch.arange(h * w).view(h, w)
        for row in index:
            move = next((m for m in _MOVES if _same_shape(m, h, w) and torch.equal(m(grid).reshape(-1), row)), None)
            if move is None:
                found = None
                break
            found.append(move)  # type: ignore[union-attr]
    if cache is not None:
        keep_newest(cache, key, found, 32)
    return found


def _same_shape(move: Callable[[Tensor], Tensor], h: int, w: int) -> bool:
    """Transposing moves keep the shape of square maps only."""
    return h == w or move in (_identity, _flip_w, _flip_h, _flip_hw)


def pull_back_and_reduce(
    leaf: Tensor,
    moves: list[Callable[[Tensor], Tensor]],
    weights: Tensor,
    space: str,
    class_dim: int,
    finished: bool = True,
) -> Tensor | None:
    """``Σ_j w[:, j] · g_j⁻¹ · y[:, j]`` (or the maximum over ``j``) for one output leaf.

    Args:
        leaf: ``(n·k, ..., H, W)`` outputs in row order ``r = b·k + j``.
        moves: ``k`` moves, the pull-back of slot ``j`` (the inverse of its element), from :func:`native_moves`.
        weights: ``(n, k)``.
        space: The reduction space; ``None`` is returned for a space not in :data:`FUSED_SPACES`, and for ``max``
            with a weight that is not positive (such copies take no part: the general path masks them).
        class_dim: The class axis for ``probs``/``gmean``.
        finished: Apply :func:`~symwrap.reduce.finish` (``gmean``'s normalisation); ``False`` to add to it later.

    Returns:
        ``(n, ..., H, W)``.
    """
    n, k = weights.shape
    if space not in FUSED_SPACES or len(moves) != k or (space == "max" and bool((weights <= 0).any())):
        return None
    y = _in_space(leaf, space, class_dim)
    per_slot = y.reshape(n, k, *y.shape[1:])
    w = weights.to(y.dtype).reshape(n, k, *([1] * (y.ndim - 1)))
    out: Tensor | None = None
    for j, move in enumerate(moves):
        moved = move(per_slot[:, j])
        if space == "max":
            out = moved if out is None else torch.maximum(out, moved)
        elif out is None:
            out = moved * w[:, j]
        else:
            out = out.addcmul_(moved, w[:, j])  # in place on this call's own accumulator: one kernel per slot
    assert out is not None
    return finish(out, space, class_dim) if finished else out
