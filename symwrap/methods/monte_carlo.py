"""Monte-Carlo group averaging for continuous (or very large) groups.

    f_k(x) = (1/k) Σ_{i=1..k} g_i⁻¹·f(g_i·x),  g_i ~ Haar

An unbiased estimate of the group average; its error shrinks like 1/√k and the standard error
``sqrt(Var_g[g⁻¹·f(g·x)] / k)`` is available alongside the output. Kim et al., "Learning Probabilistic
Symmetrization for Architecture Agnostic Equivariance", NeurIPS 2023.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from symwrap.config import option, require
from symwrap.groups.base import ContinuousGroup, FiniteGroup, Group
from symwrap.limits import check_samples
from symwrap.methods.base import LastPlan, Method, Plan, uniform_weights

__all__ = ["MonteCarlo", "MonteCarloOptions"]


@dataclass
class MonteCarloOptions:
    samples: int = option(16, "number k of sampled group elements per input")
    seed: int | None = option(
        None, "seed: every call draws the same elements (a deterministic model); None draws fresh ones each call"
    )
    return_stderr: bool = option(
        False, "return SymmetrizedOutput(output, stderr) with the standard error of the estimate"
    )

    def __post_init__(self) -> None:
        require(
            isinstance(self.samples, int) and self.samples >= 1, "samples", f"must be an int >= 1, got {self.samples!r}"
        )
        check_samples(self.samples, "monte_carlo samples (forwards per input)")
        require(self.seed is None or isinstance(self.seed, int), "seed", f"must be an int or None, got {self.seed!r}")
        require(isinstance(self.return_stderr, bool), "return_stderr", "must be True or False")


class MonteCarlo(Method):
    """Average over ``samples`` Haar-random elements per input (seedable, with a standard error)."""

    name: ClassVar[str] = "monte_carlo"
    Options: ClassVar[type] = MonteCarloOptions

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self._fixed = LastPlan(self._draw)

    def static_plan(self, group: Group) -> bool:
        return self.options.seed is not None and _draw_ignores_input(group)  # the same seeded draw every call

    def plan(self, x: Tensor, group: Group) -> Plan:
        # A seeded draw that does not look at the data is the same every call for a batch size: reuse it (no
        # per-call torch.Generator, which torch.compile cannot trace).
        if self.static_plan(group):
            return self._fixed(group, x)
        return self._draw(group, x)

    def _draw(self, group: Group, x: Tensor) -> Plan:
        k = self.options.samples
        generator = torch.Generator().manual_seed(self.options.seed) if self.options.seed is not None else None
        if isinstance(group, ContinuousGroup):
            elements = group.sample_for(x, k, generator=generator)
        else:
            assert isinstance(group, FiniteGroup)
            elements = group.sample(x.shape[0] * k, generator=generator).reshape(x.shape[0], k, *group.code_shape)
        return Plan(elements.to(x.device), uniform_weights(x.shape[0], k, x.device))

    @property
    def wants_second_moment(self) -> bool:
        return bool(self.options.return_stderr)


def _draw_ignores_input(group: Group) -> bool:
    """Whether the sampled elements depend only on the seed and the batch size (not on the inputs' values)."""
    return isinstance(group, FiniteGroup) or type(group).sample_for is ContinuousGroup.sample_for
