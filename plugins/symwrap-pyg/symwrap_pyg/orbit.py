"""The orbit of a ragged graph batch: move every planned copy, run the model on the copies, pull outputs back and
average them per graph (graph-level outputs) or per node (node-level outputs).

Every copy is a whole graph moved by one element ``a`` (``pos ↦ pos Rᵀ + t``); the copies of all graphs form one
batch (in chunks of at most ``chunk_size`` copies). A model output whose first axis has one row per copy is
graph-level (energy), one row per node of the copies node-level (forces, positions). Outputs are pulled back by
``a⁻¹`` by kind: ``"invariant"`` as they are, ``"vectors"`` rotated back (translation ignored), ``"points"``
rotated back and translated back; then summed with the plan's weights by ``index_add_`` into one row per graph or
per original node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from symwrap.autocast import AutocastState, at_least_float32
from symwrap.engine import SymmetrizedOutput
from symwrap.errors import ConfigError, InputLayoutError
from symwrap.frames.ragged import RaggedPlan
from symwrap.groups.base import Group
from symwrap.nested import tree_flatten, tree_unflatten
from symwrap_pyg.graphs import Copies, GraphCall

__all__ = ["OUTPUT_KINDS", "run_graph_orbit"]

#: How an output moves with the positions.
OUTPUT_KINDS = ("invariant", "vectors", "points")


@dataclass
class _Leaf:
    """The running sums of one combined output leaf."""

    level: str  # "graph" or "node"
    kind: str
    total: Tensor | None = None
    squares: Tensor | None = None


def _move(values: Tensor, rotation: Tensor, shift: Tensor | None) -> Tensor:
    """``values (R, ..., d) Rᵀ (+ t)`` row by row, ``rotation (R, d, d)``, ``shift (R, d)``."""
    d = rotation.shape[-1]
    flat = values.reshape(values.shape[0], -1, d) @ rotation.transpose(1, 2)
    if shift is not None:
        flat = flat + shift[:, None, :]
    return flat.reshape(values.shape)


def _level(value: Any, copies: Copies) -> str | None:
    """``"graph"`` (one row per copy), ``"node"`` (one row per node of the copies) or ``None``."""
    if not isinstance(value, Tensor) or value.ndim == 0:
        return None
    rows = value.shape[0]
    if rows == copies.count:
        return "graph"  # also when every copy has one node: the two layouts then coincide
    if rows == copies.node_src.shape[0]:
        return "node"
    return None


def run_graph_orbit(
    call: GraphCall,
    plan: RaggedPlan,
    group: Group,
    spec: tuple[int, bool, bool],
    kinds: dict[str, str] | str,
    *,
    select: tuple[str, ...] | None = None,
    chunk_size: int | None = None,
    second_moment: bool = False,
    autocast: AutocastState | None = None,
) -> Any:
    """Symmetrize one call of a graph model over the copies ``plan`` lists.

    Args:
        call: The bound call (positions, batch vector, how to build the copies' arguments).
        plan: The copies of every graph (elements, graph, weights).
        group: The group (its ``inverse``).
        spec: ``(d, special, translation)`` of the group.
        kinds: ``{output path: kind}`` for the outputs to combine, or one kind for every selected output.
        select: Output paths to combine when ``kinds`` is one kind (``None``: every floating graph- or node-level
            tensor).
        chunk_size: At most this many copies per forward (``None``: all copies in one forward).
        second_moment: Also return standard errors (``SymmetrizedOutput``), for Monte-Carlo estimates.
        autocast: The caller's autocast, restored around the model's forwards.

    Returns:
        The model's output structure with the combined leaves: graph-level ``(G, ...)``, node-level ``(N, ...)``;
        other tensor leaves are ``None``.
    """
    d, _, translation = spec
    autocast = autocast or AutocastState(call.pos.device.type)
    codes = plan.elements
    # contiguous blocks, so that the per-node rows below are fast index_selects: gathering 9136 rows (8 copies of
    # 1142 atoms) of the strided views of (K, c, c) costs ~0.3-0.4 ms each, by advanced indexing or index_select
    rotation, shift = codes[:, :d, :d].contiguous(), codes[:, :d, d].contiguous() if translation else None
    inverse = group.inverse(codes)
    back_rotation = inverse[:, :d, :d].contiguous()
    back_shift = inverse[:, :d, d].contiguous() if translation else None
    if plan.fixed is not None:  # a lone centred atom: average over every rotation, whose mean matrix is 0
        keep = (~plan.fixed).index_select(0, plan.graph).to(codes.dtype)
        back_rotation = back_rotation * keep[:, None, None]
    total = plan.copies
    step = total if chunk_size is None else max(1, int(chunk_size))
    leaves_spec = None
    first_leaves: list[Any] = []
    combined: dict[int, _Leaf] = {}
    for start in range(0, total, step):
        stop = min(total, start + step)
        copies = call.copies(plan.graph[start:stop])
        node_rows = copies.node_copy + start
        moved = {
            call.pos_key: _move(
                call.pos.index_select(0, copies.node_src), rotation.index_select(0, node_rows), _at(shift, node_rows)
            )
        }
        for name in call.vectors:
            moved[name] = _moved_vector(call, name, copies, rotation, start)
        args, kwargs = call.arguments(copies, moved)
        with autocast.model_precision():
            out = call.model(*args, **kwargs)
        leaves, tree = tree_flatten(out)
        if leaves_spec is None:
            leaves_spec, first_leaves = tree, leaves
            combined = _choose(tree, leaves, copies, kinds, select, d)
        for index, leaf in combined.items():
            value = leaves[index]
            level = _level(value, copies)
            if level is None or (level != leaf.level and copies.count != copies.node_src.shape[0]):
                raise InputLayoutError(
                    f"output {tree.paths[index]!r} changed layout between chunks of copies; pass chunk_size=None"
                )
            value = at_least_float32(value)
            rows = torch.arange(start, stop, device=value.device) if leaf.level == "graph" else node_rows
            if leaf.kind != "invariant":
                back = back_rotation.index_select(0, rows)
                value = _move(value, back, _at(back_shift, rows) if leaf.kind == "points" else None)
            weight = plan.weights.index_select(0, rows).to(value.dtype).reshape(-1, *([1] * (value.ndim - 1)))
            target = plan.graph[start:stop] if leaf.level == "graph" else copies.node_src
            size = plan.num_graphs if leaf.level == "graph" else call.pos.shape[0]
            if leaf.total is None:
                leaf.total = value.new_zeros(size, *value.shape[1:])
                if second_moment:
                    leaf.squares = value.new_zeros(size, *value.shape[1:])
            leaf.total = leaf.total.index_add(0, target, value * weight)
            if second_moment:
                leaf.squares = leaf.squares.index_add(0, target, value.square() * weight)
    assert leaves_spec is not None
    output = _assemble(leaves_spec, first_leaves, {i: leaf.total for i, leaf in combined.items()})
    if not second_moment:
        return output
    per_graph = torch.bincount(plan.graph, minlength=plan.num_graphs).to(plan.weights.dtype)
    errors = {}
    for i, leaf in combined.items():
        samples = per_graph if leaf.level == "graph" else per_graph.index_select(0, call.batch)
        variance = (leaf.squares - leaf.total.square()).clamp_min(0)
        errors[i] = (variance / samples.reshape(-1, *([1] * (variance.ndim - 1))).to(variance.dtype)).sqrt()
    return SymmetrizedOutput(output, _assemble(leaves_spec, first_leaves, errors))


def _at(values: Tensor | None, rows: Tensor) -> Tensor | None:
    return None if values is None else values.index_select(0, rows)


def _moved_vector(call: GraphCall, name: str, copies: Copies, rotation: Tensor, start: int) -> Tensor:
    """A node- or edge-level vector feature of the copies, rotated with their positions (no translation)."""
    value = call._value(name)
    d = rotation.shape[-1]
    if not isinstance(value, Tensor) or value.shape[-1] != d or not value.is_floating_point():
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise InputLayoutError(
            f"vectors=... names {name!r}, which must be a floating-point (num_nodes or num_edges, ..., {d}) tensor of "
            f"vectors to rotate with the positions, got {shape}"
        )
    if value.shape[0] == call.pos.shape[0]:
        return _move(value.index_select(0, copies.node_src), rotation.index_select(0, copies.node_copy + start), None)
    if copies.edge_src is not None and copies.edge_copy is not None and value.shape[0] == call._edges():
        return _move(value.index_select(0, copies.edge_src), rotation.index_select(0, copies.edge_copy + start), None)
    raise InputLayoutError(
        f"vectors=... names {name!r} of shape {tuple(value.shape)}, which has neither one row per node "
        f"({call.pos.shape[0]}) nor one per edge ({max(call._edges(), 0)}); only node and edge vectors can move."
    )


def _choose(
    tree: Any, leaves: list[Any], copies: Copies, kinds: dict[str, str] | str, select: tuple[str, ...] | None, d: int
) -> dict[int, _Leaf]:
    """The output leaves to combine, with their level and kind (from the first chunk's output)."""
    paths = tree.paths
    wanted: dict[int, str] = {}
    if isinstance(kinds, dict):
        for path, kind in kinds.items():
            hits = [i for i, p in enumerate(paths) if p == path or p.startswith(path + ".")]
            if not hits:
                raise ConfigError(f"select names output {path!r}, but the model's outputs are {', '.join(paths)}")
            wanted.update(dict.fromkeys(hits, kind))
    elif select is not None:
        for path in select:
            hits = [i for i, p in enumerate(paths) if p == path or p.startswith(path + ".")]
            if not hits:
                raise ConfigError(f"select={path!r} matches no output of the model; its outputs are {', '.join(paths)}")
            wanted.update(dict.fromkeys(hits, kinds))
    else:
        for i, leaf in enumerate(leaves):
            if isinstance(leaf, Tensor) and leaf.is_floating_point() and _level(leaf, copies) is not None:
                wanted[i] = kinds
        if not wanted:
            raise ConfigError(
                "the graph model returned no floating-point tensor with one row per graph or per node to combine "
                f"(outputs: {', '.join(paths) or 'none'}); choose outputs with select=..."
            )
    chosen: dict[int, _Leaf] = {}
    for i, kind in sorted(wanted.items()):
        leaf = leaves[i]
        level = _level(leaf, copies)
        name = paths[i] or "output"
        if level is None or not leaf.is_floating_point():
            shape = tuple(leaf.shape) if isinstance(leaf, Tensor) else type(leaf).__name__
            raise ConfigError(
                f"output {name!r} ({shape}) is not a floating-point tensor with one row per graph ({copies.count} for "
                f"the copies of this call) or per node ({copies.node_src.shape[0]}); only such outputs can be combined"
            )
        if kind != "invariant" and leaf.shape[-1] != d:
            raise InputLayoutError(
                f"output {name!r} has shape {tuple(leaf.shape)} for the copies of this call but is pulled back as "
                f"{kind} of the "
                f"{d}-D group, which needs a last axis of {d} coordinates. Declare each output's kind, e.g. "
                "select={'energy': 'invariant', 'forces': 'vectors', 'pos': 'points'}."
            )
        chosen[i] = _Leaf(level, kind)
    return chosen


def _assemble(tree: Any, leaves: list[Any], values: dict[int, Tensor]) -> Any:
    """The model's output structure with combined leaves; other tensor leaves are ``None``."""
    out = [values[i] if i in values else None if isinstance(leaf, Tensor) else leaf for i, leaf in enumerate(leaves)]
    if tree.kind == "leaf":
        return out[0]
    return tree_unflatten(tree, out)
