"""symwrap's fixed cost per call: each method on a model that costs almost nothing.

The base model is ``Flatten -> Linear(64, 10)`` on one 1×8×8 image (B = 1, ``d4``, |G| = 8, one chunk of 8 rows), so
the time of a wrapped call minus one plain forward of the 8 copies is what the wrapper adds per call: binding the
arguments, the plan, the gather of the copies, the reduction, and each method's own work (equizero's proxy,
λ-equitune's feature capture and λ-net, the canonicalizer network). This is what makes small models miss the
suite's ratio target at small batches (``bench_suite.py``): the whole limit of the digits CNN at B = 1 is ~0.4 ms.
``group_averaging (8 chunks of 1 row)`` is the chunked general path (``chunk_size=1``) against 8 one-row forwards.
Each method is timed as ``wrap()`` returns it (steady calls take the fast path where it applies, see
``symwrap/fast_path.py``) and with ``engine.use_fast_path = False`` (``(general)``: every call through the engine).

    python benchmarks/bench_overhead.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import symwrap

METHODS: dict[str, dict[str, Any]] = {
    "group_averaging": {},
    "frame_averaging": {},
    "equizero": {},
    "lambda_equitune": {"features": "1"},
    "canonicalization": {"in_channels": 1},
}


def per_call_us(fn: Callable[[], Any], calls: int, rounds: int) -> float:
    """Median over ``rounds`` of the mean microseconds per call of ``calls`` back-to-back calls."""
    fn()
    fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--compile", action="store_true", help="also time torch.compile(wrapped) (inductor)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    x = torch.randn(1, 1, 8, 8)
    stack = torch.randn(8, 1, 8, 8)
    rows = list(stack.split(1))
    print(f"symwrap {symwrap.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'method':<32} {'wrapped µs':>11} {'plain 8 rows µs':>16} {'added µs':>9}")
    with torch.no_grad():
        for method, options in METHODS.items():
            wrapped = symwrap.wrap(model, "d4", method, chunk_size=8, **options).eval()
            general = symwrap.wrap(model, "d4", method, chunk_size=8, **options).eval()
            general.engine.use_fast_path = False
            general.method.load_state_dict(wrapped.method.state_dict())
            runs: dict[str, Callable[[], Any]] = {"": lambda w=wrapped: w(x), " (general)": lambda w=general: w(x)}
            if args.compile:
                compiled = torch.compile(wrapped)
                runs[" (compiled)"] = lambda c=compiled: c(x)
            plains: dict[str, Callable[[], Any]] = {suffix: lambda: model(stack) for suffix in runs}
            if method == "group_averaging":  # the chunked general path against the per-element loop of the limit
                looped = symwrap.wrap(model, "d4", method, chunk_size=1).eval()
                runs[" (8 chunks of 1 row)"] = lambda w=looped: w(x)
                plains[" (8 chunks of 1 row)"] = lambda: [model(row) for row in rows]
            for suffix, run in runs.items():
                wrapped_us = per_call_us(run, args.calls, args.rounds)
                plain_us = per_call_us(plains[suffix], args.calls, args.rounds)
                print(f"{method + suffix:<32} {wrapped_us:>11.0f} {plain_us:>16.0f} {wrapped_us - plain_us:>9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
