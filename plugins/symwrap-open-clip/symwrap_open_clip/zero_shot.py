"""``ZeroShotClassifier``: an open_clip model as an image classifier, class text embeddings built once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from symwrap.prompts import Template, validate_prompts

__all__ = ["Template", "ZeroShotClassifier", "imagenet_metadata"]


def imagenet_metadata() -> tuple[tuple[str, ...], tuple[Template, ...]]:
    """open_clip's own ImageNet class names and the 80 OpenAI prompt templates (not copied here)."""
    from open_clip import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

    return tuple(IMAGENET_CLASSNAMES), tuple(OPENAI_IMAGENET_TEMPLATES)


class ZeroShotClassifier(nn.Module):
    """Classifies images ``(B, 3, H, W)`` into ``class_names`` with an open_clip model: logits ``(B, classes)``.

    The class weights ``(D, classes)`` are built once, here, by open_clip's own
    ``open_clip.build_zero_shot_classifier`` (each class's prompts encoded, normalised, averaged, normalised);
    ``forward`` only encodes images. So ``symwrap.wrap(classifier, "rot90")`` symmetrizes the image side and
    the text tower never runs again, whatever the batch or the group.

    Args:
        model: An open_clip model (``open_clip.create_model_and_transforms(...)[0]``).
        tokenizer: ``open_clip.get_tokenizer(arch)``.
        class_names: Class names in output order (default: open_clip's ``IMAGENET_CLASSNAMES``).
        templates: Prompt templates (default: open_clip's ``OPENAI_IMAGENET_TEMPLATES``).
        classes_per_batch: Classes encoded per text forward while building the weights.

    Example:
        >>> model, _, _ = open_clip.create_model_and_transforms("ViT-B-32", pretrained="openai")  # doctest: +SKIP
        >>> classifier = ZeroShotClassifier(model, open_clip.get_tokenizer("ViT-B-32"))  # doctest: +SKIP
        >>> classifier = symwrap.wrap(classifier, "rot90")  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        class_names: Sequence[str] | None = None,
        templates: Sequence[Template] | None = None,
        *,
        classes_per_batch: int | None = 10,
    ) -> None:
        super().__init__()
        if class_names is None or templates is None:
            default_names, default_templates = imagenet_metadata()
            class_names = default_names if class_names is None else class_names
            templates = default_templates if templates is None else templates
        validate_prompts(class_names, templates, allow_callables=True)
        self.model = model
        self.class_names, self.templates = list(class_names), list(templates)
        self.register_buffer("class_weights", self._build(tokenizer, classes_per_batch), persistent=False)

    @torch.no_grad()
    def _build(self, tokenizer: Any, classes_per_batch: int | None) -> Tensor:
        from open_clip import build_zero_shot_classifier

        device = next(self.model.parameters()).device
        return build_zero_shot_classifier(
            self.model,
            tokenizer,
            self.class_names,
            self.templates,
            num_classes_per_batch=classes_per_batch,
            device=device,
        )

    def image_features(self, image: Tensor) -> Tensor:
        """Normalised ``encode_image`` features ``(B, D)``."""
        return self.model.encode_image(image, normalize=True)

    def logits_from_features(self, features: Tensor) -> Tensor:
        return self.model.logit_scale.exp() * features @ self.class_weights

    def forward(self, image: Tensor) -> Tensor:
        """Logits ``(B, classes)``: scaled cosine similarities of the images to the class weights."""
        return self.logits_from_features(self.image_features(image))

    def features_and_output(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """For λ-nets: ``encode_image`` features (normalised) and the logits."""
        features = self.image_features(image)
        return features, self.logits_from_features(features)
