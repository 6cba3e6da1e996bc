"""Pull-back and reduction of dense equivariant outputs in one pass per orbit slot, as cheap as flip-and-add.

The general pull-back gathers every output value through a pixel index (one index read per value) and the reduction
then reads every pulled-back copy again. For exact image groups (rot90, flips, D4: signed permutation matrices) and
a plan whose copies are the same elements for every input (group averaging over a finite group), slot ``j`` of every
input is pulled back by the same element, and that move is a ``torch.flip`` and/or a ``transpose`` of the
``(B, C, H, W)`` slice. So the reduction is, per slot, one flip (a copy, or nothing for the identity and pure
transposes) and one fused multiply-add into the accumulator::

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

__all__ = ["FUSED_SPACES", "SlotReducer", "native_moves", "slot_reducers"]

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


class SlotReducer:
    """``Σ_j w[b, j] · g_j⁻¹ · y[b, j]`` (or the maximum over ``j``) of one dense output leaf, fed chunk by chunk.

    Rows arrive in the engine's order ``r = b·k + j``, in chunks of any size: in a chunk, the rows of slot ``j`` are
    every ``k``-th row (a strided view) and belong to consecutive inputs, so each slot present in a chunk costs one move
    (:func:`native_moves`) and one fused multiply-add into those inputs' rows of the accumulator.

    Args:
        batch: Inputs ``B``.
        moves: ``k`` moves, the pull-back of slot ``j`` (the inverse of its element).
        weights: ``(B, k)``.
        space: One of :data:`FUSED_SPACES`.
        class_dim: The class axis for ``probs``/``gmean``.
    """

    def __init__(
        self,
        batch: int,
        moves: list[Callable[[Tensor], Tensor]],
        weights: Tensor,
        space: str,
        class_dim: int,
        uniform: Tensor | None = None,
    ) -> None:
        self.batch, self.moves, self.weights, self.space, self.class_dim = batch, moves, weights, space, class_dim
        self.copies = len(moves)
        self.uniform = uniform  # 0-d: the one value of every weight, when they are all equal (see slot_reducers)
        self._acc: Tensor | None = None

    def fresh(self) -> SlotReducer:
        """A reducer of the same moves, weights and space with nothing added yet (the fast path's, per call)."""
        return SlotReducer(self.batch, self.moves, self.weights, self.space, self.class_dim, self.uniform)

    def add(self, start: int, leaf: Tensor) -> None:
        """Add the rows ``start : start + R`` of the orbit: ``leaf`` ``(R, ..., H, W)``."""
        y = _in_space(leaf, self.space, self.class_dim)
        k, rows = self.copies, y.shape[0]
        if self._acc is None:
            fill = -torch.inf if self.space == "max" else 0.0
            self._acc = torch.full((self.batch, *y.shape[1:]), fill, dtype=y.dtype, device=y.device)
        acc = self._acc
        uniform = self.uniform
        if uniform is not None and uniform.dtype is not y.dtype:
            uniform = uniform.to(y.dtype)
        w = self.weights.to(y.dtype) if uniform is None else self.weights
        for j, move in enumerate(self.moves):
            first = (j - start) % k
            if first >= rows:
                continue
            moved = move(y[first::k])
            b0 = (start + first) // k
            target = acc[b0 : b0 + moved.shape[0]]
            if self.space == "max" and moved.requires_grad:  # maximum's backward needs the old values: out of place
                self._acc = acc = acc.slice_scatter(torch.maximum(target, moved), 0, b0, b0 + moved.shape[0])
            elif self.space == "max":
                torch.maximum(target, moved, out=target)
            elif uniform is not None:  # the same products as with each row's weight: one 0-d operand, no indexing
                target.addcmul_(moved, uniform)
            else:
                target.addcmul_(moved, w[b0 : b0 + moved.shape[0], j].reshape(-1, *([1] * (moved.ndim - 1))))

    def result(self) -> Tensor:
        """The reduced leaf ``(B, ..., H, W)``."""
        assert self._acc is not None
        return finish(self._acc, self.space, self.class_dim)


def slot_reducers(
    action: Action | None,
    group: Group,
    elements: Tensor,
    weights: Tensor,
    leaves: list[object],
    space: str,
    class_dim: int,
    cache: dict | None = None,
) -> list[SlotReducer] | None:
    """One :class:`SlotReducer` per output leaf, or ``None`` where the slot-by-slot path does not apply: another
    action or space, a plan whose inputs have different elements per slot, a ``max`` with a weight that is not
    positive (such copies take no part: the general path masks them), or a leaf that is not an ``(R, ..., H, W)``
    map.

    Args:
        action: The output action.
        group: The group of the plan.
        elements: The plan's elements ``(B, k, 2, 2)``.
        weights: The plan's weights ``(B, k)``.
        leaves: The selected output leaves of the first chunk.
        space: The reduction space.
        class_dim: The class axis for ``probs``/``gmean``.
        cache: Keeps :func:`native_moves` answers.
    """
    if action is None or space not in FUSED_SPACES or not leaves or torch.compiler.is_compiling():
        return None
    if any(not isinstance(v, Tensor) or v.ndim < 3 or v.shape[-2:] != leaves[0].shape[-2:] for v in leaves):  # type: ignore[union-attr]
        return None
    batch, copies = weights.shape
    if batch > 1 and not torch.equal(elements, elements[:1].expand_as(elements)):
        return None
    if space == "max" and bool((weights <= 0).any()):
        return None
    h, w = leaves[0].shape[-2:]  # type: ignore[union-attr]
    moves = native_moves(action, group.inverse(elements[0]), group, h, w, cache)
    if moves is None or len(moves) != copies:
        return None
    uniform = _uniform_weight(weights, cache) if space != "max" else None
    return [SlotReducer(batch, moves, weights, space, class_dim, uniform) for _ in leaves]


def _uniform_weight(weights: Tensor, cache: dict | None) -> Tensor | None:
    """``weights[0, 0]`` as a 0-d tensor when every weight equals it (a static plan's uniform ``1/k``), else ``None``.

    A static plan hands the same weights tensor to every call: the answer is kept per tensor (and version), so the
    comparison, and its wait for the device, is made once."""
    key = ("uniform", id(weights))
    found = cache.get(key) if cache is not None else None
    if found is not None and found[0] is weights and found[1] == weights._version:
        return found[2]
    first = weights.reshape(-1)[0].clone()  # not a view: the weights may change in place later
    uniform = first if weights.numel() and bool((weights == first).all()) else None
    if cache is not None:
        keep_newest(cache, key, (weights, weights._version, uniform), 32)
    return uniform
