"""Text models that take raw text, so groups can act on the text before tokenization (word swaps)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from symwrap.errors import ConfigError

__all__ = ["TextEncoder", "check_tokenizer_matches"]

_POOLING = ("mean", "cls", "pooler")


def check_tokenizer_matches(model: nn.Module, tokenizer: Any) -> None:
    """Raise :class:`ConfigError` when ``tokenizer`` can produce ids the model has no embedding for."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = getattr(embeddings, "num_embeddings", None)
    if rows is None or not hasattr(tokenizer, "__len__"):
        return
    if len(tokenizer) > rows:
        raise ConfigError(
            f"tokenizer/model mismatch: the tokenizer ({type(tokenizer).__name__}) has {len(tokenizer)} tokens but "
            f"the model's input embeddings have {rows} rows, so some token ids would index past them. Load the "
            "tokenizer from the same checkpoint as the model: AutoTokenizer.from_pretrained(<the model's folder>)."
        )


class TextEncoder(nn.Module):
    """A Hugging Face encoder that takes raw text and returns one embedding per sentence ``(B, D)``.

    Args:
        model: An encoder (``AutoModel``: BERT, MiniLM, RoBERTa...) returning ``last_hidden_state``.
        tokenizer: Its tokenizer (from the same checkpoint; checked against the embedding size).
        pooling: ``"mean"`` (masked mean over tokens, as sentence-transformers' MiniLM), ``"cls"`` (first token)
            or ``"pooler"`` (the model's ``pooler_output``).
        normalize: L2-normalise the embeddings.
        max_length: Truncate longer texts (``None``: the tokenizer's limit).

    Example:
        >>> model, tokenizer = AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)  # doctest: +SKIP
        >>> fair = symwrap.wrap(TextEncoder(model, tokenizer), "gender_swap")  # "he ..." == "she ..."  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        pooling: str = "mean",
        normalize: bool = False,
        max_length: int | None = None,
    ) -> None:
        super().__init__()
        if pooling not in _POOLING:
            raise ConfigError(f"invalid option 'pooling': {pooling!r}; use one of {', '.join(_POOLING)}")
        check_tokenizer_matches(model, tokenizer)
        self.model, self.tokenizer = model, tokenizer
        self.pooling, self.normalize, self.max_length = pooling, normalize, max_length

    def forward(self, text: Sequence[str]) -> Tensor:
        """Embed ``B`` sentences -> ``(B, D)``. Padding tokens are masked out, so a sentence's embedding does
        not depend on the other sentences of its batch (up to float round-off)."""
        if isinstance(text, str) or not isinstance(text, Sequence):
            raise ConfigError(f"TextEncoder takes a list of strings, got {type(text).__name__}; wrap one in [text]")
        device = next(self.model.parameters()).device
        batch = self.tokenizer(
            list(text), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(device)
        out = self.model(**batch)
        if self.pooling == "pooler":
            embeddings = out.pooler_output
        elif self.pooling == "cls":
            embeddings = out.last_hidden_state[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(out.last_hidden_state.dtype)
            embeddings = (out.last_hidden_state * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        return F.normalize(embeddings, dim=-1) if self.normalize else embeddings

    def features_and_output(self, text: Sequence[str]) -> tuple[Tensor, Tensor]:
        """For λ-nets: the embedding is both the features and the output."""
        embeddings = self(text)
        return embeddings, embeddings

    @torch.no_grad()
    def similarity(self, a: Sequence[str], b: Sequence[str]) -> Tensor:
        """Cosine similarity of the embeddings of ``a[i]`` and ``b[i]``, ``(B,)``."""
        return F.cosine_similarity(self(a), self(b), dim=-1)
