"""Built-in adapter: the generic torch adapter."""

from __future__ import annotations

from symwrap.adapters.torch import TorchAdapter
from symwrap.hookspecs import Register, hookimpl


@hookimpl
def symwrap_register_adapters(register: Register) -> None:
    register("torch", TorchAdapter, "any torch.nn.Module; choose arguments with input= and outputs with select=")
