"""The ``pyg`` adapter: graph models called with a PyTorch Geometric ``Data``/``Batch`` or position tensors."""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from torch import nn

from symwrap.actions import PointCloudAction, VectorAction
from symwrap.adapters.base import Adapter, Selector
from symwrap.errors import ConfigError
from symwrap.frames.base import point_group_spec
from symwrap.frames.ragged import check_ragged
from symwrap.groups.base import Group
from symwrap_pyg.graphs import bind_graphs, is_graph_data
from symwrap_pyg.orbit import OUTPUT_KINDS, run_graph_orbit
from symwrap_pyg.plans import plan_graphs

__all__ = ["PyGAdapter"]

#: A ``forward`` parameter annotated with one of PyTorch Geometric's data classes.
_GRAPH_ANNOTATION = re.compile(r"\b(Data|Batch|BaseData|HeteroData)\b|torch_geometric")


def _uses_torch_geometric(model: nn.Module) -> bool:
    """A torch_geometric submodule, or a forward annotated with ``Data``/``Batch`` or taking ``pos`` and ``batch``."""
    if any(type(m).__module__.startswith("torch_geometric.") for m in model.modules()):
        return True
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    if "pos" in params and "batch" in params:
        return True
    return any(_GRAPH_ANNOTATION.search(str(p.annotation)) for p in params.values())


class PyGAdapter(Adapter):
    """Calls graph models on PyTorch Geometric batches; symmetrizes ragged batches per graph.

    Only the positions (and the node or edge vectors named by ``vectors``) move; every other node, edge and graph
    attribute is passed unchanged to each copy. Frames, canonical poses or Haar samples are planned per graph
    (:mod:`symwrap.frames.ragged`), all copies run as one batch of graphs (:mod:`symwrap_pyg.orbit`).

    Args:
        model: The graph model.
        input: The positions: an attribute of the ``Data``/``Batch`` argument, or the name of the positions' tensor
            argument (default ``"pos"``).
        select: Which outputs to combine: ``None`` (every floating graph- or node-level tensor, all of the kind
            ``output=`` says), a path or tuple of paths, or a dict ``{path: kind}`` with kinds ``"invariant"``
            (energies, charges), ``"vectors"`` (forces, velocities: rotated back) and ``"points"`` (positions:
            rotated and translated back), e.g. ``{"energy": "invariant", "forces": "vectors"}``.
        vectors: Node or edge attributes (or tensor arguments) holding vectors that rotate with the positions
            (velocities, edge displacement vectors); translations do not move them.

    Example:
        ``symwrap.wrap(gnn, "e3", "frame_averaging", select={"energy": "invariant", "forces": "vectors"})``
    """

    name: ClassVar[str] = "pyg"
    priority: ClassVar[int] = 50  # below the backbone adapters (100): a timm or HF model is theirs

    def __init__(
        self,
        model: nn.Module,
        *,
        input: Selector | Sequence[Selector] | None = None,
        select: Selector | Sequence[Selector] | dict[str, str] | None = None,
        vectors: Sequence[str] = (),
    ) -> None:
        kinds = None
        if isinstance(select, dict):
            bad = {path: kind for path, kind in select.items() if kind not in OUTPUT_KINDS}
            if bad:
                raise ConfigError(
                    f"invalid option 'select': output kinds {bad} are not among {', '.join(OUTPUT_KINDS)}; use e.g. "
                    "select={'energy': 'invariant', 'forces': 'vectors', 'pos': 'points'}"
                )
            kinds, select = dict(select), tuple(select)
        super().__init__(model, input=input, select=select)
        if self.input is not None and (len(self.input) != 1 or not isinstance(self.input[0], str)):
            raise ConfigError(
                f"invalid option 'input': {input!r}; for graph models name the positions, e.g. input='pos' (an "
                "attribute of the Data/Batch argument, or the positions' tensor argument)"
            )
        if isinstance(vectors, str) or not all(isinstance(v, str) for v in vectors):
            raise ConfigError(f"invalid option 'vectors': {vectors!r}; pass a tuple of attribute names, e.g. ('vel',)")
        self.pos_key = self.input[0] if self.input else "pos"
        self.kinds = kinds
        self.vectors = tuple(vectors)

    @classmethod
    def matches(cls, model: Any) -> bool:
        return isinstance(model, nn.Module) and _uses_torch_geometric(model)

    def check_group(self, group: Group, input_action: Any) -> None:
        if point_group_spec(group) is None:
            raise ConfigError(
                f"the pyg adapter moves node positions with o{{d}}/so{{d}}/e{{d}}/se{{d}} (e.g. 'e3'), not group "
                f"{group.name!r}. Use one of those groups, or adapter='torch' for a model of plain tensors."
            )

    def run_symmetrized(self, wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Plan the copies of every graph of the call, run them as one batch of graphs and combine the outputs."""
        from symwrap.autocast import AutocastState

        group, method, config = wrapped.group, wrapped.method, wrapped.symwrap_config
        spec = point_group_spec(group)
        assert spec is not None
        if config.reduce != "logits":
            raise ConfigError(
                f"invalid option 'reduce': {config.reduce!r}; graph batches average the raw outputs (reduce='logits')"
            )
        if not self._graph_call(args, kwargs):
            return NotImplemented  # dense tensors for a model that merely uses a torch_geometric layer: the engine
        call = bind_graphs(self.model, args, kwargs, self.pos_key, self.vectors, self._params)
        check_ragged(call.pos, call.batch, call.num_graphs, spec[0], group.name, call.what)
        autocast = AutocastState.capture(call.pos.device)
        with autocast.full_precision():
            plan = plan_graphs(method, group, spec, call.pos, call.batch, call.num_graphs)
            chunk = config.chunk_size if isinstance(config.chunk_size, int) else None
            return run_graph_orbit(
                call,
                plan,
                group,
                spec,
                self.kinds if self.kinds is not None else self._output_kind(wrapped.output_action),
                select=tuple(str(s) for s in self.select) if self.select is not None else None,
                chunk_size=chunk,
                second_moment=method.wants_second_moment,
                autocast=autocast,
            )

    def _graph_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether a call passes a ``Data``/``Batch``, or the model takes positions by name (then they must come)."""
        if any(is_graph_data(value) for value in (*args, *kwargs.values())):
            return True
        return self.pos_key in self._params or self.pos_key in kwargs

    @staticmethod
    def _output_kind(action: Any) -> str:
        if action is None:
            return "invariant"
        if isinstance(action, VectorAction):
            return "vectors"
        if isinstance(action, PointCloudAction):
            return "points"
        raise ConfigError(
            f"output={type(action).__name__}() cannot pull back graph outputs; use output='invariant', "
            "'equivariant' (positions), symwrap.actions.VectorAction() (forces), or select={path: kind}."
        )
