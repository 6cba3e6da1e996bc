"""``--precision {fp32,bf16,fp16}``: autocast for the forward passes, refused where the hardware lacks it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from symwrap.errors import ConfigError

__all__ = ["PRECISIONS", "autocast", "check_precision", "precision_supported"]

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_supported(precision: str, device: torch.device) -> str | None:
    """Why ``precision`` cannot run on ``device`` (a sentence), or ``None`` when it can.

    CUDA asks the driver (``torch.cuda.is_bf16_supported``); other devices run a tiny convolution and linear
    layer under autocast, so a build or CPU that lacks the kernels is caught before the run starts.
    """
    if precision == "fp32":
        return None
    dtype = PRECISIONS[precision]
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        return f"the GPU {torch.cuda.get_device_name(device)} does not support bfloat16"
    probe = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2)).to(device)
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype):
            out = probe(torch.zeros(1, 1, 4, 4, device=device))
    except (RuntimeError, TypeError) as exc:
        return f"autocast to {dtype} fails on {device.type}: {exc}"
    if out.dtype != dtype:
        return f"autocast on {device.type} ran the probe in {out.dtype}, not {dtype}"
    return None


def check_precision(precision: str, device: torch.device) -> None:
    """Raise :class:`ConfigError` naming ``--precision`` when the hardware cannot run it."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    problem = precision_supported(precision, device)
    if problem:
        raise ConfigError(f"--precision {precision}: {problem}. Use --precision fp32 (or fp16/bf16 where supported).")


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """Autocast the block to ``precision`` (no-op for fp32)."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device.type, dtype=PRECISIONS[precision]):
        yield
