"""The action of planar groups on the patch tokens of ViT-like models (token sequences laid out on a grid)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from symwrap.actions.base import Action
from symwrap.actions.image import ImageAction
from symwrap.errors import ConfigError

if TYPE_CHECKING:
    from symwrap.groups.base import Group

__all__ = ["TokenGridAction"]


class TokenGridAction(Action):
    """Moves token sequences ``(B, P + h·w, D)`` whose last ``h·w`` tokens are image patches on an ``h×w`` grid.

    Use it as ``output=`` to make per-patch features (``last_hidden_state`` of a Hugging Face ``ViTModel``,
    ``forward_features`` of a timm ViT) move with the image instead of being averaged into invariants.

    Convention:
        Dim 1 holds ``P`` prefix tokens (CLS, register or distillation tokens), then ``h·w`` patch tokens in
        row-major order (token ``P + i·w + j`` is the patch at row ``i``, column ``j``, as ViT patch
        embeddings flatten them); dim 2 holds the ``D`` features, which move together. The patch grid is moved
        by :class:`ImageAction` on ``(B, D, h, w)`` (same element conventions: rot90, flips, D4, shifts), so a
        patch moves exactly like the image block it was computed from. Prefix tokens do not move (they carry
        no position). Without ``grid``, the grid is square, ``h = w = sqrt(T - P)``; a group with 90°
        rotations needs ``h == w``. Every pulled-back output must have this layout: select only the token
        sequences (``select="last_hidden_state"``); a pooled ``(B, D)`` leaf is an error, not left in place.

    Args:
        prefix: Number ``P`` of tokens before the patches (1 for CLS; 1 + registers; 2 for DeiT's distillation).
        grid: ``(h, w)`` of the patch grid, or ``None`` for a square grid inferred from the token count.
    """

    name = "token_grid"

    def __init__(self, prefix: int = 1, grid: tuple[int, int] | None = None) -> None:
        if isinstance(prefix, bool) or not isinstance(prefix, int) or prefix < 0:
            raise ConfigError(
                f"invalid option 'prefix': expected the number of tokens before the patches (int >= 0), got {prefix!r}"
            )
        if grid is not None and (
            len(tuple(grid)) != 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in grid)
        ):
            raise ConfigError(f"invalid option 'grid': expected (h, w) positive ints or None, got {grid!r}")
        self.prefix = prefix
        self.grid = None if grid is None else (int(grid[0]), int(grid[1]))
        self._image = ImageAction()

    @property
    def layout(self) -> str:  # type: ignore[override]
        grid = "h·w" if self.grid is None else f"{self.grid[0]}·{self.grid[1]}"
        return f"tokens (B, {self.prefix} + {grid}, D)"

    def __repr__(self) -> str:
        return f"TokenGridAction(prefix={self.prefix}, grid={self.grid})"

    def grid_shape(self, tokens: int) -> tuple[int, int] | None:
        """``(h, w)`` of the patch grid for a sequence of ``tokens`` tokens, or ``None`` if it does not fit."""
        patches = tokens - self.prefix
        if self.grid is not None:
            return self.grid if patches == self.grid[0] * self.grid[1] else None
        side = math.isqrt(max(patches, 0))
        return (side, side) if patches > 0 and side * side == patches else None

    def problem(self, x: object, group: Group, *, output: bool = False) -> str | None:
        base = super().problem(x, group, output=output)
        if base:
            return base
        assert isinstance(x, Tensor)
        if x.ndim != 3:
            return (
                f"expected token sequences (B, T, D) with 3 dims, got {x.ndim} dims; pull back only the token "
                "sequence (select='last_hidden_state') and keep pooled outputs out of the selection."
            )
        tokens = x.shape[1]
        hw = self.grid_shape(tokens)
        if hw is None:
            wanted = "a square number of" if self.grid is None else f"{self.grid[0]}·{self.grid[1]}"
            return (
                f"{tokens} tokens minus {self.prefix} prefix token(s) leaves {tokens - self.prefix}, not {wanted} "
                "patch tokens. Pass prefix= (CLS + register/distillation tokens) and grid=(h, w) to match the "
                "model's patch grid."
            )
        grid_problem = self._image.problem(torch.empty(1, 1, *hw, device="meta"), group)
        if grid_problem and hw[0] != hw[1]:
            return (
                f"the {hw[0]}×{hw[1]} patch grid is not square, and group {group.name!r} has 90° rotations that "
                "swap its axes. Use a square image (and grid), or a group that keeps the shape (flip, vflip)."
            )
        return grid_problem

    def apply(self, x: Tensor, src: Tensor, elements: Tensor, group: Group) -> Tensor:
        hw = self.grid_shape(x.shape[1])
        if hw is None:
            self.check(x, group)  # raises with the reason
        assert hw is not None
        p, (h, w) = self.prefix, hw
        prefix = x[:, :p].index_select(0, src)
        patches = x[:, p:].reshape(x.shape[0], h, w, x.shape[2]).permute(0, 3, 1, 2)  # (B, D, h, w)
        moved = self._image.apply(patches, src, elements, group)  # (R, D, h, w)
        return torch.cat([prefix, moved.permute(0, 2, 3, 1).reshape(src.shape[0], h * w, x.shape[2])], dim=1)
