"""Memory budgets of ``chunk_size="auto"``: the meter, the cap, out-of-memory backoff, options and their errors."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import symwrap
from symwrap.chunking import ChunkTuner, size_bucket
from symwrap.errors import ConfigError, MemoryBudgetError, OutOfMemoryError
from symwrap.memory import MemoryBudget, StorageMeter, is_out_of_memory, measure_peak, parse_memory
from tests.conftest import SmallCNN

MIB = 2**20


def _d4_images(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 images of the d4 orbit of ``x`` (B, C, H, W)."""
    rotations = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    return rotations + [torch.flip(r, dims=(-1,)) for r in rotations]


def _only_key(wrapped: symwrap.SymmetrizedModel) -> tuple:
    (key,) = wrapped.engine.tuner.cache
    return key


# ---------------------------------------------------------------------------------------------- the meter
class KnownAllocations(nn.Module):
    """Allocates float32 tensors of known sizes: live bytes go 4, 12, 14, 10, 15, 7 MB (the input excluded)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.ones(1_000_000)  # 4 MB
        b = torch.zeros(2_000_000)  # 8 MB -> 12 MB live
        b.add_(1)  # in place: no new storage
        view = b[::2].view(-1, 1000)  # views share b's storage
        c = a[:500_000] * 2  # 2 MB -> 14 MB
        del a, view  # -> 10 MB
        d = torch.ones(1_250_000)  # 5 MB -> 15 MB, the peak
        del b  # -> 7 MB
        return x.sum() + c.sum() + d.sum()


def test_storage_meter_counts_live_tensor_bytes_exactly() -> None:
    x = torch.randn(100)
    with StorageMeter() as meter:
        KnownAllocations()(x)
    # the peak is {b, c, d} = 15 MB (+ the scalar sums, a few bytes)
    true_peak = (2_000_000 + 500_000 + 1_250_000) * 4
    assert true_peak <= meter.peak <= true_peak * 1.01
    assert meter.current <= 64, "everything made inside the forward was freed (a few scalars may be cached)"


def test_storage_meter_releases_storages_when_the_last_view_dies() -> None:
    with StorageMeter() as meter:
        big = torch.empty(1_000_000)
        view = big[10:]
        del big
        after_base_freed = meter.current
        del view
    assert after_base_freed == 4_000_000 and meter.current == 0 and meter.peak == 4_000_000


def test_storage_meter_counts_ops_on_lists_of_tensors_and_in_place_results() -> None:
    parts = [torch.ones(250_000), torch.ones(250_000)]
    with StorageMeter() as meter:
        joined = torch.cat(parts)  # a list argument: 2 MB new
        joined.mul_(2)  # in place on a counted storage: nothing new
        torch._foreach_mul_(parts, 2)  # in place on a list made before the meter: nothing new
        added = torch._foreach_add(parts, 1)  # a list of new storages: 2 MB
    assert meter.peak == 4_000_000 and len(added) == 2


def test_the_first_measured_call_does_not_import_torch_dynamo() -> None:
    """TorchDispatchMode wraps a mode's __torch_dispatch__ in torch._dynamo.disable unless the mode opts out: its first
    use imports torch._dynamo (about a second), on the first call of every wrapped model with chunk_size='auto'."""
    code = (
        "import sys, torch, symwrap\n"
        "from tests.conftest import SmallCNN\n"
        "symwrap.wrap(SmallCNN(8), 'd4')(torch.randn(2, 3, 8, 8))\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    assert done.stdout.strip() == "False"


def test_measure_peak_of_a_cnn_forward_grows_linearly_with_rows() -> None:
    model = SmallCNN(32).eval()
    peaks = {}
    with torch.no_grad():
        for rows in (4, 8, 16):
            x = torch.randn(rows, 3, 32, 32)
            with measure_peak(torch.device("cpu")) as measured:
                model(x)
            peaks[rows] = measured.peak
    # conv1 output (rows, 8, 32, 32) float32 and its ReLU are both alive at the second conv: ≥ 2 · 32 KiB per row
    assert peaks[4] >= 4 * 2 * 8 * 32 * 32 * 4
    assert peaks[16] - peaks[8] == pytest.approx(2 * (peaks[8] - peaks[4]), rel=0.05)


# ---------------------------------------------------------------------------------------------- the must-hold
def test_auto_chunk_stays_within_a_small_memory_cap_and_matches_the_stacked_result() -> None:
    model = SmallCNN(32).eval()
    x = torch.randn(16, 3, 32, 32)  # d4: 128 orbit rows
    cap = 2 * MIB
    with torch.no_grad(), measure_peak(torch.device("cpu")) as stacked:
        model(torch.cat(_d4_images(x)))
    assert stacked.peak > 4 * cap, "the full stack must not fit the cap, or the test shows nothing"

    wrapped = symwrap.wrap(model, "d4", max_memory=cap)
    rows_run: list[int] = []
    model.register_forward_hook(lambda module, args, output: rows_run.append(args[0].shape[0]))
    with torch.no_grad():
        out = wrapped(x)  # the first call measures a real one-row forward, then chooses for the other rows
    assert rows_run[0] == 1 and sum(rows_run) == 128, "no forward beyond the call's own rows"
    tuner, key = wrapped.engine.tuner, _only_key(wrapped)
    chosen = tuner.cache[key]
    (known,) = tuner.layouts.values()
    assert 1 <= chosen < 128 and known.budget == cap and known.peaks[(1, 3 * 32 * 32)] <= cap
    assert chosen <= known.max_rows(3 * 32 * 32) < 128, "the larger candidates were dropped for memory"
    with torch.no_grad(), measure_peak(torch.device("cpu")) as second:
        again = wrapped(x)  # tuned: the whole call, reduce included, stays under the cap
    assert 0 < second.peak <= cap

    with torch.no_grad():
        reference = symwrap.wrap(model, "d4", chunk_size=None)(x)
        assert_close(out, reference, rtol=1e-5, atol=1e-5)
        assert_close(again, out, rtol=1e-6, atol=1e-6)  # the first call ran a one-row chunk first
        assert_close(wrapped(x), again, rtol=0, atol=0)  # the choice is final: the same chunks every call
        for moved in _d4_images(x)[1:]:
            assert_close(wrapped(moved), out, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_auto_chunk_stays_within_a_memory_cap_on_cuda() -> None:
    device = torch.device("cuda")
    torch.backends.cudnn.allow_tf32 = False  # TF32 convolutions round differently per chunk size (~1e-3)
    model = SmallCNN(32).eval().to(device)
    x = torch.randn(16, 3, 32, 32, device=device)
    cap = 2 * MIB
    wrapped = symwrap.wrap(model, "d4", max_memory=cap)
    with torch.no_grad():
        out = wrapped(x)
        chosen = wrapped.engine.tuner.cache[_only_key(wrapped)]
        with measure_peak(device) as second:
            wrapped(x)
        reference = symwrap.wrap(model, "d4", chunk_size=None)(x)
    torch.backends.cudnn.allow_tf32 = True
    assert 1 <= chosen < 128 and second.peak <= cap
    assert_close(out, reference, rtol=1e-4, atol=1e-4)  # cuDNN picks other algorithms per chunk size


def test_per_call_max_rows_caps_the_candidates() -> None:
    tuner = ChunkTuner(memory=MemoryBudget(free_fraction=None), clock=None)
    decision = tuner.decide("k", "layout", 64, 8, 8, 10, torch.device("cpu"), max_rows=20)
    assert decision.chunk == 16 and decision.final
    assert tuner.candidates(tuner.layout("layout"), 64, 8, 8, 10, 20) == [8, 16]


def test_without_any_budget_nothing_is_measured() -> None:
    tuner = ChunkTuner(memory=MemoryBudget(free_fraction=None), clock=None)
    decision = tuner.decide("k", "layout", 16, 2, 8, 10, torch.device("cpu"))
    assert decision.measure_rows == 0 and decision.chunk == 16
    assert tuner.layout("layout").peaks == {}


def test_free_memory_bounds_the_budget_without_max_memory() -> None:
    budget, source = MemoryBudget().resolve(torch.device("cpu"))
    if budget is None:
        pytest.skip("free memory is unknown on this platform (not Linux)")
    assert budget > 0 and "free" in source
    tight, source = MemoryBudget(max_memory=1000).resolve(torch.device("cpu"))
    assert tight == 1000 and "max_memory" in source


# ---------------------------------------------------------------------------------------------- OOM backoff
class RunsOutAbove(nn.Module):
    """SmallCNN that raises an out-of-memory error for batches above ``limit`` rows (``None``: never)."""

    def __init__(self, limit: int | None, error: type[Exception] = torch.OutOfMemoryError) -> None:
        super().__init__()
        self.cnn = SmallCNN(16)
        self.limit = limit
        self.error = error
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.limit is not None and x.shape[0] > self.limit:
            if self.error is RuntimeError:
                raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory")
            raise self.error(f"tried to allocate for {x.shape[0]} rows")
        self.batches.append(x.shape[0])
        return self.cnn(x)


@pytest.mark.parametrize("error", [torch.OutOfMemoryError, RuntimeError])
def test_out_of_memory_after_tuning_halves_the_chunk_and_gives_the_same_result(error: type[Exception]) -> None:
    model = RunsOutAbove(None, error).eval()
    x = torch.randn(8, 3, 16, 16)  # d4: 64 rows; every candidate (8, 16, 32, 64) is above the limit set below
    wrapped = symwrap.wrap(model, "d4")
    with torch.no_grad():
        reference = symwrap.wrap(model, "d4", chunk_size=None)(x)
        first = wrapped(x)
        key = _only_key(wrapped)
        assert wrapped.engine.tuner.cache[key] >= 8
        model.limit = 5  # memory got tighter after tuning (another process, a larger model on the device)
        model.batches.clear()
        out = wrapped(x)
    assert wrapped.engine.tuner.cache[key] <= 5, "the smaller chunk is remembered for the next calls"
    assert max(model.batches) <= 5 and sum(model.batches) == 64, "every row ran once, none twice"
    assert_close(out, reference, rtol=1e-5, atol=1e-5)
    assert_close(first, reference, rtol=1e-5, atol=1e-5)


def test_out_of_memory_during_tuning_drops_the_sizes_that_fail() -> None:
    model = RunsOutAbove(5).eval()
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        out = symwrap.wrap(model, "d4")(x)
        model.limit = None
        reference = symwrap.wrap(model, "d4", chunk_size=None)(x)
    assert_close(out, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [16, None])
def test_out_of_memory_with_a_fixed_chunk_size_says_to_use_auto(chunk_size: int | None) -> None:
    wrapped = symwrap.wrap(RunsOutAbove(5).eval(), "d4", chunk_size=chunk_size)
    with pytest.raises(OutOfMemoryError, match=r"chunk_size=(16|None).*chunk_size='auto'.*max_memory") as caught:
        wrapped(torch.randn(4, 3, 16, 16))
    assert isinstance(caught.value, torch.OutOfMemoryError) and isinstance(caught.value.__cause__, Exception)


def test_other_runtime_errors_are_not_mistaken_for_out_of_memory() -> None:
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))


# ---------------------------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512MB", 512 * 10**6),
        ("2GiB", 2 * 2**30),
        ("24GB", 24 * 10**9),
        ("1.5 gib", int(1.5 * 2**30)),
        ("100", 100),
        ("64 KiB", 64 * 1024),
        (4096, 4096),
    ],
)
def test_parse_memory_decimal_and_binary_units(text: int | str, size: int) -> None:
    assert parse_memory(text) == size


def test_max_memory_round_trips_through_save_pretrained(tmp_path: Path) -> None:
    model = SmallCNN(16).eval()
    wrapped = symwrap.wrap(model, "rot90", max_memory="512MB")
    wrapped.save_pretrained(tmp_path)
    loaded = symwrap.SymmetrizedModel.from_pretrained(model, tmp_path)
    assert loaded.symwrap_config.max_memory == "512MB"
    assert loaded.engine.tuner.memory.max_memory == 512 * 10**6
    fixed = symwrap.SymmetrizedModel.from_pretrained(model, tmp_path, chunk_size=4)  # the cap is for "auto" only
    assert fixed.symwrap_config.max_memory is None and fixed.symwrap_config.chunk_size == 4


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("value", "match"),
    [
        (-1, r"'max_memory'.*-1 is not a positive memory size"),
        (0, r"'max_memory'.*0 is not a positive memory size"),
        ("0GB", r"'max_memory'.*'0GB' is not a positive memory size"),
        (True, r"'max_memory'.*expected bytes as an int or a string.*bool"),
        (2.5e9, r"'max_memory'.*expected bytes as an int or a string.*float"),
        ("12 parsecs", r"'max_memory'.*cannot read '12 parsecs' as a memory size.*GiB"),
        ("lots", r"'max_memory'.*cannot read 'lots'"),
        ("24G", r"'max_memory'.*cannot read '24G'.*GB.*GiB"),
    ],
)
def test_bad_max_memory(value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        symwrap.wrap(SmallCNN(16), "rot90", max_memory=value)


@pytest.mark.parametrize("chunk_size", [8, None])
def test_max_memory_needs_auto_chunks(chunk_size: int | None) -> None:
    with pytest.raises(ConfigError, match=r"'max_memory' only applies to chunk_size='auto'.*chunk_size=(8|None)"):
        symwrap.wrap(SmallCNN(16), "rot90", chunk_size=chunk_size, max_memory="1GB")


def test_budget_too_small_for_one_row_names_the_row_and_the_budget() -> None:
    wrapped = symwrap.wrap(SmallCNN(16), "rot90", max_memory=1000)
    with pytest.raises(MemoryBudgetError, match=r"1 row needs [\d.]+ MiB \(measured\).*budget is.*max_memory=1000"):
        wrapped(torch.randn(2, 3, 16, 16))
    assert issubclass(MemoryBudgetError, ConfigError)


def test_a_measured_peak_bounds_the_chunks_of_larger_batches_and_smaller_rows() -> None:
    tuner = ChunkTuner(memory=MemoryBudget(max_memory=1000, free_fraction=None), clock=None)
    first = tuner.decide("a", "layout", 32, 4, 8, 10, torch.device("cpu"))
    assert first.measure_rows == 1, "under max_memory the first measured forward is one row"
    assert tuner.measured("a", "layout", 32, 4, 8, 10, 1, 60.0) == 16  # 6 bytes an element: 16 rows of 10 fit
    known = tuner.layout("layout")
    assert known.bytes_per_element == 6.0 and known.max_rows(10) == 16 and known.max_rows(5) == 33
    smaller_rows = tuner.decide("b", "layout", 64, 8, 8, 5, torch.device("cpu"))
    assert smaller_rows.measure_rows == 0 and smaller_rows.chunk == 32  # predicted, not measured again
    larger_rows = tuner.decide("c", "layout", 8, 1, 8, 20, torch.device("cpu"))
    assert larger_rows.measure_rows == 1, "rows larger than any measured are measured again"
    assert math.isinf(ChunkTuner().layout("x").max_rows(1) or math.inf)


# ---------------------------------------------------------------------------------------------- noisy timings
class FakeClock:
    """A clock that stands still until a simulated forward advances it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _simulate_call(tuner: ChunkTuner, clock: FakeClock, key: str, seconds_per_call: dict[int, float]) -> int:
    """One call of 16 rows (8 inputs × 2 copies) through the tuner; the clock advances by the chunk's cost."""
    decision = tuner.decide(key, "layout", 16, 8, 2, 1, torch.device("cpu"))
    started = clock()
    clock.now += seconds_per_call[decision.chunk]
    if decision.timed:
        tuner.observe(key, "layout", decision.chunk, 16, 1, clock() - started)
    return decision.chunk


@pytest.mark.parametrize("samples", [3, 1])
def test_a_slow_spell_during_one_timing_is_outvoted_by_interleaved_rounds(samples: int) -> None:
    # 8 rows per forward costs 10 ms a call, all 16 in one 13 ms; the first call timed with 8 rows hit a slow spell
    clock = FakeClock()
    tuner = ChunkTuner(memory=MemoryBudget(free_fraction=None), clock=clock, samples=samples, stop_after=0.5)
    chosen = []
    slow_spell = {8: 0.018, 16: 0.013}
    for _ in range(12):
        explored = tuner.layout("layout").costs
        timed_8 = len(explored.get(size_bucket(8), []))  # timings of forwards of 8 rows of 1 element
        cost = slow_spell if timed_8 == 0 else {8: 0.010, 16: 0.013}
        chosen.append(_simulate_call(tuner, clock, "k", cost))
    assert tuner.cached("k") == (8 if samples == 3 else 16)
    assert chosen[0] == 16, "the first call runs at once with the largest chunk that fits"
