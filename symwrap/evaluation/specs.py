"""Model specs for ``symwrap eval``/``check``: ``digits``, ``timm:NAME``, ``hf:PATH``, ``open_clip:ARCH@TAG``,
``pkg.module:factory``.

A spec ``PREFIX:REST`` is resolved through the model-loader registry (``symwrap.get_registry("model_loader")``,
filled by plugins through the ``symwrap_register_model_loaders`` hook): the loader registered as ``PREFIX`` is
called as ``loader(REST, pretrained=..., device=..., **options)`` and returns a :class:`LoadedModel`. A spec
whose prefix is no registered loader but a dotted Python path (``my_pkg.models:build``) is a factory path.
The core never imports timm, transformers or open_clip: their loaders come with their plugins.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from torch import nn

from symwrap.errors import ConfigError, UnknownNameError
from symwrap.evaluation.loading import LoadedModel
from symwrap.plugins import get_registry

__all__ = ["PLUGIN_FOR_PREFIX", "load_model", "split_spec"]

#: Prefixes served by plugins that ship separately: the distribution to install for each.
PLUGIN_FOR_PREFIX = {
    "timm": "symwrap-timm",
    "hf": "symwrap-transformers",
    "open_clip": "symwrap-open-clip",
    "monai": "symwrap-monai",
}


def split_spec(spec: str) -> tuple[str, str]:
    """``"timm:resnet18"`` -> ``("timm", "resnet18")``; ``"digits"`` -> ``("digits", "")``.

    ``open_clip:ViT-B-32@openai`` keeps everything after the first colon (``ViT-B-32@openai``), and a
    Windows-free rule: only the first colon splits, so ``pkg.mod:factory`` -> ``("pkg.mod", "factory")``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"invalid model spec {spec!r}: use e.g. 'digits', 'timm:resnet18' or 'my_pkg.models:build'")
    prefix, _, rest = spec.strip().partition(":")
    return prefix, rest


def load_model(
    spec: str,
    *,
    pretrained: bool | str | None = None,
    device: str = "cpu",
    implicit: dict[str, Any] | None = None,
    **options: Any,
) -> LoadedModel:
    """Resolve a model spec to a :class:`LoadedModel` (model in eval mode on ``device``).

    Args:
        spec: ``PREFIX:NAME`` of a registered loader, or ``pkg.module:factory``.
        pretrained: Passed to the loader (``None`` lets it choose its default).
        device: Device of the returned model.
        implicit: Options passed only to loaders whose signature names them (the dataset's ``class_names`` for
            zero-shot loaders), never through ``**kwargs``.
        **options: Passed to the loader when its signature accepts them (``class_names=``, ``templates=``).

    Raises:
        UnknownNameError: The prefix is neither a registered loader nor an importable module; the message lists
            the registered prefixes and which plugin to install.
        ConfigError: A checkpoint path that does not exist, or a factory that does not build a model.
    """
    prefix, rest = split_spec(spec)
    registry = get_registry("model_loader")
    if prefix in registry:
        loader = registry.lookup(prefix)[0].factory
        kwargs = {"device": device, **_named(loader, implicit or {}), **_accepted(loader, options)}
        if pretrained is not None:
            kwargs["pretrained"] = pretrained
        loaded = loader(rest, **kwargs)
    elif rest and _looks_like_module(prefix) and prefix not in PLUGIN_FOR_PREFIX:
        # (a plugin's prefix is never a factory path: `timm:resnet18` without the timm plugin must say to
        # install it, not try a function named resnet18 in the timm module)
        loaded = load_factory(prefix, rest, spec=spec, pretrained=pretrained, device=device, **options)
        # (factories get no implicit options: a plain nn.Module factory rarely takes class names)
    else:
        raise _unknown_prefix(prefix, spec, registry.names())
    if not isinstance(loaded, LoadedModel):
        raise ConfigError(f"the loader of model spec {spec!r} returned {type(loaded).__name__}, not a LoadedModel")
    loaded.model.to(device).eval()
    return loaded


def load_factory(
    module_name: str,
    attribute: str,
    *,
    spec: str,
    pretrained: bool | str | None = None,
    device: str = "cpu",
    **options: Any,
) -> LoadedModel:
    """Build a model by calling ``module:factory()`` (options its signature accepts are passed).

    The factory returns an ``nn.Module`` or a :class:`LoadedModel`. ``pretrained`` may name a local
    ``.safetensors`` checkpoint: its tensors are loaded into the model's ``state_dict`` (strictly).
    """
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise _unknown_prefix(module_name, spec, get_registry("model_loader").names()) from exc
        raise
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(
                f"model spec {spec!r}: module {module_name!r} has no attribute {attribute!r}. "
                "A factory path is 'package.module:function' (a function returning an nn.Module or a LoadedModel)."
            )
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"model spec {spec!r}: {module_name}:{attribute} is not callable")
    built = target(**_accepted(target, options))
    loaded = built if isinstance(built, LoadedModel) else None
    if loaded is None:
        if not isinstance(built, nn.Module):
            raise ConfigError(
                f"model spec {spec!r}: the factory returned {type(built).__name__}; it must return an "
                "nn.Module or a symwrap.evaluation.loading.LoadedModel"
            )
        loaded = LoadedModel(model=built)
    if isinstance(pretrained, (str, Path)) and not isinstance(pretrained, bool):
        load_checkpoint(loaded.model, pretrained, argument="--pretrained")
    return loaded


def load_checkpoint(model: nn.Module, path: str | Path, *, argument: str) -> None:
    """Load a ``.safetensors`` state dict into ``model`` (strict; never unpickles)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{argument}: checkpoint {str(path)!r} does not exist. Give the path of a .safetensors file.")
    if path.suffix != ".safetensors":
        raise ConfigError(
            f"{argument}: {str(path)!r} is not a .safetensors file. symwrap loads weights only from safetensors "
            "(never unpickles); convert with safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')."
        )
    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"{argument}: checkpoint {str(path)!r} does not fit the model: missing keys {list(missing)[:5]}, "
            f"unexpected keys {list(unexpected)[:5]}"
        )


def _looks_like_module(prefix: str) -> bool:
    return all(part.isidentifier() for part in prefix.split("."))


def _unknown_prefix(prefix: str, spec: str, registered: list[str]) -> UnknownNameError:
    plugin = PLUGIN_FOR_PREFIX.get(prefix)
    if plugin:
        hint = (
            f"The {prefix!r} loader comes with the {plugin} plugin, which is not installed: "
            f"pip install -e plugins/{plugin} (from a symwrap checkout)."
        )
    else:
        plugins = ", ".join(f"{p}: {d}" for p, d in PLUGIN_FOR_PREFIX.items())
        hint = (
            f"Model spec {spec!r} is neither a registered loader nor an importable 'package.module:factory' path. "
            f"Other prefixes come with plugins ({plugins})."
        )
    return UnknownNameError("model loader", prefix, registered, hint)


def _accepted(function: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The options ``function`` accepts (all of them if it takes ``**kwargs``); ``None`` values dropped."""
    options = {k: v for k, v in options.items() if v is not None}
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return options
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return options
    return {k: v for k, v in options.items() if k in parameters}


def _named(function: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The options that ``function``'s signature names explicitly (not through ``**kwargs``)."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in options.items() if v is not None and k in parameters}
