"""Validated option dataclasses: unknown or invalid options raise :class:`ConfigError` naming the field."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, TypeVar

from symwrap.errors import ConfigError

__all__ = ["build_config", "config_to_dict", "option", "require"]

T = TypeVar("T")


def option(default: Any, help: str) -> Any:
    """A dataclass field with help text (shown by ``symwrap plugins -v`` and in error messages)."""
    return dataclasses.field(default=default, metadata={"help": help})


def build_config(cls: type[T], options: dict[str, Any], owner: str) -> T:
    """Build ``cls(**options)``; an unknown field raises :class:`ConfigError` listing the valid ones.

    Args:
        cls: A dataclass whose ``__post_init__`` raises :class:`ConfigError` for invalid values.
        options: The user's keyword options.
        owner: What the options are for (``"method 'monte_carlo'"``), used in messages.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for name in options:
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            valid = ", ".join(f"{n} ({f.metadata.get('help', '')})" for n, f in fields.items()) or "none"
            raise ConfigError(f"{owner} has no option {name!r}.{hint} Valid options: {valid}.")
    return cls(**options)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a config dataclass."""
    return dataclasses.asdict(config)


def require(condition: bool, field: str, message: str) -> None:
    """Raise :class:`ConfigError` about ``field`` unless ``condition``."""
    if not condition:
        raise ConfigError(f"invalid option {field!r}: {message}")
