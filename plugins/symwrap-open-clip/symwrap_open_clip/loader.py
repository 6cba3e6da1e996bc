"""The ``open_clip`` model loader for ``symwrap eval``: ``open_clip:ARCH@PRETRAINED`` -> zero-shot classifier."""

from __future__ import annotations

from typing import Any

from symwrap.errors import ConfigError
from symwrap.evaluation.loading import LoadedModel
from symwrap_open_clip.zero_shot import ZeroShotClassifier

__all__ = ["load_open_clip"]


def load_open_clip(
    name: str,
    *,
    pretrained: bool | str | None = False,
    device: str = "cpu",
    class_names: list[str] | None = None,
    templates: list[Any] | None = None,
    **options: Any,
) -> LoadedModel:
    """Create an open_clip model with ``create_model_and_transforms`` and wrap it in a :class:`ZeroShotClassifier`.

    Args:
        name: ``"ARCH"`` or ``"ARCH@PRETRAINED"`` (``"ViT-B-32@openai"``, ``"RN50@openai"``).
        pretrained: ``False``/``None``: random init (offline; a tag in ``name`` is ignored). ``True``: the weights
            named after ``@`` in ``name`` (downloaded the first time). A string: that pretrained tag or a local
            checkpoint path (open_clip loads it).
        device: Where to put the model.
        class_names: Class names (default: open_clip's ``IMAGENET_CLASSNAMES``).
        templates: Prompt templates (default: open_clip's ``OPENAI_IMAGENET_TEMPLATES``).
        **options: Passed to ``open_clip.create_model_and_transforms``.

    Returns:
        A :class:`LoadedModel` whose model is the zero-shot classifier (image in, logits out) and whose
        ``preprocess`` is open_clip's evaluation transform.
    """
    import open_clip

    arch, _, tag = name.partition("@")
    if pretrained is True:
        if not tag:
            raise ConfigError(
                f"pretrained=True needs the weights named in the spec, e.g. 'open_clip:{arch}@openai' "
                f"(open_clip.list_pretrained_tags_by_model({arch!r}) lists them)"
            )
        weights: str | None = tag
    elif isinstance(pretrained, str):
        weights = pretrained
    else:
        weights = None
    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=weights, device=device, **options)
    model = model.eval()
    tokenizer = open_clip.get_tokenizer(arch, context_length=getattr(model, "context_length", None))
    classifier = ZeroShotClassifier(model, tokenizer, class_names, templates).eval()
    size = model.visual.image_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    return LoadedModel(classifier, preprocess, (int(size[0]), int(size[1])), classifier.class_names, {})
