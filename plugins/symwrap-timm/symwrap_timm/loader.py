"""The ``timm`` model loader for ``symwrap eval``: ``timm:NAME`` -> model and its own preprocessing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from symwrap.errors import ConfigError
from symwrap.evaluation.loading import LoadedModel

__all__ = ["load_timm"]


def load_timm(name: str, *, pretrained: bool | str | None = False, device: str = "cpu", **options: Any) -> LoadedModel:
    """Create a timm model and its evaluation transform.

    Args:
        name: A timm model name (``"resnet50"``, ``"vit_base_patch16_224.augreg_in21k"``).
        pretrained: ``False``/``None``: random init (offline). ``True``: timm's default published weights
            (downloaded from the Hugging Face hub the first time). A tag (``"a1_in1k"``): those weights
            (``NAME.TAG``). A path to a local ``.safetensors``/``.pth`` checkpoint of this architecture (all
            weights, head included): loaded offline through ``timm.create_model(..., checkpoint_path=path)``,
            which reads safetensors or ``torch.load(weights_only=True)``, never an arbitrary pickle.
        device: Where to put the model.
        **options: Passed to ``timm.create_model`` (``num_classes=10``, ``img_size=...``).

    Returns:
        A :class:`LoadedModel` with ``timm.data.create_transform(**resolve_data_config(model=model))`` as
        ``preprocess``, the data config's ``input_size`` and, for ImageNet heads, timm's class descriptions.
    """
    import timm
    from timm.data import ImageNetInfo, create_transform, infer_imagenet_subset, resolve_data_config

    kwargs = dict(options)
    use_weights = bool(pretrained)
    if isinstance(pretrained, (str, Path)) and not isinstance(pretrained, bool):
        path = Path(pretrained)
        if path.suffix in {".safetensors", ".pth", ".pt", ".bin"} or path.exists():
            if not path.is_file():
                raise ConfigError(f"pretrained={str(pretrained)!r}: no checkpoint file at that path")
            # the whole state dict (classifier included), read with safetensors or torch.load(weights_only=True)
            kwargs["checkpoint_path"] = str(path.resolve())
            use_weights = False
        else:
            name = f"{name}.{pretrained}"
    model = timm.create_model(name, pretrained=use_weights, **kwargs).eval().to(device)
    config = resolve_data_config(model=model)
    subset = infer_imagenet_subset(model)
    class_names = ImageNetInfo(subset).label_descriptions() if subset else None
    return LoadedModel(
        model=model,
        preprocess=create_transform(**config),
        input_size=(int(config["input_size"][1]), int(config["input_size"][2])),
        class_names=class_names,
    )
