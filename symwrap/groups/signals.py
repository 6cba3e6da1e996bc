"""Exact groups of 1-D signals ``(B, C, T)``: time reversal and circular shifts of the last axis.

Convention:
    Both act on the last dim ``T`` (time); every other dim after the batch moves together.
    ``reverse``: code ``[[s]]`` (a 1×1 signed matrix on the centred time coordinate), ``s = 1`` the identity,
    ``s = -1`` is ``torch.flip(x, dims=[-1])``; listed ``[[1]], [[-1]]``; each element is its own inverse.
    ``shift1d``: code ``(k,)`` int64, ``g·x = torch.roll(x, shifts=k, dims=-1)`` (the sample at ``t`` moves to
    ``t + k mod T``); composition adds codes modulo ``T``, the inverse negates them; listed ``0, s, 2s, ...``
    for the stride ``s`` (the subgroup of shifts by multiples of ``s``; ``T`` must be divisible by ``s``). ``T``
    comes from the input (:meth:`CircularShift1d.for_input`) unless given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from symwrap.errors import ConfigError, InputLayoutError
from symwrap.groups.base import FiniteGroup
from symwrap.groups.matrix import MatrixGroup

if TYPE_CHECKING:
    from symwrap.actions.base import Action

__all__ = ["CircularShift1d", "ReverseGroup", "reverse"]

_SIGNAL_LAYOUT = "signals (B, C, T)"


def _check_signal_shape(shape: tuple[int, ...], name: str) -> None:
    if len(shape) < 3:
        raise InputLayoutError(
            f"group {name!r} acts on {_SIGNAL_LAYOUT} but the input has shape {tuple(shape)}; add the channel dim "
            "of a single-channel signal (x[:, None] for (B, T))."
        )


class ReverseGroup(MatrixGroup):
    """Time reversal of signals ``(B, C, T)``: the identity and ``torch.flip(x, dims=[-1])``. Exact."""

    def __init__(self) -> None:
        super().__init__(torch.tensor([[[1.0]], [[-1.0]]], dtype=torch.float64), "reverse", exact=True)

    def default_action(self) -> Action:
        from symwrap.actions.signal import SignalAction

        return SignalAction()


def reverse() -> ReverseGroup:
    """Time reversal of the last axis of ``(B, C, T)`` signals (2 elements). Exact."""
    return ReverseGroup()


class CircularShift1d(FiniteGroup):
    """Circular shifts of the last axis of signals ``(B, C, T)``, Z_T, or the shifts by multiples of ``stride``.

    See the module's ``Convention:`` block.

    Args:
        length: ``T``; ``None`` to take it from the input.
        stride: Shifts by multiples of ``stride`` only (``T / stride`` elements); ``T`` must be divisible by it.
    """

    code_shape = (1,)
    code_dtype = torch.int64

    def __init__(self, length: int | None = None, *, stride: int = 1) -> None:
        if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
            raise ConfigError(f"invalid option 'stride' of group 'shift1d': must be a positive int, got {stride!r}")
        if length is not None and (not isinstance(length, int) or length < 1):
            raise ConfigError(f"invalid option 'length' of group 'shift1d': must be a positive int, got {length!r}")
        self.length, self.stride = length, stride
        self.name = "shift1d" if stride == 1 else f"shift1d(stride={stride})"
        if length is not None and length % stride:
            raise InputLayoutError(
                f"group 'shift1d' with stride={stride} needs T divisible by {stride}, but T={length}. "
                "Pick a stride that divides the signal length, or crop/pad the signal."
            )

    def __repr__(self) -> str:
        size = "sized by the input" if self.length is None else f"order={self.order()}"
        return f"CircularShift1d(name={self.name!r}, {size})"

    def _sized(self) -> int:
        if self.length is None:
            raise RuntimeError("the shift1d group is sized by its input: call group.for_input(shape, action) first")
        return self.length

    def order(self) -> int:
        return self._sized() // self.stride

    def elements(self) -> Tensor:
        return torch.arange(0, self._sized(), self.stride)[:, None]

    def identity(self) -> Tensor:
        return torch.zeros(1, dtype=torch.int64)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.remainder(a + b, self._sized())

    def inverse(self, a: Tensor) -> Tensor:
        return torch.remainder(-a, self._sized())

    def index_of(self, codes: Tensor) -> Tensor:
        return codes[..., 0] // self.stride

    def for_input(self, shape: tuple[int, ...], action: Action) -> CircularShift1d:
        _check_signal_shape(shape, "shift1d")
        if shape[-1] == self.length:
            return self
        return CircularShift1d(shape[-1], stride=self.stride)

    def default_action(self) -> Action:
        from symwrap.actions.signal import SignalAction

        return SignalAction()
