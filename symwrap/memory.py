"""Memory budgets for ``chunk_size="auto"``: measured peaks of real forwards, never guesses.

The budget of one chunk's forward is ``min(max_memory, free_fraction · free memory)``, the free memory read when
a forward is measured (CUDA: ``torch.cuda.mem_get_info`` plus what PyTorch's caching allocator holds unused;
CPU on Linux: ``MemAvailable`` of ``/proc/meminfo``, lowered to a cgroup v2 limit if one is set; elsewhere
unknown, so only ``max_memory`` applies). It bounds the memory a chunk's forward needs *on top of* what is
already allocated (the model, the inputs): the peak measured during the forward minus the memory in use before.

How a chunk size is admitted (:class:`~symwrap.chunking.ChunkTuner`): the first chunk of the first call of a model,
and of every call whose rows are larger than any measured, is a real forward of ``B`` rows (one row under
``max_memory``) run under the meter below. Its peak divided by its input elements is the bytes per input element of
that model layout; a chunk is predicted to need ``bytes per element × rows × row elements``, and a candidate predicted
over the budget is never run. The prediction counts the forward's fixed part once per row, so it errs on the safe
side, and rows no larger than the measured ones need no new measurement (their bytes per element are at most those
of the larger rows: equal for convolutions, smaller for attention over shorter texts).

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from symwrap.errors import ConfigError

__all__ = [
    "MemoryBudget",
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

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # TorchDispatchMode wraps a subclass's __torch_dispatch__ in torch._dynamo.disable unless this says no: a
        # first import of torch._dynamo (~1 s) on the first measured call, and a wrapper call on every op. The meter
        # only runs around the tuner's eager forwards; a compiled base model inside it still runs compiled
        # (tests/test_compile.py).
        return False

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **kwargs) if kwargs else func(*args)
        inputs: set[int] | None = None  # the storages of the inputs, found only for an output that may share one
        for t in (out,) if type(out) is Tensor else tree_leaves(out):
            if isinstance(t, Tensor):
                if inputs is None:
                    inputs = _input_storages(args, kwargs)
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


def _input_storages(args: tuple, kwargs: dict | None) -> set[int]:
    """The storage pointers of an op's tensor arguments: an aten op takes tensors, and flat lists of them."""
    found: set[int] = set()
    for value in (*args, *kwargs.values()) if kwargs else args:
        if isinstance(value, Tensor):
            found.add(_storage_pointer(value))
        elif isinstance(value, (list, tuple)):
            found.update(_storage_pointer(t) for t in value if isinstance(t, Tensor))
    return found


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
