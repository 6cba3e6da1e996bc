"""A learned canonicalizer for finite groups acting on images (Kaba et al. 2023; Mondal et al. 2023).

A small CNN ``φ`` (deliberately *not* invariant) scores each of the |G| transformed copies of a downscaled
input, ``s_j(x) = φ(g_j·↓x)``, and the canonicalizing element is ``a(x) = g_{argmax_j s_j(x)}``. Because
``s_j(h·x) = s_{j'}(x)`` with ``g_{j'} = g_j·h``, the argmax moves with the input, ``a(h·x) = a(x)·h⁻¹``, so
``a(h·x)·(h·x) = a(x)·x``: equivariant by construction, whatever φ's weights (Kaba et al., "Equivariance with
Learned Canonicalization Functions", ICML 2023, arXiv 2211.06489). The downscaling is
``adaptive_avg_pool2d``, whose bins are symmetric under the square's symmetries, so it commutes with them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from symwrap.actions.image import ImageAction
from symwrap.caches import keep_newest
from symwrap.errors import InputLayoutError
from symwrap.groups.base import Group
from symwrap.tracing import caches_off

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
        # The last few input layouts' gathers of the |G| copies (one index_select each): the same group elements
        # and shape every call, so the index is built once (cuts ~0.1 ms a call at B = 1 on CPU).
        self._gathers: dict[tuple, tuple[Tensor, Group, Callable[[Tensor], Tensor], Tensor, int]] = {}

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
        param = self.net[0].weight
        if x.dtype is param.dtype and x.device == param.device:
            return x
        return x.to(dtype=param.dtype, device=param.device)

    def __getstate__(self) -> dict:
        """The module's state without the gathers (closures, rebuilt on the first call): pickle, deepcopy and
        ``torch.save`` copy the weights only."""
        state = super().__getstate__()
        state["_gathers"] = {}
        return state

    def forward(self, x: Tensor, group: Group, elements: Tensor) -> Tensor:
        """Scores ``(B, |G|)``: column ``j`` scores ``elements[j]·x``.

        Args:
            x: ``(B, C, H, W)`` images.
            group: The finite group the elements belong to.
            elements: ``(|G|, 2, 2)`` its elements (``elements[0]`` the identity).
        """
        small = self.downscale(x)
        batch, order = small.shape[0], elements.shape[0]
        h = self._copies(small, group, elements)
        for layer in self.net:
            if isinstance(layer, nn.AdaptiveAvgPool2d) and h.shape[-2:] == (4, 4):
                continue  # pooling 4×4 to 4×4 averages one value per bin: the identity, exactly
            h = layer(h)
        return h.reshape(batch, order)

    def lean_scores(self, x: Tensor, group: Group, elements: Tensor) -> Callable[[Tensor], Tensor] | None:
        """:meth:`forward` for images of ``x``'s layout ``(B, C, H, W)``, with the layout's decisions made once: the
        downscaling, and the gather of the copies (no cache lookup per call). The function gives exactly
        ``self(x, group, elements)``; it calls the module instead when hooks are registered on it, or when its
        weights' dtype or device or the elements' values changed since. ``None`` when :meth:`forward` would cast
        ``x`` (another dtype or device than the weights)."""
        small = self.downscale(x)  # the layout's error, if any
        param = self.net[0].weight
        if x.dtype is not param.dtype or x.device != param.device:
            return None
        elements = elements.to(x.device)
        gather = self._action.row_gather(small, *_orbit_rows(small, elements), group)
        pool = small.shape[-2:] if small.shape != x.shape else None
        batch, order, version = x.shape[0], elements.shape[0], elements._version

        def scores(x: Tensor) -> Tensor:
            weight = self.net[0].weight
            if (
                elements._version != version
                or weight.dtype is not x.dtype
                or weight.device != x.device
                or _hooked(self)
            ):
                return self(x, group, elements)
            h = gather(F.adaptive_avg_pool2d(x, pool) if pool is not None else x)
            for layer in self.net:
                if isinstance(layer, nn.AdaptiveAvgPool2d) and h.shape[-2:] == (4, 4):
                    continue  # as in forward
                h = layer(h)
            return h.reshape(batch, order)

        return scores

    def _copies(self, small: Tensor, group: Group, elements: Tensor) -> Tensor:
        """``(B·|G|, C, h, w)`` copies, row ``b·|G| + j`` = ``elements[j]·small[b]``.

        The gather (one ``index_select`` for exact groups) is precomputed once per (shape, dtype, device, group)
        and reused while the elements have the same values, so the result never depends on the cache.
        """
        if elements.device != small.device:
            elements = elements.to(small.device)
        if torch.compiler.is_compiling() or caches_off():
            return self._action.apply(small, *_orbit_rows(small, elements), group)
        key = (tuple(small.shape), small.dtype, small.device, id(group), tuple(elements.shape))
        cached = self._gathers.get(key)
        # ids are only reused by dead objects: the group held in the entry proves it is the same one. The elements
        # are the group's cached tensor (Group.elements_on) call after call: the same object at the same version
        # holds the same values; anything else is compared by value against a private copy (one torch.equal)
        if cached is not None and cached[1] is group:
            same = cached[3] is elements and cached[4] == elements._version
            if same or torch.equal(cached[0], elements):
                return cached[2](small)
        gather = self._action.row_gather(small, *_orbit_rows(small, elements), group)
        keep_newest(self._gathers, key, (elements.clone(), group, gather, elements, elements._version), 8)
        return gather(small)


def _hooked(module: nn.Module) -> bool:
    """Whether calling ``module`` would run hooks (its own, or global ones) around its ``forward``."""
    hooks = nn.modules.module
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
        or hooks._global_forward_hooks
        or hooks._global_forward_pre_hooks
        or hooks._global_backward_hooks
        or hooks._global_backward_pre_hooks
    )


def _orbit_rows(small: Tensor, elements: Tensor) -> tuple[Tensor, Tensor]:
    """``src`` ``(B·|G|,)`` and element codes ``(B·|G|, 2, 2)`` of the rows ``b·|G| + j`` = ``elements[j]·small[b]``."""
    batch, order = small.shape[0], elements.shape[0]
    src = torch.arange(batch, device=small.device).repeat_interleave(order)
    return src, elements.repeat(batch, 1, 1)
