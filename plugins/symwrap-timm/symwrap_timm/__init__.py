"""symwrap plugin for timm: the ``timm`` adapter and the ``timm`` model loader.

Found through the entry point ``timm`` of the group ``symwrap`` (see ``pyproject.toml``). Importing this
module does not import timm: the adapter recognises timm models by their class's module, and the loader
imports timm when it is called.
"""

from __future__ import annotations

from symwrap import hookimpl
from symwrap.hookspecs import Register
from symwrap_timm.adapter import TimmAdapter
from symwrap_timm.loader import load_timm

__all__ = ["TimmAdapter", "load_timm", "symwrap_register_adapters", "symwrap_register_model_loaders"]
__version__ = "0.1.0"


@hookimpl
def symwrap_register_adapters(register: Register) -> None:
    register("timm", TimmAdapter, "timm models: image in, logits out; forward_features/forward_head split")


@hookimpl
def symwrap_register_model_loaders(register: Register) -> None:
    register("timm", load_timm, "timm:NAME -> timm.create_model + resolve_data_config/create_transform")
