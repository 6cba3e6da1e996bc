"""symwrap: make any pretrained model exactly invariant or equivariant to a symmetry group.

    >>> import symwrap
    >>> model = symwrap.wrap(model, group="rot90", method="group_averaging")  # doctest: +SKIP

Public API only; see the README for the architecture.
"""

from __future__ import annotations

from symwrap import errors
from symwrap.check import CheckResult, check
from symwrap.engine import SymmetrizedOutput
from symwrap.errors import (
    CheckpointError,
    ConfigError,
    DuplicateNameError,
    GroupLawError,
    IncompatibleModelError,
    InputLayoutError,
    LimitError,
    MemoryBudgetError,
    OutOfMemoryError,
    PluginLoadError,
    PluginLoadWarning,
    SymwrapError,
    UnknownNameError,
)
from symwrap.hookspecs import hookimpl
from symwrap.limits import current_limits, limits_raised, set_limits
from symwrap.plugins import get_registry, plugin_errors, register_plugin, reload_plugins, unregister_plugin
from symwrap.wrapper import SymmetrizedModel, WrapConfig, get_action, get_adapter, get_group, get_method, wrap

__version__ = "0.1.0"

__all__ = [
    "CheckResult",
    "CheckpointError",
    "ConfigError",
    "DuplicateNameError",
    "GroupLawError",
    "IncompatibleModelError",
    "InputLayoutError",
    "LimitError",
    "MemoryBudgetError",
    "OutOfMemoryError",
    "PluginLoadError",
    "PluginLoadWarning",
    "SymmetrizedModel",
    "SymmetrizedOutput",
    "SymwrapError",
    "UnknownNameError",
    "WrapConfig",
    "__version__",
    "check",
    "current_limits",
    "errors",
    "get_action",
    "get_adapter",
    "get_group",
    "get_method",
    "get_registry",
    "hookimpl",
    "limits_raised",
    "list_adapters",
    "list_groups",
    "list_methods",
    "plugin_errors",
    "register_plugin",
    "reload_plugins",
    "set_limits",
    "unregister_plugin",
    "wrap",
]


def list_groups(pattern: str = "*") -> list[str]:
    """Registered group names matching a glob ``pattern`` (families appear as ``"c{n}"``)."""
    return get_registry("group").names(pattern)


def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching a glob ``pattern``."""
    return get_registry("method").names(pattern)


def list_adapters(pattern: str = "*") -> list[str]:
    """Registered adapter names matching a glob ``pattern``."""
    return get_registry("adapter").names(pattern)
