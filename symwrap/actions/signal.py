"""The action of ``reverse`` and ``shift1d`` on 1-D signals and dense 1-D outputs ``(B, C, T)``."""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from symwrap.actions.base import Action
from symwrap.actions.volume import move_rows_by_element

if TYPE_CHECKING:
    from symwrap.groups.base import Group

__all__ = ["SignalAction"]


class SignalAction(Action):
    """Moves signals and per-time-step outputs ``(B, C, T)`` along the last dim.

    Convention:
        Acts on the last dim ``T``; every other dim after the batch moves together. A reversal code ``[[s]]``
        is the identity (``s = 1``) or ``torch.flip(x, dims=[-1])`` (``s = -1``); a shift code ``(k,)`` is
        ``torch.roll(x, k, dims=-1)``. On an output of another length ``T'`` (a strided or upsampling network)
        the shift is scaled by ``T' / T``, which must give a whole number of steps. Equivariant outputs are
        pulled back with the inverse element through the same rules. Exact.
    """

    name = "signal"
    layout = "signals (B, C, T)"

    def problem(self, x: object, group: Group, *, output: bool = False) -> str | None:
        base = super().problem(x, group, output=output)
        if base:
            return base
        assert isinstance(x, Tensor)
        if x.ndim < 3:
            what = "output" if output else "signal"
            return (
                f"expected a {what} (B, C, T) with at least 3 dims, got {x.ndim}. Add the channel dim of a "
                "single-channel signal (x[:, None] for (B, T))."
            )
        if group.code_shape not in ((1, 1), (1,)) or not group.exact:
            return f"the signal action moves by reversals [[±1]] or shifts (k,), not {group.name!r}'s elements."
        length = getattr(group, "length", None)
        if output and length and group.code_shape == (1,):
            stride = getattr(group, "stride", 1)
            if (x.shape[-1] * stride) % length:
                return (
                    f"an output of length {x.shape[-1]} cannot move by shifts of {stride} step(s) of a length-{length} "
                    "input by whole steps. Use a shift stride that the length ratio divides."
                )
        return None

    def apply(self, x: Tensor, src: Tensor, elements: Tensor, group: Group) -> Tensor:
        if elements.shape[1:] == (1, 1):
            return move_rows_by_element(x, src, elements, _reversal_keys, _reverse)
        length = getattr(group, "length", None) or x.shape[-1]
        steps = x.shape[-1]
        if steps != length and bool((elements[:, 0] * steps % length).any()):
            raise ValueError(
                f"cannot move a length-{steps} output by shifts of a length-{length} signal: the scaled shift is "
                "not a whole step. Use a shift stride that the length ratio divides."
            )
        scaled = elements[:, 0] * steps // length
        return move_rows_by_element(x, src, scaled, _shift_keys, _roll)


def _reversal_keys(elements: Tensor) -> list[Hashable]:
    return (elements.detach().reshape(-1) < 0).tolist()


def _reverse(rows: Tensor, key: Hashable) -> Tensor:
    return rows.flip(-1) if key else rows


def _shift_keys(shifts: Tensor) -> list[Hashable]:
    return shifts.detach().to(torch.int64).cpu().tolist()


def _roll(rows: Tensor, key: Hashable) -> Tensor:
    return torch.roll(rows, int(key), dims=-1) if key else rows  # type: ignore[arg-type]
