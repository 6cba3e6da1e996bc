"""An example third-party symwrap plugin: registers the group ``sign`` (Z2 acting by x ↦ ±x).

Installed, it is found through the entry point ``example`` of the group ``symwrap`` (see
``pyproject.toml``); then ``symwrap.wrap(model, "sign")`` makes any model even: ``f(-x) == f(x)``.
"""

from __future__ import annotations

from symwrap import hookimpl
from symwrap.hookspecs import Register
from symwrap_example_plugin.sign import SignAction, SignGroup

__all__ = ["SignAction", "SignGroup", "symwrap_register_groups"]
__version__ = "0.1.0"


@hookimpl
def symwrap_register_groups(register: Register) -> None:
    """Register this package's groups; symwrap records them under the entry-point name ``example``."""
    register("sign", SignGroup, "Z2 = {+1, -1} acting on any tensor by x -> ±x (exact; makes models even)")
