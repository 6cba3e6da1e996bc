"""Sorting frames for S_n acting on one axis of a set / sequence ``(B, n, ...)``.

The entries are sorted lexicographically on a chosen feature order (feature ``sort_by[0]`` first, ties broken
by ``sort_by[1]``, ...). The sorting permutation ``p`` moves the set to its canonical (sorted) order,
``(p·x)[:, i] = x[:, p[i]]``, and ``F(h·x) = F(x)·h⁻¹`` as a frame must (Puny et al. 2022, arXiv 2110.03336,
§3.2: sorting frames). With ties in the sort key the canonical order is not unique: every permutation of
the tied entries belongs to the frame. Ties between entries that are identical in *all* features are harmless
(permuting them does not change the input) and are ignored.

Padding masks: padded entries never move, and the sorted real entries fill the real slots in increasing slot
order, so the mask is the same for every frame element and the model can keep using it unchanged.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from symwrap.errors import ConfigError, InputLayoutError
from symwrap.frames.base import DEGENERATE_MODES, DegenerateFrameWarning, DegenerateInputError, all_finite

__all__ = ["SortFrame", "check_set_input", "lexsort"]


def lexsort(keys: Tensor, valid: Tensor | None = None) -> Tensor:
    """Stable lexicographic order of each row's entries ``(B, n)``; padding (``valid`` False) goes last.

    Args:
        keys: ``(B, n, K)`` sort keys, most significant first.
        valid: ``(B, n)`` bool, or ``None`` (all valid).
    """
    batch, n, k = keys.shape
    order = torch.arange(n, device=keys.device).expand(batch, n)
    columns = [keys[..., i] for i in range(k)]
    if valid is not None:
        columns = [torch.where(valid, c, torch.zeros((), dtype=c.dtype, device=c.device)) for c in columns]
        columns = [(~valid).to(keys.dtype), *columns]  # padding last, in slot order
    for column in reversed(columns):  # least significant first, each sort stable
        idx = torch.sort(column.gather(1, order), dim=1, stable=True).indices
        order = order.gather(1, idx)
    return order


class SortFrame:
    """Builds sorting frames (and single canonical orders) for S_n on an axis.

    Args:
        sort_by: Feature indices (of the entries flattened to ``F`` features) in priority order; ``None``
            sorts on all features in their order.
        gap: Keys within ``gap × max|key|`` of each other count as tied (default 0: exact ties only).
        degenerate: With ties between non-identical entries: ``"enlarge"`` (the frame holds every permutation
            of the tied entries, exact; at most ``max_frame`` elements), ``"warn"`` (keep one order, warn) or
            ``"error"`` (raise :class:`DegenerateInputError`).
        max_frame: Largest frame ``"enlarge"`` may build.
    """

    def __init__(
        self,
        sort_by: Sequence[int] | None = None,
        *,
        gap: float = 0.0,
        degenerate: str = "enlarge",
        max_frame: int = 720,
    ) -> None:
        if degenerate not in DEGENERATE_MODES:
            raise ValueError(f"degenerate must be one of {DEGENERATE_MODES}, got {degenerate!r}")
        self.sort_by = list(sort_by) if sort_by is not None else None
        self.gap, self.degenerate, self.max_frame = gap, degenerate, max_frame

    def features(self, x: Tensor, axis: int) -> tuple[Tensor, Tensor]:
        """``(B, n, F)`` all features of each entry and ``(B, n, K)`` its sort keys."""
        moved = x.movedim(axis, 1)
        flat = moved.reshape(moved.shape[0], moved.shape[1], -1)
        if self.sort_by is None:
            return flat, flat
        bad = [i for i in self.sort_by if not -flat.shape[2] <= i < flat.shape[2]]
        if bad:
            raise ConfigError(
                f"invalid option 'sort_by': feature index {bad[0]} is out of range; each set entry has "
                f"{flat.shape[2]} features (entries of shape {tuple(moved.shape[2:])}, flattened)."
            )
        return flat, flat[..., self.sort_by]

    def frame(self, x: Tensor, axis: int, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The frame of each set: ``elements`` ``(B, k, n)`` int64 permutations and ``weights`` ``(B, k)``.

        ``k`` is the largest frame in the batch; smaller frames are padded with weight-0 copies.
        """
        flat, keys = self.features(x, axis)
        order = lexsort(keys, mask)
        groups = self._harmful_ties(flat, keys, order, mask)
        orders = [[order[b]] for b in range(order.shape[0])]
        if groups:
            self._handle(groups, "frame")
            if self.degenerate == "enlarge":
                for b, tie_groups in groups.items():
                    orders[b] = self._tie_orders(order[b], tie_groups)
        k = max(len(o) for o in orders)
        elements = torch.stack([torch.stack(o + [o[0]] * (k - len(o))) for o in orders])  # (B, k, n)
        weights = torch.stack(
            [torch.cat([torch.full((len(o),), 1.0 / len(o)), torch.zeros(k - len(o))]) for o in orders]
        ).to(device=x.device, dtype=x.dtype if x.dtype.is_floating_point else torch.float32)
        return self._to_slots(elements, mask), weights

    def canonical(self, x: Tensor, axis: int, mask: Tensor | None = None) -> Tensor:
        """One sorting permutation per set ``(B, 1, n)``; ties are broken by slot order (and warned about)."""
        flat, keys = self.features(x, axis)
        order = lexsort(keys, mask)
        groups = self._harmful_ties(flat, keys, order, mask)
        if groups:
            self._handle(groups, "canonical order")
        return self._to_slots(order[:, None], mask)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _to_slots(orders: Tensor, mask: Tensor | None) -> Tensor:
        """Permutations ``p`` ``(B, k, n)``: the sorted real entries fill the real slots; padding stays put."""
        if mask is None:
            return orders
        slots = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices  # real slots first, ascending
        slots = slots[:, None].expand_as(orders)
        return torch.empty_like(orders).scatter_(2, slots, orders)

    def _harmful_ties(self, flat: Tensor, keys: Tensor, order: Tensor, mask: Tensor | None) -> dict[int, list]:
        """``{input: [positions in sorted order of one tie group, ...]}`` for ties between different entries."""
        n = order.shape[1]
        if n < 2:
            return {}
        sorted_keys = keys.gather(1, order[..., None].expand_as(keys))
        sorted_flat = flat.gather(1, order[..., None].expand_as(flat))
        diff = (sorted_keys[:, 1:] - sorted_keys[:, :-1]).abs()
        if self.gap > 0 and keys.dtype.is_floating_point:
            scale = keys.abs().amax(dim=(1, 2), keepdim=True)
            tied = (diff <= self.gap * scale).all(dim=-1)
        else:
            tied = (diff == 0).all(dim=-1)
        if mask is not None:
            real = mask.gather(1, order)
            tied = tied & real[:, 1:] & real[:, :-1]
        identical = (sorted_flat[:, 1:] == sorted_flat[:, :-1]).all(dim=-1)
        candidates = (tied & ~identical).any(dim=1)
        result: dict[int, list] = {}
        for b in candidates.nonzero().flatten().tolist():  # only inputs with real ties reach this loop
            groups, current = [], [0]
            for i, t in enumerate(tied[b].tolist()):
                if t:
                    current.append(i + 1)
                else:
                    groups.append(current)
                    current = [i + 1]
            groups.append(current)
            harmful = [g for g in groups if len(g) > 1 and not bool(identical[b, g[0] : g[-1]].all())]
            if harmful:
                result[b] = harmful
        return result

    def _tie_orders(self, order: Tensor, groups: list[list[int]]) -> list[Tensor]:
        size = math.prod(math.factorial(len(g)) for g in groups)
        if size > self.max_frame:
            raise DegenerateInputError(
                f"ties in the sort key give a frame of {size} permutations, more than max_frame={self.max_frame}. "
                "Sort on more features (sort_by=...), raise max_frame, or use degenerate='warn'."
            )
        orders = []
        for choice in itertools.product(*(itertools.permutations(g) for g in groups)):
            new = order.clone()
            for positions, permuted in zip(groups, choice):
                new[list(positions)] = order[list(permuted)]
            orders.append(new)
        return orders

    def _handle(self, groups: dict[int, list], what: str) -> None:
        index = sorted(groups)
        shown = ", ".join(map(str, index[:8])) + (", ..." if len(index) > 8 else "")
        detail = f"{len(index)} input(s) (index {shown}) have ties in the sort key, so their {what} is not unique"
        if self.degenerate == "error":
            raise DegenerateInputError(
                f"{detail}. Use degenerate='enlarge' (average over the tied orders), sort on more features "
                "(sort_by=...), or degenerate='warn'."
            )
        if self.degenerate == "enlarge" and what == "frame":
            return  # exact: every tied order is in the frame
        warnings.warn(
            f"{detail}; their output is not exactly invariant (degenerate='{self.degenerate}').",
            DegenerateFrameWarning,
            stacklevel=4,
        )


def check_set_input(x: Tensor, axis: int, method: str) -> None:
    """Raise :class:`InputLayoutError` for NaN entries (sorting NaN is undefined)."""
    if x.dtype.is_floating_point and not all_finite(x):
        raise InputLayoutError(
            f"{method} with group 'perm' cannot sort entries with NaN or inf values; repair them before calling."
        )
