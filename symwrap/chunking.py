"""Choosing how many orbit rows go into one forward pass.

Stacking all ``|G|·B`` copies into one batch is not always fastest: on CPUs, a batch that no longer
fits the caches can be several times slower per row than |G| forwards of ``B`` rows, while on GPUs
larger batches usually win until memory runs out. ``chunk_size="auto"`` therefore measures: the
first time a shape is seen, it times one forward of each candidate chunk size on the real rows
(one warm-up, then the median of ``repeats``), estimates the whole call for each, and caches a choice
per (input shapes, dtypes, device, copies). The candidates always include the two naive strategies,
``B`` rows (the per-element loop) and all ``|G|·B`` rows (one stacked forward), plus the powers of two
between.

The choice is the *smallest* candidate whose estimate is within ``tolerance`` (5 %) of the fastest. Two
reasons: a larger chunk needs more memory, and on CPUs the timing of large chunks is the least
repeatable — once activations outgrow what the allocator keeps cached (glibc returns large freed
blocks to the OS), every call pays page faults that a short measurement may not see. The median (not
the minimum) of the repeats keeps a lucky fault-free repeat from winning.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Hashable

import torch

__all__ = ["ChunkTuner", "chunk_candidates", "pick_chunk"]

logger = logging.getLogger(__name__)


def chunk_candidates(rows: int, batch: int, copies: int) -> list[int]:
    """Candidate rows per forward: all rows, ``batch·d`` for each divisor ``d`` of ``copies``, powers of two."""
    found = {rows, batch}
    found.update(batch * d for d in range(1, copies + 1) if copies % d == 0)
    power = 2
    while power < rows:
        found.add(power)
        power *= 2
    return sorted(c for c in found if 1 <= c <= rows)


class ChunkTuner:
    """Measures and caches the fastest chunk size per call signature.

    Args:
        repeats: Timed repetitions per candidate (after one warm-up); the median counts.
        max_rows: Never choose more rows than this in one forward (``None``: no limit).
        tolerance: Choose the smallest candidate whose estimate is within this fraction of the fastest.
    """

    def __init__(self, repeats: int = 3, max_rows: int | None = None, tolerance: float = 0.05) -> None:
        self.repeats = repeats
        self.max_rows = max_rows
        self.tolerance = tolerance
        self.cache: dict[Hashable, int] = {}
        self.timings: dict[Hashable, dict[int, float]] = {}

    def choose(
        self, key: Hashable, rows: int, batch: int, copies: int, measure: Callable[[int], None], device: torch.device
    ) -> int:
        """The chunk size for a call of ``rows = batch·copies`` rows; ``measure(c)`` runs one forward of ``c`` rows."""
        if key in self.cache:
            return self.cache[key]
        candidates = chunk_candidates(rows, batch, copies)
        if self.max_rows is not None:
            candidates = [c for c in candidates if c <= self.max_rows] or [max(1, self.max_rows)]
        estimates: dict[int, float] = {}
        for c in candidates:
            seconds = self._time(measure, c, device)
            full, rest = divmod(rows, c)
            estimates[c] = (full + rest / c) * seconds
        best = pick_chunk(estimates, self.tolerance)
        self.cache[key] = best
        self.timings[key] = estimates
        logger.info("chunk_size='auto' chose %d rows per forward (estimated seconds per call: %s)", best, estimates)
        return best

    def _time(self, measure: Callable[[int], None], rows: int, device: torch.device) -> float:
        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        with torch.no_grad():
            measure(rows)  # warm-up: allocator, kernel selection
            times = []
            for _ in range(self.repeats):
                sync()
                start = time.perf_counter()
                measure(rows)
                sync()
                times.append(time.perf_counter() - start)
        return statistics.median(times)


def pick_chunk(estimates: dict[int, float], tolerance: float = 0.05) -> int:
    """The smallest chunk size whose estimated seconds per call are within ``tolerance`` of the fastest."""
    fastest = min(estimates.values())
    return min(c for c, seconds in estimates.items() if seconds <= fastest * (1 + tolerance))
