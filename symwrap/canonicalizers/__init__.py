"""Canonicalizers: one group element h(x) per input that moves it to a canonical pose (learned or analytic)."""

from symwrap.canonicalizers.analytic import shift_canonical
from symwrap.canonicalizers.learned import LearnedCanonicalizer

__all__ = ["LearnedCanonicalizer", "shift_canonical"]
