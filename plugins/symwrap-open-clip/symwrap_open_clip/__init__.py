"""symwrap plugin for open_clip: the ``open_clip`` adapter, :class:`ZeroShotClassifier` and the ``open_clip``
model loader.

Found through the entry point ``open_clip`` of the group ``symwrap`` (see ``pyproject.toml``). Importing this
module does not import open_clip; the classifier and the loader import it when used.
"""

from __future__ import annotations

from symwrap import hookimpl
from symwrap.hookspecs import Register
from symwrap_open_clip.adapter import OpenCLIPAdapter
from symwrap_open_clip.loader import load_open_clip
from symwrap_open_clip.zero_shot import ZeroShotClassifier, imagenet_metadata

__all__ = ["OpenCLIPAdapter", "ZeroShotClassifier", "imagenet_metadata", "load_open_clip"]
__version__ = "0.1.0"


@hookimpl
def symwrap_register_adapters(register: Register) -> None:
    register("open_clip", OpenCLIPAdapter, "open_clip models and ZeroShotClassifier: image in, features/logits out")


@hookimpl
def symwrap_register_model_loaders(register: Register) -> None:
    register("open_clip", load_open_clip, "open_clip:ARCH@TAG -> create_model_and_transforms + ZeroShotClassifier")
