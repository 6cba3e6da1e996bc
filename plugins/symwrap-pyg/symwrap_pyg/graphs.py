"""Graph batches as the model receives them: where the positions are, and the copies of every graph.

Two call styles are served:

* **a PyTorch Geometric ``Data``/``Batch`` argument** (``model(data)``): positions are its ``pos`` attribute (or the
  attribute named by ``input=``), graphs come from its ``batch`` vector (a ``Data`` without one is one graph);
* **tensors as arguments** (``model(z, pos, batch, edge_index)``): positions are the argument named ``pos`` (or
  ``input=``), the graph of each node the argument named ``batch`` (none: one graph), edges ``edge_index``.

The copies of a batch are built by index arithmetic on the node, edge and graph axes (:class:`Copies`): copy ``k``
holds the nodes and edges of graph ``graph[k]``, renumbered; nothing is padded.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from symwrap.errors import ConfigError, InputLayoutError

__all__ = ["Copies", "GraphCall", "bind_graphs", "is_graph_data"]

#: Keys a ``Batch`` carries for its own bookkeeping, rebuilt for the copies.
_BOOKKEEPING = ("batch", "ptr")


def is_graph_data(value: Any) -> bool:
    """Whether ``value`` is a PyTorch Geometric ``Data``/``Batch`` (without importing torch_geometric for others)."""
    if "torch_geometric" not in sys.modules:  # no Data/Batch can exist before torch_geometric is imported
        return False
    from torch_geometric.data.data import BaseData

    return isinstance(value, BaseData)


@dataclass
class Copies:
    """The node and edge layout of ``K`` copies of graphs of a batch, listed graph by graph.

    Attributes:
        graph: ``(K,)`` the graph each copy repeats.
        node_src: ``(N',)`` the original node of each node of the copies.
        node_copy: ``(N',)`` the copy each node belongs to (the copies' batch vector, sorted).
        ptr: ``(K+1,)`` first node of each copy.
        edge_src: ``(E',)`` the original edge of each edge of the copies, or ``None`` without edges.
        edge_copy: ``(E',)`` the copy each edge belongs to, or ``None``.
        edge_index: ``(2, E')`` the copies' edges, renumbered, or ``None``.
    """

    graph: Tensor
    node_src: Tensor
    node_copy: Tensor
    ptr: Tensor
    edge_src: Tensor | None = None
    edge_copy: Tensor | None = None
    edge_index: Tensor | None = None

    @property
    def count(self) -> int:
        return int(self.graph.shape[0])


def _segments(sizes: Tensor, starts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For segments of ``sizes`` ``(K,)`` copied from ``starts`` ``(K,)``: the source of every item, the segment of
    every item, and the new offsets ``(K+1,)``."""
    ptr = torch.zeros(sizes.shape[0] + 1, dtype=torch.long, device=sizes.device)
    torch.cumsum(sizes, 0, out=ptr[1:])
    segment = torch.repeat_interleave(torch.arange(sizes.shape[0], device=sizes.device), sizes)
    local = torch.arange(segment.shape[0], device=sizes.device) - ptr[:-1].index_select(0, segment)
    return starts.index_select(0, segment) + local, segment, ptr


class GraphCall:
    """One call of a graph model, with its positions and batch vector located.

    Attributes:
        pos: ``(N, d)`` node positions.
        batch: ``(N,)`` graph of each node.
        num_graphs: ``G``.
        what: How messages name the positions (``"data.pos"``, ``"argument 'pos'"``).
    """

    def __init__(
        self,
        model: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        data_at: tuple[str, int | str] | None,
        pos_key: str,
        vectors: Sequence[str],
        params: list[str],
    ) -> None:
        self.model, self.args, self.kwargs = model, list(args), dict(kwargs)
        self.data_at, self.pos_key, self.vectors = data_at, pos_key, tuple(vectors)
        if data_at is not None:
            data = self.data = self._get(data_at)
            if pos_key not in data or data[pos_key] is None:
                keys = ", ".join(sorted(data.keys())) or "none"
                raise InputLayoutError(
                    f"the graph batch has no positions {pos_key!r} for the group to move (its attributes: {keys}). "
                    f"Set data.{pos_key} = <(num_nodes, 3) coordinates>, or name the attribute holding them with "
                    "symwrap.wrap(..., input='<attribute>')."
                )
            self.pos = data[pos_key]
            self.what = f"data.{pos_key}"
            batch = data.get("batch", None)
            # a Batch knows its graphs (trailing empty ones too); a Data with a batch vector counts them from it
            num_graphs = int(data.num_graphs) if batch is not None and hasattr(type(data), "num_graphs") else None
            self.named = {}
        else:
            self.data = None
            self.named = {**dict(zip(params, args)), **kwargs}
            if pos_key not in self.named or not isinstance(self.named[pos_key], Tensor):
                passed = ", ".join(repr(k) for k in self.named) or "nothing"
                raise InputLayoutError(
                    f"the call passed no positions {pos_key!r} for the group to move (it passed {passed}). Call the "
                    f"model with a torch_geometric Data/Batch holding 'pos', or with a '{pos_key}' tensor argument "
                    "(num_nodes, 3); or name the positions' argument with symwrap.wrap(..., input='<name>')."
                )
            self.pos = self.named[pos_key]
            self.what = f"argument {pos_key!r}"
            batch = self.named.get("batch")
            num_graphs = None
        if batch is None:
            batch = torch.zeros(self.pos.shape[0], dtype=torch.long, device=self.pos.device)
            num_graphs = 1
        elif num_graphs is None:
            num_graphs = int(batch.max()) + 1 if isinstance(batch, Tensor) and batch.numel() else 1
        self.batch, self.num_graphs = batch, num_graphs
        for name in self.vectors:
            if self._value(name) is None:
                raise ConfigError(
                    f"vectors={self.vectors!r} names {name!r}, which this call does not pass; name node or edge "
                    "attributes (data.<name>) or tensor arguments that hold vectors to rotate with the positions."
                )

    def _get(self, at: tuple[str, int | str]) -> Any:
        return self.args[at[1]] if at[0] == "arg" else self.kwargs[at[1]]  # type: ignore[index]

    def _value(self, name: str) -> Any:
        if self.data is not None:
            return self.data.get(name, None)
        return self.named.get(name)

    def edge_index(self) -> Tensor | None:
        """The ``(2, E)`` edges of the call, or ``None``."""
        value = self._value("edge_index")
        return value if isinstance(value, Tensor) else None

    # ------------------------------------------------------------------ copies
    def copies(self, graph: Tensor) -> Copies:
        """The layout of the copies of graphs ``graph`` ``(K,)`` (non-decreasing)."""
        batch, num_graphs = self.batch, self.num_graphs
        counts = torch.bincount(batch, minlength=num_graphs)
        first = torch.cumsum(counts, 0) - counts
        node_src, node_copy, ptr = _segments(counts.index_select(0, graph), first.index_select(0, graph))
        out = Copies(graph, node_src, node_copy, ptr)
        edges = self.edge_index()
        if edges is None:
            return out
        if edges.ndim != 2 or edges.shape[0] != 2:
            raise InputLayoutError(f"edge_index must have shape (2, num_edges), got {tuple(edges.shape)}")
        edge_graph = batch.index_select(0, edges[0])
        order = None
        if edge_graph.numel() and bool((edge_graph[1:] < edge_graph[:-1]).any()):
            order = torch.argsort(edge_graph, stable=True)  # list each graph's edges together
            edge_graph = edge_graph.index_select(0, order)
        edge_counts = torch.bincount(edge_graph, minlength=num_graphs)
        edge_first = torch.cumsum(edge_counts, 0) - edge_counts
        edge_src, edge_copy, _ = _segments(edge_counts.index_select(0, graph), edge_first.index_select(0, graph))
        if order is not None:
            edge_src = order.index_select(0, edge_src)
        shift = ptr[:-1].index_select(0, edge_copy) - first.index_select(0, graph.index_select(0, edge_copy))
        out.edge_src, out.edge_copy = edge_src, edge_copy
        out.edge_index = edges.index_select(1, edge_src) + shift
        return out

    def arguments(self, copies: Copies, moved: dict[str, Tensor]) -> tuple[list[Any], dict[str, Any]]:
        """The model's arguments for the copies: ``moved`` replaces the positions and vector features, the other
        node, edge and graph tensors are repeated, edges renumbered."""
        if self.data is not None:
            args, kwargs = list(self.args), dict(self.kwargs)
            data = self._copied_data(copies, moved)
            if self.data_at[0] == "arg":  # type: ignore[index]
                args[self.data_at[1]] = data  # type: ignore[index, call-overload]
            else:
                kwargs[self.data_at[1]] = data  # type: ignore[index]
            return args, kwargs
        values = {name: self._copied_tensor(name, value, copies, moved) for name, value in self.named.items()}
        return [], values

    def _copied_tensor(self, name: str, value: Any, copies: Copies, moved: dict[str, Tensor]) -> Any:
        if name in moved:
            return moved[name]
        if name == "batch":
            return copies.node_copy
        if name == "ptr":
            return copies.ptr
        if name == "edge_index":
            return copies.edge_index
        if name in ("num_graphs", "batch_size") and isinstance(value, int):
            return copies.count
        if not isinstance(value, Tensor) or value.ndim == 0:
            return value
        return self._repeat(value, 0, copies, name)

    def _repeat(self, value: Tensor, dim: int, copies: Copies, name: str) -> Tensor:
        """Repeat a node-, edge- or graph-level tensor along ``dim`` for the copies (others are passed as they are)."""
        size = value.shape[dim]
        if size == self.pos.shape[0]:
            return value.index_select(dim, copies.node_src)
        if copies.edge_src is not None and size == self._edges():
            return value.index_select(dim, copies.edge_src)
        if size == self.num_graphs:
            return value.index_select(dim, copies.graph)
        return value

    def _edges(self) -> int:
        edges = self.edge_index()
        return -1 if edges is None else int(edges.shape[1])

    def _copied_data(self, copies: Copies, moved: dict[str, Tensor]) -> Any:
        from torch_geometric.data import Batch

        data = self.data
        out = Batch()
        for key, value in data.items():
            if key in _BOOKKEEPING:
                continue
            if key in moved:
                out[key] = moved[key]
                continue
            if key == "num_nodes":
                out[key] = copies.node_src.shape[0]
                continue
            if not isinstance(value, Tensor) or value.ndim == 0:
                out[key] = value
                continue
            if key == "edge_index":
                out[key] = copies.edge_index
                continue
            increment = data.__inc__(key, value)
            if not (isinstance(increment, int) and increment == 0):
                raise ConfigError(
                    f"the graph batch holds {key!r}, an index attribute that PyTorch Geometric increments when it "
                    "batches graphs; only edge_index is renumbered for the copies of each graph. Remove that "
                    "attribute before calling the wrapped model."
                )
            dim = data.__cat_dim__(key, value)
            dim = dim + value.ndim if isinstance(dim, int) and dim < 0 else dim
            out[key] = self._repeat(value, dim if isinstance(dim, int) else 0, copies, key)
        out.batch, out.ptr = copies.node_copy, copies.ptr
        out._num_graphs = copies.count
        return out


def bind_graphs(
    model: Any, args: tuple[Any, ...], kwargs: dict[str, Any], pos_key: str, vectors: Sequence[str], params: list[str]
) -> GraphCall:
    """Locate the graph batch (or the position tensors) of one call of ``model`` (``params``: its forward's
    parameter names, to name positional tensor arguments)."""
    data_at: tuple[str, int | str] | None = None
    for i, value in enumerate(args):
        if is_graph_data(value):
            data_at = ("arg", i)
            break
    else:
        for name, value in kwargs.items():
            if is_graph_data(value):
                data_at = ("kw", name)
                break
    return GraphCall(model, args, kwargs, data_at=data_at, pos_key=pos_key, vectors=vectors, params=params)
