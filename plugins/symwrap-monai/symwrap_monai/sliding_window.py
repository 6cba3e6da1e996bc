"""The whole sliding-window inference as one module, so that symwrap can symmetrize the whole volume exactly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["SlidingWindow"]


class SlidingWindow(nn.Module):
    """``monai.inferers.sliding_window_inference(x, roi_size, sw_batch_size, predictor)`` as an ``nn.Module``.

    Wrapping this module (``symwrap.wrap(SlidingWindow(net, (96, 96, 96)), "flip3d", output="equivariant")``)
    symmetrizes the whole-volume prediction: each group element moves the whole volume, the patch grid included,
    so the result is exactly equivariant whatever the volume size, overlap and blending. Wrapping ``net`` and
    passing it as the predictor instead symmetrizes each patch; the stitched volume is then exactly equivariant
    only when the group maps the patch grid onto itself (see docs/volumes.md).

    Args:
        predictor: The patch network ``(B, C, *roi) -> (B, K, *roi)``.
        roi_size: Patch size ``(D, H, W)``.
        sw_batch_size: Patches per forward of ``predictor``.
        **options: Passed to ``sliding_window_inference`` (``overlap=0.5``, ``mode="gaussian"``...).
    """

    def __init__(self, predictor: nn.Module, roi_size: Sequence[int] | int, sw_batch_size: int = 4, **options: Any):
        super().__init__()
        self.predictor = predictor
        self.roi_size, self.sw_batch_size, self.options = roi_size, sw_batch_size, options

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``(B, C, D, H, W)`` -> ``(B, K, D, H, W)``, stitched from patches."""
        from monai.inferers import sliding_window_inference

        out = sliding_window_inference(x, self.roi_size, self.sw_batch_size, self.predictor, **self.options)
        return torch.as_tensor(out)  # a plain tensor, not a MetaTensor
