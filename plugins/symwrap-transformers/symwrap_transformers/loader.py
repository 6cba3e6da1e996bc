"""The ``hf`` model loader for ``symwrap eval``: ``hf:NAME_OR_FOLDER`` -> image classifier and its processor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from symwrap.errors import ConfigError
from symwrap.evaluation.loading import LoadedModel, load_from_hub

__all__ = ["load_hf"]


def load_hf(name: str, *, pretrained: bool | str | None = None, device: str = "cpu", **options: Any) -> LoadedModel:
    """Load an image classifier with ``AutoModelForImageClassification`` and its ``AutoImageProcessor``.

    Args:
        name: A local folder (``save_pretrained`` output) or a hub name (``"google/vit-base-patch16-224"``,
            downloaded the first time).
        pretrained: ``True``: the weights in ``name`` (``from_pretrained``). ``False``: random init from
            ``name``'s config (offline for a local folder). ``None`` (the default): the weights of a local folder
            (``hf:./my-vit`` evaluates ``./my-vit``), random init for a hub name (nothing downloaded unless asked).
            A string: a hub revision (branch, tag or commit). Without a network, a hub name loads from the local
            cache or raises :class:`~symwrap.evaluation.loading.HubUnreachableError` within seconds.
        device: Where to put the model.
        **options: Passed to ``from_pretrained`` / the config (``num_labels=10``).

    Returns:
        A :class:`LoadedModel`; ``preprocess`` is the image processor (PIL image -> ``(3, H, W)``), and the class
        names come from the config's ``id2label``.
    """
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

    local = Path(name).is_dir()
    if not local and (name.startswith((".", "/", "~")) or Path(name).exists()):
        raise ConfigError(
            f"hf:{name}: no folder {name!r}. Give a folder written by save_pretrained, or a hub name (org/model)."
        )
    if pretrained is None:  # a local save_pretrained folder is evaluated with its own weights, not re-initialised
        pretrained = local
    revision = {"revision": pretrained} if isinstance(pretrained, str) else {}

    def load() -> tuple[Any, Any]:
        if pretrained:
            model = AutoModelForImageClassification.from_pretrained(name, **revision, **options)
        else:
            config = AutoConfig.from_pretrained(name, **options)
            model = AutoModelForImageClassification.from_config(config)
        return model, AutoImageProcessor.from_pretrained(name, **revision)

    model, processor = load() if local else load_from_hub(f"hf:{name}", load)
    model = model.eval().to(device)

    def preprocess(image: Any) -> Any:
        return processor(images=image, return_tensors="pt")["pixel_values"][0]

    size = getattr(processor, "crop_size", None) or getattr(processor, "size", None) or {}
    size = dict(size) if size else {}
    input_size = (int(size["height"]), int(size["width"])) if "height" in size and "width" in size else None
    id2label = getattr(model.config, "id2label", None) or {}
    class_names = [id2label[i] for i in sorted(id2label)] if id2label else None
    return LoadedModel(model, preprocess, input_size, class_names, {"select": "logits"})
