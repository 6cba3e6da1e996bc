"""Mixed precision: the base model runs under the caller's ``torch.autocast``, symwrap's own arithmetic in float32.

A wrapped model called inside ``torch.autocast(device, dtype=torch.bfloat16)`` (or ``float16``) runs every forward
of the base model under that autocast, as the caller asked. Everything symwrap computes around the forwards —
the plan (PCA frames' covariance and ``eigh``, a learned canonicalizer's scores), moving the copies (gathers,
point-cloud matmuls), pulling outputs back, equizero's proxies, λ-equitune's λ-net and normalisation, and the
weighted reduction — runs with autocast disabled, in float32 (float64 inputs stay float64). So the copies are
exact float32 copies of the input, the selection/weights do not flip on bfloat16 rounding, and the sum over the
orbit is a float32 sum: the combined outputs are float32 whatever dtype the forwards returned.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["AutocastState", "as_dtype", "at_least_float32", "autocast_enabled", "float32_or_64"]


@dataclass(frozen=True)
class AutocastState:
    """The autocast setting of one device type at the moment the wrapped model was called.

    Attributes:
        device_type: ``"cpu"``, ``"cuda"``, ...: the device type of the acted input.
        dtype: The autocast dtype (``torch.bfloat16``, ``torch.float16``) or ``None`` when autocast was off.
    """

    device_type: str
    dtype: torch.dtype | None = None

    @classmethod
    def capture(cls, device: torch.device | str) -> AutocastState:
        """The current autocast state for ``device``'s type (off for device types without autocast)."""
        device = torch.device(device)
        if not autocast_enabled(device):
            return cls(device.type)
        return cls(device.type, torch.get_autocast_dtype(device.type))

    @property
    def enabled(self) -> bool:
        """Whether the caller had autocast on."""
        return self.dtype is not None

    def full_precision(self) -> AbstractContextManager[object]:
        """A context with autocast disabled (a no-op when the caller had it off): symwrap's own arithmetic."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, enabled=False)

    def model_precision(self) -> AbstractContextManager[object]:
        """A context with the caller's autocast restored (a no-op when it was off): the base model's forwards."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def autocast_enabled(device: torch.device) -> bool:
    """Whether autocast is on for ``device``'s type (a cheap test, before a call is bound)."""
    device_type = device.type
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def at_least_float32(value: Tensor) -> Tensor:
    """``value`` in float32 when it is a lower-precision float (float16, bfloat16), otherwise unchanged."""
    if value.is_floating_point() and torch.finfo(value.dtype).bits < 32:
        return value.float()
    return value


def float32_or_64(value: Tensor) -> Tensor:
    """``value`` in float32, float64 kept (symwrap's own arithmetic); no dispatch when it already is one of them
    (this runs on every call)."""
    if value.dtype is torch.float32 or value.dtype is torch.float64:
        return value
    return value.float()


def as_dtype(value: Tensor, dtype: torch.dtype) -> Tensor:
    """``value`` in ``dtype``; no dispatch when it already is (this runs on every call)."""
    return value if value.dtype == dtype else value.to(dtype)
