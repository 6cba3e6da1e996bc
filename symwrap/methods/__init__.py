"""Symmetrization methods: each a small policy on the orbit engine."""

from symwrap.methods.base import Method, Plan
from symwrap.methods.group_averaging import GroupAveraging
from symwrap.methods.monte_carlo import MonteCarlo, MonteCarloOptions

__all__ = ["GroupAveraging", "Method", "MonteCarlo", "MonteCarloOptions", "Plan"]
