"""The action of planar groups and circular shifts on images and dense image outputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from symwrap.actions.base import Action
from symwrap.caches import keep_newest
from symwrap.errors import InputLayoutError
from symwrap.groups.base import cached_per_group
from symwrap.tracing import caches_off

if TYPE_CHECKING:
    from symwrap.groups.base import Group

__all__ = ["ImageAction"]

_PADDING_MODES = ("zeros", "border", "reflection")
_INTERPOLATIONS = ("bilinear", "nearest", "bicubic")


class ImageAction(Action):
    """Moves images, masks and feature maps ``(B, ..., H, W)`` by planar matrices or circular shifts.

    Convention:
        Acts on the last two dims ``(H, W)``; every leading dim after the batch (channels, classes)
        moves together. A planar element ``A`` (2×2, see :mod:`symwrap.groups.matrix`) maps the pixel at
        centred coordinates ``p = (row, col)`` to ``A p``: ``(g·x)[q] = x[Aᵀ q]``. The 90° rotation is
        ``torch.rot90(x, 1, dims=(-2, -1))``, the mirror ``diag(1, -1)`` is ``torch.flip(x, dims=[-1])``.
        Signed permutation matrices (rot90, flips, D4) are applied exactly, as one gather of pixels; a
        rotation by 90° needs ``H == W``. Other angles (``c8``, ``so2``) are interpolated with
        ``torch.nn.functional.grid_sample`` (``align_corners=False``); the padding policy fills what
        comes from outside the image: ``"zeros"`` (default), ``"border"`` or ``"reflection"``.
        Shift codes ``(dy, dx)`` act as ``torch.roll(x, (dy, dx), dims=(-2, -1))``; on an output map of
        another size the shift is scaled by the size ratio, which must give whole pixels.
        Outputs are pulled back with the inverse element through the same rules.

    Args:
        padding: Padding policy for interpolated rotations.
        interpolation: ``grid_sample`` mode for interpolated rotations.
    """

    name = "image"
    layout = "images (B, ..., H, W)"

    def __init__(self, padding: str = "zeros", interpolation: str = "bilinear") -> None:
        if padding not in _PADDING_MODES:
            raise ValueError(f"padding must be one of {_PADDING_MODES}, got {padding!r}")
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}")
        self.padding, self.interpolation = padding, interpolation
        self._tables: dict[tuple, Tensor] = {}
        # The last few element rows met, by memory address -> their pixel tables: a reused plan moves the same
        # rows every call (and every chunk the same slices of them), so the pixel index is found without a dozen
        # small ops per chunk, and without a host-device sync (unique, .tolist(), bool) on a GPU.
        self._known: dict[tuple, _KnownRows] = {}
        self._last_of_shape: dict[tuple, _KnownRows] = {}  # by (shape, H, W, device, dtype): for _same_values
        self._stacks: dict[tuple, Tensor] = {}  # the pixel tables of a set of distinct elements, stacked
        self._quarter_turns: dict[tuple, tuple[Group, bool]] = {}
        # The last few (rows, pixel index, shape) -> flat source index of every output value: the same plan moves
        # the same rows every call, so small inputs take one index_select instead of index_select + gather.
        self._flat: dict[tuple, tuple[Tensor, Tensor, Tensor | None]] = {}

    def __repr__(self) -> str:
        return f"ImageAction(padding={self.padding!r}, interpolation={self.interpolation!r})"

    def problem(self, x: object, group: Group, *, output: bool = False) -> str | None:
        base = super().problem(x, group, output=output)
        if base:
            return base
        assert isinstance(x, Tensor)
        if x.ndim < 3:
            return "expected at least 3 dims (batch, height, width); add the missing dims (e.g. x[:, None])."
        if x.shape[0] > 0 and 0 in x.shape[1:]:
            return "an axis other than the batch axis is empty (size 0), so there is no image to move."
        if group.code_shape == (2, 2):
            h, w = x.shape[-2:]
            if h != w and self._has_quarter_turns(group):
                return (
                    f"rotations by 90° need square images to stack the rotated copies, but H={h} != W={w}. "
                    "Resize or centre-crop to a square first, or use a group without rotations (flip, vflip)."
                )
        elif group.code_shape != (2,):
            return f"the image action moves planar (2, 2) matrices or shifts, not codes of shape {group.code_shape}."
        return None

    # ------------------------------------------------------------------ apply
    def apply(self, x: Tensor, src: Tensor, elements: Tensor, group: Group) -> Tensor:
        if elements.shape[1:] == (2,):
            return _gather_pixels(x, src, _shift_index(elements, x.shape[-2], x.shape[-1], group))
        h, w = x.shape[-2:]
        if torch.compiler.is_compiling() or caches_off():
            # Under torch.compile the caches and the integer test below (torch.equal, torch.unique, .tolist(),
            # bool(...)) would break the graph, and a recording (torch.jit.trace) must not fill the caches, so the
            # group decides statically: an exact finite planar group holds only signed permutation matrices (a
            # traceable gather), any other is interpolated.
            if group.exact and group.is_finite:
                return _gather_pixels(x, src, _signed_permutation_index(elements, h, w))
            return self._resample(x, src, elements)
        key = _rows_key(elements, h, w)
        known = self._known.get(key)
        if known is None or not known.unchanged(elements):
            known = self._same_values(key, elements, h, w)
        if known is None:
            integer = (elements - elements.round()).abs().amax() < 1e-6 if elements.numel() else True
            if not bool(integer):
                return self._resample(x, src, elements)
            known = self._remember(
                key, elements, h, w, _KnownRows(elements, *self._permutation_tables(elements.round(), h, w))
            )
        return self._gather_cached(x, src, known.index())

    def _same_values(self, key: tuple, elements: Tensor, h: int, w: int) -> _KnownRows | None:
        """The last rows of this shape when ``elements`` (new memory) holds the same values: a plan made anew each
        call with the same elements, or a canonical pose repeated (one comparison instead of rebuilding)."""
        last = self._last_of_shape.get((tuple(elements.shape), h, w, elements.device, elements.dtype))
        if last is None or not torch.equal(last.values, elements):
            return None
        return self._remember(key, elements, h, w, last.moved_to(elements))

    def _remember(self, key: tuple, elements: Tensor, h: int, w: int, known: _KnownRows) -> _KnownRows:
        """Keep ``known`` (the last 64) under the rows' address, and as the last rows of their shape."""
        keep_newest(self._known, key, known, 64)
        keep_newest(self._last_of_shape, (tuple(elements.shape), h, w, elements.device, elements.dtype), known, 8)
        return known

    def _gather_cached(self, x: Tensor, src: Tensor, index: Tensor) -> Tensor:
        """:func:`_gather_pixels` as one ``index_select`` of the flattened input when ``src`` and ``index`` are the
        very tensors of an earlier call (the engine reuses its row map, this action its pixel index) and the flat
        index stays small (at most ``_FLAT_INDEX_LIMIT`` values: a 224² batch keeps the two-kernel gather)."""
        values = src.shape[0] * x[0].numel()
        if values > _FLAT_INDEX_LIMIT:
            return _gather_pixels(x, src, index)
        key = (id(src), id(index), tuple(x.shape), x.device)
        cached = self._flat.get(key)
        if cached is None or cached[0] is not src or cached[1] is not index:  # ids are only reused by dead tensors
            # Build the flat index on the second sighting only: the rows of a chunk sliced anew every call never
            # come back, so they keep the two-kernel gather and cost no index.
            keep_newest(self._flat, key, (src, index, None), 8)
            return _gather_pixels(x, src, index)
        if cached[2] is None:
            cached = self._flat[key] = (src, index, _flat_source_index(x, src, index))
        return x.reshape(-1).index_select(0, cached[2]).view(src.shape[0], *x.shape[1:])

    def row_gather(self, x: Tensor, src: Tensor, elements: Tensor, group: Group) -> Callable[[Tensor], Tensor]:
        """For signed permutation matrices (exact rot90/flip/D4 elements) and shifts: one ``index_select`` of the
        flattened input by a precomputed index (when it is small, see :meth:`_gather_cached`)."""
        h, w = x.shape[-2:]
        if elements.shape[1:] == (2,):
            index = _shift_index(elements, h, w, group)
        elif elements.numel() and bool((elements - elements.round()).abs().amax() < 1e-6):
            index = self._permutation_index(elements.round(), h, w)
        else:
            return super().row_gather(x, src, elements, group)
        if src.shape[0] * x[0].numel() > _FLAT_INDEX_LIMIT:
            return lambda data: _gather_pixels(data, src, index)
        flat, rows, shape = _flat_source_index(x, src, index), src.shape[0], tuple(x.shape[1:])
        return lambda data: data.reshape(-1).index_select(0, flat).view(rows, *shape)

    def _has_quarter_turns(self, group: Group) -> bool:
        """Whether some element of a planar group swaps the two image axes (cached per group)."""
        return cached_per_group(self._quarter_turns, group, _has_quarter_turns)

    def _permutation_index(self, matrices: Tensor, h: int, w: int) -> Tensor:
        """Source pixel (flat) of each output pixel for signed permutation matrices, ``(R, H·W)``."""
        tables, ids = self._permutation_tables(matrices, h, w)
        return tables[ids]

    def _permutation_tables(self, matrices: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
        """For signed permutation matrices ``(R, 2, 2)``: the source pixel of each output pixel per distinct
        matrix, ``(U, H·W)``, and which of them each row is, ``(R,)``."""
        # Each entry is -1, 0 or 1: a base-3 key identifies the element, tables are cached per size.
        keys = ((matrices.reshape(-1, 4).long() + 1) * torch.tensor([1, 3, 9, 27], device=matrices.device)).sum(-1)
        unique, inverse = torch.unique(keys, return_inverse=True)
        distinct = unique.tolist()
        tables = []
        for key in distinct:
            cache_key = (key, h, w, matrices.device)
            if cache_key not in self._tables:
                digits = [(key // 3**i) % 3 - 1 for i in range(4)]
                a = torch.tensor(digits, dtype=torch.float64).reshape(2, 2)
                self._tables[cache_key] = _matrix_source_index(a, h, w).to(matrices.device)
            tables.append(self._tables[cache_key])
        if not tables:
            return torch.empty(0, h * w, dtype=torch.long, device=matrices.device), inverse
        stack_key = (tuple(distinct), h, w, matrices.device)  # the chunks of one orbit share their stack
        if stack_key not in self._stacks:
            keep_newest(self._stacks, stack_key, torch.stack(tables), 16)
        return self._stacks[stack_key], inverse

    def _resample(self, x: Tensor, src: Tensor, matrices: Tensor) -> Tensor:
        if not x.dtype.is_floating_point:
            raise InputLayoutError(
                f"interpolated rotations need floating-point data, got {x.dtype}; pass x.float() (or use a group "
                "of exact rotations: rot90, flip, d4)"
            )
        h, w = x.shape[-2:]
        lead = x.shape[1:-2]
        rows = x.index_select(0, src).reshape(src.shape[0], -1, h, w)
        # grid_sample's grid is (x=col, y=row) in [-1, 1]: theta = S⁻¹ P Aᵀ P S with P the swap, S the half-sizes.
        swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64, device=x.device)
        scale = torch.diag(torch.tensor([w / 2, h / 2], dtype=torch.float64, device=x.device))
        a_t = matrices.to(torch.float64).transpose(-1, -2)
        linear = torch.linalg.inv(scale) @ swap @ a_t @ swap @ scale
        theta = torch.cat([linear, torch.zeros(*linear.shape[:-1], 1, dtype=linear.dtype, device=x.device)], dim=-1)
        # CPU has no half / bfloat16 kernel for affine_grid: those rows are resampled in float32 and cast back.
        work = torch.float32 if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        grid = F.affine_grid(theta.to(work), list(rows.shape), align_corners=False)
        out = F.grid_sample(
            rows.to(work), grid, mode=self.interpolation, padding_mode=self.padding, align_corners=False
        )
        return out.to(x.dtype).reshape(src.shape[0], *lead, h, w)


#: Largest flat index (values) :meth:`ImageAction._gather_cached` and :meth:`ImageAction.row_gather` keep: 256 Ki
#: int64 = 2 MiB. Beyond it the gather is bound by moving the data, not by launching a second kernel.
_FLAT_INDEX_LIMIT = 1 << 18


def _has_quarter_turns(group: Group) -> bool:
    """Whether some element of a planar group swaps the two image axes (off-diagonal entries)."""
    if group.is_finite:
        elements = group.elements()
        return bool((elements[:, 0, 1].abs() > 1e-6).any())
    return True  # continuous rotations


def _matrix_source_index(a: Tensor, h: int, w: int) -> Tensor:
    """Flat source index ``(H·W,)`` of each output pixel under a signed permutation matrix ``a``."""
    rows = torch.arange(h, dtype=torch.float64) - (h - 1) / 2
    cols = torch.arange(w, dtype=torch.float64) - (w - 1) / 2
    q = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)
    p = q @ a  # row vectors: (Aᵀ q)ᵀ = qᵀ A
    i = torch.round(p[:, 0] + (h - 1) / 2).long()  # quarter turns only reach here for square images
    j = torch.round(p[:, 1] + (w - 1) / 2).long()
    return i * w + j


def _signed_permutation_index(matrices: Tensor, h: int, w: int) -> Tensor:
    """Flat source index ``(R, H·W)`` of each output pixel for signed permutation matrices ``(R, 2, 2)``.

    The batched, data-independent form of :func:`_matrix_source_index` (no caches, no host sync), used while
    ``torch.compile`` traces: the centred pixel grid times each matrix, written elementwise so that inductor fuses
    it into the gather (a ``bmm`` of R tiny (H·W, 2) × (2, 2) products is an external kernel: 0.3 ms at R = 512).
    """
    a = matrices.to(torch.float32).round()[:, None]  # (R, 1, 2, 2)
    rows = (torch.arange(h, dtype=torch.float32, device=matrices.device) - (h - 1) / 2)[:, None]  # (H, 1)
    cols = (torch.arange(w, dtype=torch.float32, device=matrices.device) - (w - 1) / 2)[None, :]  # (1, W)
    # row vectors qᵀ A with q = (row, col), as in _matrix_source_index: (R, H, W) each
    i = torch.round(rows * a[..., 0, 0, None] + cols * a[..., 1, 0, None] + (h - 1) / 2).long()
    j = torch.round(rows * a[..., 0, 1, None] + cols * a[..., 1, 1, None] + (w - 1) / 2).long()
    return (i * w + j).reshape(matrices.shape[0], h * w)


def _shift_index(shifts: Tensor, h: int, w: int, group: Group) -> Tensor:
    """Flat source index ``(R, H·W)`` of each output pixel for shift codes ``(R, 2)``."""
    gh, gw = getattr(group, "height", None) or h, getattr(group, "width", None) or w
    # On the group's own size every shift is a whole pixel: only a map of another size needs the (data-dependent,
    # graph-breaking under torch.compile) check.
    resized = (h, w) != (gh, gw)
    if resized and bool((h * shifts[:, 0] % gh).any() or (w * shifts[:, 1] % gw).any()):
        raise ValueError(
            f"cannot move a {h}×{w} map by shifts defined on {gh}×{gw} images: the scaled shift is not a whole "
            "pixel. Use a shift stride that the size ratio divides."
        )
    dy = (shifts[:, 0] * h // gh)[:, None, None]
    dx = (shifts[:, 1] * w // gw)[:, None, None]
    i = torch.remainder(torch.arange(h, device=shifts.device)[None, :, None] - dy, h)
    j = torch.remainder(torch.arange(w, device=shifts.device)[None, None, :] - dx, w)
    return (i * w + j).reshape(shifts.shape[0], h * w)


def _flat_source_index(x: Tensor, src: Tensor, index: Tensor) -> Tensor:
    """``(R·L·H·W,)`` index into ``x.reshape(-1)`` of every value of :func:`_gather_pixels`'s output
    (``L`` = the values per pixel, e.g. channels)."""
    per_row = x[0].numel()
    pixels = index.shape[1]
    planes = torch.arange(per_row // pixels, device=index.device)[None, :, None] * pixels
    flat = src.to(index.device)[:, None, None] * per_row + planes + index[:, None, :]
    return flat.reshape(-1).to(x.device)


def _gather_pixels(x: Tensor, src: Tensor, index: Tensor) -> Tensor:
    """``out[r, ..., p] = x[src[r], ..., index[r, p]]`` over flattened pixels; ``x`` ``(B, ..., H, W)``."""
    shape = x.shape
    flat = x.reshape(shape[0], -1, shape[-2] * shape[-1]).index_select(0, src)
    out = torch.gather(flat, 2, index[:, None, :].expand(-1, flat.shape[1], -1))
    return out.reshape(src.shape[0], *shape[1:])


class _KnownRows:
    """Element rows ``(R, 2, 2)`` already turned into pixel tables (:meth:`ImageAction.apply`).

    Holds the rows tensor itself, so no other tensor can take its memory while known, and its version counter,
    which every in-place write moves: a tensor at that address, with that shape, those strides and that version,
    holds the same rows, recognised without comparing values (a comparison makes the host wait for a GPU).
    """

    def __init__(
        self, rows: Tensor, tables: Tensor, ids: Tensor, index: Tensor | None = None, values: Tensor | None = None
    ) -> None:
        self.rows, self.version, self.tables, self.ids = rows, _version_of(rows), tables, ids
        # A copy, for the value comparison when the same rows come back in new memory.
        self.values = rows.clone() if values is None else values
        # Whole pixel indices are kept for small rows only (the flat-index gather needs the same tensor every call,
        # and only below its own limit): 64 chunks of a 224² orbit would otherwise hold gigabytes.
        if index is None and ids.shape[0] * tables.shape[-1] <= _FLAT_INDEX_LIMIT:
            index = tables[ids]
        self._index = index

    def moved_to(self, rows: Tensor) -> _KnownRows:
        """The same tables (and kept index) for equal rows in other memory."""
        return _KnownRows(rows, self.tables, self.ids, self._index, self.values)

    def unchanged(self, elements: Tensor) -> bool:
        """Whether ``elements`` (found under :func:`_rows_key`) still holds the rows' values."""
        return self.version is not None and not elements.is_inference() and elements._version == self.version

    def index(self) -> Tensor:
        """The source pixel index ``(R, H·W)`` of each row: the same tensor every call when kept."""
        return self._index if self._index is not None else self.tables[self.ids]


def _rows_key(elements: Tensor, h: int, w: int) -> tuple:
    """Where element rows live (storage address, offset, shape, strides) and the image size they move."""
    storage = elements.untyped_storage().data_ptr()
    where = (storage, elements.device, elements.storage_offset(), tuple(elements.shape), elements.stride())
    return (*where, h, w, elements.dtype)


def _version_of(t: Tensor) -> int | None:
    """``t``'s version counter (bumped by every in-place write to its memory), or ``None`` where it has none
    (tensors made under ``torch.inference_mode``)."""
    return None if t.is_inference() else t._version
