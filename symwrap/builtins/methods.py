"""Built-in methods."""

from __future__ import annotations

from symwrap.hookspecs import Register, hookimpl
from symwrap.methods.canonicalization import Canonicalization
from symwrap.methods.equizero import Equizero
from symwrap.methods.frame_averaging import FrameAveraging
from symwrap.methods.group_averaging import GroupAveraging
from symwrap.methods.lambda_equitune import LambdaEquitune
from symwrap.methods.monte_carlo import MonteCarlo


@hookimpl
def symwrap_register_methods(register: Register) -> None:
    register("group_averaging", GroupAveraging, "average over the whole orbit (exact, |G| passes)")
    register("equitune", GroupAveraging, "alias of group_averaging (Basu et al. 2023)")
    register("monte_carlo", MonteCarlo, "average over k Haar-sampled elements, with a standard error")
    register("lambda_equitune", LambdaEquitune, "group averaging weighted by a learned λ(g·x) > 0 (Basu et al. 2023)")
    register("equizero", Equizero, "the orbit copy with the lowest proxy loss (entropy, max_prob, ...)")
    register("frame_averaging", FrameAveraging, "average over an input-dependent frame (PCA / sorting), exact")
    register("canonicalization", Canonicalization, "one canonical element per input (learned or analytic), 1 pass")
