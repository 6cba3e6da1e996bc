"""Choosing how many orbit rows go into one forward pass, without forwards of its own.

Stacking all ``|G|·B`` copies into one batch is not always fastest: on CPUs a batch that no longer fits the caches
can be slower per row than |G| forwards of ``B`` rows, while on GPUs larger batches usually win until memory runs
out. The candidates are chunks of ``B·d`` rows for each divisor ``d`` of ``|G|`` (``d = 1`` is the per-element loop,
``d = |G|`` the full stack).

``chunk_size="auto"`` decides with :class:`ChunkTuner`, which never runs a forward that is not part of a user's call:

1. **Memory, measured during a real call.** The first call of a model runs its first chunk of ``B`` rows (one row
   under ``max_memory``) under the memory meter of :mod:`symwrap.memory`; the bytes per input element it shows bound
   every later chunk: a candidate whose predicted peak exceeds the budget is never run. The first call of a shape
   whose rows are larger than any measured is measured again, in its first chunk of the chosen size when that is
   predicted within half the budget (else again ``B`` rows first).
2. **The first call of a shape runs at once**, with the fastest candidate known from other shapes of the same model,
   or, where nothing is known yet, the largest candidate that fits the memory budget. A candidate whose size was not
   timed yet is estimated at the cost per element of the nearest smaller size that was (a larger forward is taken to
   cost no more per element, unless its own size was timed).
3. **Later real calls are timed** with the tuner's clock and explore: the untried candidates next to the fastest
   known one, and the per-element loop (the smallest candidate) when the next smaller size is on a plateau with the
   fastest (within ``tolerance``) and nothing of the loop's size or smaller was timed on the layout (costs per row need
   not keep rising towards smaller forwards; the loop is one of the |G|-forward limit's two strategies); then further
   calls of the candidates within ``stop_after`` of the fastest until each has ``samples``
   timings, and of every other tried candidate until it has two. The fastest of a candidate's timings counts:
   noise on a busy machine only ever adds time, and the first forwards of a new size (and of a new model) pay
   warm-ups that later calls do not, so one slow first timing never rules a candidate out. Then the choice of
   that shape is final: a dict lookup, and the whole orbit in one chunk takes the fast path
   (:mod:`symwrap.fast_path`). A model explores at most ``max_explorations`` calls in all.
4. **What is learned is shared between shapes.** Timings are kept as seconds per input element for forwards of a
   given size (elements per forward, in half-octave buckets), per model layout (number, rank, dtype and device of the
   acted inputs): shapes that differ only in batch size, images of other sizes and texts of other padded lengths
   reuse them, and a new shape usually starts final.

Deterministic given its clock: ``ChunkTuner(clock=...)`` takes any ``() -> seconds`` function, and ``clock=None``
never times (the memory-fitting largest candidate is final at once). The choice is the whole orbit in one forward
when its estimate is within ``tolerance`` (3 %) and 0.5 ms of the fastest, or within 0.1 ms of it (its settled calls
skip the chunk loop and take the fast path, which its timed calls did not), else the smallest candidate within
``tolerance`` (a larger chunk needs more memory).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch

from symwrap.errors import MemoryBudgetError
from symwrap.memory import MemoryBudget, format_bytes

__all__ = [
    "ChunkTuner",
    "Decision",
    "LayoutKnowledge",
    "chunk_candidates",
    "default_clock",
    "pick_chunk",
    "size_bucket",
]

#: The clock of tuners made without one (seconds, any origin). Tests replace it (``None``: never time).
default_clock: Callable[[], float] | None = time.perf_counter


def chunk_candidates(rows: int, batch: int, copies: int) -> list[int]:
    """Candidate rows per forward: ``batch·d`` for each divisor ``d`` of ``copies`` (``d = 1`` is the per-element
    loop, ``d = copies`` the full stack), and ``rows`` itself."""
    found = {rows, batch}
    found.update(batch * d for d in range(1, copies + 1) if copies % d == 0)
    return sorted(c for c in found if 1 <= c <= rows)


def size_bucket(elements: int) -> int:
    """The half-octave bucket of a forward of ``elements`` input elements (``round(2·log2(elements))``)."""
    return round(2 * math.log2(max(elements, 1)))


@dataclass
class LayoutKnowledge:
    """What the tuner learned about one model layout, shared by all its shapes.

    Attributes:
        costs: Recent seconds per input element, per :func:`size_bucket` of the forward (the last ``keep`` calls).
        budget: Bytes a chunk's forward may use (``None``: no limit known); ``budget_source`` says why.
        bytes_per_element: Measured peak bytes per input element of a forward (above the memory in use before).
        measured_row_elements: The largest row (input elements per orbit row) whose memory was measured.
        peaks: Measured peaks, per ``(rows, row elements)``.
        explorations: Timed calls spent exploring so far.
    """

    costs: dict[int, list[float]] = field(default_factory=dict)
    budget: int | None = None
    budget_source: str = ""
    bytes_per_element: float = 0.0
    measured_row_elements: int = 0
    peaks: dict[tuple[int, int], float] = field(default_factory=dict)
    explorations: int = 0

    def max_rows(self, row_elements: int) -> int | None:
        """The most rows whose predicted peak fits the budget (``None``: no limit)."""
        if self.budget is None or self.bytes_per_element <= 0:
            return None
        return math.floor(self.budget / (self.bytes_per_element * row_elements))


@dataclass(frozen=True)
class Decision:
    """Rows per forward for one call.

    Attributes:
        chunk: Rows per forward.
        final: The shape's choice is settled (cached; the next calls look it up).
        timed: Time this call and report it with :meth:`ChunkTuner.observe`.
        measure_rows: Run the first ``measure_rows`` rows as one forward under the memory meter and report its peak
            with :meth:`ChunkTuner.measured` (which returns the chunk for the other rows); ``0``: nothing to measure.
    """

    chunk: int
    final: bool = False
    timed: bool = False
    measure_rows: int = 0


class ChunkTuner:
    """Chooses rows per forward for ``chunk_size="auto"`` from real calls (see the module docstring).

    Args:
        max_rows: Never choose more rows than this in one forward (``None``: no limit).
        tolerance: Choose the smallest candidate whose estimate is within this fraction of the fastest.
        stop_after: Candidates more than this fraction slower than the fastest are not timed again.
        samples: Timings each close candidate gets before the choice is final (the fastest of them counts).
        keep: Timings kept per size bucket (the most recent).
        max_explorations: Timed calls one model layout may spend exploring.
        max_entries: Shapes whose choice is kept (least recently used dropped first); the same bound holds for layouts.
        memory: The memory budget of one chunk's forward (default: 0.9 of the free memory when measured);
            ``MemoryBudget(free_fraction=None)`` without ``max_memory`` measures no memory.
        clock: ``() -> seconds`` used to time calls (default :data:`default_clock`); ``None`` never times.

    Attributes:
        cache: The final rows per forward per call signature (least recently used first).
        layouts: :class:`LayoutKnowledge` per model layout.
    """

    def __init__(
        self,
        max_rows: int | None = None,
        tolerance: float = 0.03,
        stop_after: float = 0.10,
        samples: int = 3,
        keep: int = 5,
        max_explorations: int = 24,
        max_entries: int = 256,
        memory: MemoryBudget | None = None,
        clock: Callable[[], float] | str | None = "default",
    ) -> None:
        self.max_rows = max_rows
        self.tolerance = tolerance
        self.stop_after = stop_after
        self.samples = samples
        self.keep = keep
        self.max_explorations = max_explorations
        self.max_entries = max_entries
        self.memory = MemoryBudget() if memory is None else memory
        self.clock: Callable[[], float] | None = default_clock if clock == "default" else clock  # type: ignore[assignment]
        self.cache: OrderedDict[Hashable, int] = OrderedDict()
        self.layouts: OrderedDict[Hashable, LayoutKnowledge] = OrderedDict()
        self._seen: OrderedDict[Hashable, None] = OrderedDict()
        self._rounds: dict[Hashable, int] = {}

    # ------------------------------------------------------------------ lookups
    def cached(self, key: Hashable) -> int | None:
        """The final chunk size of ``key``, or ``None`` (a plain lookup that ``torch.compile`` traces)."""
        return self.cache.get(key)

    def remember(self, key: Hashable, rows: int) -> None:
        """Use ``rows`` per forward for ``key`` from now on (out-of-memory backoff lowers a choice)."""
        self._put(self.cache, key, rows)

    def layout(self, layout: Hashable) -> LayoutKnowledge:
        """The knowledge of ``layout`` (made empty on first use; least recently used layouts are dropped)."""
        found = self.layouts.get(layout)
        if found is None:
            found = LayoutKnowledge()
        self._put(self.layouts, layout, found)
        return found

    def _put(self, table: OrderedDict, key: Hashable, value: object) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self.max_entries:
            table.popitem(last=False)

    # ------------------------------------------------------------------ decisions
    def decide(
        self,
        key: Hashable,
        layout: Hashable,
        rows: int,
        batch: int,
        copies: int,
        row_elements: int,
        device: torch.device,
        max_rows: int | None = None,
    ) -> Decision:
        """Rows per forward for a call of ``rows = batch·copies`` orbit rows of ``row_elements`` input elements each.

        Args:
            key: The call signature (shapes, dtypes, device, copies): its final choice is cached under it.
            layout: The model layout whose knowledge it shares (same for shapes that differ in size only).
            rows: Orbit rows of the call.
            batch: Inputs ``B``.
            copies: Copies per input ``k``.
            row_elements: Input elements of one orbit row (all acted inputs).
            device: Where the forwards run (for the free memory).
            max_rows: A cap for this call (on top of the tuner's ``max_rows``).
        """
        chosen = self.cache.get(key)
        if chosen is not None:
            self.cache.move_to_end(key)
            return Decision(chosen, final=True)
        known = self.layout(layout)
        first_of_shape = key not in self._seen
        self._put(self._seen, key, None)
        if first_of_shape and self.memory is not None and row_elements > known.measured_row_elements:
            known.budget, known.budget_source = self.memory.resolve(device)  # the free memory now
            if known.budget is not None and known.measured_row_elements == 0:  # nothing known: B rows (or 1) first
                first = 1 if self.memory.max_memory is not None else batch
                return Decision(self._cap(rows, max_rows), measure_rows=min(rows, first))
            if known.budget is not None:  # larger rows: measured in the call's first chunk, when far from the budget
                chunk = self._choose(key, known, rows, batch, copies, row_elements, max_rows, timed=False).chunk
                predicted = known.bytes_per_element * chunk * row_elements
                first = chunk if predicted <= known.budget / 2 else (1 if self.memory.max_memory is not None else batch)
                return Decision(chunk, measure_rows=min(rows, first, chunk))
        return self._choose(key, known, rows, batch, copies, row_elements, max_rows, timed=not first_of_shape)

    def measured(
        self,
        key: Hashable,
        layout: Hashable,
        rows: int,
        batch: int,
        copies: int,
        row_elements: int,
        measured_rows: int,
        peak: float,
        max_rows: int | None = None,
    ) -> int:
        """Record the peak bytes of a forward of ``measured_rows`` rows (above the memory in use before it); returns
        the rows per forward for the rest of the call.

        Raises:
            MemoryBudgetError: Not even one row fits the budget, by the measurement.
        """
        known = self.layout(layout)
        known.peaks[(measured_rows, row_elements)] = peak
        # A fixed part is counted per row too (on the safe side); larger rows replace what smaller rows showed
        # (attention's memory per element grows with the length, so the largest rows bound the smaller ones).
        known.bytes_per_element = peak / (measured_rows * row_elements)
        known.measured_row_elements = max(known.measured_row_elements, row_elements)
        fits = known.max_rows(row_elements)
        if fits is not None and fits < 1:
            assert known.budget is not None
            one = "1 row needs" if measured_rows == 1 else f"{measured_rows} rows need"
            raise MemoryBudgetError(
                f"chunk_size='auto' cannot fit one orbit row into the memory budget: a forward of {one} "
                f"{format_bytes(peak)} (measured), but the budget is {format_bytes(known.budget)} "
                f"({known.budget_source}). Give a larger max_memory, free device memory, or use smaller inputs."
            )
        return self._choose(key, known, rows, batch, copies, row_elements, max_rows, timed=False).chunk

    def observe(
        self, key: Hashable, layout: Hashable, chunk: int, rows: int, row_elements: int, seconds: float
    ) -> None:
        """Record that a call of ``rows`` rows took ``seconds`` in forwards of ``chunk`` rows."""
        known = self.layout(layout)
        known.explorations += 1
        bucket = size_bucket(chunk * row_elements)
        times = known.costs.setdefault(bucket, [])
        times.append(seconds / (rows * row_elements))
        del times[: -self.keep]

    def _cap(self, rows: int, max_rows: int | None) -> int:
        caps = [c for c in (self.max_rows, max_rows) if c is not None]
        return max(1, min([rows, *caps]))

    def candidates(
        self, known: LayoutKnowledge, rows: int, batch: int, copies: int, row_elements: int, max_rows: int | None
    ) -> list[int]:
        """The candidates of a call that fit the caps and the predicted memory (at least one: the largest that
        fits)."""
        limit = self._cap(rows, max_rows)
        fits = known.max_rows(row_elements)
        if fits is not None:
            limit = max(1, min(limit, fits))
        return [c for c in chunk_candidates(rows, batch, copies) if c <= limit] or [limit]

    def estimates(
        self, known: LayoutKnowledge, candidates: list[int], rows: int, row_elements: int, extrapolate: bool = False
    ) -> dict[int, float]:
        """Estimated seconds of the call per candidate whose forward size has timings (the fastest of them).

        With ``extrapolate``, a candidate whose forward size has no timings gets the cost per element of the nearest
        smaller size that has (a larger forward is taken to cost no more per element than a smaller one, unless its
        own size was timed). A candidate smaller than every timed size gets none (smaller forwards usually cost more
        per element)."""
        found = {}
        timed_sizes = sorted(b for b, times in known.costs.items() if times) if extrapolate else []
        for c in candidates:
            bucket = size_bucket(c * row_elements)
            times = known.costs.get(bucket)
            if not times and extrapolate:
                below = [b for b in timed_sizes if b < bucket]
                times = known.costs[below[-1]] if below else None
            if times:
                found[c] = min(times) * rows * row_elements
        return found

    def _choose(
        self,
        key: Hashable,
        known: LayoutKnowledge,
        rows: int,
        batch: int,
        copies: int,
        row_elements: int,
        max_rows: int | None,
        timed: bool,
    ) -> Decision:
        candidates = self.candidates(known, rows, batch, copies, row_elements, max_rows)
        if self.clock is None or len(candidates) == 1:  # nothing to time, or nothing to choose from
            self.remember(key, candidates[-1])
            return Decision(candidates[-1], final=True)
        estimates = self.estimates(known, candidates, rows, row_elements)
        exploring = known.explorations < self.max_explorations
        if not estimates:  # nothing known: the largest that fits, timed from the shape's second call on
            return Decision(candidates[-1], timed=timed and exploring)
        best = pick_chunk(estimates, self.tolerance, whole=rows)
        if exploring:
            i = candidates.index(best)
            fastest = min(estimates.values())
            # untried neighbours of the fastest (larger first); and the per-element loop (the smallest candidate)
            # when the next smaller size timed is on a plateau with the fastest (within tolerance) and no forward of
            # the loop's size or smaller was ever timed on this layout: costs per row need not keep rising towards
            # smaller forwards (a CPU's caches), and the loop is one of the limit's two strategies
            smaller = [c for c in estimates if c < best]
            loop = size_bucket(candidates[0] * row_elements)
            plateau = (
                bool(smaller)
                and estimates[max(smaller)] <= fastest * (1 + self.tolerance)
                and not any(b <= loop for b, times in known.costs.items() if times)
            )
            untried = [candidates[j] for j in (i + 1, i - 1, *((0,) if plateau else ())) if 0 <= j < len(candidates)]
            untried = [c for c in dict.fromkeys(untried) if c not in estimates]
            counts = {c: len(known.costs[size_bucket(c * row_elements)]) for c in estimates}
            # close candidates get `samples` timings; any other one a second (its first may have been a warm-up)
            needed = {
                c: self.samples if s <= fastest * (1 + self.stop_after) else min(2, self.samples)
                for c, s in estimates.items()
            }
            short = [c for c in estimates if counts[c] < needed[c]]
            if (untried or short) and not timed:  # a shape's first call: the best guess, larger forwards extrapolated
                guess = self.estimates(known, candidates, rows, row_elements, extrapolate=True)
                return Decision(pick_chunk(guess, self.tolerance, whole=rows))
            if untried:
                return Decision(untried[0], timed=True)
            if short:  # candidates with too few timings: the least timed next, in turn (rounds interleave)
                turn = self._rounds.get(key, 0)
                self._rounds[key] = turn + 1
                fewest = min(counts[c] for c in short)
                least = [c for c in short if counts[c] == fewest]
                return Decision(least[turn % len(least)], timed=True)
        self._rounds.pop(key, None)
        self.remember(key, best)
        return Decision(best, final=True)


def pick_chunk(
    estimates: dict[int, float],
    tolerance: float = 0.03,
    whole: int | None = None,
    whole_bonus_s: float = 5e-4,
    fast_path_s: float = 1e-4,
) -> int:
    """The chunk size to use: ``whole`` (all rows in one forward) when its estimate is within ``tolerance`` of the
    fastest and at most ``whole_bonus_s`` slower, or at most ``fast_path_s`` slower; else the smallest chunk size
    within ``tolerance`` of the fastest.

    The whole orbit in one chunk wins such a near-tie because its settled calls skip the per-chunk loop and take the
    fast path (:mod:`symwrap.fast_path`), a saving of about 0.1–0.3 ms per call that its timed (exploring) calls did
    not have; on a large model that saving is far below the timing noise, so there the measured fastest counts.
    """
    fastest = min(estimates.values())
    near = [c for c, seconds in estimates.items() if seconds <= fastest * (1 + tolerance)]
    if whole in estimates and (
        estimates[whole] <= fastest + fast_path_s or (whole in near and estimates[whole] <= fastest + whole_bonus_s)
    ):
        return whole
    return min(near)
