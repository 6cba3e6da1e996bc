"""Memory budgets for ``chunk_size="auto"``: measured peaks of real forwards, never guesses.

The budget of one chunk's forward is ``min(max_memory, free_fraction · free memory)``, the free memory read when
the chunk size is tuned (CUDA: ``torch.cuda.mem_get_info`` plus what PyTorch's caching allocator holds unused;
CPU on Linux: ``MemAvailable`` of ``/proc/meminfo``, lowered to a cgroup v2 limit if one is set; elsewhere
unknown, so only ``max_memory`` applies). It bounds the memory a chunk's forward needs *on top of* what is
already allocated (the model, the inputs): the peak measured during the forward minus the memory in use before.

How a chunk size is admitted (:class:`MemoryGuard`, driven by :class:`~symwrap.chunking.ChunkTuner`):

1. probe forwards of 1 and 2 rows are measured; they give a per-row slope and a fixed part;
2. every candidate's untimed warm-up forward is measured too, so the chunk finally chosen always has a measured
   peak within the budget; a candidate whose measured peak exceeds the budget is dropped with all larger ones;
3. before a forward is run, its peak is predicted from the two largest measured sizes
   (``peak(n) ≈ peak(m) + per_row · (n - m)``) and a size predicted over the budget is never run; once a
   prediction comes within half the budget, the size is approached by doubling, measuring each step.

Measuring: on CUDA, ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. Elsewhere (CPU) there
are no allocator statistics, and the resident set size is a poor meter (glibc keeps freed blocks or returns them
to the OS depending on their size, so it under- or over-counts, and it varies from run to run), so
:class:`StorageMeter` counts the bytes of live tensor storages created during the forward, through a
``TorchDispatchMode``: deterministic, and exact for what tensors hold. It does not see scratch buffers that
kernels allocate internally (oneDNN workspaces), which is why the budget keeps a safety fraction of free memory.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from symwrap.errors import ConfigError, MemoryBudgetError

__all__ = [
    "MemoryBudget",
    "MemoryGuard",
    "StorageMeter",
    "format_bytes",
    "free_memory",
    "is_out_of_memory",
    "measure_peak",
    "parse_memory",
]

logger = logging.getLogger(__name__)

_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------- parsing
def parse_memory(value: int | str | None, name: str = "max_memory") -> int | None:
    """Bytes from an int or a string with a decimal (``"24GB"``, ``"512MB"``) or binary (``"2GiB"``) unit.

    Args:
        value: A positive int (bytes), a string ``"<number> <unit>"`` with unit B, KB, MB, GB, TB (powers of
            1000) or KiB, MiB, GiB, TiB (powers of 1024), case-insensitive; or ``None`` (no limit).
        name: The option's name, for error messages.

    Raises:
        ConfigError: A bool, another type, an unparsable string, an unknown unit, or a size that is not positive.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(
            f"invalid option {name!r}: expected bytes as an int or a string such as '512MB' or '2GiB', got "
            f"{value!r} ({type(value).__name__})"
        )
    if isinstance(value, int):
        size = value
    else:
        match = _MEMORY.match(value)
        unit = match.group(2).lower() if match else ""
        if match is None or (unit not in _UNITS and unit != ""):
            raise ConfigError(
                f"invalid option {name!r}: cannot read {value!r} as a memory size. Use bytes as an int or a number "
                f"with a unit: {', '.join(k.upper().replace('I', 'i') for k in _UNITS)} (e.g. '512MB', '2GiB')"
            )
        size = math.floor(float(match.group(1)) * _UNITS[unit or "b"])
    if size <= 0:
        raise ConfigError(f"invalid option {name!r}: {value!r} is not a positive memory size; use e.g. '2GiB'")
    return size


def format_bytes(size: float) -> str:
    """``size`` bytes as MiB or GiB with three significant digits (for messages and tables)."""
    if size >= 2**30:
        return f"{size / 2**30:.3g} GiB"
    return f"{size / 2**20:.3g} MiB"


# ---------------------------------------------------------------------------------------------- free memory
def free_memory(device: torch.device) -> int | None:
    """Bytes a new allocation on ``device`` can use now, or ``None`` where this cannot be known.

    CUDA: free device memory plus what PyTorch's caching allocator reserved but does not use (it is reused
    before asking the driver). CPU: ``MemAvailable`` (Linux), lowered to the room left under a cgroup v2 limit.
    """
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        available = _meminfo_available()
        room = _cgroup_room()
        found = [v for v in (available, room) if v is not None]
        return min(found) if found else None
    return None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup v2 memory limit (``None`` without a limit or cgroup v2)."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------- meters
class StorageMeter(TorchDispatchMode):
    """Counts the bytes of live tensor storages created while it is active, and their peak.

    Every aten op passes through :meth:`__torch_dispatch__`; a storage an op returns that none of its inputs holds
    is new (views and in-place results share an input's storage and are not counted again). It is counted until
    it is freed: a ``weakref.finalize`` on the storage's Python object fires when the C++ storage dies, since
    PyTorch keeps a storage's Python object alive as long as the storage lives (views included). Storages made
    before the meter started are not counted: the peak is above the baseline.

    Attributes:
        current: Bytes of counted storages alive now.
        peak: The largest ``current`` seen.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: dict[int, int] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {_storage_pointer(t) for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, Tensor):
                self._track(t, inputs)
        return out

    def _track(self, tensor: Tensor, inputs: set[int]) -> None:
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse or other tensors without one storage: not counted
            return
        pointer, size = storage.data_ptr(), storage.nbytes()
        if pointer == 0:  # meta tensors, empty storages
            return
        if pointer in self._live:  # a counted storage returned again (in place, maybe resized)
            self._resize(pointer, size)
            return
        if size == 0 or pointer in inputs:  # a view or an in-place result of a storage made before the meter
            return
        self._live[pointer] = size
        self.current += size
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._release, pointer)

    def _resize(self, pointer: int, size: int) -> None:
        self.current += size - self._live[pointer]
        self._live[pointer] = size
        self.peak = max(self.peak, self.current)

    def _release(self, pointer: int) -> None:
        self.current -= self._live.pop(pointer, 0)


def _storage_pointer(tensor: Tensor) -> int:
    try:
        return tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return 0


@dataclass
class PeakMeasurement:
    """Filled in by :func:`measure_peak`: the peak bytes of the block above the memory in use before it."""

    peak: int = 0


@contextlib.contextmanager
def measure_peak(device: torch.device) -> Iterator[PeakMeasurement]:
    """Measure the peak memory of the block on ``device`` above the memory in use when it starts.

    CUDA: the caching allocator's statistics (``max_memory_allocated`` after ``reset_peak_memory_stats``);
    other devices: :class:`StorageMeter` (live tensor storages created in the block).
    """
    result = PeakMeasurement()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        try:
            yield result
        finally:
            torch.cuda.synchronize(device)
            result.peak = max(0, torch.cuda.max_memory_allocated(device) - base)
        return
    meter = StorageMeter()
    try:
        with meter:
            yield result
    finally:
        result.peak = meter.peak


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says an allocation failed (CUDA/XPU/MPS ``torch.OutOfMemoryError``, the CPU allocator's
    ``RuntimeError``, Python's ``MemoryError``)."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    message = str(error)
    return isinstance(error, RuntimeError) and ("DefaultCPUAllocator" in message or "can't allocate memory" in message)


# ---------------------------------------------------------------------------------------------- budget
@dataclass(frozen=True)
class MemoryBudget:
    """How much memory one chunk's forward may use.

    Args:
        max_memory: A hard cap in bytes (``None``: none).
        free_fraction: The share of the free memory (read at tuning time) a chunk may use; ``None`` ignores free
            memory.
    """

    max_memory: int | None = None
    free_fraction: float | None = 0.9

    def resolve(self, device: torch.device) -> tuple[int | None, str]:
        """The budget in bytes on ``device`` now (``None``: unknown, no limit) and where it comes from."""
        limits: list[tuple[int, str]] = []
        if self.max_memory is not None:
            limits.append((self.max_memory, f"max_memory={self.max_memory} bytes"))
        if self.free_fraction is not None:
            free = free_memory(device)
            if free is not None:
                limits.append((int(free * self.free_fraction), f"{self.free_fraction:g} × free {format_bytes(free)}"))
        if not limits:
            return None, "no limit"
        return min(limits)

    def guard(self, run: Callable[[int, int], None], device: torch.device, rows: int) -> MemoryGuard | None:
        """A :class:`MemoryGuard` for one tuning (it runs the 1- and 2-row probes), or ``None`` without a budget.

        Raises:
            MemoryBudgetError: Even a forward of one row does not fit the budget.
        """
        budget, source = self.resolve(device)
        if budget is None:
            return None
        return MemoryGuard(budget, source, run, device, rows)


@dataclass
class MemoryReport:
    """What a :class:`MemoryGuard` measured for one call signature (kept by the tuner, shown by benchmarks).

    Attributes:
        budget: Bytes a chunk's forward may use; ``source`` says why (``max_memory`` or free memory).
        peaks: Measured peak bytes above the baseline, per rows in the forward (``math.inf``: out of memory).
        per_row: Bytes per extra row, from the two largest measured sizes that fit.
        fixed: The part that does not grow with rows (``peak - per_row · rows`` at the largest fitting size).
    """

    budget: int
    source: str
    peaks: dict[int, float] = field(default_factory=dict)
    per_row: float = 0.0
    fixed: float = 0.0

    def predict(self, rows: int) -> float:
        """Predicted peak bytes of a forward of ``rows`` rows (measured where it was)."""
        if rows in self.peaks:
            return self.peaks[rows]
        below = [(n, p) for n, p in self.peaks.items() if n < rows and p != math.inf]
        above = [(n, p) for n, p in self.peaks.items() if n > rows and p != math.inf]
        if below and above:  # between two measured sizes: on the line through them
            (n_a, p_a), (n_b, p_b) = max(below), min(above)
            return p_a + (p_b - p_a) * (rows - n_a) / (n_b - n_a)
        if above:
            return min(above)[1]
        return self.fixed + self.per_row * rows

    def max_rows(self, rows: int) -> int:
        """The most rows (≤ ``rows``) whose predicted peak fits the budget (0 if none)."""
        fitting = [n for n, p in self.peaks.items() if p <= self.budget]
        if self.per_row <= 0:
            return rows if self.predict(rows) <= self.budget else max(fitting, default=0)
        grown = math.floor((self.budget - self.fixed) / self.per_row)
        return min(rows, max(grown, max(fitting, default=0)))


class MemoryGuard:
    """Admits chunk sizes whose measured forward peak fits the budget (see the module docstring).

    Args:
        budget: Bytes a chunk's forward may use; ``source`` says where the number comes from.
        run: ``run(start, stop)`` runs one forward of orbit rows ``start:stop``.
        device: Where the forward runs (picks the meter).
        rows: Rows of the whole call.

    Raises:
        MemoryBudgetError: A one-row forward does not fit the budget.
    """

    def __init__(self, budget: int, source: str, run: Callable[[int, int], None], device: torch.device, rows: int):
        self.run = run
        self.device = device
        self.rows = rows
        self.report = MemoryReport(budget, source)
        one = self.measure(1)
        if one > budget:
            raise MemoryBudgetError(
                f"chunk_size='auto' cannot fit one orbit row into the memory budget: a forward of 1 row needs "
                f"{'more than the free memory' if one == math.inf else format_bytes(one)} (measured), but the "
                f"budget is {format_bytes(budget)} ({source}). Give a larger max_memory, free device memory, or "
                "use smaller inputs."
            )
        if rows >= 2:
            self.measure(2)

    @property
    def budget(self) -> int:
        return self.report.budget

    def measure(self, rows: int, forward: Callable[[], None] | None = None) -> float:
        """Run ``forward`` (default: the first ``rows`` rows) under the meter, record and return its peak bytes.

        An out-of-memory error counts as an infinite peak (the size does not fit) instead of propagating.
        """
        forward = forward or (lambda: self.run(0, rows))
        failed = False
        try:
            with measure_peak(self.device) as measured:
                forward()
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            failed = True
        peak = math.inf if failed else float(measured.peak)
        if failed and self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.report.peaks[rows] = max(peak, self.report.peaks.get(rows, 0.0))
        self._fit()
        return self.report.peaks[rows]

    def _fit(self) -> None:
        fitting = sorted((n, p) for n, p in self.report.peaks.items() if p <= self.budget)
        if not fitting:
            return
        n_b, p_b = fitting[-1]
        slope = p_b / n_b
        if len(fitting) >= 2:
            n_a, p_a = fitting[-2]
            slope = (p_b - p_a) / (n_b - n_a)
            if slope <= 0:  # noise or a fixed part that shrank: assume no fixed part (the larger slope)
                slope = p_b / n_b
        self.report.per_row = slope
        self.report.fixed = p_b - slope * n_b

    def max_rows(self) -> int:
        """The most rows a forward may take by the current prediction (≥ 1: one row was measured to fit)."""
        return max(1, self.report.max_rows(self.rows))

    def largest_measured_fit(self, below: int) -> int:
        """The largest size under ``below`` measured within the budget (1 was, when the guard was made)."""
        return max((n for n, p in self.report.peaks.items() if n < below and p <= self.budget), default=1)

    def admit(self, rows: int) -> bool:
        """Whether a forward of ``rows`` rows may be run: its predicted peak fits. Near the budget (a prediction
        above half of it), sizes up to ``rows`` are first measured by doubling from the largest measured size."""
        while True:
            predicted = self.report.predict(rows)
            if predicted > self.budget:
                return False
            measured = [n for n, p in self.report.peaks.items() if p <= self.budget and n < rows]
            largest = max(measured, default=rows)
            if rows in self.report.peaks or predicted <= self.budget / 2 or rows <= 2 * largest:
                return True
            if self.measure(2 * largest) > self.budget:
                return False

    def fits(self, rows: int, forward: Callable[[], None]) -> bool:
        """Run ``forward`` (a forward of ``rows`` rows) under the meter; whether its measured peak fits."""
        return self.measure(rows, forward) <= self.budget
