"""The action of permutations on one axis of a tensor (sets and sequences)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from symwrap.actions.base import Action

if TYPE_CHECKING:
    from symwrap.groups.base import Group

__all__ = ["AxisPermutationAction"]


class AxisPermutationAction(Action):
    """Permutes the entries of one axis: sets of points, tokens, nodes.

    Convention:
        ``(g·x)[:, i] = x[:, p[i]]`` along ``axis`` (default 1, the first axis after the batch); codes
        are permutations ``p`` ``(n,)``. Equivariant outputs with the same axis (per-element outputs)
        are pulled back with ``argsort(p)``. Exact.

    Args:
        axis: The permuted axis of the batched tensor (not 0, the batch axis).
    """

    name = "set"

    def __init__(self, axis: int = 1) -> None:
        if axis == 0:
            raise ValueError("axis 0 is the batch axis; choose the set axis (e.g. axis=1)")
        self.axis = axis
        self.layout = f"sets (B, n, ...) permuted along axis {axis}"

    def __repr__(self) -> str:
        return f"AxisPermutationAction(axis={self.axis})"

    def problem(self, x: object, group: Group, *, output: bool = False) -> str | None:
        base = super().problem(x, group, output=output)
        if base:
            return base
        assert isinstance(x, Tensor)
        if not -x.ndim <= self.axis < x.ndim or self.axis % x.ndim == 0:
            return f"axis {self.axis} is not a non-batch axis of a {x.ndim}-dim tensor."
        n = group.code_shape[0] if group.code_shape else None
        if n and x.shape[self.axis] != n:
            return f"axis {self.axis} has size {x.shape[self.axis]} but the group permutes {n} entries."
        return None

    def apply(self, x: Tensor, src: Tensor, elements: Tensor, group: Group) -> Tensor:
        moved = x.movedim(self.axis, 1)
        out = moved[src[:, None], elements]  # (R, n, ...)
        return out.movedim(1, self.axis)
