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

The candidates within 10 % of the fastest are then timed again in interleaved rounds (each once per round, the
order rotated), when that costs at most ``confirm_seconds`` (0.5 s): timed one after the other, a candidate that
ran during a slow spell of the machine would lose to a slower one.

The choice is the whole orbit in one forward when its estimate is within ``tolerance`` (3 %) and 0.5 ms of the
fastest (such calls skip the chunk loop and take the fast path of :mod:`symwrap.fast_path`); otherwise the *smallest*
candidate within ``tolerance`` of the fastest: a larger chunk needs more memory, and on CPUs the timing of large
chunks is the least repeatable — once activations outgrow what the allocator keeps cached (glibc returns large
freed blocks to the OS), every call pays page faults. The median (not the minimum) of the repeats keeps a lucky
repeat from winning.

Memory: with a :class:`~symwrap.memory.MemoryBudget` (by default 0.9 of the free memory, lowered by ``max_memory``)
every candidate's warm-up forward is measured, a candidate predicted or measured over the budget is dropped with
all larger ones, and the chosen chunk's measured peak is always within the budget (see :mod:`symwrap.memory`).
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Hashable

import torch

from symwrap.memory import MemoryBudget, MemoryGuard, MemoryReport, is_out_of_memory

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
        min_seconds: Keep repeating a candidate's span (up to ``max_repeats``) until this much time is measured, so
            that millisecond-scale calls of small models are not chosen on one noisy sample (large models stop at
            ``repeats``).
        max_repeats: The most timed spans per candidate.
        max_rows: Never choose more rows than this in one forward (``None``: no limit).
        tolerance: Choose the smallest candidate whose estimate is within this fraction of the fastest.
        stop_after: Stop timing larger candidates once one is slower than the best by more than this fraction.
        memory: The memory budget of one chunk's forward (default: 0.9 of the free memory at tuning time);
            ``MemoryBudget(free_fraction=None)`` without ``max_memory`` measures no memory.
        confirm_seconds: The candidates within ``stop_after`` of the fastest are timed again, interleaved (round
            after round, each candidate once per round), when that takes at most this long; their interleaved
            medians replace the first estimates. Timed one after the other, a candidate that happened to run during
            a slow spell of the machine would lose to a slower one. ``0`` turns it off.

    Attributes:
        cache: The chosen rows per forward, per call signature (lowered by out-of-memory backoff).
        timings: Estimated seconds per call of every timed candidate.
        pruned: Candidates not timed because a smaller one was already clearly slower.
        over_budget: Candidates not timed because their predicted or measured peak exceeded the memory budget.
        memory_reports: What the memory guard measured (budget, peaks per rows, per-row bytes).
    """

    def __init__(
        self,
        repeats: int = 2,
        min_seconds: float = 0.05,
        max_repeats: int = 25,
        max_rows: int | None = None,
        tolerance: float = 0.03,
        stop_after: float = 0.10,
        memory: MemoryBudget | None = None,
        confirm_seconds: float = 0.5,
    ) -> None:
        self.repeats = repeats
        self.confirm_seconds = confirm_seconds
        self.min_seconds = min_seconds
        self.max_repeats = max_repeats
        self.max_rows = max_rows
        self.tolerance = tolerance
        self.stop_after = stop_after
        self.memory = MemoryBudget() if memory is None else memory
        self.cache: dict[Hashable, int] = {}
        self.timings: dict[Hashable, dict[int, float]] = {}
        self.pruned: dict[Hashable, list[int]] = {}
        self.over_budget: dict[Hashable, list[int]] = {}
        self.memory_reports: dict[Hashable, MemoryReport] = {}

    def remember(self, key: Hashable, rows: int) -> None:
        """Use ``rows`` per forward for ``key`` from now on (out-of-memory backoff lowers a measured choice)."""
        self.cache[key] = rows

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
        max_rows: int | None = None,
    ) -> int:
        """The chunk size for a call of ``rows = batch·copies`` rows.

        ``measure(start, stop)`` runs one forward of rows ``start:stop``. Candidates are timed from the smallest
        up, each on a span of distinct rows (``max(c, min(rows, 2·batch))``, in chunks of ``c``, after one
        untimed warm-up forward), so per-forward overhead and cache effects count as in the real call; the
        median of ``repeats`` (more while less than ``min_seconds`` was measured) is scaled to all rows. Once a
        candidate is more than ``stop_after`` slower than the best so far, larger ones are not timed (time per row
        grows with the chunk past the sweet spot on CPUs; on GPUs it keeps falling, so the full stack is still
        reached there) and are recorded in ``pruned``. The candidates within ``stop_after`` of the fastest are
        then timed again in interleaved rounds when that is cheap (``confirm_seconds``), and those medians count.

        ``max_rows`` caps this call's candidates (on top of the tuner's ``max_rows``). Under a memory budget
        the warm-up forwards are measured, and candidates over the budget (predicted before running, or
        measured) end the search; if not even the smallest candidate fits, the largest size that does is used.

        Raises:
            MemoryBudgetError: Not even one row fits the memory budget.
        """
        if key in self.cache:
            return self.cache[key]
        caps = [c for c in (self.max_rows, max_rows) if c is not None]
        candidates = chunk_candidates(rows, batch, copies)
        if caps:
            candidates = [c for c in candidates if c <= min(caps)] or [max(1, min(caps))]
        sample = min(rows, 2 * batch)
        estimates: dict[int, float] = {}
        pruned: list[int] = []
        over: list[int] = []
        with torch.no_grad():
            guard = self.memory.guard(measure, device, rows) if self.memory is not None else None
            if guard is not None and not guard.admit(candidates[0]):  # not even the smallest candidate fits
                over, candidates = candidates, [self._largest_fitting(guard, candidates[0], measure, device)]
            for i, c in enumerate(candidates):
                span = min(rows, max(c, sample))
                if guard is not None and not guard.admit(c):
                    over = candidates[i:]
                    break

                def warm_up(c: int = c) -> None:  # allocator, kernel selection for this size; measured under a budget
                    self._time_span(measure, c, c, device)

                fits = guard.fits(c, warm_up) if guard is not None else _runs(warm_up)
                if not fits:  # measured over the budget, or out of memory
                    over = candidates[i:]
                    break
                times = [self._time_span(measure, c, span, device) for _ in range(self.repeats)]
                while len(times) < self.max_repeats and sum(times) < self.min_seconds:
                    times.append(self._time_span(measure, c, span, device))
                estimates[c] = statistics.median(times) * rows / span
                if estimates[c] > (1 + self.stop_after) * min(estimates.values()):
                    pruned = candidates[i + 1 :]
                    break
            if not estimates:  # the smallest candidate was predicted to fit but measured over the budget
                estimates[self._largest_fitting(guard, candidates[0], measure, device)] = math.nan
            estimates.update(self._confirm(estimates, rows, sample, measure, device))
        best = pick_chunk(estimates, self.tolerance, whole=rows) if len(estimates) > 1 else next(iter(estimates))
        self.cache[key] = best
        self.timings[key] = estimates
        self.pruned[key] = pruned
        self.over_budget[key] = over
        if guard is not None:
            self.memory_reports[key] = guard.report
        logger.info("chunk_size='auto' chose %d rows per forward (estimated seconds per call: %s)", best, estimates)
        return best

    def _confirm(
        self,
        estimates: dict[int, float],
        rows: int,
        sample: int,
        measure: Callable[[int, int], None],
        device: torch.device,
    ) -> dict[int, float]:
        """New estimates of the candidates within ``stop_after`` of the fastest, timed in interleaved rounds (the
        order rotated each round) until each has ``min_seconds`` measured or ``max_repeats`` rounds; ``{}`` when
        fewer than two are that close or the rounds would take longer than ``confirm_seconds``."""
        timed = {c: seconds for c, seconds in estimates.items() if math.isfinite(seconds)}
        if len(timed) < 2 or self.confirm_seconds <= 0:
            return {}
        fastest = min(timed.values())
        finalists = [c for c, seconds in timed.items() if seconds <= fastest * (1 + self.stop_after)]
        if len(finalists) < 2:
            return {}
        spans = {c: min(rows, max(c, sample)) for c in finalists}
        per_round = sum(timed[c] * spans[c] / rows for c in finalists)
        rounds = min(self.max_repeats, max(self.repeats + 1, math.ceil(self.min_seconds / max(per_round, 1e-9))))
        if rounds * per_round > self.confirm_seconds:
            return {}
        times: dict[int, list[float]] = {c: [] for c in finalists}
        for r in range(rounds):
            for c in finalists[r % len(finalists) :] + finalists[: r % len(finalists)]:
                times[c].append(self._time_span(measure, c, spans[c], device))
        return {c: statistics.median(times[c]) * rows / spans[c] for c in finalists}

    @staticmethod
    def _largest_fitting(
        guard: MemoryGuard | None, below: int, measure: Callable[[int, int], None], device: torch.device
    ) -> int:
        """The largest size under ``below`` whose forward fits (measured within the budget, or at least not out of
        memory without one), searched down from the predicted maximum (without a budget: by halving); never below
        a size already measured to fit (1 row always was)."""
        size = below - 1 if guard is None else min(guard.max_rows(), below - 1)
        while size > 1:

            def forward(size: int = size) -> None:
                ChunkTuner._time_span(measure, size, size, device)

            if guard is None:
                if _runs(forward):
                    return size
                size //= 2
                continue
            if not guard.admit(size):  # predicted over the budget (the prediction is refined by admit's probes)
                smaller = min(guard.max_rows(), size - 1)
            elif guard.fits(size, forward):
                return size
            else:  # measured over the budget: step down by a tenth
                smaller = min(guard.max_rows(), math.floor(size * 0.9))
            known = guard.largest_measured_fit(size)  # never go below a size already measured to fit
            size = max(known, smaller)
            if size == known:
                return size
        return 1

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


def pick_chunk(
    estimates: dict[int, float], tolerance: float = 0.03, whole: int | None = None, whole_bonus_s: float = 5e-4
) -> int:
    """The chunk size to use: ``whole`` (all rows in one forward) when its estimate is within ``tolerance`` of the
    fastest and at most ``whole_bonus_s`` slower, else the smallest chunk size within ``tolerance`` of the fastest.

    The whole orbit in one chunk wins such a near-tie because its calls skip the per-chunk loop and take the fast
    path (:mod:`symwrap.fast_path`), a saving of about 0.1–0.3 ms per call that the tuner's timings of bare forwards
    do not see; on a large model that saving is far below the timing noise, so there the measured fastest counts.
    The memory budget has already dropped ``whole`` when it does not fit.
    """
    fastest = min(estimates.values())
    near = [c for c, seconds in estimates.items() if seconds <= fastest * (1 + tolerance)]
    if whole in near and estimates[whole] <= fastest + whole_bonus_s:
        return whole
    return min(near)


def _runs(forward: Callable[[], None]) -> bool:
    """Run ``forward``; ``False`` if it ran out of memory (other errors propagate)."""
    try:
        forward()
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        return False
    return True
