"""The method interface: a small policy that plans which group elements to evaluate and how to weigh them.

Every method is a weighted sum over (part of) an orbit (see the README's Architecture section): the
method says *which* elements (:meth:`Method.plan`) and *with what weights*; the orbit engine does the
batching, chunking, pull-back and reduction. No method loops over group elements itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from symwrap.config import build_config
from symwrap.groups.base import Group

if TYPE_CHECKING:
    from symwrap.adapters.base import BoundCall

__all__ = ["Method", "NoOptions", "Plan"]


@dataclass
class Plan:
    """Which elements to evaluate for each input and their prior weights.

    Attributes:
        elements: ``(B, k, *code_shape)`` group elements ``g``; copy ``j`` of input ``b`` is ``g[b, j]·x[b]``.
        weights: ``(B, k)`` non-negative weights summing to 1 per input.
    """

    elements: Tensor
    weights: Tensor

    @property
    def copies(self) -> int:
        return int(self.elements.shape[1])


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

    def check_group(self, group: Group) -> None:
        """Raise :class:`ConfigError` when this method cannot use ``group``."""

    def plan(self, x: Tensor, group: Group) -> Plan:
        """The elements to evaluate for inputs ``x`` ``(B, ...)`` (the data the group acts on)."""
        raise NotImplementedError

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
