"""symwrap plugin for PyTorch Geometric: the ``pyg`` adapter, per-graph frames on ragged batches.

Found through the entry point ``pyg`` of the group ``symwrap`` (see ``pyproject.toml``). Importing this module does
not import torch_geometric: the adapter recognises graph models by their submodules' classes and their ``forward``
signature, and imports torch_geometric when it meets a ``Data``/``Batch``.
"""

from __future__ import annotations

from symwrap import hookimpl
from symwrap.hookspecs import Register
from symwrap_pyg.adapter import PyGAdapter

__all__ = ["PyGAdapter", "symwrap_register_adapters"]
__version__ = "0.1.0"


@hookimpl
def symwrap_register_adapters(register: Register) -> None:
    register("pyg", PyGAdapter, "PyTorch Geometric graph models: per-graph frames on Data/Batch (pos moves)")
