"""The generic adapter: any ``torch.nn.Module``, with ``input=`` / ``select=`` selectors."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from symwrap.adapters.base import Adapter

__all__ = ["TorchAdapter"]


class TorchAdapter(Adapter):
    """Calls any ``nn.Module``: the group acts on the first tensor argument (or ``input=``), and every
    floating-point output with a batch dimension is combined (or those named by ``select=``).

    Example:
        ``symwrap.wrap(model, "rot90", adapter="torch", input="pixel_values", select="logits")``
    """

    name: ClassVar[str] = "torch"
    priority: ClassVar[int] = -1000

    @classmethod
    def matches(cls, model: Any) -> bool:
        return isinstance(model, nn.Module)
