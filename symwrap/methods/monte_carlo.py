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
from symwrap.methods.base import Method, Plan, uniform_weights

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
        require(self.seed is None or isinstance(self.seed, int), "seed", f"must be an int or None, got {self.seed!r}")
        require(isinstance(self.return_stderr, bool), "return_stderr", "must be True or False")


class MonteCarlo(Method):
    """Average over ``samples`` Haar-random elements per input (seedable, with a standard error)."""

    name: ClassVar[str] = "monte_carlo"
    Options: ClassVar[type] = MonteCarloOptions

    def plan(self, x: Tensor, group: Group) -> Plan:
        k = self.options.samples
        generator = torch.Generator().manual_seed(self.options.seed) if self.options.seed is not None else None
        if isinstance(group, ContinuousGroup):
            elements = group.sample_for(x, k, generator=generator)
        else:
            assert isinstance(group, FiniteGroup)
            elements = group.sample(x.shape[0] * k, generator=generator).reshape(x.shape[0], k, *group.code_shape)
        elements = elements.to(x.device)
        return Plan(elements, uniform_weights(x.shape[0], k, x.device))

    @property
    def wants_second_moment(self) -> bool:
        return bool(self.options.return_stderr)
