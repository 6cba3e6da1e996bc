"""Time symwrap's orbit engine against the two naive ways of averaging a model over D4.

For each model and batch size B, one run times side by side (interleaved, so drift hits all equally):

* ``wrapped``  ``symwrap.wrap(model, "d4")`` with the default ``chunk_size="auto"`` (tuned before timing),
* ``stacked``  all 8·B transformed copies in ONE plain forward, then the mean (as CLIP-style TTA code does),
* ``loop``     one plain forward of B rows per group element, accumulated (as ttach does),
* ``chunk=c``  ``symwrap.wrap(model, "d4", chunk_size=c)`` for fixed c.

The ratio column is each time divided by min(stacked, loop); the target is ``wrapped`` ≤ 1.10 for every B.

    python benchmarks/bench_chunking.py                  # full run
    python benchmarks/bench_chunking.py --quick          # short smoke run
    python benchmarks/bench_chunking.py --json bench-results/chunking.json
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]

import symwrap

GROUP = "d4"
GROUP_ORDER = 8
TARGET_RATIO = 1.10
FIXED_CHUNKS = (8, 32, 128)


# ---------------------------------------------------------------------------------------------- models
def small_cnn(classes: int = 10) -> nn.Module:
    """Conv(3,32)-ReLU-Conv(32,64,s2)-ReLU-Conv(64,64,s2)-ReLU-avgpool-Linear(64,classes), for 32×32 inputs."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, classes),
    )


class BasicBlock(nn.Module):
    """The ResNet basic block: two 3×3 conv-BN layers and a (projected when needed) identity shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18Like(nn.Module):
    """ResNet-18 layout (7×7/2 stem, max-pool, 4 stages of 2 basic blocks, 64-512 channels), random init."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages: list[nn.Module] = []
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout)]
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stages(self.stem(x)))


@dataclass
class ModelSpec:
    """A benchmark model: a factory and the input image size."""

    name: str
    build: Callable[[], nn.Module]
    size: int
    channels: int = 3


def _timm_resnet18() -> nn.Module:
    import timm  # only called when importable

    return timm.create_model("resnet18", pretrained=False)


def model_specs() -> dict[str, ModelSpec]:
    """The benchmark models by name; ``timm_resnet18`` only when timm is importable."""
    specs = {
        "small_cnn": ModelSpec("small_cnn", small_cnn, 32),
        "resnet18_like": ModelSpec("resnet18_like", ResNet18Like, 112),
    }
    try:
        import timm  # noqa: F401
    except ImportError:
        pass
    else:
        specs["timm_resnet18"] = ModelSpec("timm_resnet18", _timm_resnet18, 112)
    return specs


def build_model(spec: ModelSpec, device: torch.device, seed: int = 0) -> nn.Module:
    """The model of ``spec`` with a fixed random init, in eval mode, on ``device``."""
    torch.manual_seed(seed)
    return spec.build().eval().to(device)


# ---------------------------------------------------------------------------------------------- naive baselines
def d4_copies(x: Tensor) -> list[Tensor]:
    """The 8 D4 images of ``x`` ``(B, C, H, W)``: rotations by k·90°, each with and without a horizontal flip."""
    copies = []
    for k in range(4):
        rotated = torch.rot90(x, k, dims=(-2, -1))
        copies += [rotated, torch.flip(rotated, dims=[-1])]
    return copies


def stacked_average(model: nn.Module, x: Tensor) -> Tensor:
    """All 8·B copies in one forward, then the mean over the group."""
    batch = x.shape[0]
    out = model(torch.cat(d4_copies(x)))
    return out.reshape(GROUP_ORDER, batch, *out.shape[1:]).mean(0)


def loop_average(model: nn.Module, x: Tensor) -> Tensor:
    """One forward of B rows per group element (transform inside the loop), accumulated."""
    total: Tensor | None = None
    for k in range(4):
        rotated = torch.rot90(x, k, dims=(-2, -1))
        for copy in (rotated, torch.flip(rotated, dims=[-1])):
            out = model(copy)
            total = out if total is None else total + out
    assert total is not None
    return total / GROUP_ORDER


# ---------------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource is not None else 0


def time_once(fn: Callable[[], Any], device: torch.device, inner: int = 1) -> tuple[float, float]:
    """Seconds per call of ``fn`` and minor page faults per call, averaged over ``inner`` back-to-back calls."""
    _sync(device)
    faults = _minor_faults()
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    _sync(device)
    seconds = time.perf_counter() - start
    return seconds / inner, (_minor_faults() - faults) / inner


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (no per-call ``mmap``/page faults for large tensors); whether it worked.

    By default glibc returns large freed blocks (above an adaptive threshold, at most 32 MiB) to the OS, so a
    forward whose activations are that large faults its memory in again on every call; on VMs page faults are
    expensive and can dominate small models. This isolates compute from that allocator effect.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 31))
    except (OSError, AttributeError):
        return False


@dataclass
class Strategy:
    """One way of computing the D4 average, with what it reports."""

    name: str
    fn: Callable[[], Tensor]
    chunk_rows: int | None = None
    samples: list[float] = field(default_factory=list)
    faults: list[float] = field(default_factory=list)
    inner: int = 1
    estimate: float = 0.0


@dataclass
class Row:
    """One line of the result table."""

    model: str
    batch: int
    strategy: str
    chunk_rows: int | None
    ms: float
    ms_min: float
    ms_max: float
    repeats: int
    inner: int
    faults: float
    ratio: float = math.nan


def fixed_chunks(batch: int) -> list[int]:
    """{B, 2B, 4B, 8B} ∪ {8, 32, 128}, at most 8B rows, sorted."""
    rows = GROUP_ORDER * batch
    found = {batch, 2 * batch, 4 * batch, 8 * batch, *FIXED_CHUNKS}
    return sorted(c for c in found if c <= rows)


def _tuned_entry(wrapped: symwrap.SymmetrizedModel, x: Tensor) -> tuple[int | None, dict[int, float]]:
    """The chunk size the tuner chose for inputs shaped like ``x``, and the estimates (seconds a call) of the
    candidates whose forward size it has timed."""
    tuner = wrapped.engine.tuner
    entries = [(k, v) for k, v in tuner.cache.items() if isinstance(k, tuple) and tuple(k[0][0][0]) == tuple(x.shape)]
    if not entries:
        return None, {}
    key, chosen = entries[0]
    copies = key[1]
    rows, batch, row_elements = x.shape[0] * copies, x.shape[0], x[0].numel()
    estimates: dict[int, float] = {}
    for known in tuner.layouts.values():
        candidates = tuner.candidates(known, rows, batch, copies, row_elements, None)
        estimates.update(tuner.estimates(known, candidates, rows, row_elements))
    return chosen, estimates


def bench_batch(
    spec: ModelSpec,
    model: nn.Module,
    batch: int,
    device: torch.device,
    min_repeats: int,
    max_repeats: int,
    budget_s: float,
    min_sample_s: float,
    check_tol: float = 1e-4,
) -> tuple[list[Row], dict[str, Any]]:
    """Time every strategy for one (model, B); returns the table rows and extra info (tuning, errors)."""
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, spec.channels, spec.size, spec.size, generator=gen).to(device)

    wrapped = symwrap.wrap(model, GROUP)
    start = time.perf_counter()
    with torch.no_grad():
        reference = wrapped(x)  # untimed: the first call, and the calls the tuner explores with, up to a final choice
        for _ in range(30):
            if _tuned_entry(wrapped, x)[0] is not None:
                break
            wrapped(x)
    _sync(device)
    tune_s = time.perf_counter() - start
    chosen, estimates = _tuned_entry(wrapped, x)

    strategies = [
        Strategy("wrapped", lambda: wrapped(x), chosen),
        Strategy("stacked", lambda: stacked_average(model, x), GROUP_ORDER * batch),
        Strategy("loop", lambda: loop_average(model, x), batch),
    ]
    for c in fixed_chunks(batch):
        fixed = symwrap.wrap(model, GROUP, chunk_size=c)
        strategies.append(Strategy(f"chunk={c}", lambda fixed=fixed: fixed(x), c))

    errors: dict[str, float] = {}
    scale = reference.abs().max().item() or 1.0
    with torch.no_grad():
        for s in strategies:  # warm-up and correctness check; sets how many calls make one timed sample
            _sync(device)
            start = time.perf_counter()
            out = s.fn()
            _sync(device)
            estimate = time.perf_counter() - start
            errors[s.name] = (out - reference).abs().max().item() / scale
            if estimate < min_sample_s:  # the first call of a shape can be slow: time a second one
                estimate = time_once(s.fn, device)[0]
            s.inner = max(1, math.ceil(min_sample_s / max(estimate, 1e-9)))
            s.estimate = estimate * s.inner
        round_s = sum(s.estimate for s in strategies)
        rounds = max(min_repeats, min(max_repeats, int(budget_s / max(round_s, 1e-9))))
        for r in range(rounds):  # interleaved: each round runs every strategy once, in a rotated order
            shift = r % len(strategies)
            for s in strategies[shift:] + strategies[:shift]:
                seconds, faults = time_once(s.fn, device, s.inner)
                s.samples.append(seconds)
                s.faults.append(faults)

    bad = {k: v for k, v in errors.items() if v > check_tol}
    if bad:
        raise RuntimeError(f"{spec.name} B={batch}: strategies disagree with wrapped (relative max error {bad})")

    rows = [
        Row(
            spec.name,
            batch,
            s.name,
            s.chunk_rows,
            1e3 * statistics.median(s.samples),
            1e3 * min(s.samples),
            1e3 * max(s.samples),
            len(s.samples),
            s.inner,
            statistics.median(s.faults),
        )
        for s in strategies
    ]
    best_naive = min(r.ms for r in rows if r.strategy in ("stacked", "loop"))
    for r in rows:
        r.ratio = r.ms / best_naive
    info = {
        "model": spec.name,
        "batch": batch,
        "tuned_chunk_rows": chosen,
        "first_call_s": tune_s,
        "tuner_estimates_ms": {str(c): 1e3 * s for c, s in sorted(estimates.items())},
        "max_rel_error_vs_wrapped": errors,
    }
    return rows, info


# ---------------------------------------------------------------------------------------------- reporting
def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU count, thread count, versions and device name."""
    cpu_name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu_name,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "symwrap": symwrap.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name,
    }
    return info


def print_table(model: str, rows: list[Row], infos: list[dict[str, Any]]) -> None:
    """One table per model: B, strategy, chunk rows, ms per call (median, min-max), ratio to the best naive."""
    print(f"\n== {model} (group {GROUP}, |G|={GROUP_ORDER}) ==")
    head = f"{'B':>4}  {'strategy':<10} {'chunk rows':>10} {'ms/call':>10} {'min-max ms':>19}"
    print(f"{head} {'n':>6} {'faults':>7} {'ratio':>7}")
    last = None
    for r in rows:
        if last is not None and r.batch != last:
            print()
        last = r.batch
        chunk = "-" if r.chunk_rows is None else str(r.chunk_rows)
        spread = f"{r.ms_min:.2f}-{r.ms_max:.2f}"
        count = f"{r.repeats}x{r.inner}"
        flag = ""
        if r.strategy == "wrapped":
            flag = "  ok" if r.ratio <= TARGET_RATIO else f"  MISSES target {TARGET_RATIO:.2f}"
        line = f"{r.batch:>4}  {r.strategy:<10} {chunk:>10} {r.ms:>10.2f} {spread:>19}"
        print(f"{line} {count:>6} {r.faults:>7.0f} {r.ratio:>7.2f}{flag}")
    print("  (n = timed rounds x calls per sample; faults = minor page faults per call, median)")
    for info in infos:
        est = ", ".join(f"{c}: {ms:.1f}" for c, ms in info["tuner_estimates_ms"].items())
        print(
            f"  B={info['batch']}: auto chose {info['tuned_chunk_rows']} rows; first call (with tuning) "
            f"{info['first_call_s']:.2f} s; tuner estimates ms/call {{{est}}}; {info['seconds']:.0f} s, "
            f"load average {info['loadavg_end']:.2f}"
        )


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    specs = model_specs()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short run: B ∈ {1, 16}, 3 rounds, 20 ms samples")
    p.add_argument("--json", type=Path, default=None, help="write the results and machine info to this file")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", nargs="+", choices=sorted(specs), default=list(specs), help="models to run")
    p.add_argument("--batches", nargs="+", type=int, default=None, help="batch sizes (default 1 16 64)")
    p.add_argument("--min-repeats", type=int, default=None, help="timed rounds at least (default 5; --quick 3)")
    p.add_argument("--max-repeats", type=int, default=None, help="timed rounds at most (default 11; --quick 3)")
    p.add_argument(
        "--budget-s", type=float, default=40.0, help="seconds of timed rounds per (model, B), within the bounds"
    )
    p.add_argument(
        "--min-sample-ms", type=float, default=None, help="calls per sample fill this (default 50; quick 20)"
    )
    p.add_argument(
        "--malloc-keep",
        action="store_true",
        help="glibc: keep freed memory for reuse (mallopt), so page faults of large activations do not count",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available", file=sys.stderr)
        return 2
    batches = args.batches or ([1, 16] if args.quick else [1, 16, 64])
    min_repeats = args.min_repeats or (3 if args.quick else 5)
    max_repeats = max(min_repeats, args.max_repeats or (3 if args.quick else 11))
    min_sample_s = (args.min_sample_ms if args.min_sample_ms is not None else (20.0 if args.quick else 50.0)) / 1e3
    specs = model_specs()
    info = machine_info(device)
    info["loadavg_start"] = _loadavg()
    info["malloc_keep"] = keep_freed_memory() if args.malloc_keep else False
    print(
        f"symwrap {info['symwrap']}, torch {info['torch']}, {info['device_name']} ({info['device']}), "
        f"{info['cpu_count']} CPUs, {info['torch_threads']} torch threads, load average {info['loadavg_start']:.2f}\n"
        f"median of {min_repeats}-{max_repeats} interleaved rounds (within {args.budget_s:.0f} s per model and B), "
        f"each sample ≥ {1e3 * min_sample_s:.0f} ms; ratio = ms / min(stacked, loop); target wrapped ≤ "
        f"{TARGET_RATIO:.2f}; allocator: {'glibc keeps freed memory' if info['malloc_keep'] else 'default'}"
    )
    started = time.perf_counter()
    all_rows: list[Row] = []
    all_infos: list[dict[str, Any]] = []
    misses: list[str] = []
    for name in args.models:
        spec = specs[name]
        model = build_model(spec, device)
        rows: list[Row] = []
        infos: list[dict[str, Any]] = []
        for batch in batches:
            batch_started = time.perf_counter()
            batch_rows, batch_info = bench_batch(
                spec, model, batch, device, min_repeats, max_repeats, args.budget_s, min_sample_s
            )
            batch_info["seconds"] = time.perf_counter() - batch_started
            batch_info["loadavg_end"] = _loadavg()
            rows += batch_rows
            infos.append(batch_info)
        print_table(name, rows, infos)
        misses += [
            f"{r.model} B={r.batch}: {r.ratio:.2f}" for r in rows if r.strategy == "wrapped" and r.ratio > TARGET_RATIO
        ]
        all_rows += rows
        all_infos += infos
    total = time.perf_counter() - started
    info["loadavg_end"] = _loadavg()
    print(
        f"\ntotal {total:.1f} s, load average at the end {info['loadavg_end']:.2f}; "
        f"wrapped over target: {', '.join(misses) if misses else 'none'}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "benchmark": "chunking",
            "group": GROUP,
            "target_ratio": TARGET_RATIO,
            "settings": {
                "batches": batches,
                "min_repeats": min_repeats,
                "max_repeats": max_repeats,
                "budget_s": args.budget_s,
                "min_sample_ms": 1e3 * min_sample_s,
            },
            "machine": info,
            "total_s": total,
            "rows": [asdict(r) for r in all_rows],
            "batches": all_infos,
        }
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
