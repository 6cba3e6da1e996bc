"""Flatten and rebuild nested model inputs/outputs: tensors, tuples, lists, dicts, dataclasses and
Hugging Face ``ModelOutput`` objects (recognised by duck typing, without importing transformers)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

__all__ = ["TreeSpec", "tree_flatten", "tree_map", "tree_unflatten"]


@dataclass
class TreeSpec:
    """The structure of a flattened object.

    Attributes:
        kind: ``"leaf"``, ``"tuple"``, ``"namedtuple"``, ``"list"``, ``"mapping"`` or ``"dataclass"``.
        container: The original type, to rebuild the same type.
        keys: Keys (mappings, dataclasses) or indices of the children.
        children: Specs of the children.
        paths: Dotted path of each leaf, in leaf order (``"logits"``, ``"0"``, ``"hidden_states.1"``).
    """

    kind: str
    container: type | None = None
    keys: list[Any] = field(default_factory=list)
    children: list[TreeSpec] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


def _is_model_output(obj: Any) -> bool:
    return isinstance(obj, Mapping) and dataclasses.is_dataclass(obj) and hasattr(obj, "to_tuple")


def tree_flatten(obj: Any) -> tuple[list[Any], TreeSpec]:
    """Leaves of ``obj`` in a deterministic order and the spec to rebuild it."""
    if type(obj) is Tensor:  # the common output: one tensor (no container checks, called once per chunk)
        return [obj], TreeSpec("leaf", paths=[""])
    leaves: list[Any] = []
    spec = _flatten(obj, leaves)
    spec.paths = _paths(spec, "")
    return leaves, spec


def _flatten(obj: Any, leaves: list[Any]) -> TreeSpec:
    if _is_model_output(obj) or isinstance(obj, Mapping):
        keys = list(obj.keys())
        children = [_flatten(obj[k], leaves) for k in keys]
        return TreeSpec("mapping", type(obj), keys, children)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        keys = [f.name for f in dataclasses.fields(obj)]
        children = [_flatten(getattr(obj, k), leaves) for k in keys]
        return TreeSpec("dataclass", type(obj), keys, children)
    if isinstance(obj, tuple):
        kind = "namedtuple" if hasattr(obj, "_fields") else "tuple"
        children = [_flatten(v, leaves) for v in obj]
        keys = list(obj._fields) if kind == "namedtuple" else list(range(len(obj)))
        return TreeSpec(kind, type(obj), keys, children)
    if isinstance(obj, list):
        return TreeSpec("list", list, list(range(len(obj))), [_flatten(v, leaves) for v in obj])
    leaves.append(obj)
    return TreeSpec("leaf")


def _paths(spec: TreeSpec, prefix: str) -> list[str]:
    if spec.kind == "leaf":
        return [prefix]
    out: list[str] = []
    for key, child in zip(spec.keys, spec.children):
        name = f"{prefix}.{key}" if prefix else str(key)
        out.extend(_paths(child, name))
    return out


def tree_unflatten(spec: TreeSpec, leaves: list[Any]) -> Any:
    """Rebuild the object described by ``spec`` from ``leaves`` (same order as :func:`tree_flatten`)."""
    return _unflatten(spec, iter(leaves))


def _unflatten(spec: TreeSpec, it: Any) -> Any:
    if spec.kind == "leaf":
        return next(it)
    values = [_unflatten(child, it) for child in spec.children]
    container = spec.container
    assert container is not None
    if spec.kind == "mapping":
        items = dict(zip(spec.keys, values))
        try:
            return container(**items) if all(isinstance(k, str) for k in items) else container(items)
        except TypeError:
            return container(items)
    if spec.kind == "dataclass":
        return container(**dict(zip(spec.keys, values)))
    if spec.kind == "namedtuple":
        return container(*values)
    if spec.kind == "tuple":
        return tuple(values) if container is tuple else container(values)
    return values


def tree_map(fn: Callable[[Any], Any], obj: Any) -> Any:
    """Apply ``fn`` to every leaf of ``obj`` and rebuild the same structure."""
    leaves, spec = tree_flatten(obj)
    return tree_unflatten(spec, [fn(leaf) for leaf in leaves])
