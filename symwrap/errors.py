"""The exceptions symwrap raises. Every message names the cause and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import torch

__all__ = [
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
    "RecordingError",
    "SymwrapError",
    "UnknownNameError",
]


class SymwrapError(Exception):
    """Base class of every error symwrap raises on purpose."""


class UnknownNameError(SymwrapError, KeyError):
    """A group, method, adapter (or other registry) name that is not registered.

    The message lists the close matches and all available names.
    """

    def __init__(self, kind: str, name: str, available: Iterable[str], hint: str = "") -> None:
        available = sorted(available)
        self.kind, self.name, self.available = kind, name, available
        close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
        message = f"unknown {kind} {name!r}."
        if close:
            message += f" Did you mean {' or '.join(repr(c) for c in close)}?"
        plural = kind[:-1] + "ies" if kind.endswith("y") else kind + "s"  # "proxies", not "proxys"
        message += f" Available {plural}: {', '.join(available) if available else '(none)'}."
        if hint:
            message += f" {hint}"
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return self.message


class DuplicateNameError(SymwrapError, ValueError):
    """Two plugins registered the same name, or a name that a family of another plugin already serves
    (``c8`` and the family ``c{n}``); the message names both plugins."""

    def __init__(
        self, kind: str, name: str, first_plugin: str, second_plugin: str, *, first_name: str | None = None
    ) -> None:
        self.kind, self.name, self.first_plugin, self.second_plugin = kind, name, first_plugin, second_plugin
        self.first_name = first_name or name
        if self.first_name == name:
            what = f"{kind} {name!r} is registered twice: first by plugin {first_plugin!r}, again by plugin "
        else:  # a family and a name (or two families) that claim the same names
            what = (
                f"{kind} {name!r} clashes with {self.first_name!r}, registered first by plugin {first_plugin!r}: "
                f"both would serve the same names and one would silently hide the other; {name!r} comes from plugin "
            )
        super().__init__(
            f"{what}{second_plugin!r}. Rename one of them, or disable one plugin "
            f"(SYMWRAP_LOAD_PLUGINS=... lists the plugins to load)."
        )


class GroupLawError(SymwrapError, ValueError):
    """A group breaks a group law (identity, inverse, closure, associativity, distinct elements).

    The message names the group, the law and the offending elements (their index and code).
    """


class PluginLoadError(SymwrapError, ImportError):
    """A third-party plugin failed to import or to register. The original exception is chained.

    Load failures never make ``import symwrap`` fail: they are collected (see
    :func:`symwrap.plugin_errors`) and reported as a :class:`PluginLoadWarning`.
    """

    def __init__(self, entry_point: str, distribution: str | None, cause: BaseException) -> None:
        self.entry_point, self.distribution, self.cause = entry_point, distribution, cause
        dist = f" from distribution {distribution!r}" if distribution else ""
        detail = str(cause).strip().rstrip(".")  # the cause's own message may end in a period
        what = f"{type(cause).__name__}: {detail}" if detail else type(cause).__name__
        super().__init__(
            f"symwrap plugin {entry_point!r}{dist} failed to load: {what}. "
            f"Fix or uninstall that package, or skip it with SYMWRAP_DISABLE_PLUGIN_AUTOLOAD=1 "
            f"(or list the plugins you want in SYMWRAP_LOAD_PLUGINS=name1,name2)."
        )
        self.__cause__ = cause


class PluginLoadWarning(UserWarning):
    """Issued once per plugin that failed to load."""


class IncompatibleModelError(SymwrapError, TypeError):
    """No adapter knows how to call the model, or the chosen adapter cannot serve it."""


class InputLayoutError(SymwrapError, ValueError):
    """A group's action does not fit the data it was given (wrong rank, size or dtype)."""


class ConfigError(SymwrapError, ValueError):
    """An option passed to :func:`symwrap.wrap` (or a method config) is invalid; the message names the field."""


class LimitError(ConfigError):
    """A group order, sample count or dimension above the bound in force (see :mod:`symwrap.limits`)."""


class CheckpointError(SymwrapError, ValueError):
    """A ``save_pretrained`` directory that cannot be loaded: a missing or corrupt file, or a config or weights
    that do not fit the base model, group or method. The message names the file and the mismatch."""


class RecordingError(SymwrapError, RuntimeError):
    """``torch.export``, ``torch.jit.trace`` or ``torch.onnx.export`` was asked to record a wrapped model whose plan
    depends on the input's values: the graph would keep the example's plan. The message names the method, the group
    and the routes that work (see ``docs/deployment.md``)."""


class MemoryBudgetError(ConfigError):
    """``chunk_size="auto"`` cannot fit even one orbit row into the memory budget (``max_memory`` or free memory).

    The message names the measured bytes of a one-row forward and the budget.
    """


class OutOfMemoryError(SymwrapError, torch.OutOfMemoryError):
    """A forward of one chunk ran out of memory with a fixed ``chunk_size`` (an int or ``None``).

    A subclass of ``torch.OutOfMemoryError``, so existing handlers still catch it; the original error is chained.
    """


class UnsymmetrizedCallError(SymwrapError, NotImplementedError):
    """A method of the base model called through the wrapper that would compute from its inputs unsymmetrized (a
    refused door); the message says why and names ``wrapped.base_model.<name>`` for the raw call."""
