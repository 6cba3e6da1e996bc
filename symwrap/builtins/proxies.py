"""Built-in equizero proxy losses (registered through ``symwrap_register_proxies``)."""

from __future__ import annotations

from symwrap.hookspecs import Register, hookimpl
from symwrap.methods.equizero import entropy, max_logit, max_prob


@hookimpl
def symwrap_register_proxies(register: Register) -> None:
    register("entropy", entropy, "predictive entropy of the softmax (lowest wins)")
    register("max_prob", max_prob, "minus the top-1 probability: the most confident copy wins")
    register("max_logit", max_logit, "minus the largest logit")
