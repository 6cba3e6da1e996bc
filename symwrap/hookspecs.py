"""The hooks a symwrap plugin implements. Each receives a ``register`` callback.

A plugin is any module or object with functions marked ``@symwrap.hookimpl``; a package publishes it
through the entry-point group ``symwrap`` in its ``pyproject.toml``::

    [project.entry-points.symwrap]
    my_plugin = "my_package.symwrap_plugin"
"""

from __future__ import annotations

from typing import Any, Protocol

import pluggy

__all__ = ["Register", "hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("symwrap")
hookimpl = pluggy.HookimplMarker("symwrap")


class Register(Protocol):
    """The callback passed to every hook: ``register(name, factory, description="")``.

    ``name`` may end in ``{n}`` to register a family (``"c{n}"`` matches ``"c8"``; the factory is
    called with ``n=8``). The host validates each registration and records the plugin that made it.
    """

    def __call__(self, name: str, factory: Any, description: str = "") -> None: ...


@hookspec
def symwrap_register_groups(register: Register) -> None:
    """Register groups: ``register("rot90", factory)`` where ``factory(**options)`` returns a :class:`Group`."""


@hookspec
def symwrap_register_methods(register: Register) -> None:
    """Register symmetrization methods: ``register("group_averaging", MethodSubclass)``."""


@hookspec
def symwrap_register_adapters(register: Register) -> None:
    """Register backbone adapters: ``register("timm", AdapterSubclass)``."""


@hookspec
def symwrap_register_proxies(register: Register) -> None:
    """Register equizero proxy losses: ``register("entropy", fn)`` where ``fn(outputs)`` maps the ``(B, k, ...)``
    outputs of the k copies of each input to ``(B, k)`` losses (the copy with the lowest loss is selected)."""


@hookspec
def symwrap_register_model_loaders(register: Register) -> None:
    """Register model-spec loaders for ``symwrap eval``/``check``: ``register("timm", loader)`` makes the spec
    ``timm:NAME`` call ``loader(NAME, pretrained=..., device=...)``, which returns a
    :class:`symwrap.evaluation.loading.LoadedModel` (the model and its preprocessing)."""
