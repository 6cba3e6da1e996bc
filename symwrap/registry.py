"""Name -> factory registries for groups, methods and adapters, each entry recording its plugin."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from symwrap.errors import ConfigError, DuplicateNameError, UnknownNameError

__all__ = ["Entry", "Registry"]

_NAME = re.compile(r"[a-z][a-z0-9_\-]*(\{n\})?")  # used with fullmatch ("$" would accept "x\n")


@dataclass(frozen=True)
class Entry:
    """One registered name.

    Attributes:
        name: The registered name; a family ends in ``{n}`` (``"c{n}"``).
        factory: Called with the user's options (and ``n=`` for a family) to build the object.
        plugin: The plugin that registered it.
        description: One line for listings.
    """

    name: str
    factory: Callable[..., Any]
    plugin: str
    description: str = ""

    @property
    def is_family(self) -> bool:
        return self.name.endswith("{n}")

    def match(self, name: str) -> dict[str, int] | None:
        """Parameters parsed from ``name`` if it belongs to this entry, else ``None``."""
        if not self.is_family:
            return {} if name == self.name else None
        m = re.fullmatch(re.escape(self.name[:-3]) + r"(\d+)", name)
        return {"n": int(m.group(1))} if m else None


class Registry:
    """The registry of one kind (``"group"``, ``"method"``, ``"adapter"``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self.failed_plugins: list[str] = []
        #: Installed entry points not loaded because of SYMWRAP_DISABLE_PLUGIN_AUTOLOAD / SYMWRAP_LOAD_PLUGINS.
        self.skipped_plugins: list[str] = []
        #: Called on every object :meth:`create` builds (the group registry checks the group laws).
        self.validate: Callable[[Any], Any] | None = None

    def add(self, name: str, factory: Callable[..., Any], plugin: str, description: str = "") -> Entry:
        """Register ``name``; raises :class:`DuplicateNameError` naming both plugins if it exists."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(
                f"invalid {self.kind} name {name!r} from plugin {plugin!r}: use lowercase letters, digits, '_' or '-', "
                "optionally ending in '{n}' for a family"
            )
        if not callable(factory):
            raise TypeError(f"{self.kind} {name!r} from plugin {plugin!r}: factory must be callable, got {factory!r}")
        if name in self._entries:
            raise DuplicateNameError(self.kind, name, self._entries[name].plugin, plugin)
        entry = Entry(name, factory, plugin, description or _first_line(factory))
        clash = next((other for other in self._entries.values() if _overlap(other, entry)), None)
        if clash is not None:
            raise DuplicateNameError(self.kind, name, clash.plugin, plugin, first_name=clash.name)
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> None:
        self._entries.pop(name, None)

    def lookup(self, name: str) -> tuple[Entry, dict[str, int]]:
        """The entry for ``name`` (exact names first, then families) and its parsed parameters."""
        if name in self._entries:
            return self._entries[name], {}
        for entry in self._entries.values():
            params = entry.match(name) if entry.is_family else None
            if params is not None:
                return entry, params
        hint = ""
        if self.failed_plugins:
            hint = f"Plugins that failed to load (see symwrap.plugin_errors()): {', '.join(self.failed_plugins)}."
        if self.skipped_plugins:
            names = ",".join(self.skipped_plugins)
            hint += (
                f"{' ' if hint else ''}Installed plugins not loaded because of SYMWRAP_DISABLE_PLUGIN_AUTOLOAD / "
                f"SYMWRAP_LOAD_PLUGINS: {', '.join(self.skipped_plugins)}. To enable them, unset "
                f"SYMWRAP_DISABLE_PLUGIN_AUTOLOAD or set SYMWRAP_LOAD_PLUGINS={names}."
            )
        raise UnknownNameError(self.kind, name, self._entries, hint)

    def create(self, name: str, /, **options: Any) -> Any:
        """Build ``name`` with ``options``; an option the factory does not take is a :class:`ConfigError` with
        close matches (a factory taking ``**kwargs`` reports its own)."""
        entry, params = self.lookup(name)
        _check_options(self.kind, name, entry.factory, options, family=entry.is_family)
        built = entry.factory(**params, **options)
        return self.validate(built) if self.validate is not None else built

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.lookup(name)
        except UnknownNameError:
            return False
        return True


def _check_options(kind: str, name: str, factory: Callable[..., Any], options: dict[str, Any], *, family: bool) -> None:
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    # a family's factory takes n from the name (c8 -> n=8), not from the options
    accepted = [
        n for n, p in parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL and not (family and n == "n")
    ]
    for key in options:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=2, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(
                f"{kind} {name!r} has no option {key!r}.{hint} Its options: {', '.join(accepted) or '(none)'}."
            )


def _overlap(a: Entry, b: Entry) -> bool:
    """Whether two entries of different plugins claim a common name (``c8`` and ``c{n}``, ``c{n}`` and ``c1{n}``).

    One plugin may register a name inside its own family (the built-in ``o3`` beside ``o{n}``): it chose which
    serves that name. Across plugins one would silently hide the other, whichever registered first.
    """
    if a.plugin == b.plugin or (not a.is_family and not b.is_family):
        return False
    if not a.is_family:
        a, b = b, a
    if not b.is_family:
        return a.match(b.name) is not None
    pa, pb = a.name[:-3], b.name[:-3]
    short, long = sorted((pa, pb), key=len)
    rest = long[len(short) :]
    return long.startswith(short) and rest.isdigit()


def _first_line(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""
