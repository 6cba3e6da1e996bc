"""Raw text as acted data: :class:`TextBatch`, a list of ``B`` strings the orbit engine carries like a tensor.

Groups that act on text before tokenization (word swaps) move strings, not tensors. The engine and the
methods only read three things from the data the group acts on: ``x.shape[0]`` (the batch size ``B``),
``x.device`` (where to put element codes) and ``x.dtype`` (a cache key). A :class:`TextBatch` is a ``list``
of ``str`` with exactly those three attributes (``shape == (B,)``, ``device`` CPU, ``dtype`` ``None``), so
text flows through ``bind`` -> ``plan`` -> ``expand`` -> ``evaluate`` unchanged, and the model receives a
``list`` of strings (what tokenizers take). ``Adapter.bind`` turns a list or tuple of strings passed as the
acted argument into a :class:`TextBatch`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["TextBatch", "is_text"]


def is_text(value: Any) -> bool:
    """Whether ``value`` is a non-empty list or tuple of strings (a batch of raw text)."""
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, str) for v in value)


class TextBatch(list):
    """A batch of ``B`` raw strings, shape ``(B,)``, on the CPU (a ``list`` subclass).

    Args:
        texts: The strings.
    """

    dtype = None
    device = torch.device("cpu")
    ndim = 1

    def __init__(self, texts: Iterable[str] = ()) -> None:
        super().__init__(texts)

    @property
    def shape(self) -> torch.Size:
        return torch.Size([len(self)])

    def to(self, *args: Any, **kwargs: Any) -> TextBatch:
        """Strings live on the host; moving them is a no-op (tensor-like API)."""
        return self
