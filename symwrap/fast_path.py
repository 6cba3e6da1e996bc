"""The steady-state path of a wrapped call: the same few kernels as a hand-written orbit average, nothing else.

After a call has gone through the general engine (bind, plan, chunk, act, forward, select, pull back, reduce), a
call that can only repeat the same decisions takes this path instead. That is the case when

- the model is called as ``wrapped(x)`` with one positional tensor, and no ``torch.compile`` tracing;
- the method's plan does not look at the input's values (:meth:`Method.static_plan`: group averaging, equizero,
  frame averaging over a finite group), so the plan of the last call of the same shape is the plan of this one;
- the output is one floating-point tensor, invariant, or an equivariant dense map of an exact image group that the
  general path pulls back slot by slot (:mod:`symwrap.dense_pull_back`; this path adds each forward's maps with the
  same reducer);
- the rows per forward are settled: the whole orbit in one forward, or chunks of a settled size when the general path
  would move every copy at once and, for invariant outputs, sum the small outputs once (then this path runs the same
  forwards; not for per-copy features).

Then a call is: one gather of the copies (the input action's :meth:`~symwrap.actions.base.Action.row_gather`, one
``index_select`` for exact image groups), the base model's forward (with the per-copy features for λ-equitune), the
method's reweighing if any, and one batched matmul for the weighted sum. On small models the general path's
Python bookkeeping (around 0.1 ms a call) is a visible share of the time (``benchmarks/bench_suite.py``,
``benchmarks/bench_overhead.py``); this path is what lets an 8×8 CNN at batch 1 run near the cost of its |G|
forwards. The result is the general path's, exactly the same arithmetic (``tests/test_fast_path.py`` compares
them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from symwrap.adapters.base import Adapter, BoundCall
from symwrap.autocast import AutocastState, as_dtype
from symwrap.dense_pull_back import SlotReducer
from symwrap.methods.base import Method, Plan
from symwrap.reduce import combine_reweighed, reduce_whole_orbit

__all__ = ["UNFINISHED", "FastPath", "FastPathKey", "Replanned", "fast_path_key"]

#: ``(shape, dtype, device)`` of the acted input: the fast path of one input layout.
FastPathKey = tuple[torch.Size, torch.dtype, torch.device]

#: Marks a call the fast path did not finish (none is known for the layout, or the model returned another output
#: type): the caller runs the general path instead.
UNFINISHED = object()


class Replanned:
    """A fast call whose fresh plan has another number of copies than its layout's fast path (a degenerate point
    cloud's enlarged frame, tied set entries, a canonicalizer switched to training): the general path runs it with
    this plan, so the plan is not made twice."""

    __slots__ = ("plan",)

    def __init__(self, plan: Plan) -> None:
        self.plan = plan


def fast_path_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> FastPathKey | None:
    """The key of a call ``wrapped(x)`` with one tensor and no keywords, or ``None`` for any other call."""
    if kwargs or len(args) != 1:
        return None
    x = args[0]
    if not isinstance(x, Tensor):
        return None
    return (x.shape, x.dtype, x.device)


class FastPath:
    """One input layout's steady-state call (see the module docstring).

    Args:
        model: The base model (called on the ``(B·k, ...)`` copies).
        gather: ``x (B, ...) -> copies (B·k, ...)`` in the engine's row order ``r = b·k + j`` (``None`` with
            ``planner``).
        plan: The static plan (``elements (B, k, ...)``, ``weights (B, k)``).
        method: The method, when it reweighs the copies from their outputs (equizero), else ``None``.
        reduce: The reduction space (:data:`~symwrap.reduce.REDUCE_SPACES`).
        class_dim: The class axis for ``probs``/``log_probs`` and the method's reweighing.
        dtype: The dtype of the combined output in the general call (float32 or float64): the dtype of the sum.
        features: For a method that reweighs from per-copy features: the bound call of the general call (its acted
            argument is always replaced by the copies), the adapter and the rows' source inputs ``src`` ``(B·k,)``,
            for :meth:`Method.features_and_output`.
        planner: For a method that plans from the input's values (:meth:`Method.plans_from_input`: frames of point
            clouds and sets, canonicalization): ``x -> plan``, called every call; ``plan`` is then only the layout's
            ``(B, k)``, and ``move(x, flat elements (B·k, ...))`` makes the copies instead of ``gather``.
        move: See ``planner``.
        lean: For a method with :meth:`Method.lean_copies` (one copy per input, weight 1): ``x -> copies (B, ...)``,
            called instead of ``planner`` and ``move`` (``plan`` is then the layout's static one-copy plan); when it
            returns ``None`` the call plans with ``planner`` instead.
        lean_forward: For a method with :meth:`Method.lean_forward`: ``rows (B·k, ...) -> output (B, ...)`` (or
            ``None`` for another output type), called instead of the forward, reweighing and sum outside autocast.
        chunk: Rows per forward when the settled choice of ``chunk_size`` splits the orbit (``None``: one forward);
            the outputs are concatenated and combined once, as the general path does with small outputs (not with
            ``features``).
        dense: For an equivariant dense output of an exact image group (``(R, ..., H, W)`` maps): the general path's
            slot reducer of the layout (its pull-back moves and weights), a fresh copy of which adds each forward's
            outputs (the call's result is its ``result()``), and the shape of one row's output.
    """

    __slots__ = (
        "adapter",
        "autocast_type",
        "batch",
        "call",
        "chunk",
        "class_dim",
        "copies",
        "dense",
        "dtype",
        "gather",
        "lean",
        "lean_forward",
        "method",
        "model",
        "move",
        "plan",
        "planner",
        "reduce",
        "src",
        "weights",
    )

    def __init__(
        self,
        model: nn.Module,
        gather: Callable[[Tensor], Tensor] | None,
        plan: Plan,
        method: Method | None,
        reduce: str,
        class_dim: int,
        dtype: torch.dtype,
        features: tuple[BoundCall, Adapter, Tensor] | None = None,
        planner: Callable[[Tensor], Plan] | None = None,
        move: Callable[[Tensor, Tensor], Tensor] | None = None,
        lean: Callable[[Tensor], Tensor | None] | None = None,
        lean_forward: Callable[[Tensor], Tensor | None] | None = None,
        chunk: int | None = None,
        dense: tuple[SlotReducer, torch.Size] | None = None,
    ) -> None:
        self.chunk, self.dense = chunk, dense
        self.model, self.gather, self.plan, self.method = model, gather, plan, method
        self.planner, self.move, self.lean, self.lean_forward = planner, move, lean, lean_forward
        self.reduce, self.class_dim, self.dtype = reduce, class_dim, dtype
        self.batch, self.copies = plan.weights.shape
        self.weights = plan.weights.to(dtype).unsqueeze(1)  # (B, 1, k): the weighted sum as a batched matmul
        self.call, self.adapter, self.src = features if features is not None else (None, None, None)
        device_type = plan.weights.device.type  # the layout's device (the plan is made on it)
        self.autocast_type = device_type if torch.amp.is_autocast_available(device_type) else None

    def __call__(self, x: Tensor) -> Any:
        """The symmetrized output for ``x`` ``(B, ...)``, or :data:`UNFINISHED`, or :class:`Replanned`.

        Under ``torch.autocast`` it keeps the general path's precision policy (:mod:`symwrap.autocast`): the plan,
        the copies and the reduction in float32, the base model's forward in the caller's autocast.
        """
        if self.dense is not None:
            return self._dense_call(x)
        if self.autocast_type is not None and torch.is_autocast_enabled(self.autocast_type):
            full = AutocastState.capture(x.device).full_precision
            with full():
                moved = self._copies(x)
            if type(moved) is Replanned:
                return moved
            plan, rows = moved
            features, y = self._forward(rows)  # under the caller's autocast
            if type(y) is not Tensor:
                return UNFINISHED
            with full():
                return self._combine(y, features, plan)
        moved = self._copies(x)
        if type(moved) is Replanned:
            return moved
        plan, rows = moved
        if self.lean_forward is not None and plan is self.plan:
            result = self.lean_forward(rows)
            return UNFINISHED if result is None else result
        features, y = self._forward(rows)
        if type(y) is not Tensor:
            return UNFINISHED
        return self._combine(y, features, plan)

    def _dense_call(self, x: Tensor) -> Any:
        """The dense equivariant output for ``x``: the copies, each forward's maps pulled back and added slot by slot
        (the general path's :class:`~symwrap.dense_pull_back.SlotReducer`, in float32 under autocast)."""
        assert self.dense is not None and self.gather is not None
        template, shape = self.dense
        autocast = self.autocast_type is not None and torch.is_autocast_enabled(self.autocast_type)
        full = AutocastState.capture(x.device).full_precision if autocast else contextlib.nullcontext
        with full():
            rows = self.gather(x)
        reducer = template.fresh()
        start = 0
        for part in rows.split(self.chunk) if self.chunk is not None else (rows,):
            y = self.model(part)
            if type(y) is not Tensor or y.shape[1:] != shape:
                return UNFINISHED  # another output: the layout keeps the general path, which checks it
            with full():
                reducer.add(start, y)
            start += part.shape[0]
        with full():
            return reducer.result()

    def _copies(self, x: Tensor) -> tuple[Plan, Tensor] | Replanned:
        """This call's plan and the copies ``(B·k, ...)``; :class:`Replanned` when a fresh plan has another ``k``."""
        if self.planner is None:
            assert self.gather is not None
            return self.plan, self.gather(x)
        if self.lean is not None:
            rows = self.lean(x)
            if rows is not None:
                return self.plan, rows
        plan = self.planner(x)
        if plan.weights.shape != self.plan.weights.shape:
            return Replanned(plan)
        assert self.move is not None
        return plan, self.move(x, plan.flat_elements())

    def _forward(self, rows: Tensor) -> tuple[Tensor | None, Any]:
        """The base model on the copies ``(B·k, ...)``: per-copy features ``(B·k, D)`` (or ``None``) and its output."""
        if self.call is None:
            if self.chunk is None:
                return None, self.model(rows)
            parts = [self.model(part) for part in rows.split(self.chunk)]
            if any(type(part) is not Tensor for part in parts):
                return None, parts  # not one tensor per forward: the caller gives the layout to the general path
            return None, torch.cat(parts)
        assert self.method is not None  # λ-equitune: the method's features forward (hooked submodule, feature model)
        return self.method.features_and_output(self.call, [rows], self.src, self.adapter)

    def _combine(self, y: Tensor, features: Tensor | None, plan: Plan) -> Tensor:
        """The weighted sum over the copies of ``y`` ``(B·k, ...)`` -> ``(B, ...)`` (reweighed by the method)."""
        if self.method is not None:
            values = y.reshape(self.batch, self.copies, *y.shape[1:])
            if features is not None:
                features = features.reshape(self.batch, self.copies, -1)
            reweighing = self.method.reweigh(plan, [values], features, self.class_dim)
            return combine_reweighed([y], reweighing, self.reduce, self.class_dim)[0]
        if self.reduce == "logits" and y.dtype is self.dtype and self.copies == 1 and not plan.weights.requires_grad:
            return y  # one copy per input, weight 1 (canonicalization): reduce_whole_orbit's answer, without its steps
        # reduce_whole_orbit's logits sum, with a static plan's (B, 1, k) weights made once: ~10 µs a call less
        if self.reduce == "logits" and y.dtype == self.dtype and self.copies > 1:
            weights = self.weights if plan is self.plan else as_dtype(plan.weights, self.dtype).unsqueeze(1)
            summed = torch.bmm(weights, y.reshape(self.batch, self.copies, -1))
            return summed.reshape(self.batch, *y.shape[1:])
        return reduce_whole_orbit([y], plan.weights, self.reduce, self.class_dim)[0]
