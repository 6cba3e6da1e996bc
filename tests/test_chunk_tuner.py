"""``chunk_size="auto"`` learns from real calls only, with an injected clock: no extra forwards, settling within a few
calls, knowledge shared between shapes, memory re-measured for larger rows, a bounded number of kept shapes."""

from __future__ import annotations

import torch
from torch import nn
from torch.testing import assert_close

import symwrap
from symwrap.chunking import ChunkTuner


class FakeClock:
    """Stands still; the model's forwards advance it (1 ms a forward, 1 ms a row up to 8 rows, 1.5 ms past 8)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def forward_of(self, rows: int) -> None:
        self.now += 1e-3 + rows * (1e-3 if rows <= 8 else 1.5e-3)


class PooledCNN(nn.Module):
    """Any image size; records the rows of every forward and advances the fake clock by their simulated cost."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * 4, 3)
        self.clock = clock
        self.rows: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append(x.shape[0])
        self.clock.forward_of(x.shape[0])
        position = torch.arange(x.shape[-1], dtype=x.dtype) / x.shape[-1]  # not rotation invariant on its own
        y = torch.relu(self.conv(x * (1 + position)))
        return self.head(nn.functional.adaptive_avg_pool2d(y, 2).flatten(1))


def _wrapped(**options: object) -> tuple[symwrap.SymmetrizedModel, PooledCNN, FakeClock]:
    clock = FakeClock()
    model = PooledCNN(clock).eval()
    wrapped = symwrap.wrap(model, "d4", **options)
    wrapped.engine.tuner.clock = clock
    return wrapped, model, clock


def _key(wrapped: symwrap.SymmetrizedModel, x: torch.Tensor) -> tuple:
    return (((tuple(x.shape), x.dtype, x.device),), 8, type(wrapped.group).__name__)


def test_every_call_runs_only_its_own_rows_and_the_choice_settles_within_a_few_calls() -> None:
    wrapped, model, _ = _wrapped()
    x = torch.randn(2, 3, 8, 8)  # d4: 16 rows; candidates 2, 4, 8, 16 rows per forward
    tuner = wrapped.engine.tuner
    calls = 0
    with torch.no_grad():
        while tuner.cached(_key(wrapped, x)) is None and calls < 20:
            model.rows.clear()
            wrapped(x)
            calls += 1
            assert sum(model.rows) == 16, "no forward beyond the call's own rows (tuning and memory included)"
        reference = symwrap.wrap(model, "d4", chunk_size=None)(x)
        assert_close(wrapped(x), reference, rtol=1e-5, atol=1e-6)
    assert calls <= 9  # the untimed first call, each tried candidate timed twice, the close ones three times
    assert tuner.cached(_key(wrapped, x)) == 8  # 1 ms a row up to 8 rows, 1.5 ms past: 2 forwards of 8 rows


def test_a_new_batch_size_starts_final_from_what_was_learned_per_row() -> None:
    wrapped, model, _ = _wrapped()
    tuner = wrapped.engine.tuner
    with torch.no_grad():
        for _ in range(10):
            wrapped(torch.randn(2, 3, 8, 8))
        (known,) = tuner.layouts.values()
        explored = known.explorations
        model.rows.clear()
        x = torch.randn(1, 3, 8, 8)  # 8 rows: one forward of 8 rows is the fastest learned size
        wrapped(x)
    assert tuner.cached(_key(wrapped, x)) == 8 and model.rows == [8]
    assert known.explorations == explored, "nothing explored again"


def test_a_new_shape_first_runs_larger_forwards_when_the_largest_timed_size_was_the_fastest() -> None:
    wrapped, model, _ = _wrapped()  # 1 ms a forward + 1 ms a row up to 8 rows: larger forwards cost less per row
    tuner = wrapped.engine.tuner
    with torch.no_grad():
        for _ in range(10):
            wrapped(torch.randn(1, 3, 8, 8))  # d4, B = 1: forwards of 1, 2, 4 or 8 rows; 8 is the fastest
        assert tuner.cached(_key(wrapped, torch.randn(1, 3, 8, 8))) == 8
        model.rows.clear()
        wrapped(torch.randn(2, 3, 8, 8))  # 16 rows: 16 untimed, guessed at 8's cost per row, and whole wins the tie
    assert model.rows == [16], "not 2 forwards of the largest size timed so far"


def test_a_new_shape_keeps_the_timed_size_when_a_larger_one_was_timed_slower() -> None:
    wrapped, model, _ = _wrapped()  # 1.5 ms a row past 8 rows: 16 rows cost more per row than 8
    tuner = wrapped.engine.tuner
    with torch.no_grad():
        for _ in range(12):
            wrapped(torch.randn(2, 3, 8, 8))  # B = 2: forwards of 2, 4, 8 or 16 rows; 8 is the fastest
        assert tuner.cached(_key(wrapped, torch.randn(2, 3, 8, 8))) == 8
        model.rows.clear()
        wrapped(torch.randn(4, 3, 8, 8))  # 32 rows: 32 is guessed at 16's (slower) cost per row, so 8 it is
    assert model.rows == [8, 8, 8, 8]


def test_memory_is_measured_again_only_for_larger_rows() -> None:
    wrapped, model, _ = _wrapped()
    tuner = wrapped.engine.tuner
    with torch.no_grad():
        wrapped(torch.randn(2, 3, 8, 8))
        (known,) = tuner.layouts.values()
        assert list(known.peaks) == [(2, 3 * 8 * 8)]  # the first chunk of B rows of the first call
        wrapped(torch.randn(3, 3, 8, 8))
        wrapped(torch.randn(2, 3, 6, 6))
        assert list(known.peaks) == [(2, 3 * 8 * 8)], "rows no larger than measured: predicted"
        model.rows.clear()
        wrapped(torch.randn(1, 3, 12, 12))
    # far from the budget: measured in the call's own chunk of 8 rows, not split
    assert list(known.peaks) == [(2, 3 * 8 * 8), (8, 3 * 12 * 12)] and known.measured_row_elements == 3 * 12 * 12
    assert model.rows == [8]


def test_the_same_clock_readings_give_the_same_choices() -> None:
    choices = []
    for _ in range(2):
        wrapped, model, _ = _wrapped()
        with torch.no_grad():
            for batch in (2, 2, 2, 3, 2, 2, 1, 3, 2, 2):
                model.rows.clear()
                wrapped(torch.randn(batch, 3, 8, 8))
                choices.append(tuple(model.rows))
    assert choices[:10] == choices[10:]


def test_the_tuner_keeps_a_bounded_number_of_shapes_least_recently_used_first() -> None:
    wrapped, _, _ = _wrapped()
    tuner = wrapped.engine.tuner
    tuner.max_entries, tuner.clock = 3, None  # without a clock every shape's choice is final at its first call
    wrapped.engine.use_fast_path = False  # every call asks the tuner
    with torch.no_grad():
        for size in (4, 5, 6, 7, 8, 9, 10, 4):
            wrapped(torch.randn(1, 3, size, size))
    kept = [key[0][0][0][-1] for key in tuner.cache]
    assert len(tuner.cache) <= 3 and kept[-1] == 4 and 5 not in kept


def test_without_a_clock_the_largest_chunk_that_fits_is_final_at_once() -> None:
    tuner = ChunkTuner(clock=None)
    decision = tuner.decide("k", "layout", 32, 4, 8, 10, torch.device("cpu"))
    assert decision.measure_rows == 4, "the first call measures memory on its first B rows"
    assert tuner.measured("k", "layout", 32, 4, 8, 10, 4, 1000.0) == 32
    assert tuner.cached("k") == 32


def test_the_fast_path_is_learned_once_the_choice_is_final() -> None:
    wrapped, _, _ = _wrapped()
    x = torch.randn(1, 3, 8, 8)  # 8 rows: one forward of the whole orbit is the fastest (1 ms a row up to 8)
    with torch.no_grad():
        for _ in range(12):
            wrapped(x)
    assert wrapped.engine.tuner.cached(_key(wrapped, x)) == 8
    assert wrapped.engine.fast_paths.get((x.shape, x.dtype, x.device)) is not None


def test_a_candidate_whose_first_timing_was_a_warm_up_is_timed_again_and_can_win() -> None:
    from symwrap.memory import MemoryBudget

    clock = FakeClock()
    tuner = ChunkTuner(memory=MemoryBudget(free_fraction=None), clock=clock)
    timed: dict[int, int] = {}
    for _ in range(12):  # calls of 16 rows (8 inputs × 2 copies): forwards of 8 or 16 rows
        decision = tuner.decide("k", "layout", 16, 8, 2, 1, torch.device("cpu"))
        # the whole orbit's first timed forward pays a warm-up (30 ms), later ones 10 ms; two forwards of 8: 12 ms
        seconds = 0.012 if decision.chunk == 8 else (0.030 if timed.get(16, 0) == 0 else 0.010)
        start = clock()
        clock.now += seconds
        if decision.timed:
            timed[decision.chunk] = timed.get(decision.chunk, 0) + 1
            tuner.observe("k", "layout", decision.chunk, 16, 1, clock() - start)
    assert tuner.cached("k") == 16, "one slow first timing does not rule the whole orbit out"
    assert timed[16] >= 2


def test_the_whole_orbit_wins_when_it_is_timed_within_what_the_fast_path_saves() -> None:
    from symwrap.chunking import pick_chunk

    # a sub-millisecond model: the whole orbit timed 0.08 ms (16 %) slower on the general path than 4 forwards
    assert pick_chunk({2: 0.6e-3, 4: 0.5e-3, 8: 0.58e-3}, whole=8) == 8
    assert pick_chunk({2: 0.6e-3, 4: 0.5e-3, 8: 0.65e-3}, whole=8) == 4  # 0.15 ms slower: more than it saves


class CacheCliffClock(FakeClock):
    """A CPU whose caches hold forwards of up to 2 rows: 1 ms a row there, 2 ms a row for 4 rows or more (a plateau
    from 4 to 16 rows, and a cliff down to the per-element loop of B = 2)."""

    def forward_of(self, rows: int) -> None:
        self.now += rows * (1e-3 if rows <= 2 else 2e-3)


def test_a_plateau_next_to_the_fastest_sends_the_search_to_the_per_element_loop() -> None:
    clock = CacheCliffClock()
    model = PooledCNN(clock).eval()
    wrapped = symwrap.wrap(model, "d4")
    wrapped.engine.tuner.clock = clock
    x = torch.randn(2, 3, 8, 8)  # 16 rows: 2 (the loop), 4, 8, 16 rows per forward
    with torch.no_grad():
        for _ in range(12):
            wrapped(x)
    # 16 and 8 rows cost the same (a plateau), 4 rows too: only a search that tries the loop finds it twice as fast
    assert wrapped.engine.tuner.cached(_key(wrapped, x)) == 2
