"""Finite groups sized by the data: circular image shifts and permutations of a set axis."""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from symwrap.errors import ConfigError, InputLayoutError
from symwrap.groups.base import FiniteGroup
from symwrap.limits import check_group_order

if TYPE_CHECKING:
    from symwrap.actions.base import Action

__all__ = ["PermutationGroup", "ShiftGroup"]

#: Largest n for which S_n is listed element by element (8! = 40320 copies).
MAX_LISTED_PERMUTATION_SIZE = 8


_SHIFT_ADVICE = " (one element per shift): pass group_options={'stride': s} to shift by multiples of s only"


class ShiftGroup(FiniteGroup):
    """Circular translations of images, Z_H × Z_W, or the subgroup of shifts by multiples of ``stride``.

    Convention:
        Code ``(dy, dx)`` int64; ``g·x = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))``. Composition
        adds codes modulo ``(H, W)``; the inverse negates them. Elements are listed row-major:
        ``(0, 0), (0, s), ..., (s, 0), ...``. ``H`` and ``W`` come from the input (:meth:`for_input`)
        unless given; both must be divisible by ``stride``. Exact.
    """

    code_shape = (2,)
    code_dtype = torch.int64

    def __init__(self, height: int | None = None, width: int | None = None, *, stride: int = 1) -> None:
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ConfigError(f"invalid group option 'stride' of 'shift': must be a positive integer, got {stride!r}")
        for option, value in (("height", height), ("width", width)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(
                    f"invalid group option {option!r} of 'shift': must be a positive integer or None (sized by the "
                    f"input), got {value!r}"
                )
        self.height, self.width, self.stride = height, width, stride
        self.name = "shift" if stride == 1 else f"shift(stride={stride})"
        if height is not None and width is not None and (height % stride or width % stride):
            raise InputLayoutError(
                f"group 'shift' with stride={stride} needs H and W divisible by {stride}; got H={height}, W={width}. "
                "Pick a stride that divides the image size."
            )

    def _sized(self) -> tuple[int, int]:
        if self.height is None or self.width is None:
            raise RuntimeError("the shift group is sized by its input: call group.for_input(shape, action) first")
        return self.height, self.width

    def order(self) -> int:
        h, w = self._sized()
        return (h // self.stride) * (w // self.stride)

    def elements(self) -> Tensor:
        h, w = self._sized()
        check_group_order(self.order(), f"group {self.name!r} on {h}×{w} images", _SHIFT_ADVICE)
        dy = torch.arange(0, h, self.stride)
        dx = torch.arange(0, w, self.stride)
        return torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1).reshape(-1, 2)

    def identity(self) -> Tensor:
        return torch.zeros(2, dtype=torch.int64)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        h, w = self._sized()
        return torch.remainder(a + b, torch.tensor([h, w], device=a.device))

    def inverse(self, a: Tensor) -> Tensor:
        h, w = self._sized()
        return torch.remainder(-a, torch.tensor([h, w], device=a.device))

    def index_of(self, codes: Tensor) -> Tensor:
        _, w = self._sized()
        return (codes[..., 0] // self.stride) * (w // self.stride) + codes[..., 1] // self.stride

    def for_input(self, shape: tuple[int, ...], action: Action) -> ShiftGroup:
        if len(shape) < 3:
            raise InputLayoutError(
                f"group 'shift' acts on images (..., C, H, W) but the input has shape {tuple(shape)}; "
                "pass image tensors with at least 3 dimensions."
            )
        h, w = shape[-2], shape[-1]
        if (h, w) == (self.height, self.width):
            return self
        check_group_order(
            (h // self.stride) * (w // self.stride), f"group {self.name!r} on {h}×{w} images", _SHIFT_ADVICE
        )
        return ShiftGroup(h, w, stride=self.stride)

    def default_action(self) -> Action:
        from symwrap.actions.image import ImageAction

        return ImageAction()


class PermutationGroup(FiniteGroup):
    """S_n permuting one axis of the input (a set or a sequence).

    Convention:
        Code ``p`` int64 ``(n,)``: ``(g·x)[..., i, ...] = x[..., p[i], ...]`` along the acted axis.
        ``compose(a, b)[i] = b[a[i]]`` (``b`` acts first); the inverse is ``argsort(p)``. Elements are
        listed in lexicographic order (identity first). ``n`` comes from the input unless given.
        Listing all n! elements (group averaging) is allowed up to n = 8; use ``monte_carlo`` beyond.
    """

    code_dtype = torch.int64

    def __init__(self, n: int | None = None, *, axis: int = 1) -> None:
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ConfigError(
                f"invalid group option 'n' of 'perm': must be a positive integer or None (sized by the input), "
                f"got {n!r}"
            )
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ConfigError(f"invalid group option 'axis' of 'perm': must be an int axis, got {axis!r}")
        self.n, self.axis = n, axis
        self.name = "perm"
        self.code_shape = (n,) if n is not None else (0,)

    def _size(self) -> int:
        if self.n is None:
            raise RuntimeError("the perm group is sized by its input: call group.for_input(shape, action) first")
        return self.n

    def order(self) -> int:
        return math.factorial(self._size())

    def elements(self) -> Tensor:
        n = self._size()
        if n > MAX_LISTED_PERMUTATION_SIZE:
            raise InputLayoutError(
                f"group 'perm' on an axis of size {n} has {n}! elements, too many to list "
                f"(at most {MAX_LISTED_PERMUTATION_SIZE}). Use method='monte_carlo' (sampled permutations) "
                "or frame averaging by sorting instead of group averaging."
            )
        check_group_order(self.order(), f"group 'perm' on an axis of size {n}")
        return torch.tensor(list(itertools.permutations(range(n))), dtype=torch.int64).reshape(-1, n)

    def identity(self) -> Tensor:
        return torch.arange(self._size())

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        a, b = torch.broadcast_tensors(a, b)
        return torch.gather(b, -1, a)

    def inverse(self, a: Tensor) -> Tensor:
        return torch.argsort(a, dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.argsort(torch.rand(n, self._size(), generator=generator), dim=-1)

    def index_of(self, codes: Tensor) -> Tensor:
        # Lehmer code: the rank of a permutation in lexicographic order.
        n = self._size()
        flat = codes.reshape(-1, n)
        smaller_after = (flat[:, None, :] < flat[:, :, None]) & torch.triu(
            torch.ones(n, n, dtype=torch.bool, device=codes.device), diagonal=1
        )
        digits = smaller_after.sum(dim=-1)
        weights = torch.tensor([math.factorial(n - 1 - i) for i in range(n)], device=codes.device)
        return (digits * weights).sum(dim=-1).reshape(codes.shape[:-1])

    def for_input(self, shape: tuple[int, ...], action: Action) -> PermutationGroup:
        axis = getattr(action, "axis", self.axis)
        if not -len(shape) <= axis < len(shape) or axis % len(shape) == 0:
            raise InputLayoutError(
                f"group 'perm' acts on axis {axis} (not the batch axis 0) but the input has shape {tuple(shape)}; "
                "pass a tensor (B, n, ...) or choose the set axis with action=AxisPermutationAction(axis=...)."
            )
        n = shape[axis]
        if n == self.n:
            return self
        return PermutationGroup(n, axis=self.axis)

    def default_action(self) -> Action:
        from symwrap.actions.sets import AxisPermutationAction

        return AxisPermutationAction(axis=self.axis)
