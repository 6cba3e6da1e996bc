"""The method interface: a small policy that plans which group elements to evaluate and how to weigh them.

Every method is a weighted sum over (part of) an orbit (see the README's Architecture section): the
method says *which* elements (:meth:`Method.plan`) and *with what weights*; the orbit engine does the
batching, chunking, pull-back and reduction. No method loops over group elements itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from symwrap.config import build_config
from symwrap.groups.base import Group
from symwrap.tracing import caches_off

if TYPE_CHECKING:
    from symwrap.adapters.base import BoundCall

__all__ = ["Method", "NoOptions", "Plan", "Reweighing"]


@dataclass
class Plan:
    """Which elements to evaluate for each input and their prior weights.

    Attributes:
        elements: ``(B, k, *code_shape)`` group elements ``g``; copy ``j`` of input ``b`` is ``g[b, j]·x[b]``.
        weights: ``(B, k)`` non-negative weights summing to 1 per input.
    """

    elements: Tensor
    weights: Tensor
    _flat: Tensor | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    @property
    def copies(self) -> int:
        return int(self.elements.shape[1])

    def flat_elements(self) -> Tensor:
        """``elements`` as rows ``(B·k, *code_shape)``, row ``b·k + j`` = ``elements[b, j]``.

        Made once per plan (the reshape of an expanded plan copies): a plan reused call after call then hands the
        actions the same tensor, and the same slices of it per chunk, which they recognise by address instead of
        comparing values (a comparison makes the host wait for the device).
        """
        if torch.compiler.is_compiling() or caches_off():
            return self.elements.reshape(-1, *self.elements.shape[2:])
        if self._flat is None:
            self._flat = self.elements.reshape(-1, *self.elements.shape[2:])
        return self._flat


class Reweighing:
    """Weights a method computed from the copies' outputs or features (the engine's "reweigh" step).

    Attributes:
        weights: ``(B, k)`` non-negative weights summing to 1 per input; the output's value uses them. With
            ``selected`` they are its one-hot, made only when read.
        gradient_weights: ``(B, k)`` or ``None``. When given (straight-through training), the output's value is
            still the ``weights`` sum but its gradient flows as through the ``gradient_weights`` sum:
            ``y = R(weights).detach() + (R(gradient_weights) - R(gradient_weights).detach())``.
        selected: ``(B,)`` or ``None``: the one copy per input that the weights keep. The reduction takes that
            copy's output instead of a weighted sum, in which the other copies would still count as ``0 · y``,
            and ``0 · inf`` is NaN.
        copies: ``k``.
    """

    __slots__ = ("_weights", "copies", "gradient_weights", "selected")

    def __init__(
        self,
        weights: Tensor | None = None,
        gradient_weights: Tensor | None = None,
        *,
        selected: Tensor | None = None,
        copies: int | None = None,
    ) -> None:
        if weights is None and (selected is None or copies is None):
            raise ValueError("Reweighing needs weights (B, k), or selected (B,) with copies=k")
        self._weights, self.gradient_weights, self.selected = weights, gradient_weights, selected
        self.copies = int(weights.shape[1]) if weights is not None else int(copies)  # type: ignore[arg-type]

    @property
    def weights(self) -> Tensor:
        if self._weights is None:
            assert self.selected is not None
            self._weights = torch.zeros(self.selected.shape[0], self.copies, device=self.selected.device).scatter_(
                1, self.selected[:, None], 1.0
            )
        return self._weights


@dataclass
class NoOptions:
    """This method takes no options."""


class Method(nn.Module):
    """Base class of symmetrization methods. Subclasses set ``name``, ``Options`` and implement :meth:`plan`.

    A method is an ``nn.Module`` so that learned parts (λ-nets, canonicalizers) are registered with the
    wrapper; methods without parameters are stateless.
    """

    name: ClassVar[str] = "method"
    Options: ClassVar[type] = NoOptions
    #: Whether :meth:`plan` needs a finite group (all elements listed).
    needs_finite_group: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = build_config(self.Options, options, f"method {self.name!r}")

    #: Whether the method computes its weights from the copies' outputs/features (:meth:`reweigh`). The engine
    #: then keeps every copy's pulled-back output ``(B, k, ...)`` until the weights are known.
    reweighs: ClassVar[bool] = False
    #: Whether :meth:`reweigh` needs per-copy features (the engine calls :meth:`features_and_output`).
    needs_features: ClassVar[bool] = False

    def check_group(self, group: Group) -> None:
        """Raise :class:`ConfigError` when this method cannot use ``group``."""

    def attach(self, model: nn.Module, adapter: Any) -> None:
        """Called once by :func:`symwrap.wrap` with the base model and its adapter (to freeze it, check a split)."""

    def build_learned(self, adapter: Any, group: Group, example_input: Any = None) -> None:
        """Build the learned parts whose sizes the adapter (or ``example_input``, the input ``wrap`` was given)
        tells, so they exist from :func:`symwrap.wrap` on (called once by ``wrap``; default: nothing to build)."""

    def unbuilt_parts(self) -> list[str]:
        """Learned parts not built yet because only a forward can size them (default: none)."""
        return []

    @property
    def keeps_base_in_eval(self) -> bool:
        """Whether the wrapper keeps the base model in eval mode even in ``train()`` (frozen backbones)."""
        return False

    def reweigh(self, plan: Plan, values: list[Tensor], features: Tensor | None, class_dim: int = -1) -> Reweighing:
        """Weights from the copies (only called when :attr:`reweighs` is set).

        Args:
            plan: The plan (its ``weights`` are the prior).
            values: Every copy's pulled-back output, one ``(B, k, ...)`` tensor per combined output leaf.
            features: ``(B, k, D)`` per-copy features when :attr:`needs_features`, else ``None``.
            class_dim: The class axis of one input's output (as given to ``wrap(class_dim=...)``).
        """
        raise NotImplementedError

    def features_and_output(self, call: Any, acted_rows: list[Tensor], src: Tensor, adapter: Any) -> tuple[Tensor, Any]:
        """One forward of orbit rows returning ``(features (R, D), output)`` (only when :attr:`needs_features`)."""
        return adapter.features_and_output(call, acted_rows, src)

    def state_to_save(self) -> dict[str, Tensor]:
        """The learned state ``save_pretrained`` writes (default: the whole ``state_dict``; frozen external
        models such as a λ-equitune ``feature_model`` are left out by overriding this)."""
        return self.state_dict()

    def plan(self, x: Tensor, group: Group) -> Plan:
        """The elements to evaluate for inputs ``x`` ``(B, ...)`` (the data the group acts on)."""
        raise NotImplementedError

    def static_plan(self, group: Group) -> bool:
        """Whether :meth:`plan_for_call` depends only on the input's shape and device, never on its values or on
        other arguments (the whole group, a seeded draw). A wrapped call may then reuse the plan of the last call of
        the same shape (:mod:`symwrap.fast_path`). Default ``False``: methods that look at the data keep it."""
        return False

    def plans_from_input(self, group: Group) -> bool:
        """Whether :meth:`plan_for_call` is ``plan(call.acted[0], group)``: it reads the acted input's values but no
        other argument (a padding mask) and keeps nothing between calls. A wrapped call may then plan on the fast
        path (:mod:`symwrap.fast_path`) and skip the rest of the engine's bookkeeping. Default ``False``."""
        return False

    def lean_copies(self, x: Tensor, group: Group, action: Any) -> Callable[[Tensor], Tensor | None] | None:
        """For a method whose plan is one copy per input with weight 1, made from the input's values alone
        (canonicalization at inference): a function ``x (B, ...) -> copies (B, ...)`` for inputs of ``x``'s layout
        that gives exactly ``action.apply(x, arange(B), plan(x, group).flat_elements(), group)`` with fewer steps (the
        fast path's move, :mod:`symwrap.fast_path`); the function returns ``None`` when it no longer applies (the
        method switched to training). Default ``None``: the fast path plans and moves as the general path does."""
        return None

    def lean_forward(
        self, call: Any, adapter: Any, src: Tensor, plan: Plan, reduce: str
    ) -> Callable[[Tensor], Tensor | None] | None:
        """For a method that reweighs the copies from per-copy features (:attr:`needs_features`), on a static plan:
        a function ``rows (B·k, ...) -> output (B, ...)`` that runs the forward of the copies, the method's weights
        and the weighted sum in reduction space ``reduce``, giving exactly what :meth:`features_and_output`,
        :meth:`reweigh` and the engine's reduction give with fewer steps (the fast path's call outside autocast,
        :mod:`symwrap.fast_path`). It returns ``None`` when the model's output is not one tensor. Default ``None``:
        the fast path runs those steps one by one."""
        return None

    def plan_for_call(self, call: BoundCall, group: Group) -> Plan:
        """The plan for one bound model call (what the wrapper asks for).

        Defaults to ``plan(call.acted[0], group)``; methods that also read other arguments of the call (a
        padding mask for frame averaging and canonicalization) override it.
        """
        return self.plan(call.acted[0], group)

    @property
    def wants_second_moment(self) -> bool:
        """Whether the engine should also accumulate ``Σ w y²`` (for standard errors)."""
        return False

    def options_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options_dict().items())


def uniform_weights(batch: int, copies: int, device: torch.device) -> Tensor:
    """``(B, k)`` weights ``1/k``."""
    return torch.full((batch, copies), 1.0 / copies, device=device)


class LastPlan:
    """The last plan of a method whose plan depends only on (group, batch size, device), built by ``build`` and kept.

    Reused call after call, the same plan (and its :meth:`Plan.flat_elements`) saves small ops at small batches,
    and lets the actions recognise the elements without a host-device sync.
    """

    def __init__(self, build: Callable[[Group, Tensor], Plan]) -> None:
        self.build = build
        self._last: tuple[Group, int, torch.device, Plan] | None = None

    def __call__(self, group: Group, x: Tensor) -> Plan:
        """The plan for inputs ``x`` ``(B, ...)``: elements ``(B, k, *code_shape)``, weights ``(B, k)``."""
        if caches_off():  # recorded: a symbolic batch size and placeholder tensors are never kept
            return self.build(group, x)
        batch, last = x.shape[0], self._last
        if last is not None and last[0] is group and last[1] == batch and last[2] == x.device:
            return last[3]
        plan = self.build(group, x)
        self._last = (group, batch, x.device, plan)
        return plan


def whole_group_plan(group: Group, x: Tensor) -> Plan:
    """Every element of a finite group for each input, uniform weights: ``(B, |G|, *code_shape)``, ``(B, |G|)``."""
    elements = group.elements_on(x.device)
    batch = x.shape[0]
    return Plan(elements.unsqueeze(0).expand(batch, *elements.shape), uniform_weights(batch, len(elements), x.device))
