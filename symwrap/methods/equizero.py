"""Equizero: evaluate the whole orbit and keep, per input, the copy with the lowest proxy loss.

    f_0(x) = g*⁻¹·f(g*·x),   g* = argmin_g proxy(f(g·x))

Basu et al., "Efficient Equivariant Transfer Learning from Pretrained Models", NeurIPS 2023,
arXiv 2305.09900. For ``h·x`` the orbit is the same set of copies, so the same copy wins and the output is
exactly invariant (equivariant after the pull-back) as long as the proxy has a unique minimum.

Ties are broken deterministically: among equal losses the copy with the lowest element index wins (the
order of ``group.elements()``, identity first). On tied inputs the selection, and hence invariance, depends
on that order, so exactness is only promised on inputs without ties.

Proxies (registry kind ``"proxy"``, through the ``symwrap_register_proxies`` hook) map the pulled-back outputs
of the copies ``(B, k, ...)`` to losses ``(B, k)``; a proxy that also takes ``class_dim`` gets the class axis
of the ``(B, k, ...)`` tensor (from ``wrap(class_dim=...)``, default the last axis). Built in: ``entropy``
(predictive entropy of the softmax), ``max_prob`` (minus the top-1 probability: the most confident copy
wins), ``max_logit`` (minus the largest logit). Dense outputs ``(B, k, C, H, W)`` are scored per position and
averaged. NaN losses never win.

Straight-through training (``straight_through=True``): the forward value is the selected copy, and the
gradient flows as through group averaging (all copies, weights 1/|G|), as the paper does for fine-tuning.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from symwrap.autocast import float32_or_64
from symwrap.config import option, require
from symwrap.errors import ConfigError
from symwrap.methods.base import Plan, Reweighing
from symwrap.methods.group_averaging import GroupAveraging

__all__ = ["Equizero", "EquizeroOptions", "entropy", "lowest", "max_logit", "max_prob", "select_lowest"]

Proxy = Callable[..., Tensor]


def _per_copy(values: Tensor) -> Tensor:
    """Mean over every axis after ``(B, k)`` of per-position values."""
    return values.reshape(*values.shape[:2], -1).mean(dim=-1) if values.ndim > 2 else values


def entropy(outputs: Tensor, class_dim: int = -1) -> Tensor:
    """Predictive entropy of ``softmax(outputs)`` along ``class_dim``: ``(B, k, ...)`` -> ``(B, k)``."""
    log_p = torch.log_softmax(float32_or_64(outputs), dim=class_dim)
    return _per_copy(-(log_p.exp() * log_p).sum(dim=class_dim))


def max_prob(outputs: Tensor, class_dim: int = -1) -> Tensor:
    """Minus the top-1 probability (the most confident copy has the lowest loss): ``(B, k, ...)`` -> ``(B, k)``."""
    return _per_copy(-torch.softmax(float32_or_64(outputs), dim=class_dim).amax(dim=class_dim))


def max_logit(outputs: Tensor, class_dim: int = -1) -> Tensor:
    """Minus the largest raw output along ``class_dim``: ``(B, k, ...)`` -> ``(B, k)``."""
    return _per_copy(-float32_or_64(outputs).amax(dim=class_dim))


def lowest(losses: Tensor) -> Tensor:
    """The index ``(B,)`` of the lowest loss per row of ``(B, k)``; ties go to the lowest index, NaN never wins."""
    losses = torch.nan_to_num(float32_or_64(losses), nan=torch.inf)  # argmin would pick a NaN
    return losses.argmin(dim=1)  # documented: the first index among equal minima


def select_lowest(losses: Tensor) -> Tensor:
    """One-hot ``(B, k)`` weights on the lowest loss per row; ties go to the lowest index, NaN never wins."""
    return Reweighing(selected=lowest(losses), copies=losses.shape[1]).weights


@dataclass
class EquizeroOptions:
    # A plain field (not option()): ruff cannot tell that this default is immutable.
    proxy: str | Proxy = field(
        default="entropy",
        metadata={
            "help": "proxy loss: a registered name (entropy, max_prob, max_logit) or a callable (B, k, ...) -> (B, k)"
        },
    )
    straight_through: bool = option(
        False, "training: forward uses the selected copy, the gradient flows as through group averaging"
    )

    def __post_init__(self) -> None:
        if isinstance(self.proxy, str):
            from symwrap.plugins import get_registry  # the registry loads plugins; not at import time

            get_registry("proxy").lookup(self.proxy)  # UnknownNameError with close matches
        else:
            require(callable(self.proxy), "proxy", f"must be a proxy name or a callable, got {self.proxy!r}")
        require(isinstance(self.straight_through, bool), "straight_through", "must be True or False")


class Equizero(GroupAveraging):
    """Select, per input, the orbit copy with the lowest proxy loss (see the module docstring)."""

    name: ClassVar[str] = "equizero"
    Options: ClassVar[type] = EquizeroOptions
    reweighs: ClassVar[bool] = True

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        proxy = self.options.proxy
        if isinstance(proxy, str):
            from symwrap.plugins import get_registry

            self._proxy_name, self._proxy = proxy, get_registry("proxy").lookup(proxy)[0].factory
        else:
            self._proxy_name, self._proxy = getattr(proxy, "__name__", repr(proxy)), proxy
        try:
            self._takes_class_dim = "class_dim" in inspect.signature(self._proxy).parameters
        except (TypeError, ValueError):
            self._takes_class_dim = False

    def losses(self, outputs: Tensor, class_dim: int = -1) -> Tensor:
        """The proxy losses ``(B, k)`` of outputs ``(B, k, ...)``; ``class_dim`` is the axis of one input's output."""
        dim = class_dim + 1 if class_dim >= 0 else class_dim  # the same axis once the copy axis k is inserted
        losses = self._proxy(outputs, class_dim=dim) if self._takes_class_dim else self._proxy(outputs)
        expected = tuple(outputs.shape[:2])
        if not isinstance(losses, Tensor) or tuple(losses.shape) != expected:
            got = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise ConfigError(
                f"invalid option 'proxy': proxy {self._proxy_name!r} returned {got}, but a proxy must map the "
                f"outputs of the copies {tuple(outputs.shape)} (B, k, ...) to one loss per copy, shape (B, k) = "
                f"{expected}. Reduce the other axes inside the proxy (e.g. .mean(dim=-1))."
            )
        return losses

    def reweigh(self, plan: Plan, values: list[Tensor], features: Tensor | None, class_dim: int = -1) -> Reweighing:
        # the selection is a discrete choice; gradients flow through the outputs
        if torch.is_grad_enabled():
            with torch.no_grad():
                index = lowest(self.losses(values[0].detach(), class_dim))
        else:
            index = lowest(self.losses(values[0], class_dim))
        if index.device != plan.weights.device:
            index = index.to(plan.weights.device)
        gradient = plan.weights if self.options.straight_through else None
        return Reweighing(gradient_weights=gradient, selected=index, copies=plan.copies)

    def options_dict(self) -> dict[str, Any]:
        return {"proxy": self.options.proxy, "straight_through": self.options.straight_through}
