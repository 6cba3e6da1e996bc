"""Recording a wrapped model as a graph: ``torch.export``, ``torch.onnx.export``, ``torch.jit.trace``.

A recorded call takes :func:`recorded_call` instead of the eager paths: no cache is read or filled
(:mod:`symwrap.tracing`), the whole orbit ``(B·k, ...)`` runs in one forward (the chunk tuner times real forwards,
which a recording cannot), and the plan is made from the group alone. A plan that depends on the input's values (a
point-cloud or set frame, a canonical pose, a random draw without a seed) is refused with
:class:`~symwrap.errors.RecordingError`: the recorders keep the example's plan as a constant, and the graph would be
neither invariant nor right on other inputs.

:func:`export` is ``torch.export.export`` with the batch dimension of the acted input made dynamic, in the
``dynamic_shapes`` form that the wrapper's ``forward(*args, **kwargs)`` signature asks for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from symwrap.errors import RecordingError
from symwrap.tracing import no_caches, recording_kind

if TYPE_CHECKING:
    from torch.export import ExportedProgram

    from symwrap.groups.base import Group
    from symwrap.methods.base import Method
    from symwrap.wrapper import SymmetrizedModel

__all__ = ["batch_dynamic_shapes", "check_recordable", "export", "recorded_call"]


def check_recordable(method: Method, group: Group, recorder: str) -> None:
    """Raise :class:`RecordingError` when ``method``'s plan for ``group`` depends on the input's values.

    Args:
        method: The wrapped model's method.
        group: The group (sized for the input).
        recorder: What records the call (``"torch.export"``, ``"torch.jit.trace"``...), for the message.
    """
    if getattr(method, "lambda_net", False) is None:  # built on the first eager call, from the features' size
        raise RecordingError(
            f"{recorder} cannot record method {method.name!r} before its λ-net exists: its input size is found on the "
            "first call. Call the wrapped model once on an example (or wrap with feature_dim=...), then record it."
        )
    if method.static_plan(group):
        return
    raise RecordingError(
        f"{recorder} cannot record method {method.name!r} with group {group.name!r}: its plan depends on each input "
        "(a frame, a canonical pose or an unseeded draw), and the recorded graph would keep the example's plan as a "
        "constant, wrong and not symmetric for other inputs. Record the base model instead (wrapped.base_model) and "
        "symmetrize in Python, use torch.compile(wrapped), which plans every call, or a method whose plan is the "
        "same for every input (method='group_averaging', 'equizero', 'lambda_equitune', or 'monte_carlo' with seed=)."
    )


def _check_batch(method: Method, batch: Any, recorder: str) -> None:
    """A seeded draw (``monte_carlo`` with ``seed=``) is made on the host for a concrete number of elements ``B·k``:
    it records for the example's batch size only."""
    import torch

    if isinstance(batch, torch.SymInt) and method.name == "monte_carlo":
        raise RecordingError(
            f"{recorder} cannot record method 'monte_carlo' with a dynamic batch size: its seeded draw of B·k elements "
            "is made for one batch size. Record with a fixed batch (symwrap.export.export(wrapped, (x,), "
            "dynamic_batch=False)); the program then takes inputs of that batch size."
        )


def recorded_call(model: SymmetrizedModel, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The symmetrized call as recorders see it: cache-free, one forward for the whole orbit, static plans only.

    Args:
        model: The wrapped model.
        args: The call's positional arguments.
        kwargs: The call's keyword arguments.

    Returns:
        What an eager call returns.
    """
    recorder = recording_kind()
    # symwrap's own options (a WrapConfig), under either attribute name the wrapper gives them
    options = model.__dict__.get("symwrap_config") or model.__dict__["config"]
    with no_caches():
        call = model.adapter.bind(args, kwargs)
        with call.autocast.full_precision():
            group = model.group.for_input(tuple(call.acted[0].shape), model.input_action)
            for x in call.acted:
                model.input_action.check(x, group)
            if recorder is not None:
                check_recordable(model.method, group, recorder)
                _check_batch(model.method, call.batch_size, recorder)
            plan = model.method.plan_for_call(call, group)
            return model.engine.run(
                call,
                model.adapter,
                group,
                model.input_action,
                model.output_action,
                plan,
                reduce=options.reduce,
                class_dim=options.class_dim,
                second_moment=model.method.wants_second_moment,
                method=model.method,
            )


def batch_dynamic_shapes(
    model: SymmetrizedModel, args: tuple[Any, ...], name: str = "batch", *, min: int = 1
) -> tuple[Any, ...]:
    """``dynamic_shapes`` for ``torch.export.export(model, args, dynamic_shapes=...)`` with a dynamic batch dim.

    ``model.forward`` shows the base model's signature, so for a base ``forward(x)`` the spec is one entry per
    argument, ``({0: Dim("batch")},)``. A base model whose ``forward`` takes ``*args`` takes its positional
    arguments as one tuple, and the spec nests one level deeper: ``(({0: Dim("batch")},),)``. Every tensor argument
    gets the same batch dimension; other arguments get ``None``.

    Args:
        model: The wrapped model to export.
        args: The example positional arguments.
        name: The dimension's name.
        min: Its smallest value (the exported program checks it).

    Returns:
        The ``dynamic_shapes`` argument.
    """
    import inspect

    import torch

    batch = torch.export.Dim(name, min=min)
    specs = tuple({0: batch} if isinstance(a, torch.Tensor) and a.ndim > 0 else None for a in args)
    kinds = [p.kind for p in inspect.signature(model.forward).parameters.values()]
    if kinds and kinds[0] is inspect.Parameter.VAR_POSITIONAL:
        return (specs,)
    return specs


def export(
    model: SymmetrizedModel, args: tuple[Any, ...], *, dynamic_batch: bool = True, **options: Any
) -> ExportedProgram:
    """``torch.export.export`` of a wrapped model, the batch dimension dynamic unless ``dynamic_batch=False``.

    Args:
        model: The wrapped model.
        args: Example positional arguments, e.g. ``(x,)`` with ``x`` ``(B, C, H, W)``.
        dynamic_batch: Make dim 0 of every tensor argument one dynamic dimension.
        **options: Passed to ``torch.export.export`` (``strict=``, ``kwargs=``...).

    Returns:
        The ``ExportedProgram``; ``program.module()(x)`` equals ``model(x)``.

    Raises:
        RecordingError: The method's plan depends on the input's values.
    """
    import torch

    if dynamic_batch and "dynamic_shapes" not in options:
        options["dynamic_shapes"] = batch_dynamic_shapes(model, args, min=1)
    return torch.export.export(model, tuple(args), **options)
