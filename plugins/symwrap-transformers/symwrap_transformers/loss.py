"""The loss of the symmetrized prediction for Hugging Face heads, with the base model's own loss semantics.

A wrapped HF model called with ``labels=`` runs the copies without the labels, combines their outputs, and
computes the loss once, from the combined output, the way the base model's head would from its own: so the
training signal is that of the model you deploy (the symmetrized one), not a mean of per-copy losses.

* ``*ForSequenceClassification``, ``*ForImageClassification``, ``*ForAudioClassification``,
  ``*ForVideoClassification``: ``config.problem_type`` (when unset: one label -> regression, integer labels ->
  single-label, else multi-label) gives mean squared error (the single output squeezed), cross-entropy, or
  binary cross-entropy on logits.
* ``*ForTokenClassification`` and ``*ForMaskedLM``: cross-entropy per token, ``-100`` ignored.
* ``*ForCausalLM`` / ``*LMHeadModel``: the logits at position ``t`` predict the label at ``t + 1`` (labels shifted
  left, the last position ignored), ``-100`` ignored.

Cross-entropy losses are means over the counted targets, or sums divided by ``num_items_in_batch`` when HF
``Trainer`` passes it (gradient accumulation). Combined in ``reduce="log_probs"`` the output is already a
log-probability and cross-entropy applies as is; in ``reduce="probs"`` its log is taken.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from symwrap.errors import ConfigError, IncompatibleModelError

__all__ = ["loss_family", "symmetrized_loss"]

_CLASSIFICATION = ("ForSequenceClassification", "ForImageClassification", "ForAudioClassification")
_CLASSIFICATION += ("ForVideoClassification",)
_FAMILIES = {
    **dict.fromkeys(_CLASSIFICATION, "classification"),
    "ForTokenClassification": "tokens",
    "ForMaskedLM": "tokens",
    "ForCausalLM": "causal",
    "LMHeadModel": "causal",
}


def loss_family(model: nn.Module) -> str | None:
    """``"classification"``, ``"tokens"``, ``"causal"`` by the model class's name, or ``None`` (no loss known)."""
    name = type(model).__name__
    return next((family for suffix, family in _FAMILIES.items() if name.endswith(suffix)), None)


def _cross_entropy(scores: Tensor, targets: Tensor, num_items_in_batch: Any) -> Tensor:
    if num_items_in_batch is None:
        return F.cross_entropy(scores, targets, ignore_index=-100)
    total = F.cross_entropy(scores, targets, ignore_index=-100, reduction="sum")
    if isinstance(num_items_in_batch, Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def _as_log_scores(logits: Tensor, reduce: str) -> Tensor:
    """Scores whose softmax is the combined prediction: logits as they are, log-probs as they are, log of probs."""
    if reduce == "probs":
        return logits.clamp_min(torch.finfo(logits.dtype).tiny).log()
    return logits


def symmetrized_loss(
    model: nn.Module, logits: Tensor, labels: Tensor, reduce: str, num_items_in_batch: Any = None
) -> Tensor:
    """The base model's loss of the combined ``logits`` against ``labels``.

    Args:
        model: The base HF model (its class name and ``config`` give the loss).
        logits: The combined logits: ``(B, num_labels)`` for classification, ``(B, T, V)`` for language models
            and token classification.
        labels: As the base model takes them.
        reduce: The space the logits were combined in (``symwrap.wrap(reduce=...)``).
        num_items_in_batch: Divides summed cross-entropies instead of a mean (passed by HF ``Trainer``).

    Raises:
        IncompatibleModelError: The model's head has no loss known here.
        ConfigError: ``reduce`` does not fit the loss (regression and multi-label need ``"logits"``).
    """
    family = loss_family(model)
    logits = logits.float()
    labels = labels.to(logits.device)
    if family == "causal":
        shifted = F.pad(labels, (0, 1), value=-100)[..., 1:]
        scores = _as_log_scores(logits, reduce)
        return _cross_entropy(scores.reshape(-1, scores.shape[-1]), shifted.reshape(-1), num_items_in_batch)
    if family == "tokens":
        scores = _as_log_scores(logits, reduce)
        return _cross_entropy(scores.reshape(-1, scores.shape[-1]), labels.reshape(-1), num_items_in_batch)
    if family == "classification":
        config = model.config
        problem = config.problem_type
        if problem is None:  # what the base head decides on its first labelled call (and writes to its config)
            if config.num_labels == 1:
                problem = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem = "single_label_classification"
            else:
                problem = "multi_label_classification"
            config.problem_type = problem
        if problem == "single_label_classification":
            scores = _as_log_scores(logits, reduce)
            return _cross_entropy(scores.reshape(-1, config.num_labels), labels.reshape(-1), num_items_in_batch)
        if reduce != "logits":
            raise ConfigError(
                f"problem_type {problem!r} takes its loss from raw outputs, but the wrapper combines them as "
                f"reduce={reduce!r}; wrap with reduce='logits' to train a {type(model).__name__} with labels"
            )
        if problem == "regression":
            if config.num_labels == 1:
                return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
            return F.mse_loss(logits, labels.to(logits.dtype))
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    raise IncompatibleModelError(
        f"symwrap computes the loss of the symmetrized prediction for HF classification, token-classification, "
        f"masked-LM and causal-LM heads; a {type(model).__name__} is none of these. Call the wrapper without labels "
        "and compute the loss from its combined output, or call wrapped.base_model(..., labels=...) for the base "
        "model's own (unsymmetrized) loss."
    )
