"""Whether a wrapped call is being recorded rather than run: ``torch.export``, ``torch.jit.trace``, ONNX export.

A recorded call must neither read nor fill symwrap's eager caches (the chunk tuner, ``Group.elements_on``, the image
action's index tables, the last plan): what it would store are placeholder tensors (``FakeTensor``, symbolic sizes)
that make every later eager call fail, and what it would read are values of earlier calls baked into the graph.
The caches ask :func:`caches_off` before they look; the wrapper turns it on for calls on placeholder inputs
(:func:`is_placeholder`) with :func:`no_caches`.

``torch.compile`` is not "recording" here: dynamo replays a cache's side effects with real tensors and guards on
what it read, so compiled calls keep the caches (and their speed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["caches_off", "is_placeholder", "no_caches", "recording", "recording_kind"]

#: Depth of :func:`no_caches` blocks in progress (any thread: another thread's eager call only skips the caches while
#: one is open, which is slower, never wrong). A plain int rather than a thread-local, so strict export can read it.
_NO_CACHES = [0]


def recording_kind() -> str | None:
    """``"torch.export"``, ``"torch.onnx.export"`` (the legacy TorchScript exporter) or ``"torch.jit.trace"`` while one
    of them records the current call, else ``None``."""
    if torch.compiler.is_exporting():
        return "torch.export"
    if torch.jit.is_tracing():
        return "torch.onnx.export" if torch.onnx.is_in_onnx_export() else "torch.jit.trace"
    return None


def recording() -> bool:
    """Whether ``torch.export``, ``torch.jit.trace`` or the ONNX exporter records the current call."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


def caches_off() -> bool:
    """Whether caches must be bypassed now: while recording, or inside :func:`no_caches`."""
    return _NO_CACHES[0] > 0 or torch.compiler.is_exporting() or torch.jit.is_tracing()


@contextlib.contextmanager
def no_caches() -> Iterator[None]:
    """Within the block, every symwrap cache is bypassed (neither read nor filled)."""
    _NO_CACHES[0] += 1
    try:
        yield
    finally:
        _NO_CACHES[0] -= 1


def is_placeholder(value: Any) -> bool:
    """Whether ``value`` is a tensor subclass standing in for data (``FakeTensor``, a functional tensor) rather than
    a plain tensor or parameter: a call on it is traced by some tool, whatever the tool."""
    return isinstance(value, Tensor) and type(value) is not Tensor and not isinstance(value, nn.Parameter)
