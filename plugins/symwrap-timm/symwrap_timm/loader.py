"""The ``timm`` model loader for ``symwrap eval``: ``timm:NAME`` -> model and its own preprocessing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from symwrap.errors import ConfigError
from symwrap.evaluation.loading import LoadedModel, UnknownBackboneError, load_from_hub

__all__ = ["load_timm"]


def load_timm(name: str, *, pretrained: bool | str | None = None, device: str = "cpu", **options: Any) -> LoadedModel:
    """Create a timm model and its evaluation transform.

    Args:
        name: A timm model name (``"resnet50"``, ``"vit_base_patch16_224.augreg_in21k"``); ``NAME@TAG`` means
            the published weights ``NAME.TAG`` (refused with ``pretrained=False``). An unknown name raises
            :class:`~symwrap.evaluation.loading.UnknownBackboneError` with close matches from ``timm.list_models()``.
        pretrained: ``False``/``None``: random init (offline), except that ``None`` with a tagged name loads
            the tagged weights. ``True``: timm's default published weights
            (downloaded from the Hugging Face hub the first time; without a network, the local cache or a
            :class:`~symwrap.evaluation.loading.HubUnreachableError` within seconds). A tag (``"a1_in1k"``):
            those weights (``NAME.TAG``). A path to a local ``.safetensors``/``.pth`` checkpoint of this
            architecture (all weights, head included): loaded offline through
            ``timm.create_model(..., checkpoint_path=path)``, which reads safetensors or
            ``torch.load(weights_only=True)``, never an arbitrary pickle.
        device: Where to put the model.
        **options: Passed to ``timm.create_model`` (``num_classes=10``, ``img_size=...``).

    Returns:
        A :class:`LoadedModel` with ``timm.data.create_transform(**resolve_data_config(model=model))`` as
        ``preprocess``, the data config's ``input_size`` and, for ImageNet heads, timm's class descriptions.
    """
    import timm
    from timm.data import ImageNetInfo, create_transform, infer_imagenet_subset, resolve_data_config

    kwargs = dict(options)
    scheme = name.partition(":")[0] if ":" in name else ""  # timm's own local-dir:PATH and hf-hub:ORG/NAME
    at, tag = "", ""
    if not scheme:  # timm:resnet18@a1_in1k means those published weights (resnet18.a1_in1k)
        name, at, tag = name.partition("@")
    if at:
        if pretrained is False:
            raise ConfigError(
                f"timm:{name}@{tag} names published weights, but --pretrained false asks for a random init; "
                f"write timm:{name} for a random init, or drop --pretrained false"
            )
        if not tag:
            raise ConfigError(f"timm:{name}@: give a weights tag after '@' (timm.list_pretrained({name + '*'!r}))")
        name, pretrained = f"{name}.{tag}", True
    if not scheme:
        _check_name(name)
    if not scheme and "." in name and pretrained is None:
        pretrained = True  # NAME.TAG names published weights: never a silent random init
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
    if (use_weights and scheme != "local-dir") or scheme in {"hf-hub", "hf_hub"}:
        spec = f"timm:{name}"
        model = load_from_hub(spec, lambda: timm.create_model(name, pretrained=use_weights, **kwargs))
    else:
        model = timm.create_model(name, pretrained=False, **kwargs)
    model = model.eval().to(device)
    config = resolve_data_config(model=model)
    subset = infer_imagenet_subset(model)
    class_names = ImageNetInfo(subset).label_descriptions() if subset else None
    return LoadedModel(
        model=model,
        preprocess=create_transform(**config),
        input_size=(int(config["input_size"][1]), int(config["input_size"][2])),
        class_names=class_names,
    )


def _check_name(name: str) -> None:
    """An unknown architecture or weights tag fails here, with close matches from timm's own lists."""
    import timm

    arch, _, tag = name.partition(".")
    if not timm.is_model(arch):
        raise UnknownBackboneError(
            "timm model", arch, timm.list_models(), "timm.list_models('PATTERN*') lists the architectures."
        )
    if tag and name not in timm.list_pretrained(f"{arch}.*"):
        tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{arch}.*")]
        raise UnknownBackboneError(
            "weights tag", tag, tags, f"timm model {arch!r} has these published weights: {', '.join(tags) or 'none'}."
        )
