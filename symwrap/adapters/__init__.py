"""Adapters: how symwrap calls each family of models."""

from symwrap.adapters.base import Adapter, BoundCall, Selector
from symwrap.adapters.torch import TorchAdapter

__all__ = ["Adapter", "BoundCall", "Selector", "TorchAdapter"]
