"""Zero-shot image classification with a Hugging Face ``CLIPModel``: class text embeddings computed once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from symwrap.prompts import validate_prompts

__all__ = ["CLIPZeroShotClassifier", "validate_prompts"]  # validate_prompts: re-exported from symwrap.prompts


class CLIPZeroShotClassifier(nn.Module):
    """Classifies images ``(B, 3, H, W)`` into ``class_names`` with a ``CLIPModel``: logits ``(B, classes)``.

    The text side runs once, here: each class's prompt embeddings (one per template) are normalised,
    averaged and normalised again (the CLIP paper's prompt ensembling) into a ``(classes, D)`` buffer.
    ``forward`` encodes only images, so wrapping this head symmetrizes the image side alone.

    Args:
        model: A ``transformers.CLIPModel``.
        tokenizer: Its tokenizer (or processor with a ``tokenizer``).
        class_names: The classes, in output order.
        templates: Prompt templates with a ``{}`` slot.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        class_names: Sequence[str],
        templates: Sequence[str] = ("a photo of a {}.",),
    ) -> None:
        super().__init__()
        validate_prompts(class_names, templates)
        self.model = model
        self.class_names, self.templates = list(class_names), list(templates)
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        self.register_buffer("class_embeddings", self._encode_classes(tokenizer), persistent=False)

    @torch.no_grad()
    def _encode_classes(self, tokenizer: Any) -> Tensor:
        device = next(self.model.parameters()).device
        prompts = [t.format(name) for name in self.class_names for t in self.templates]
        batch = tokenizer(prompts, padding=True, return_tensors="pt").to(device)
        text = _pooled(self.model.get_text_features(**batch))
        text = F.normalize(text, dim=-1).reshape(len(self.class_names), len(self.templates), -1).mean(dim=1)
        return F.normalize(text, dim=-1)

    def image_features(self, pixel_values: Tensor) -> Tensor:
        """Normalised image embeddings ``(B, D)``."""
        return F.normalize(_pooled(self.model.get_image_features(pixel_values=pixel_values)), dim=-1)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """Logits ``(B, classes)``: scaled cosine similarities of the images to the class embeddings."""
        return self.logits_from_features(self.image_features(pixel_values))

    def logits_from_features(self, features: Tensor) -> Tensor:
        return self.model.logit_scale.exp() * features @ self.class_embeddings.t()

    def features_and_output(self, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        """For λ-nets: the normalised image embeddings and the logits."""
        features = self.image_features(pixel_values)
        return features, self.logits_from_features(features)


def _pooled(output: Any) -> Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or an output whose ``pooler_output`` it is (5)."""
    return output if isinstance(output, Tensor) else output.pooler_output
