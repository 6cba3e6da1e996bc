"""Built-in model-spec loaders for ``symwrap eval`` (registered through ``symwrap_register_model_loaders``)."""

from __future__ import annotations

from symwrap.hookspecs import Register, hookimpl


@hookimpl
def symwrap_register_model_loaders(register: Register) -> None:
    """None yet: the evaluation CLI registers its built-in loaders here."""
