"""Test helper: one wrapped model called from several threads, compared with serial calls.

A threaded web server calls one model from many threads; per-call state (feature captures, hooks, plans in flight)
must stay in the call. :func:`threaded_mismatches` runs a list of inputs split over threads, all started together,
and counts the results that differ from serial calls of an independent copy and the calls that raised.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ThreadReport", "threaded_mismatches"]


@dataclass
class ThreadReport:
    """What :func:`threaded_mismatches` found.

    Attributes:
        calls: Calls made from the threads (per round, all rounds summed).
        wrong: Results not within the tolerance of the serial result.
        raised: Calls that raised; ``errors`` keeps the first few.
        worst: The largest absolute difference seen.
    """

    calls: int = 0
    wrong: int = 0
    raised: int = 0
    worst: float = 0.0
    errors: list[str] = field(default_factory=list)


def threaded_mismatches(
    model: nn.Module,
    inputs: Sequence[Any],
    *,
    threads: int = 4,
    rounds: int = 2,
    output: Callable[[Any], Tensor] = lambda out: out,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> ThreadReport:
    """Call ``model`` on ``inputs`` from ``threads`` threads (round-robin), ``rounds`` times, against serial results.

    The serial results come from ``copy.deepcopy(model)`` made before the first call, so the first round runs the
    model cold (nothing tuned, planned or captured yet) and later rounds warm.

    Args:
        model: The wrapped model (any callable module).
        inputs: One argument per call (a tensor, or a tuple of positional arguments).
        threads: Threads started together (a barrier) per round.
        rounds: Times all inputs are run.
        output: Picks the tensor to compare from an output (``lambda out: out.logits``).
        atol: Absolute tolerance (chunk sizes tuned separately may change float32 rounding).
        rtol: Relative tolerance.

    Returns:
        A :class:`ThreadReport`.
    """
    reference_model = copy.deepcopy(model)
    with torch.no_grad():
        expected = [output(reference_model(*_as_args(x))) for x in inputs]
    report = ThreadReport()
    lock = threading.Lock()
    for _ in range(rounds):
        barrier = threading.Barrier(threads)

        def work(first: int, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            for i in range(first, len(inputs), threads):
                try:
                    with torch.no_grad():
                        got = output(model(*_as_args(inputs[i])))
                    gap = (got - expected[i]).abs().max().item() if got.shape == expected[i].shape else float("inf")
                    ok = got.shape == expected[i].shape and torch.allclose(got, expected[i], atol=atol, rtol=rtol)
                    error = None
                except Exception as exc:  # counted, never hidden: the report says how many and which
                    ok, gap, error = False, 0.0, f"{type(exc).__name__}: {exc}"
                with lock:
                    report.calls += 1
                    report.worst = max(report.worst, gap)
                    if error is not None:
                        report.raised += 1
                        if len(report.errors) < 3:
                            report.errors.append(error)
                    elif not ok:
                        report.wrong += 1

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    return report


def _as_args(x: Any) -> tuple[Any, ...]:
    return x if isinstance(x, tuple) else (x,)
