"""``symwrap.check``: how far is any model (wrapped or not) from invariance / equivariance, per element."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from symwrap.actions.base import Action
from symwrap.adapters.base import Adapter, Selector
from symwrap.engine import OrbitEngine
from symwrap.groups.base import ContinuousGroup, FiniteGroup, Group
from symwrap.groups.laws import ensure_group_laws
from symwrap.limits import check_samples
from symwrap.methods.base import Plan, uniform_weights
from symwrap.wrapper import _output_action, get_action, get_adapter, get_group

__all__ = ["CheckResult", "check"]


@dataclass
class CheckResult:
    """Per-element errors of ``f(g·x)`` against ``f(x)`` (invariant) or ``g·f(x)`` (equivariant).

    Attributes:
        group: Group name.
        output: ``"invariant"`` or ``"equivariant"``.
        elements: ``(k, *code_shape)`` the elements checked (all of a finite group; samples otherwise).
        errors: ``(k,)`` relative error per element: max abs difference / max abs reference output.
        abs_errors: ``(k,)`` max abs difference per element.
        paths: The output leaves compared.
    """

    group: str
    output: str
    elements: Tensor
    errors: Tensor
    abs_errors: Tensor
    paths: list[str]

    @property
    def max_error(self) -> float:
        """The largest relative error over all elements."""
        return float(self.errors.max())

    @property
    def max_abs_error(self) -> float:
        return float(self.abs_errors.max())

    def table(self) -> str:
        """A plain-text table, one row per element."""
        lines = [
            f"{self.output} error of {', '.join(p or 'output' for p in self.paths)} under {self.group}",
            "element  rel. error  abs. error",
        ]
        for i, (rel, ab) in enumerate(zip(self.errors.tolist(), self.abs_errors.tolist())):
            lines.append(f"{i:>7}  {rel:10.3e}  {ab:10.3e}")
        lines.append(f"    max  {self.max_error:10.3e}  {self.max_abs_error:10.3e}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def check(
    model: nn.Module,
    group: str | Group,
    inputs: Any,
    output: str | Action = "invariant",
    *,
    action: str | Action | None = None,
    adapter: str | Adapter | None = None,
    input: Selector | Sequence[Selector] | None = None,
    select: Selector | Sequence[Selector] | None = None,
    samples: int = 8,
    seed: int = 0,
    chunk_size: int | None = None,
    group_options: dict[str, Any] | None = None,
) -> CheckResult:
    """Measure the invariance (or equivariance) error of ``model`` for every element of ``group``.

    Args:
        model: Any model (a :class:`SymmetrizedModel` too).
        group: Group name or object; a continuous group is checked on ``samples`` seeded elements.
        inputs: A tensor ``(B, ...)``, a tuple of positional arguments, or a dict of keyword arguments.
        output: ``"invariant"`` compares ``f(g·x)`` with ``f(x)``; ``"equivariant"`` compares
            ``g⁻¹·f(g·x)`` with ``f(x)`` (the same as ``f(g·x)`` vs ``g·f(x)`` for these isometric actions).
        action: The input action, as in :func:`symwrap.wrap` (default: the group's).
        adapter: The adapter, as in :func:`symwrap.wrap` (default: chosen by the model).
        input: The argument the group acts on, as in :func:`symwrap.wrap`.
        select: The output leaves compared, as in :func:`symwrap.wrap`.
        samples: Number of sampled elements of a continuous group.
        seed: Seed of those samples.
        chunk_size: Rows per forward (``None``: all copies at once).
        group_options: Options of a group given by name, as in :func:`symwrap.wrap` (``{"stride": 16}`` for
            ``"shift"``); not allowed with a Group object.

    Returns:
        A :class:`CheckResult`; ``result.max_error`` is the headline number.
    """
    args, kwargs = _as_call(inputs)
    the_adapter = get_adapter(model, adapter, input=input, select=select)
    call = the_adapter.bind(args, kwargs)
    the_group = get_group(group, **(group_options or {}))
    input_action = get_action(action, the_group)
    the_group = ensure_group_laws(the_group.for_input(tuple(call.acted[0].shape), input_action))
    for x in call.acted:
        input_action.check(x, the_group)
    if isinstance(the_group, FiniteGroup):
        elements = the_group.elements()
    else:
        assert isinstance(the_group, ContinuousGroup)
        check_samples(samples, "samples (the sampled elements symwrap.check compares)")
        sampled = the_group.sample(samples, generator=torch.Generator().manual_seed(seed))
        elements = torch.cat([the_group.identity()[None].to(sampled.dtype), sampled])
    device = call.acted[0].device
    elements = elements.to(device)
    batch = call.batch_size
    plan = Plan(elements.unsqueeze(0).expand(batch, *elements.shape), uniform_weights(batch, len(elements), device))
    engine = OrbitEngine(chunk_size)
    with torch.no_grad():
        values, paths = engine.evaluate(
            call, the_adapter, the_group, input_action, _output_action(output, the_group), plan
        )
    abs_err = torch.zeros(len(elements), dtype=torch.float64)
    scale = torch.zeros((), dtype=torch.float64)
    for v in values:
        v = v.double()
        reference = v[:, :1]
        diff = (v - reference).abs().reshape(batch, len(elements), -1)
        abs_err = torch.maximum(abs_err, diff.amax(dim=(0, 2)).cpu())
        scale = torch.maximum(scale, reference.abs().max().cpu())
    name = output if isinstance(output, str) else "equivariant"
    return CheckResult(the_group.name, name, elements.cpu(), abs_err / scale.clamp_min(1e-12), abs_err, paths)


def _as_call(inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(inputs, Tensor):
        return (inputs,), {}
    if isinstance(inputs, dict):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    raise TypeError(
        "inputs must be a tensor, a tuple of positional arguments or a dict of keyword arguments, "
        f"got {type(inputs).__name__}"
    )
