"""A learned canonicalizer for finite groups acting on images (Kaba et al. 2023; Mondal et al. 2023).

A small CNN ``φ`` (deliberately *not* invariant) scores each of the |G| transformed copies of a downscaled
input, ``s_j(x) = φ(g_j·↓x)``, and the canonicalizing element is ``a(x) = g_{argmax_j s_j(x)}``. Because
``s_j(h·x) = s_{j'}(x)`` with ``g_{j'} = g_j·h``, the argmax moves with the input, ``a(h·x) = a(x)·h⁻¹``, so
``a(h·x)·(h·x) = a(x)·x``: equivariant by construction, whatever φ's weights (Kaba et al., "Equivariance with
Learned Canonicalization Functions", ICML 2023, arXiv 2211.06489). The downscaling is
``adaptive_avg_pool2d``, whose bins are symmetric under the square's symmetries, so it commutes with them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from symwrap.actions.image import ImageAction
from symwrap.errors import InputLayoutError
from symwrap.groups.base import Group

__all__ = ["LearnedCanonicalizer"]


class LearnedCanonicalizer(nn.Module):
    """Scores the |G| transformed copies of a downscaled image; the best-scoring element canonicalizes.

    Args:
        in_channels: Channels ``C`` of the images ``(B, C, H, W)``.
        size: Images larger than ``size × size`` are average-pooled to it before scoring (cheap at 224×224).
        hidden: Channels of the scoring CNN.
    """

    def __init__(self, in_channels: int = 3, size: int = 32, hidden: int = 16) -> None:
        super().__init__()
        self.in_channels, self.size = in_channels, size
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),  # keeps a 4×4 layout: the score must depend on the pose
            nn.Flatten(),
            nn.Linear(hidden * 16, 1),
        )
        self._action = ImageAction()

    def downscale(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> ``(B, C, h, w)`` with ``h, w <= size`` (average pooling, symmetric bins)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise InputLayoutError(
                f"the learned canonicalizer scores images (B, {self.in_channels}, H, W) but got shape "
                f"{tuple(x.shape)}; set in_channels=... to the images' channel count when wrapping."
            )
        h, w = x.shape[-2:]
        if h > self.size or w > self.size:
            x = F.adaptive_avg_pool2d(x, (min(h, self.size), min(w, self.size)))
        param = next(self.net.parameters())
        return x.to(dtype=param.dtype, device=param.device)

    def forward(self, x: Tensor, group: Group, elements: Tensor) -> Tensor:
        """Scores ``(B, |G|)``: column ``j`` scores ``elements[j]·x``.

        Args:
            x: ``(B, C, H, W)`` images.
            group: The finite group the elements belong to.
            elements: ``(|G|, 2, 2)`` its elements (``elements[0]`` the identity).
        """
        small = self.downscale(x)
        batch, order = small.shape[0], elements.shape[0]
        src = torch.arange(batch, device=small.device).repeat_interleave(order)
        codes = elements.to(small.device).repeat(batch, 1, 1)
        copies = self._action.apply(small, src, codes, group)
        return self.net(copies).reshape(batch, order)
