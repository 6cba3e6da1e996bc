"""Plugin discovery and loading (pluggy). Loaded lazily, once, on the first registry access.

Built-in groups, methods and the generic torch adapter come from modules in :mod:`symwrap.builtins`.
Third-party packages are found through the entry-point group ``symwrap``. Environment variables:

* ``SYMWRAP_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry points (only the built-ins, and any names in
  ``SYMWRAP_LOAD_PLUGINS``).
* ``SYMWRAP_LOAD_PLUGINS=a,b``: load only these entry points (entry-point or distribution names).

A plugin that fails to import or to register never breaks ``import symwrap`` or the registries: the
failure is kept as a :class:`PluginLoadError` (see :func:`plugin_errors`) and reported once as a
:class:`PluginLoadWarning`; none of the names of a plugin whose hook raised stay registered.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import warnings
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy
from pluggy import HookImpl

from symwrap import hookspecs
from symwrap.errors import PluginLoadError, PluginLoadWarning
from symwrap.registry import Registry

__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "REGISTRY_KINDS",
    "get_plugin_manager",
    "get_registry",
    "plugin_errors",
    "register_plugin",
    "reload_plugins",
    "unregister_plugin",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "symwrap"
BUILTIN_PLUGINS = (
    "symwrap.builtins.groups",
    "symwrap.builtins.methods",
    "symwrap.builtins.adapters",
    "symwrap.builtins.proxies",
    "symwrap.builtins.loaders",
)
_HOOKS = {
    "group": "symwrap_register_groups",
    "method": "symwrap_register_methods",
    "adapter": "symwrap_register_adapters",
    "proxy": "symwrap_register_proxies",
    "model_loader": "symwrap_register_model_loaders",
}
#: The registry kinds, in listing order, with their plural labels.
REGISTRY_KINDS = {
    "group": "groups",
    "method": "methods",
    "adapter": "adapters",
    "proxy": "proxies",
    "model_loader": "model_loaders",
}

_lock = threading.RLock()
_state: dict[str, Any] = {"pm": None, "registries": None, "errors": [], "extra": []}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _selected_entry_points() -> list[EntryPoint]:
    wanted = {n.strip() for n in os.environ.get("SYMWRAP_LOAD_PLUGINS", "").split(",") if n.strip()}
    disabled = _truthy(os.environ.get("SYMWRAP_DISABLE_PLUGIN_AUTOLOAD"))
    if disabled and not wanted:
        return []
    found = list(entry_points(group=ENTRY_POINT_GROUP))
    if not wanted:
        return found
    return [ep for ep in found if ep.name in wanted or (ep.dist is not None and ep.dist.name in wanted)]


def _skipped_entry_points() -> list[str]:
    """Installed entry points that the environment switches left out (named in "unknown name" errors)."""
    selected = {ep.name for ep in _selected_entry_points()}
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} - selected)


def _record(error: PluginLoadError) -> None:
    _state["errors"].append(error)
    logger.warning("%s", error)
    warnings.warn(str(error), PluginLoadWarning, stacklevel=3)


def _load() -> tuple[pluggy.PluginManager, dict[str, Registry]]:
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    _state["errors"] = []
    dists: dict[str, str | None] = {}
    for module_name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
    for ep in _selected_entry_points():
        dist = ep.dist.name if ep.dist is not None else None
        try:
            plugin = ep.load()
            if pm.is_registered(plugin):
                continue
            pm.register(plugin, name=ep.name)
            dists[ep.name] = dist
        except Exception as exc:  # a broken plugin must not break symwrap
            _record(PluginLoadError(ep.name, dist, exc))
    for plugin, name in _state["extra"]:
        if pm.is_registered(plugin):
            continue
        try:  # an invalid hookimpl or a taken plugin name is reported, not raised
            pm.register(plugin, name=name)
        except Exception as exc:
            _record(PluginLoadError(name, None, exc))

    from symwrap.groups.laws import ensure_group_laws

    registries = {kind: Registry(kind) for kind in _HOOKS}
    registries["group"].validate = ensure_group_laws  # every group built by name is checked once, before use
    # Only functions marked @hookimpl count (pluggy's view, so specname= works too). Plugins are called
    # in registration order: built-ins first, then entry points in discovery order, then register_plugin.
    impls: dict[str, dict[str, list[HookImpl]]] = {kind: {} for kind in _HOOKS}
    for kind, hook_name in _HOOKS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            impls[kind].setdefault(impl.plugin_name, []).append(impl)
    failed: set[str] = set()
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        try:
            for kind in _HOOKS:
                register = _make_register(registries[kind], name)
                for impl in impls[kind].get(name, []):
                    impl.function(**dict.fromkeys(impl.argnames, register))
        except Exception as exc:
            if name in BUILTIN_PLUGINS:
                raise
            # all or nothing: drop what the plugin registered before it failed
            for registry in registries.values():
                for entry in registry.entries():
                    if entry.plugin == name:
                        registry.remove(entry.name)
            failed.add(name)
            _record(PluginLoadError(name, dists.get(name), exc))
    skipped = _skipped_entry_points()
    for registry in registries.values():
        registry.failed_plugins = sorted(failed | {e.entry_point for e in _state["errors"]})
        registry.skipped_plugins = skipped
    return pm, registries


def _make_register(registry: Registry, plugin: str) -> Callable[..., None]:
    def register(name: str, factory: Any, description: str = "") -> None:
        registry.add(name, factory, plugin, description)

    return register


def _ensure_loaded() -> dict[str, Registry]:
    with _lock:
        if _state["registries"] is None:
            _state["pm"], _state["registries"] = _load()
        return _state["registries"]


def get_registry(kind: str) -> Registry:
    """The registry of ``kind`` (a key of :data:`REGISTRY_KINDS`), loading plugins on first use."""
    return _ensure_loaded()[kind]


def get_plugin_manager() -> pluggy.PluginManager:
    """The pluggy plugin manager (loads plugins on first use)."""
    _ensure_loaded()
    return _state["pm"]


def plugin_errors() -> list[PluginLoadError]:
    """The :class:`PluginLoadError` of every plugin that failed in the last load."""
    _ensure_loaded()
    return list(_state["errors"])


def register_plugin(plugin: Any, name: str | None = None) -> None:
    """Register a plugin object (a module or class with ``@symwrap.hookimpl`` functions) at run time.

    Useful in notebooks and tests; packages should use the ``symwrap`` entry-point group instead.
    The registries are rebuilt on next use; a failing registration (a duplicate name, say) is reported
    like any plugin failure (see :func:`plugin_errors`).
    """
    with _lock:
        _state["extra"].append((plugin, name or getattr(plugin, "__name__", repr(plugin))))
        _state["registries"] = None


def unregister_plugin(plugin: Any) -> None:
    """Undo :func:`register_plugin`."""
    with _lock:
        _state["extra"] = [(p, n) for p, n in _state["extra"] if p is not plugin]
        _state["registries"] = None


def reload_plugins() -> None:
    """Forget the loaded plugins; the next registry access discovers them again (reads the env vars anew)."""
    with _lock:
        _state["registries"] = None
        _state["pm"] = None
