"""The orbit engine shared by every method (see the README's Architecture section).

    plan      -> elements (B, k) and prior weights (B, k)            (the method)
    expand    -> x' = g·x for the planned g, rows r = b·k + j          (the input action, per chunk; once for a
                                                                       small input)
    evaluate  -> f(x') in chunks of ``chunk_size`` rows, one forward per chunk
    pull back -> g⁻¹·f(x') for equivariant outputs                     (the output action)
    reweigh   -> weights from every copy's output/features (λ-equitune, equizero; ``Method.reweighs``)
    reduce    -> Σ_j w[b, j] · (pulled-back outputs) in the chosen space (streamed chunk by chunk; small outputs
                                                                       are kept and summed once)

Nothing here loops over group elements: a chunk holds rows of any inputs and elements, and each
action moves a whole chunk with one batched kernel.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from symwrap.actions.base import Action
from symwrap.adapters.base import Adapter, BoundCall
from symwrap.autocast import at_least_float32
from symwrap.caches import keep_newest
from symwrap.chunking import ChunkTuner, Decision, pick_chunk
from symwrap.dense_pull_back import SlotReducer, slot_reducers
from symwrap.errors import ConfigError, OutOfMemoryError
from symwrap.groups.base import Group
from symwrap.memory import is_out_of_memory, measure_peak
from symwrap.methods.base import Method, Plan
from symwrap.nested import TreeSpec, tree_flatten, tree_unflatten
from symwrap.reduce import OrbitReducer, combine_reweighed, reduce_whole_orbit
from symwrap.tracing import caches_off

__all__ = ["ChunkSize", "OrbitEngine", "SymmetrizedOutput"]

ChunkSize = int | str | None

logger = logging.getLogger(__name__)

#: The context of a chunk whose memory is not measured (stateless: one for every chunk).
_NO_METER = contextlib.nullcontext()

#: Inputs whose copies for the whole orbit take at most this many bytes are moved in one action call even when the
#: forwards are chunked (small next to any model's activations, so the memory a chunk needs barely changes).
MOVE_AT_ONCE_BYTES = 1 << 20

#: Outputs of a chunked orbit that take at most this many bytes in all are kept and reduced once, after the last
#: chunk (one weighted sum), instead of scatter-added chunk by chunk.
KEEP_BYTES = 1 << 20


@dataclass
class SymmetrizedOutput:
    """Returned instead of the plain output when a method reports a standard error.

    Attributes:
        output: The symmetrized output (the base model's output type).
        stderr: The same structure with the standard error of each combined tensor (``None`` elsewhere).
    """

    output: Any
    stderr: Any


@dataclass
class _Chunk:
    src: Tensor  # (R,) input row of each orbit row
    slot: Tensor  # (R,) orbit slot j of each row
    elements: Tensor  # (R, *code)
    leaves: list[Any]  # flattened model output of the chunk
    spec: TreeSpec
    features: Tensor | None = None  # (R, D) per-row features, for methods that reweigh from features


@dataclass
class _Tuning:
    key: tuple  # the call signature: shapes, dtypes, devices of the acted inputs, copies, group
    layout: tuple  # what shapes of one model share: ranks, dtypes, devices of the acted inputs, group
    rows: int
    batch: int
    copies: int
    row_elements: int  # input elements of one orbit row


@dataclass
class _Orbit:
    first: _Chunk  # the first chunk (its output structure)
    selected: list[int]  # indices of the combined output leaves
    values: list[Tensor]  # (B, k, ...) pulled-back outputs per selected leaf
    features: Tensor | None  # (B, k, D) per-copy features, when the forward returned them


#: A forward of orbit rows that also returns per-row features: ``(acted_rows, src) -> (features (R, D), output)``.
RowsForward = Callable[[list[Tensor], Tensor], tuple[Tensor, Any]]


class OrbitEngine:
    """Runs a model over planned orbit copies in chunks and combines the outputs.

    Args:
        chunk_size: Rows per forward: an int, ``None`` (all rows in one forward) or ``"auto"`` (measured).
        tuner: The :class:`ChunkTuner` that serves ``"auto"``.
    """

    def __init__(self, chunk_size: ChunkSize = "auto", tuner: ChunkTuner | None = None) -> None:
        #: Steady-state calls per input layout (:mod:`symwrap.fast_path`), ``None`` where a layout has none. The
        #: wrapper fills it; changing :attr:`chunk_size` or backing off after out-of-memory empties it.
        self.fast_paths: dict[Any, Any] = {}
        self._use_fast_path = True
        self.chunk_size = chunk_size
        self.tuner = tuner or ChunkTuner()
        self._row_maps: dict[tuple, tuple[Tensor, Tensor]] = {}
        self._moves: dict[tuple, Any] = {}  # native pull-back moves per elements and map size (dense_pull_back)
        # One measurement at a time: threads that call a new shape together wait for one choice instead of timing
        # their forwards against each other.
        self._tuning_lock = threading.Lock()
        _prepare_compiled_tuning()

    def fresh(self) -> OrbitEngine:
        """A new engine with the same options and memory budget and nothing measured or remembered (what a pickled
        or copied wrapper gets: its caches hold closures and timings of this process)."""
        engine = OrbitEngine(self.chunk_size, ChunkTuner(memory=self.tuner.memory))
        engine.use_fast_path = self.use_fast_path
        return engine

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_tuning_lock"]  # a lock does not pickle; a copy gets its own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._tuning_lock = threading.Lock()

    @property
    def chunk_size(self) -> ChunkSize:
        """Rows per forward: an int, ``None`` (all rows in one forward) or ``"auto"`` (measured)."""
        return self._chunk_size

    @chunk_size.setter
    def chunk_size(self, value: ChunkSize) -> None:
        self._chunk_size = value
        self.fast_paths.clear()  # they were chosen for the old chunking

    @property
    def use_fast_path(self) -> bool:
        """Whether steady calls may take the fast path; ``False`` runs every call through the engine (for
        comparisons and debugging) and forgets the fast paths learned so far."""
        return self._use_fast_path

    @use_fast_path.setter
    def use_fast_path(self, value: bool) -> None:
        self._use_fast_path = bool(value)
        self.fast_paths.clear()

    def settled_chunk(self, call: BoundCall, group: Group, plan: Plan) -> int | None:
        """The rows per forward of calls like ``call`` from now on, or ``None`` while ``"auto"`` is still choosing."""
        rows = plan.weights.numel()
        if self.chunk_size is None:
            return rows
        if isinstance(self.chunk_size, int):
            return min(self.chunk_size, rows)
        chosen = self.tuner.cached(self._tuning(call, group, plan).key)
        return None if chosen is None else min(chosen, rows)

    @staticmethod
    def keeps_outputs(orbit_bytes: int) -> bool:
        """Whether a chunked orbit whose selected outputs take ``orbit_bytes`` in all keeps them and sums them once,
        after the last chunk (else they are scatter-added chunk by chunk)."""
        return orbit_bytes <= KEEP_BYTES

    def settled(self, call: BoundCall, group: Group, plan: Plan) -> bool:
        """Whether the rows per forward of calls like ``call`` are fixed from now on (for ``"auto"``: the tuner's
        choice for the shape is final)."""
        return self.chunk_size != "auto" or self.tuner.cached(self._tuning(call, group, plan).key) is not None

    # ------------------------------------------------------------------ chunking
    @staticmethod
    def _tuning(call: BoundCall, group: Group, plan: Plan) -> _Tuning:
        batch, copies = plan.elements.shape[:2]
        key = (tuple((tuple(x.shape), x.dtype, x.device) for x in call.acted), copies, type(group).__name__)
        # len(shape) and the product of the row's dims, not dim()/numel(): raw text (TextBatch) has a shape only
        layout = (tuple((len(x.shape), x.dtype, x.device) for x in call.acted), type(group).__name__)
        row_elements = sum(math.prod(x.shape[1:]) for x in call.acted)
        return _Tuning(key, layout, batch * copies, batch, copies, max(row_elements, 1))

    def _chunks(
        self, call: BoundCall, group: Group, action: Action, plan: Plan, forward: RowsForward | None = None
    ) -> Iterator[_Chunk]:
        batch, copies = plan.elements.shape[:2]
        rows = batch * copies
        device = call.acted[0].device
        tuning: _Tuning | None = None
        decision: Decision | None = None
        if self.chunk_size is None or caches_off():  # a recorded call: the whole orbit in one forward, no tuner
            per_chunk = rows
        elif isinstance(self.chunk_size, int):
            per_chunk = min(self.chunk_size, rows)
        else:
            tuning = self._tuning(call, group, plan)
            chosen = self.tuner.cached(tuning.key)  # a dict lookup: traceable, so compiled calls have no graph break
            if chosen is not None:
                per_chunk = chosen
            elif torch.compiler.is_compiling():  # decided eagerly: the graph breaks here once per shape
                decision = _decide_eagerly()(self.tuner, tuning, device, True)
                per_chunk = decision.chunk
            else:
                with self._tuning_lock:  # threads share the tuner: one decision at a time (no forward inside)
                    decision = _decide(self.tuner, tuning, device, False)
                per_chunk = decision.chunk
        measure_rows = decision.measure_rows if decision is not None else 0
        timed = decision is not None and decision.timed and self.tuner.clock is not None
        started = self.tuner.clock() if timed else 0.0  # type: ignore[misc]
        flat = plan.flat_elements()
        src_all, slot_all = self.row_map(batch, copies, device)
        # Several chunks of a small input: move every row with one action call and slice it per chunk, instead of
        # one action call per chunk (each is a few kernels of fixed cost: ~0.1 ms a chunk on a CPU).
        moved = self._moved_at_once(call, group, action, src_all, flat, min(per_chunk, measure_rows or per_chunk))
        # Chunks of one size: each row map, the elements and the moved rows split once (one call each, not a slice
        # per chunk: on a small model each slice is a visible cost). None when the first chunk is measured or after
        # an out-of-memory back-off: then the chunks are sliced as they come.
        parts = None
        if not measure_rows and per_chunk < rows:
            parts = (src_all.split(per_chunk), slot_all.split(per_chunk), flat.split(per_chunk))
            moved_parts = [m.split(per_chunk) for m in moved] if moved is not None else None
        start = index = 0
        while start < rows:
            size = measure_rows if measure_rows and start == 0 else per_chunk
            whole = start == 0 and size >= rows  # the same row map object every call: actions cache on it
            if parts is not None:
                src, slot, elements = parts[0][index], parts[1][index], parts[2][index]
            else:
                src = src_all if whole else src_all[start : start + size]
                slot = slot_all if whole else slot_all[start : start + size]
                elements = flat if whole else flat[start : start + size]
            failed = False
            try:
                features = None
                # the measured first chunk: its moved rows and its forward, as every later chunk will need them
                with measure_peak(device) if measure_rows and start == 0 else _NO_METER as peak:
                    if parts is not None and moved_parts is not None:
                        acted = [m[index] for m in moved_parts]
                    elif moved is not None:
                        acted = [m[start : start + size] for m in moved]
                    else:
                        acted = [action.apply(x, src.to(x.device), elements, group) for x in call.acted]
                    if forward is None:
                        out = call.call(acted, src)
                    else:
                        with call.autocast.model_precision():  # a features forward: the caller's precision
                            features, out = forward(acted, src)
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                per_chunk = self._back_off(call, group, plan, size, error)
                measure_rows, timed, failed, parts = 0, False, True, None
            if failed:  # the failed chunk's tensors died with `error` (its traceback held their frames)
                acted = []
                if device.type == "cuda":
                    torch.cuda.empty_cache()  # hand its blocks back before retrying
                continue  # nothing of the failed chunk was reduced: retry the same rows in smaller chunks
            if peak is not None:  # the measured first chunk: its peak bounds the chunks of the other rows
                assert tuning is not None
                with self._tuning_lock:
                    per_chunk = self.tuner.measured(
                        tuning.key, tuning.layout, rows, batch, copies, tuning.row_elements, size, peak.peak
                    )
                measure_rows = 0
            leaves, spec = tree_flatten(out)
            yield _Chunk(src, slot, elements, leaves, spec, features)
            start += size
            index += 1
        if timed:  # the whole call ran in chunks of `per_chunk`, pulled back and reduced: the tuner learns its time
            assert tuning is not None
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = self.tuner.clock() - started  # type: ignore[misc]
            with self._tuning_lock:
                self.tuner.observe(tuning.key, tuning.layout, per_chunk, rows, tuning.row_elements, seconds)

    def _moved_at_once(
        self, call: BoundCall, group: Group, action: Action, src: Tensor, flat: Tensor, per_chunk: int
    ) -> list[Tensor] | None:
        """Every row's moved input ``(B·k, ...)`` per acted tensor, when the rows span several chunks and all of them
        together take at most :data:`MOVE_AT_ONCE_BYTES` (and a sixteenth of ``max_memory``); else ``None``."""
        rows = src.shape[0]
        if per_chunk >= rows or not self.moves_at_once(call.acted, rows):
            return None
        return [action.apply(x, src.to(x.device), flat, group) for x in call.acted]

    def moves_at_once(self, acted: list[Any], rows: int) -> bool:
        """Whether a chunked orbit of ``rows`` rows moves the inputs ``acted`` of every row with one action call: at
        most :data:`MOVE_AT_ONCE_BYTES` of copies in all, and a sixteenth of ``max_memory``."""
        if not all(type(x) is Tensor for x in acted):
            return False
        size = sum(rows * (x.numel() // max(x.shape[0], 1)) * x.element_size() for x in acted)
        cap = self.tuner.memory.max_memory
        return size <= MOVE_AT_ONCE_BYTES and (cap is None or size <= cap // 16)

    def _back_off(self, call: BoundCall, group: Group, plan: Plan, per_chunk: int, error: Exception) -> int:
        """After an out-of-memory error in a forward of ``per_chunk`` rows: half the rows under ``"auto"`` (kept
        in the tuner's cache for later calls); otherwise a :class:`~symwrap.errors.OutOfMemoryError` that says
        what to change."""
        if self.chunk_size != "auto" or per_chunk <= 1:
            what = "all copies in one forward" if self.chunk_size is None else f"{per_chunk} rows per forward"
            raise OutOfMemoryError(
                f"out of memory in a forward of {per_chunk} orbit rows with chunk_size={self.chunk_size!r} ({what}). "
                "Use chunk_size='auto' (fits the free memory and halves the chunk on out-of-memory), optionally "
                "with max_memory='8GiB' to cap it, or a smaller chunk_size."
            ) from error
        smaller = max(1, per_chunk // 2)
        self.tuner.remember(self._tuning(call, group, plan).key, smaller)
        self.fast_paths.clear()
        logger.warning(
            "out of memory with %d rows per forward: retrying with %d (chunk_size='auto')", per_chunk, smaller
        )
        return smaller

    # ------------------------------------------------------------------ public
    def row_map(self, batch: int, copies: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """``src`` (input row) and ``slot`` (orbit slot) of each of the ``batch·copies`` rows, row ``r = b·k + j``
        (the order of every orbit this engine runs), cached per size."""
        if caches_off():  # sizes may be symbolic (unhashable) while recording; nothing is kept
            return torch.arange(batch, device=device).repeat_interleave(copies), torch.arange(
                copies, device=device
            ).repeat(batch)
        key = (batch, copies, device)
        found = self._row_maps.get(key)
        if found is None:
            src = torch.arange(batch, device=device).repeat_interleave(copies)
            found = keep_newest(self._row_maps, key, (src, torch.arange(copies, device=device).repeat(batch)), 16)
        return found

    def run(
        self,
        call: BoundCall,
        adapter: Adapter,
        group: Group,
        input_action: Action,
        output_action: Action | None,
        plan: Plan,
        *,
        reduce: str = "logits",
        class_dim: int = -1,
        second_moment: bool = False,
        method: Method | None = None,
    ) -> Any:
        """Symmetrize one call: returns the model's output type with the selected leaves combined.

        With ``second_moment`` the result is a :class:`SymmetrizedOutput` carrying standard errors
        ``sqrt(Var / k)`` of the uniform-weight average. A ``method`` that :attr:`~Method.reweighs` gets every
        copy's output (and features) before the reduction and returns the weights (see :meth:`_run_reweighed`).
        """
        if method is not None and method.reweighs:
            return self._run_reweighed(
                call, adapter, group, input_action, output_action, plan, method, reduce, class_dim
            )
        reducer = OrbitReducer(call.batch_size, plan.weights, reduce, class_dim, second_moment)
        rows = plan.weights.numel()
        first: _Chunk | None = None
        selected: list[int] = []
        whole: list[Tensor] | None = None
        kept: list[list[Tensor]] | None = None  # small outputs of several chunks: reduced once, at the end
        if second_moment and reduce in ("max", "gmean"):
            raise ConfigError(
                f"reduce={reduce!r} has no standard error: the method's return_stderr=True needs a mean "
                "(reduce='logits', 'probs' or 'features'); drop return_stderr or pick one of those."
            )
        dense: list[SlotReducer] | None = None  # dense outputs of exact image moves: reduced slot by slot
        start = 0  # the first orbit row of the chunk (chunks come in row order)
        for chunk in self._chunks(call, group, input_action, plan):
            if first is None:
                first = chunk
                selected = adapter.selected_leaves(chunk.spec, chunk.leaves, chunk.src.shape[0])
                if not second_moment:
                    leaves = [chunk.leaves[i] for i in selected]
                    moves = {} if caches_off() else self._moves  # a recorded call keeps nothing
                    dense = slot_reducers(
                        output_action, group, plan.elements, plan.weights, leaves, reduce, class_dim, moves
                    )
            chunk_rows = chunk.src.shape[0]
            start += chunk_rows
            if dense is not None:
                assert output_action is not None
                for reducer_of_leaf, i in zip(dense, selected):
                    leaf = chunk.leaves[i]
                    if chunk is first or type(leaf) is not Tensor or leaf.shape[1:] != first.leaves[i].shape[1:]:
                        output_action.check(leaf, group, output=True)  # later chunks: only a leaf of another shape
                    reducer_of_leaf.add(start - chunk_rows, leaf)
                continue
            values = self._pulled_back(chunk, selected, group, output_action)
            if not second_moment and chunk_rows == rows:  # the whole orbit in one forward
                whole = reduce_whole_orbit(values, plan.weights, reduce, class_dim)
                continue
            small = self.keeps_outputs(_orbit_bytes(values, chunk_rows, rows))
            if kept is None and not second_moment and small:
                kept = []
            if kept is not None:  # one weighted sum for all chunks instead of a scatter-add per chunk
                kept.append(values)
                continue
            reducer.update(chunk.src, chunk.slot, values)
        assert first is not None
        if dense is not None:
            whole = [reducer_of_leaf.result() for reducer_of_leaf in dense]
        if kept:
            whole = reduce_whole_orbit([torch.cat(parts) for parts in zip(*kept)], plan.weights, reduce, class_dim)
        output = _assemble(first, selected, reducer.result() if whole is None else whole)
        if not second_moment:
            return output
        stderr = [(v / plan.copies).sqrt() for v in reducer.variance()]
        return SymmetrizedOutput(output, _assemble(first, selected, stderr))

    def evaluate(
        self,
        call: BoundCall,
        adapter: Adapter,
        group: Group,
        input_action: Action,
        output_action: Action | None,
        plan: Plan,
    ) -> tuple[list[Tensor], list[str]]:
        """Every copy's pulled-back output, unreduced: one ``(B, k, ...)`` tensor per selected leaf, and its path."""
        orbit = self._collect(call, adapter, group, input_action, output_action, plan)
        return orbit.values, [orbit.first.spec.paths[i] for i in orbit.selected]

    def _collect(
        self,
        call: BoundCall,
        adapter: Adapter,
        group: Group,
        input_action: Action,
        output_action: Action | None,
        plan: Plan,
        forward: RowsForward | None = None,
    ) -> _Orbit:
        """Run every copy (chunked) and keep the pulled-back outputs ``(B, k, ...)`` and features ``(B, k, D)``."""
        batch, copies = plan.elements.shape[:2]
        first: _Chunk | None = None
        selected: list[int] = []
        per_leaf: list[list[Tensor]] = []
        features: list[Tensor] = []
        for chunk in self._chunks(call, group, input_action, plan, forward):
            if first is None:
                first = chunk
                selected = adapter.selected_leaves(chunk.spec, chunk.leaves, chunk.src.shape[0])
                per_leaf = [[] for _ in selected]
            for store, value in zip(per_leaf, self._pulled_back(chunk, selected, group, output_action)):
                store.append(value)
            if chunk.features is not None:
                features.append(chunk.features)
        assert first is not None
        values = [torch.cat(parts).reshape(batch, copies, *parts[0].shape[1:]) for parts in per_leaf]
        stacked = torch.cat(features).reshape(batch, copies, -1) if features else None
        return _Orbit(first, selected, values, stacked)

    def _run_reweighed(
        self,
        call: BoundCall,
        adapter: Adapter,
        group: Group,
        input_action: Action,
        output_action: Action | None,
        plan: Plan,
        method: Method,
        reduce: str,
        class_dim: int,
    ) -> Any:
        """Evaluate every copy (chunked), let the method weigh them, then reduce.

        Unlike :meth:`run`, this keeps all ``B·k`` pulled-back outputs until the weights are known (a proxy or
        a normalisation over the whole orbit needs them all), so memory grows with ``k`` for the outputs only;
        the forwards are still chunked. Chunking does not change the result: every per-copy value is computed
        row by row.
        """
        forward: RowsForward | None = None
        if method.needs_features:

            def forward(acted: list[Tensor], src: Tensor) -> tuple[Tensor, Any]:
                return method.features_and_output(call, acted, src, adapter)

        orbit = self._collect(call, adapter, group, input_action, output_action, plan, forward)
        reweighing = method.reweigh(plan, orbit.values, orbit.features, class_dim)
        batch, copies = plan.elements.shape[:2]
        flat = [v.reshape(batch * copies, *v.shape[2:]) for v in orbit.values]
        return _assemble(orbit.first, orbit.selected, combine_reweighed(flat, reweighing, reduce, class_dim))

    @staticmethod
    def _pulled_back(chunk: _Chunk, selected: list[int], group: Group, output_action: Action | None) -> list[Tensor]:
        values = [chunk.leaves[i] for i in selected]
        if output_action is None:
            return values
        inverse = group.inverse(chunk.elements)
        rows = torch.arange(chunk.src.shape[0], device=chunk.src.device)
        pulled = []
        for value in values:
            output_action.check(value, group, output=True)
            value = at_least_float32(value)  # a float16/bfloat16 output: pull back in float32 (matrix actions)
            pulled.append(output_action.apply(value, rows.to(value.device), inverse, group))
        return pulled


def _decide(tuner: ChunkTuner, tuning: _Tuning, device: torch.device, traced: bool) -> Decision:
    """The tuner's decision, made eagerly. A traced call neither measures nor times: its shape's choice is made final
    (memory and timings as known so far), so the next trace is a plain lookup without a graph break."""
    t = tuning
    if traced:
        chosen = tuner.cached(t.key)
        if chosen is None:
            known = tuner.layout(t.layout)
            candidates = tuner.candidates(known, t.rows, t.batch, t.copies, t.row_elements, None)
            estimates = tuner.estimates(known, candidates, t.rows, t.row_elements)
            chosen = pick_chunk(estimates, tuner.tolerance, whole=t.rows) if estimates else candidates[-1]
            tuner.remember(t.key, chosen)
        return Decision(chosen, final=True)
    return tuner.decide(t.key, t.layout, t.rows, t.batch, t.copies, t.row_elements, device)


#: :func:`_decide` wrapped by ``torch.compiler.disable``, once ``torch._dynamo`` is loaded (the wrapping imports it,
#: and ``import symwrap`` must not: it is a third of ``import torch``'s time). A list, which dynamo reads.
_EAGER_DECIDE: list[Callable[..., Decision]] = []


def _prepare_compiled_tuning() -> None:
    """Make the disabled :func:`_decide` when ``torch._dynamo`` is already loaded (then it costs nothing)."""
    if not _EAGER_DECIDE and "torch._dynamo" in sys.modules:
        _EAGER_DECIDE.append(torch.compiler.disable(_decide))


def _decide_eagerly() -> Callable[..., Decision]:
    """:func:`_decide` run eagerly from a compiled call, which breaks its graph there once per shape. Made before
    tracing when possible (an engine built after ``torch._dynamo`` loaded); otherwise made here, one more graph
    break."""
    return _EAGER_DECIDE[0] if _EAGER_DECIDE else torch.compiler.disable(_decide)


def _orbit_bytes(values: list[Tensor], chunk_rows: int, rows: int) -> int:
    """Bytes the selected outputs of all ``rows`` orbit rows take, from one chunk of ``chunk_rows`` rows."""
    return sum(v.numel() * v.element_size() for v in values) * rows // max(chunk_rows, 1)


def _assemble(first: _Chunk, selected: list[int], reduced: list[Tensor]) -> Any:
    """The output structure of the model with reduced values in the selected leaves.

    Other tensor leaves are set to ``None`` (they were not combined, and a single copy's value would be
    wrong for the symmetrized model); non-tensor leaves (strings, configs) are kept.
    """
    leaves: list[Any] = []
    values = iter(reduced)
    for i, leaf in enumerate(first.leaves):
        if i in selected:
            leaves.append(next(values))
        elif isinstance(leaf, Tensor):
            leaves.append(None)
        else:
            leaves.append(leaf)
    if first.spec.kind == "leaf":
        return leaves[0]
    return tree_unflatten(first.spec, leaves)
