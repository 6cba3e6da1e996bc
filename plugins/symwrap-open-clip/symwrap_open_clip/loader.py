"""The ``open_clip`` model loader for ``symwrap eval``: ``open_clip:ARCH@PRETRAINED`` -> zero-shot classifier."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from symwrap.errors import ConfigError
from symwrap.evaluation.loading import LoadedModel, UnknownBackboneError, load_from_hub
from symwrap_open_clip.zero_shot import ZeroShotClassifier

__all__ = ["load_open_clip"]


def load_open_clip(
    name: str,
    *,
    pretrained: bool | str | None = None,
    device: str = "cpu",
    class_names: list[str] | None = None,
    templates: list[Any] | None = None,
    **options: Any,
) -> LoadedModel:
    """Create an open_clip model with ``create_model_and_transforms`` and wrap it in a :class:`ZeroShotClassifier`.

    Args:
        name: ``"ARCH"`` or ``"ARCH@PRETRAINED"`` (``"ViT-B-32@openai"``, ``"RN50@openai"``).
        pretrained: ``None``: the weights named after ``@`` in ``name`` (downloaded the first time), random init
            without a tag. ``False``: random init (offline), refused with a tag. ``True``: the weights named after
            ``@`` (required). Without a network, weights come from the local cache or a
            :class:`~symwrap.evaluation.loading.HubUnreachableError` is raised within seconds. A string: that
            pretrained tag or a local checkpoint path (open_clip loads it).
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
    if arch not in open_clip.list_models():
        raise UnknownBackboneError(
            "open_clip architecture", arch, open_clip.list_models(), "open_clip.list_models() lists them."
        )
    if tag and pretrained is False:
        raise ConfigError(
            f"open_clip:{arch}@{tag} names the {tag!r} weights, but --pretrained false asks for a random init; "
            f"write open_clip:{arch} for a random init, or drop --pretrained false"
        )
    if tag and pretrained is None:  # ARCH@TAG means those weights, never a silent random init
        pretrained = True
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
    if weights is not None and not Path(weights).is_file():
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if weights not in tags:
            raise UnknownBackboneError(
                f"weights tag of open_clip {arch}",
                weights,
                tags,
                f"{arch} has these published weights: {', '.join(tags) or 'none'} (or give a local checkpoint file).",
            )
        model, _, preprocess = load_from_hub(
            f"open_clip:{arch}@{weights}",
            lambda: open_clip.create_model_and_transforms(arch, pretrained=weights, device=device, **options),
        )
    else:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=weights, device=device, **options)
    model = model.eval()
    tokenizer = open_clip.get_tokenizer(arch, context_length=getattr(model, "context_length", None))
    classifier = ZeroShotClassifier(model, tokenizer, class_names, templates).eval()
    size = model.visual.image_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    return LoadedModel(classifier, preprocess, (int(size[0]), int(size[1])), classifier.class_names, {})
