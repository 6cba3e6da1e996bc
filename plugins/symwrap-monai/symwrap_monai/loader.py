"""The ``monai`` model loader for ``symwrap eval``/``check``: ``monai:UNet`` (with options) -> a 3-D network.

A spec is ``monai:NAME`` or ``monai:NAME?key=value&key=value`` with ``NAME`` a class of ``monai.networks.nets``.
Values are parsed as Python literals where they are ones (``3``, ``0.1``, ``True``, ``'batch'``), a
comma-separated value as a tuple (``channels=8,16,32``; ``strides=2,`` is the tuple ``(2,)``), anything else as a
string. Missing options take the small 3-D defaults of :data:`DEFAULTS` (one input channel, two classes).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import torch

from symwrap.errors import ConfigError
from symwrap.evaluation.loading import LoadedModel

__all__ = ["DEFAULTS", "build_network", "load_monai", "parse_spec"]

#: Small 3-D configurations of the networks the plugin is tested with; any other option is passed through.
DEFAULTS: dict[str, dict[str, Any]] = {
    "UNet": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": (8, 16, 32), "strides": (2, 2)},
    "SegResNet": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "init_filters": 8},
    "SwinUNETR": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "feature_size": 12},
    "BasicUNet": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2},
}


def _value(text: str) -> Any:
    if "," in text:
        return tuple(_value(part) for part in text.split(",") if part)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_spec(name: str) -> tuple[str, dict[str, Any]]:
    """``"UNet?out_channels=3&channels=8,16"`` -> ``("UNet", {"out_channels": 3, "channels": (8, 16)})``."""
    network, _, query = name.partition("?")
    options: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(
                f"model spec 'monai:{name}': option {item!r} is not key=value; write e.g. "
                "monai:UNet?out_channels=3&channels=8,16,32&strides=2,2"
            )
        options[key] = _value(text)
    return network, options


def build_network(network: str, **options: Any) -> torch.nn.Module:
    """``monai.networks.nets.<network>(**DEFAULTS[network] | options)``, with a clear error for unknown names."""
    from monai.networks import nets

    cls = getattr(nets, network, None)
    if not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
        known = ", ".join(sorted(DEFAULTS))
        raise ConfigError(
            f"model spec 'monai:{network}': monai.networks.nets has no network {network!r}. Use a class name such as "
            f"{known} (case matters)."
        )
    try:
        return cls(**{**DEFAULTS.get(network, {}), **options})
    except TypeError as error:
        raise ConfigError(f"model spec 'monai:{network}': {error}. Check the option names of {network}.") from error


def load_monai(name: str, *, pretrained: bool | str | None = False, device: str = "cpu", **options: Any) -> LoadedModel:
    """A MONAI network for ``symwrap eval``/``check``: ``monai:UNet``, ``monai:SegResNet?init_filters=16``.

    Args:
        name: ``NAME`` or ``NAME?key=value&...`` (see the module docstring).
        pretrained: ``False``/``None``: random init. A path to a ``.safetensors`` file of this architecture's
            state dict: loaded offline with ``safetensors`` (MONAI bundles' ``.pt`` pickles are not read).
        device: Where to put the model.
        **options: More network options (they override the spec's).

    Returns:
        A :class:`LoadedModel` holding the network in eval mode; its data are tensors ``(C, D, H, W)``
        (no preprocessing).
    """
    network, spec_options = parse_spec(name)
    model = build_network(network, **{**spec_options, **options})
    if pretrained not in (False, None):
        path = Path(str(pretrained))
        if pretrained is True or path.suffix != ".safetensors" or not path.is_file():
            raise ConfigError(
                f"pretrained={pretrained!r}: the monai loader reads a local .safetensors state dict of {network} "
                "(no downloads, no pickles); pass its path, or leave pretrained unset for random init."
            )
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(path)))
    return LoadedModel(model=model.eval().to(device))
