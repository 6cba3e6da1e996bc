"""Symmetrization methods: each a small policy on the orbit engine."""

from symwrap.methods.base import Method, Plan
from symwrap.methods.canonicalization import Canonicalization, CanonicalizationOptions
from symwrap.methods.frame_averaging import FrameAveraging, FrameAveragingOptions
from symwrap.methods.group_averaging import GroupAveraging
from symwrap.methods.monte_carlo import MonteCarlo, MonteCarloOptions

__all__ = [
    "Canonicalization",
    "CanonicalizationOptions",
    "FrameAveraging",
    "FrameAveragingOptions",
    "GroupAveraging",
    "Method",
    "MonteCarlo",
    "MonteCarloOptions",
    "Plan",
]
