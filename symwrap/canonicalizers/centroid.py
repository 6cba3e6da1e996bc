"""Analytic canonicalizers for the volume and signal groups: the energy centroid for signed permutations (flip3d,
cube, cube_full, reverse) and the highest-energy block for ``shift1d``."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from symwrap.frames.base import DegenerateFrameWarning, DegenerateInputError
from symwrap.groups.base import FiniteGroup
from symwrap.groups.signals import CircularShift1d

__all__ = ["centroid_canonical", "is_signed_permutation_group", "shift1d_canonical"]


def is_signed_permutation_group(group: object) -> bool:
    """Whether ``group`` is a finite, exact group of n×n signed permutation matrices acting on the last n dims
    (the volume groups and ``reverse``): the groups :func:`centroid_canonical` serves."""
    from symwrap.groups.signals import ReverseGroup
    from symwrap.groups.volumes import VolumeGroup

    return isinstance(group, (VolumeGroup, ReverseGroup))


def _tied(top: Tensor, gap: float, what: str, degenerate: str) -> None:
    """Warn or raise when the best two scores ``top`` ``(B, 2)`` are within ``gap`` (relative) for some input."""
    tied = (top[:, 0] - top[:, 1]) <= gap * top[:, 0].abs() + 1e-12
    if bool(tied.any()):
        index = tied.nonzero().flatten().tolist()
        message = f"{len(index)} input(s) (index {index[:8]}) have {what}"
        if degenerate == "error":
            raise DegenerateInputError(
                f"{message}: their canonical element is ambiguous. Use degenerate='warn' or method='group_averaging'."
            )
        warnings.warn(f"{message}; their output is not exactly invariant.", DegenerateFrameWarning, 3)


def centroid_canonical(x: Tensor, group: FiniteGroup, *, degenerate: str = "warn", gap: float = 0.0) -> Tensor:
    """The element ``a`` of a signed permutation group that best aligns each input's energy centroid, ``(B, 1, n, n)``.

    The centroid ``c = Σ_p p·e(p) / Σ_p e(p)`` of the energy ``e = Σ x²`` (over every dim but the batch and the ``n``
    acted dims, at centred coordinates ``p``) moves with the input: ``c(h·x) = h c(x)``. The canonical element is
    ``a(x) = argmax_g ⟨g c(x), v⟩`` for the fixed vector ``v = (1, 1/3, 1/9, ...)``, so ``a(h·x) = a(x)·h⁻¹`` and
    ``a(h·x)·(h·x) = a(x)·x``: one forward per input, exactly invariant (or equivariant, outputs pulled back by
    ``a⁻¹``) whenever the best score is unique. Inputs whose centroid has a zero or repeated coordinate tie.

    Args:
        x: ``(B, ..., *spatial)`` with ``n`` spatial dims (3 for volumes, 1 for signals).
        group: The group (its elements are ``(|G|, n, n)``).
        degenerate: ``"warn"`` or ``"error"`` (``"enlarge"`` acts as ``"warn"``) when the best two scores tie.
        gap: Relative tie threshold (default: exact ties).
    """
    elements = group.elements_on(x.device).to(x.dtype)  # (|G|, n, n)
    n = elements.shape[-1]
    batch = x.shape[0]
    spatial = x.shape[-n:]
    energy = x.reshape(batch, -1, *spatial).pow(2).sum(dim=1)  # (B, *spatial)
    total = energy.flatten(1).sum(dim=1).clamp_min(torch.finfo(x.dtype).tiny)
    centroid = []
    for axis, size in enumerate(spatial):
        coords = torch.arange(size, dtype=x.dtype, device=x.device) - (size - 1) / 2
        marginal = energy.sum(dim=[1 + a for a in range(n) if a != axis]) if n > 1 else energy
        centroid.append((marginal * coords).sum(dim=1) / total)
    c = torch.stack(centroid, dim=1)  # (B, n)
    v = torch.tensor([3.0**-i for i in range(n)], dtype=x.dtype, device=x.device)
    scores = torch.einsum("gij,bj,i->bg", elements, c, v)  # ⟨g c, v⟩ per input and element
    top = scores.topk(min(2, scores.shape[1]), dim=1)
    if scores.shape[1] > 1:
        _tied(top.values, gap, "two elements that align their energy centroid equally", degenerate)
    return elements.index_select(0, top.indices[:, 0])[:, None]


def shift1d_canonical(x: Tensor, group: CircularShift1d, *, degenerate: str = "warn", gap: float = 0.0) -> Tensor:
    """The shift that moves each signal's highest-energy block of ``stride`` steps to the start, ``(B, 1, 1)``.

    Energy is ``Σ x²`` over every dim but the batch and the last, summed over each block of the stride grid; a
    shift by a group element moves the blocks without changing their energies, so ``a(h·x)·(h·x) = a(x)·x`` exactly
    when the top block is unique (the 1-D form of the ``shift`` canonicalizer).

    Args:
        x: ``(B, ..., T)`` signals.
        group: The sized ``shift1d`` group.
        degenerate: ``"warn"`` or ``"error"`` when the top two block energies tie.
        gap: Relative tie threshold (default: exact ties).
    """
    length, stride = group.length, group.stride
    assert length is not None
    batch = x.shape[0]
    energy = x.reshape(batch, -1, length).pow(2).sum(dim=1)  # (B, T)
    blocks = energy.reshape(batch, length // stride, stride).sum(dim=2)  # (B, T / s)
    top = blocks.topk(min(2, blocks.shape[1]), dim=1)
    if blocks.shape[1] > 1:
        _tied(top.values, gap, "two blocks of equal top energy", degenerate)
    shift = torch.remainder(-stride * top.indices[:, 0], length)
    return shift[:, None, None]
