"""symwrap plugin for MONAI: the ``monai`` model loader, sliding-window helpers and per-element Dice evaluation.

Found through the entry point ``monai`` of the group ``symwrap`` (see ``pyproject.toml``). Importing this module
does not import MONAI: the loader and the evaluation import it when they run. MONAI networks are plain
``torch.nn.Module``s, so ``symwrap.wrap(net, "flip3d", output="equivariant")`` needs no adapter of its own.
"""

from __future__ import annotations

from symwrap import hookimpl
from symwrap.hookspecs import Register
from symwrap_monai.loader import load_monai
from symwrap_monai.sliding_window import SlidingWindow

__all__ = ["SlidingWindow", "load_monai", "symwrap_register_model_loaders"]
__version__ = "0.1.0"


@hookimpl
def symwrap_register_model_loaders(register: Register) -> None:
    register("monai", load_monai, "monai:NAME[?key=value&...] -> a monai.networks.nets 3-D network (random init)")
