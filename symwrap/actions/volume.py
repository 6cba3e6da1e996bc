"""The action of the volume groups (``flip3d``, ``cube``, ``cube_full``) on volumes and dense 3-D outputs."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from symwrap.actions.base import Action
from symwrap.groups.base import cached_per_group

if TYPE_CHECKING:
    from symwrap.groups.base import Group

__all__ = ["VolumeAction", "move_rows_by_element"]

_AXES = "DHW"


class VolumeAction(Action):
    """Moves volumes, 3-D masks and feature maps ``(B, C, D, H, W)`` by 3×3 signed permutation matrices.

    Convention:
        Acts on the last three dims ``(D, H, W)``; the channel dim (and any other dim after the batch) moves
        together. An element ``A`` maps the voxel at centred coordinates ``p = (d, h, w)`` to ``A p``:
        ``(g·x)[q] = x[Aᵀ q]``. With ``A[i, π(i)] = s_i`` that is ``x.permute(π)`` of the spatial dims, then
        ``torch.flip`` of every spatial dim ``i`` with ``s_i = -1``: an exact gather of voxels, no interpolation.
        The 90° rotation of the plane ``(i, j)`` (``A[i, j] = -1``, ``A[j, i] = 1``) is
        ``torch.rot90(x, 1, dims=(i, j))``. Elements that swap two axes need them of equal size (``cube`` on a
        cubic volume; ``plane=`` for anisotropic ones). Equivariant outputs (segmentation logits, any size) are
        pulled back with the inverse element ``Aᵀ`` by the same rule.
    """

    name = "volume"
    layout = "volumes (B, C, D, H, W)"

    def __init__(self) -> None:
        self._swaps: dict[tuple, tuple[Group, tuple[tuple[int, int], ...]]] = {}

    def problem(self, x: object, group: Group, *, output: bool = False) -> str | None:
        base = super().problem(x, group, output=output)
        if base:
            return base
        assert isinstance(x, Tensor)
        if x.ndim < 5:
            what = "output" if output else "volume"
            return (
                f"expected a 5-dim {what} (B, C, D, H, W), got {x.ndim} dims. Add the channel dim of a single-channel "
                "volume (x[:, None] for (B, D, H, W)); a (B, C, H, W) image takes a planar group (flip, rot90, d4)."
            )
        if group.code_shape != (3, 3) or not group.exact:
            return f"the volume action moves by exact 3×3 signed permutation matrices, not {group.name!r}'s elements."
        sizes = tuple(x.shape[-3:])
        unequal = [(i, j) for i, j in self._swapped_axes(group) if sizes[i] != sizes[j]]
        if unequal:
            return _shape_change_message(group, sizes, unequal)
        return None

    def _swapped_axes(self, group: Group) -> tuple[tuple[int, int], ...]:
        return cached_per_group(self._swaps, group, _swapped_axes)

    def apply(self, x: Tensor, src: Tensor, elements: Tensor, group: Group) -> Tensor:
        return move_rows_by_element(x, src, elements, _signed_permutation_key, _move_volume)


def _swapped_axes(group: Group) -> tuple[tuple[int, int], ...]:
    """Pairs ``(i, j)`` of spatial axes that some element of ``group`` swaps (a finite group; else all pairs)."""
    known = getattr(group, "swapped_axes", None)
    if known is not None:
        return known
    if not group.is_finite:
        return ((0, 1), (0, 2), (1, 2))
    elements = group.elements().abs()
    return tuple((i, j) for i in range(3) for j in range(i + 1, 3) if bool((elements[:, i, j] > 0.5).any()))


def _shape_change_message(group: Group, sizes: tuple[int, ...], unequal: list[tuple[int, int]]) -> str:
    shape = ", ".join(f"{a}={n}" for a, n in zip(_AXES, sizes))
    pairs = " and ".join(f"{_AXES[i]}/{_AXES[j]}" for i, j in unequal)
    squares = [plane for plane, (i, j) in {"hw": (1, 2), "dw": (0, 2), "dh": (0, 1)}.items() if sizes[i] == sizes[j]]
    family = getattr(group, "family", group.name)
    if squares:
        fix = (
            f"For this anisotropic volume use the option that keeps the shape: group_options={{'plane': "
            f"{squares[0]!r}}} (symwrap.groups.{family}(plane={squares[0]!r}) as an object): the 90° rotations of the "
            f"square {squares[0].upper()} plane with the mirrors. "
        )
    else:
        fix = "No two of its axes have equal sizes: only mirrors keep its shape. "
    return (
        f"group {group.name!r} swaps the axes {pairs}, which would change the volume's shape ({shape}). {fix}"
        "Or use 'flip3d' (the 8 mirrors, any shape), or resample the volume to a cube first."
    )


def _signed_permutation_key(elements: Tensor) -> list[Hashable]:
    """One hashable key per row of signed permutation matrices ``(R, n, n)``: the tuple of ``(π(i), s_i)``."""
    rounded = elements.detach().round().to(torch.int64).cpu()
    perm = rounded.abs().argmax(dim=-1)  # (R, n): π(i)
    signs = rounded.gather(-1, perm[..., None]).squeeze(-1)  # (R, n): s_i
    return [tuple(zip(p, s)) for p, s in zip(perm.tolist(), signs.tolist())]


def _move_volume(rows: Tensor, key: Hashable) -> Tensor:
    """``rows`` ``(R, ..., *spatial)`` moved by the signed permutation ``key`` (``((π(i), s_i), ...)``)."""
    pairs: tuple[tuple[int, int], ...] = key  # type: ignore[assignment]
    n = len(pairs)
    lead = rows.ndim - n
    perm = [p for p, _ in pairs]
    if perm != list(range(n)):
        rows = rows.permute(*range(lead), *(lead + p for p in perm))
    flipped = [lead + i for i, (_, s) in enumerate(pairs) if s < 0]
    return rows.flip(flipped) if flipped else rows


def move_rows_by_element(
    x: Tensor,
    src: Tensor,
    elements: Tensor,
    keys_of: Callable[[Tensor], list[Hashable]],
    move: Callable[[Tensor, Hashable], Tensor],
) -> Tensor:
    """``out[r] = elements[r] · x[src[r]]``, with one ``move`` per distinct element (all its rows at once).

    An orbit holds few distinct elements (8 to 48) and many rows each only when the batch is large, so moving
    the rows of one element together (``torch.flip``/``permute`` of a whole slab) costs a few copies of the data,
    and no per-voxel index of ``R × D·H·W`` integers is built.

    Args:
        x: ``(B, ...)`` data.
        src: ``(R,)`` the input row of each output row.
        elements: ``(R, *code_shape)`` group elements.
        keys_of: Elements -> one hashable key per row (equal keys: the same element).
        move: ``(rows (r, ...), key) -> (r, ...)`` moved rows.

    Returns:
        ``(R, ...)`` moved rows.
    """
    keys = keys_of(elements)
    if not keys:
        return x[:0]
    groups: dict[Hashable, list[int]] = {}
    for row, key in enumerate(keys):
        groups.setdefault(key, []).append(row)
    src = src.to(x.device)
    if len(groups) == 1:
        (key,) = groups
        return move(x.index_select(0, src), key).contiguous()
    moved = []
    for key, rows in groups.items():
        index = torch.tensor(rows, device=x.device)
        moved.append((index, move(x.index_select(0, src.index_select(0, index)), key)))
    first = moved[0][1]
    out = first.new_empty(len(keys), *first.shape[1:])
    for index, values in moved:
        out.index_copy_(0, index, values)
    return out
