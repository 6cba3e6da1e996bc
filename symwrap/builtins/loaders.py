"""Built-in model-spec loaders for ``symwrap eval`` (registered through ``symwrap_register_model_loaders``)."""

from __future__ import annotations

from typing import Any

from symwrap.hookspecs import Register, hookimpl


def _digits(name: str, *, pretrained: bool | str | None = True, device: str = "cpu") -> Any:
    """the DigitsCNN trained on upright digits (digits, digits:random, digits:PATH.safetensors)"""
    from symwrap.evaluation.digits_model import load_digits_model

    return load_digits_model(name, pretrained=pretrained, device=device)


def _python(name: str, **kwargs: Any) -> Any:
    """a Python factory path, python:pkg.module:factory (also accepted without the prefix)"""
    from symwrap.errors import ConfigError
    from symwrap.evaluation.specs import load_factory

    module, _, attribute = name.partition(":")
    if not module or not attribute:
        raise ConfigError(f"model spec 'python:{name}': use python:package.module:factory")
    return load_factory(module, attribute, spec=f"python:{name}", **kwargs)


@hookimpl
def symwrap_register_model_loaders(register: Register) -> None:
    register("digits", _digits)
    register("python", _python)
