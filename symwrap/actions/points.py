"""The action of O(d), SO(d), E(d) and SE(d) on point clouds, positions and vectors."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from symwrap.actions.base import Action
from symwrap.autocast import as_dtype

if TYPE_CHECKING:
    from symwrap.groups.base import Group

__all__ = ["PointCloudAction", "VectorAction"]


def _space_dim(group: Group) -> tuple[int, bool]:
    """``(d, has_translation)`` for matrix codes ``(d, d)`` or homogeneous codes ``(d+1, d+1)``."""
    d = group.code_shape[-1]
    homogeneous = hasattr(group, "translation_scale")
    return (d - 1, True) if homogeneous else (d, False)


class PointCloudAction(Action):
    """Moves point clouds and positions: ``x ↦ x Rᵀ + t`` on the last axis.

    Convention:
        Inputs are clouds ``(B, N, d)`` (points along dim 1, coordinates on the last dim). Outputs
        pulled back may be any ``(B, ..., d)`` (positions per point ``(B, N, d)`` or one position
        ``(B, d)``). Orthogonal codes ``R`` ``(d, d)`` act as ``x ↦ x Rᵀ``; Euclidean homogeneous codes
        ``[[R, t], [0, 1]]`` as ``x ↦ x Rᵀ + t``. Exact up to floating-point rounding.
    """

    name = "points"
    layout = "point clouds (B, N, d)"
    translates = True

    def problem(self, x: object, group: Group, *, output: bool = False) -> str | None:
        base = super().problem(x, group, output=output)
        if base:
            return base
        assert isinstance(x, Tensor)
        d, _ = _space_dim(group)
        if len(group.code_shape) != 2:
            return f"the points action moves (d, d) matrices, not codes of shape {group.code_shape}."
        if not output and x.ndim != 3:
            return f"expected 3 dims (batch, points, {d} coordinates); reshape the input to (B, N, {d})."
        if x.shape[-1] != d:
            return f"the last axis must hold the {d} coordinates, got size {x.shape[-1]}."
        if not x.dtype.is_floating_point:
            return f"expected floating-point coordinates, got {x.dtype}."
        return None

    def apply(self, x: Tensor, src: Tensor, elements: Tensor, group: Group) -> Tensor:
        d, translated = _space_dim(group)
        codes = as_dtype(elements, x.dtype)
        rot = codes[:, :d, :d]
        rows = x.index_select(0, src)
        flat = rows.reshape(rows.shape[0], -1, d)
        out = flat @ rot.transpose(-1, -2)
        if translated and self.translates:
            out = out + codes[:, None, :d, d]
        return out.reshape(rows.shape)

    def apply_orbit(self, x: Tensor, elements: Tensor, group: Group) -> Tensor:
        """:meth:`apply` in the engine's row order (:meth:`Action.apply_orbit`) as one broadcast matmul of each
        cloud by its ``k`` elements, without copying the cloud ``k`` times first (the same products)."""
        d, translated = _space_dim(group)
        codes = as_dtype(elements, x.dtype)
        batch = x.shape[0]
        copies = codes.shape[0] // max(batch, 1)
        if batch == 0 or x.ndim != 3 or codes.shape[0] != batch * copies:
            return super().apply_orbit(x, elements, group)
        rot = codes[:, :d, :d].reshape(batch, copies, d, d)
        if copies == 1:  # one pose per cloud (canonicalization): bmm, the same products with fewer steps than @
            out = torch.bmm(x.reshape(batch, -1, d), rot[:, 0].transpose(-1, -2))[:, None]
        else:
            out = x.reshape(batch, 1, -1, d) @ rot.transpose(-1, -2)  # (B, k, N, d)
        if translated and self.translates:
            out = out + codes.reshape(batch, copies, d + 1, d + 1)[:, :, None, :d, d]
        return out.reshape(batch * copies, *x.shape[1:])


class VectorAction(PointCloudAction):
    """Moves vectors (forces, velocities, directions): ``v ↦ v Rᵀ``, translations ignored.

    Convention:
        As :class:`PointCloudAction` but the translation part of Euclidean codes is dropped: use it for
        equivariant outputs that are vectors rather than positions.
    """

    name = "vectors"
    layout = "vectors (B, ..., d)"
    translates = False
