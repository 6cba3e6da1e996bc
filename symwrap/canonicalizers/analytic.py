"""Analytic canonicalizers. PCA poses and sorted orders live in :mod:`symwrap.frames` (a frame of one element);
here: the argmax-energy rule for circular shifts."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from symwrap.frames.base import DegenerateFrameWarning, DegenerateInputError
from symwrap.groups.discrete import ShiftGroup

__all__ = ["shift_canonical"]


def shift_canonical(x: Tensor, group: ShiftGroup, *, degenerate: str = "warn", gap: float = 0.0) -> Tensor:
    """The shift that moves each image's highest-energy ``stride × stride`` block to the origin ``(B, 1, 2)``.

    Energy is ``Σ x²`` over every axis but the batch and the last two, summed over each block of the stride
    grid (single pixels for ``stride=1``): the "max-norm" rule of adaptive polyphase sampling (Chaman &
    Dokmanić, CVPR 2021) applied to the whole shift group. A shift of the input by a group element moves
    the blocks without changing their energies, so the argmax moves with it and ``a(h·x)·(h·x) = a(x)·x``
    exactly (no interpolation), which makes any model (a ViT with position embeddings included) exactly
    invariant to circular shifts on inputs whose top block energy is unique.

    Args:
        x: ``(B, ..., H, W)`` images.
        group: The sized shift group.
        degenerate: ``"warn"`` or ``"error"`` (``"enlarge"`` acts as ``"warn"``) when the top two block energies
            are within ``gap`` (relative; default: exactly equal).
        gap: Relative tie threshold.
    """
    h, w, s = group.height, group.width, group.stride
    assert h is not None and w is not None
    batch = x.shape[0]
    energy = x.reshape(batch, -1, h, w).pow(2).sum(dim=1)  # (B, H, W)
    blocks = energy.reshape(batch, h // s, s, w // s, s).sum(dim=(2, 4)).flatten(1)  # (B, H/s · W/s)
    top = blocks.topk(min(2, blocks.shape[1]), dim=1)
    if blocks.shape[1] > 1:
        tied = (top.values[:, 0] - top.values[:, 1]) <= gap * top.values[:, 0].abs()
        if bool(tied.any()):
            index = tied.nonzero().flatten().tolist()
            message = f"{len(index)} image(s) (index {index[:8]}) have two blocks of equal top energy"
            if degenerate == "error":
                raise DegenerateInputError(
                    f"{message}: their canonical shift is ambiguous. Use degenerate='warn' or method='group_averaging'."
                )
            warnings.warn(f"{message}; their output is not exactly shift invariant.", DegenerateFrameWarning, 3)
    best = top.indices[:, 0]
    cols = w // s
    dy = torch.remainder(-s * (best // cols), h)
    dx = torch.remainder(-s * (best % cols), w)
    return torch.stack([dy, dx], dim=-1)[:, None]
