"""Hand-written floors of the suite's methods (``bench_suite.py``): each method written out by hand for one input
shape, with the fewest kernels, no checks, no options and no bookkeeping.

A floor is what any implementation pays on top of the |G|-forward limit: making the copies, and the method's own
work, which the limit leaves out — the PCA frame or pose, equizero's proxy and selection, λ-equitune's λ-net, the
learned canonicalizer. Dividing symwrap's time by its method's floor separates what symwrap adds from what the
method costs. The floors follow the formulas of the papers (equitune: arXiv 2210.06475; λ-equitune and equizero:
arXiv 2305.09900; frames: arXiv 2110.03336; canonicalization: arXiv 2211.06489) and compute what symwrap computes,
up to the order of group elements. Under ``torch.autocast`` they keep symwrap's precision policy: the method's own
arithmetic in float32 (:func:`_float32`), only the base model's forwards in the caller's precision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "d4_floor",
    "equizero_floor",
    "lambda_floor",
    "learned_canonicalization_floor",
    "pca_frame_floor",
    "pca_pose_floor",
]


def _float32(device: torch.device) -> AbstractContextManager[object]:
    """Autocast off for the method's own arithmetic, as in symwrap (a no-op when autocast is off)."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _d4_orbit(shape: tuple[int, ...], device: torch.device) -> Tensor:
    """``(8, C·H·W)``: for each element of d4, the flat source index of every value of one moved image."""
    grid = torch.arange(int(torch.tensor(shape).prod()), device=device).reshape(shape)
    turns = [torch.rot90(grid, k, (-2, -1)) for k in range(4)]
    return torch.stack(turns + [t.flip(-1) for t in turns]).reshape(8, -1)


def _d4_gather(x: Tensor) -> Callable[[Tensor], Tensor]:
    """``x (B, C, H, W) -> copies (B·8, C, H, W)``, row ``b·8 + j``: one ``index_select`` of precomputed indices."""
    batch, per_image = x.shape[0], x[0].numel()
    index = torch.arange(batch, device=x.device)[:, None, None] * per_image + _d4_orbit(x.shape[1:], x.device)
    index = index.reshape(-1)
    rows = (batch * 8, *x.shape[1:])
    return lambda x: x.reshape(-1).index_select(0, index).view(rows)


def d4_floor(model: nn.Module, x: Tensor) -> Callable[[], Tensor]:
    """Group averaging over ``d4``: one gather makes the 8 copies of every image, one forward, one mean."""
    batch, gather = x.shape[0], _d4_gather(x)
    return lambda: model(gather(x)).reshape(batch, 8, -1).mean(1)


def equizero_floor(model: nn.Module, x: Tensor) -> Callable[[], Tensor]:
    """Equizero over ``d4`` with the entropy proxy: the 8 copies, one forward, the entropy of each copy, the copy
    with the lowest one."""
    batch, gather = x.shape[0], _d4_gather(x)

    def run() -> Tensor:
        y = model(gather(x)).reshape(batch, 8, -1)
        with _float32(x.device):
            y = y.float()
            log_p = torch.log_softmax(y, dim=-1)
            best = (log_p.exp() * log_p).sum(-1).argmax(dim=1)  # the lowest entropy
            return y.gather(1, best[:, None, None].expand(batch, 1, y.shape[-1])).squeeze(1)

    return run


def lambda_floor(features: nn.Module, head: nn.Module, x: Tensor, net: Callable[[], nn.Module]) -> Callable[[], Tensor]:
    """λ-equitune over ``d4`` (``model = head ∘ features``): the 8 copies, the features and the output of each, the
    λ-net on the features (``net()``: symwrap's, built on its first call), ``softplus + 1e-4``, the normalised
    weighted sum."""
    batch, gather = x.shape[0], _d4_gather(x)

    def run() -> Tensor:
        h = features(gather(x))
        y = head(h).reshape(batch, 8, -1)
        with _float32(x.device):
            lam = F.softplus(net()(h.float()).reshape(batch, 8)) + 1e-4
            return torch.bmm((lam / lam.sum(1, keepdim=True)).unsqueeze(1), y.float()).squeeze(1)

    return run


def learned_canonicalization_floor(model: nn.Module, x: Tensor, canonicalizer: Any) -> Callable[[], Tensor]:
    """Canonicalization over ``d4`` with symwrap's learned canonicalizer (its network, its ``size``): downscale,
    the 8 copies of the small image, the scoring network, the argmax, one gather of the canonical images, one
    forward."""
    batch, per_image = x.shape[0], x[0].numel()
    orbit = _d4_orbit(x.shape[1:], x.device)
    offsets = torch.arange(batch, device=x.device)[:, None] * per_image
    size = canonicalizer.size
    small_shape = (x.shape[1], min(x.shape[-2], size), min(x.shape[-1], size))
    small_gather = _d4_gather(torch.empty(batch, *small_shape, device=x.device))
    layers = [layer for layer in canonicalizer.net if not isinstance(layer, nn.AdaptiveAvgPool2d)]
    pool = small_shape[-1] // 2 != 4  # the network's adaptive pool to 4×4 is the identity on 8×8 inputs

    def run() -> Tensor:
        with _float32(x.device):
            small = F.adaptive_avg_pool2d(x, small_shape[1:]) if small_shape[1:] != x.shape[-2:] else x
            h = small_gather(small)
            for i, layer in enumerate(layers):
                if pool and i == len(layers) - 2:  # before Flatten
                    h = F.adaptive_avg_pool2d(h, 4)
                h = layer(h)
            best = h.reshape(batch, 8).argmax(dim=1)
            index = (orbit.index_select(0, best) + offsets).reshape(-1)
            rows = x.reshape(-1).index_select(0, index).view(x.shape)
        return model(rows).float()

    return run


def _principal_axes(x: Tensor) -> tuple[Tensor, Tensor]:
    """Clouds ``(B, N, 3)`` -> centred clouds and the covariance eigenvectors ``(B, 3, 3)``, largest eigenvalue first
    (one batched eigh; the axis order decides which coordinate of the moved cloud is which)."""
    centred = x - x.mean(dim=1, keepdim=True)
    return centred, torch.linalg.eigh(centred.transpose(1, 2) @ centred)[1].flip(-1)


def pca_frame_floor(model: nn.Module, x: Tensor, loop: bool) -> Callable[[], Tensor]:
    """Frame averaging over ``o3`` with the PCA frame: the axes, the 8 sign patterns applied in one batched matmul,
    the forwards (one of all copies, or with ``loop`` one per sign pattern, as the limit's two strategies), the mean.
    """
    signs = torch.cartesian_prod(*[torch.tensor([1.0, -1.0], device=x.device)] * 3)  # (8, 3)
    batch = x.shape[0]

    def run() -> Tensor:
        with _float32(x.device):
            axes = _principal_axes(x)[1]
            frames = axes[:, None] * signs[None, :, None, :]  # (B, 8, 3, 3): V·S
            copies = x[:, None] @ frames  # (B, 8, N, 3)
        if loop:
            return torch.stack([model(copies[:, j]).float() for j in range(8)]).mean(0)
        return model(copies.reshape(batch * 8, *x.shape[1:])).float().reshape(batch, 8, -1).mean(1)

    return run


def pca_pose_floor(model: nn.Module, x: Tensor) -> Callable[[], Tensor]:
    """Canonicalization over ``o3`` with the PCA pose: the axes, each axis' sign by the third moment, one matmul,
    one forward."""

    def run() -> Tensor:
        with _float32(x.device):
            centred, axes = _principal_axes(x)
            skew = (centred @ axes).pow(3).sum(dim=1)  # (B, 3)
            posed = x @ (axes * torch.where(skew >= 0, 1.0, -1.0)[:, None, :])
        return model(posed).float()

    return run
