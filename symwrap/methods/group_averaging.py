"""Group averaging (equitune): the mean of the pulled-back outputs over the whole orbit.

    f_G(x) = (1/|G|) Σ_g g⁻¹·f(g·x)

Exactly invariant (``g⁻¹`` = identity on outputs) or equivariant for any finite group. Basu et al.,
"Equi-Tuning: Group Equivariant Fine-Tuning of Pretrained Models", AAAI 2023, arXiv 2210.06475.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from symwrap.errors import ConfigError
from symwrap.groups.base import Group
from symwrap.methods.base import LastPlan, Method, Plan, whole_group_plan

__all__ = ["GroupAveraging"]


class GroupAveraging(Method):
    """Average over all |G| transformed copies (exact; |G| forward passes batched by the engine)."""

    name: ClassVar[str] = "group_averaging"
    needs_finite_group: ClassVar[bool] = True

    def check_group(self, group: Group) -> None:
        if not group.is_finite:
            raise ConfigError(
                f"method {self.name!r} needs a finite group, but group {group.name!r} is continuous. "
                "Use method='monte_carlo' (averages k sampled elements) or method='frame_averaging' "
                "(an input-dependent frame) instead."
            )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._plans = LastPlan(whole_group_plan)

    def static_plan(self, group: Group) -> bool:
        return True  # the whole group for every input

    def plan(self, x: Tensor, group: Group) -> Plan:
        return self._plans(group, x)  # depends only on (group, batch size, device): the last one is reused
