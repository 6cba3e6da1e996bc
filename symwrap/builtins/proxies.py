"""Built-in equizero proxy losses (registered through ``symwrap_register_proxies``)."""

from __future__ import annotations

from symwrap.hookspecs import Register, hookimpl


@hookimpl
def symwrap_register_proxies(register: Register) -> None:
    """None yet: the equizero method registers its proxies here."""
