"""Choosing how many orbit rows go into one forward pass.

Stacking all ``|G|·B`` copies into one batch is not always fastest: on CPUs, a batch that no longer
fits the caches can be several times slower per row than |G| forwards of ``B`` rows, while on GPUs
larger batches usually win until memory runs out. ``chunk_size="auto"`` therefore measures, the first
time a shape is seen, the strategies between the two naive ones: chunks of ``B·d`` rows for each divisor
``d`` of ``|G|`` — ``d = 1`` is the per-element loop, ``d = |G|`` the full stack. Each is timed on a span
of distinct real rows (so per-forward overhead and cache effects count as in the real call), from the
smallest up, stopping once a candidate is clearly slower than the best so far (this bounds the tuning
cost for large models on CPU, where the biggest chunks are the slowest and the most expensive to time).
The choice is cached per (input shapes, dtypes, device, copies).

The choice is the *smallest* candidate whose estimate is within ``tolerance`` (3 %) of the fastest: a
larger chunk needs more memory, and on CPUs the timing of large chunks is the least repeatable — once
activations outgrow what the allocator keeps cached (glibc returns large freed blocks to the OS), every
call pays page faults. The median (not the minimum) of the repeats keeps a lucky repeat from winning.
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
    """Candidate rows per forward: ``batch·d`` for each divisor ``d`` of ``copies`` (``d = 1`` is the per-element
    loop, ``d = copies`` the full stack), and ``rows`` itself."""
    found = {rows, batch}
    found.update(batch * d for d in range(1, copies + 1) if copies % d == 0)
    return sorted(c for c in found if 1 <= c <= rows)


class ChunkTuner:
    """Measures and caches the fastest chunk size per call signature.

    Args:
        repeats: Timed spans per candidate (after one warm-up forward); the median counts.
        max_rows: Never choose more rows than this in one forward (``None``: no limit).
        tolerance: Choose the smallest candidate whose estimate is within this fraction of the fastest.
        stop_after: Stop timing larger candidates once one is slower than the best by more than this fraction.
    """

    def __init__(
        self, repeats: int = 2, max_rows: int | None = None, tolerance: float = 0.03, stop_after: float = 0.10
    ) -> None:
        self.repeats = repeats
        self.max_rows = max_rows
        self.tolerance = tolerance
        self.stop_after = stop_after
        self.cache: dict[Hashable, int] = {}
        self.timings: dict[Hashable, dict[int, float]] = {}
        self.pruned: dict[Hashable, list[int]] = {}

    def cached(self, key: Hashable) -> int | None:
        """The chunk size already chosen for ``key``, or ``None`` (a plain lookup that ``torch.compile`` traces)."""
        return self.cache.get(key)

    def choose(
        self,
        key: Hashable,
        rows: int,
        batch: int,
        copies: int,
        measure: Callable[[int, int], None],
        device: torch.device,
    ) -> int:
        """The chunk size for a call of ``rows = batch·copies`` rows.

        ``measure(start, stop)`` runs one forward of rows ``start:stop``. Candidates are timed from the smallest
        up, each on a span of distinct rows (``max(c, min(rows, 2·batch))``, in chunks of ``c``, after one
        untimed warm-up forward), so per-forward overhead and cache effects count as in the real call; the
        median of ``repeats`` is scaled to all rows. Once a candidate is more than ``stop_after`` slower than
        the best so far, larger ones are not timed (time per row grows with the chunk past the sweet spot on
        CPUs; on GPUs it keeps falling, so the full stack is still reached there) and are recorded in ``pruned``.
        """
        if key in self.cache:
            return self.cache[key]
        candidates = chunk_candidates(rows, batch, copies)
        if self.max_rows is not None:
            candidates = [c for c in candidates if c <= self.max_rows] or [max(1, self.max_rows)]
        sample = min(rows, 2 * batch)
        estimates: dict[int, float] = {}
        pruned: list[int] = []
        with torch.no_grad():
            for i, c in enumerate(candidates):
                span = min(rows, max(c, sample))
                self._time_span(measure, c, c, device)  # warm-up: allocator, kernel selection for this size
                times = [self._time_span(measure, c, span, device) for _ in range(self.repeats)]
                estimates[c] = statistics.median(times) * rows / span
                if estimates[c] > (1 + self.stop_after) * min(estimates.values()):
                    pruned = candidates[i + 1 :]
                    break
        best = pick_chunk(estimates, self.tolerance)
        self.cache[key] = best
        self.timings[key] = estimates
        self.pruned[key] = pruned
        logger.info("chunk_size='auto' chose %d rows per forward (estimated seconds per call: %s)", best, estimates)
        return best

    @staticmethod
    def _time_span(measure: Callable[[int, int], None], chunk: int, span: int, device: torch.device) -> float:
        """Seconds to run rows ``0:span`` in forwards of ``chunk`` rows."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for first in range(0, span, chunk):
            measure(first, min(first + chunk, span))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start


def pick_chunk(estimates: dict[int, float], tolerance: float = 0.03) -> int:
    """The smallest chunk size whose estimated seconds per call are within ``tolerance`` of the fastest."""
    fastest = min(estimates.values())
    return min(c for c, seconds in estimates.items() if seconds <= fastest * (1 + tolerance))
