"""Peak memory of a forward: ``symwrap.wrap(model, "d4", chunk_size=c)`` on B=64 inputs vs the plain model on c rows.

Chunking should bound the wrapped model's memory by one chunk: the target is wrapped ≤ 1.2 × plain at batch c.
Each configuration runs in a fresh subprocess, so peaks do not leak between measurements, and two numbers are taken:

* ``first``: the first forward. CPU: ``ru_maxrss`` after it minus ``ru_maxrss`` right after building the model
  and the inputs; this includes one-time costs (thread pool, library code paged in on first use of an op).
* ``steady``: a second, identical forward with the peak reset just before it (CPU: ``/proc/self/clear_refs``,
  peak ``VmHWM`` minus ``VmRSS`` before the call): the working set of the forward alone. The target is judged
  on this one.

On CPU the children run with ``MALLOC_MMAP_THRESHOLD_=65536`` (glibc) so that freed tensors leave the RSS at
once and the RSS follows live tensor memory (``--malloc-default`` keeps glibc's adaptive threshold). On CUDA
both numbers are ``torch.cuda.max_memory_allocated`` during the forward minus the memory allocated before it.

    python benchmarks/bench_memory.py                    # full run
    python benchmarks/bench_memory.py --quick            # one repeat per configuration, c=8 only
    python benchmarks/bench_memory.py --json bench-results/memory.json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import symwrap

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_chunking import GROUP, GROUP_ORDER, build_model, machine_info, model_specs

TARGET_RATIO = 1.2
MARKER = "BENCH_MEMORY_RESULT "
MODELS = ("small_cnn", "resnet18_like")


def _maxrss_kib() -> int:
    """Peak resident set size of this process in KiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def _status_kib(key: str) -> int | None:
    """A ``VmRSS``/``VmHWM`` line of ``/proc/self/status`` in KiB (``None`` where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to the current RSS (Linux ≥ 4.0); whether it worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child(model_name: str, mode: str, rows: int, chunk: int | None, device_name: str) -> dict[str, Any]:
    """Measure one configuration in this (fresh) process: peak memory of a forward above its baseline, in MiB.

    ``first_mib`` is the first forward (baseline taken right after building the model and the inputs, so it
    includes one-time set-up such as thread pools and library code paged in); ``steady_mib`` is a second,
    identical forward with the peak reset just before it: the working set of the forward alone.
    """
    device = torch.device(device_name)
    spec = model_specs()[model_name]
    model = build_model(spec, device)
    x = torch.randn(rows, spec.channels, spec.size, spec.size, generator=torch.Generator().manual_seed(0)).to(device)
    target = symwrap.wrap(model, GROUP, chunk_size=chunk) if mode == "wrapped" else model
    result: dict[str, Any] = {"model": model_name, "mode": mode, "rows": rows, "chunk": chunk}
    gc.collect()
    with torch.no_grad():
        if device.type == "cuda":
            for phase in ("first", "steady"):
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                start = time.perf_counter()
                out = target(x)
                torch.cuda.synchronize(device)
                result[f"{phase}_seconds"] = time.perf_counter() - start
                result[f"{phase}_mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
                del out
                gc.collect()
        else:
            base_peak = _maxrss_kib()
            start = time.perf_counter()
            out = target(x)
            result["first_seconds"] = time.perf_counter() - start
            result["first_mib"] = (_maxrss_kib() - base_peak) / 1024
            result["baseline_maxrss_mib"] = base_peak / 1024
            del out
            gc.collect()
            base_rss = _status_kib("VmRSS")
            if _reset_peak_rss() and base_rss is not None:
                start = time.perf_counter()
                out = target(x)
                result["steady_seconds"] = time.perf_counter() - start
                result["steady_mib"] = ((_status_kib("VmHWM") or 0) - base_rss) / 1024
                del out
            else:
                result["steady_mib"] = None
    return result


@dataclass
class Config:
    """One measured configuration."""

    model: str
    mode: str  # "plain" or "wrapped"
    rows: int  # input rows of the call
    chunk: int | None  # chunk_size of the wrapped model
    label: str


def run_child(config: Config, device: str, env: dict[str, str]) -> dict[str, Any]:
    """Run one configuration in a fresh interpreter and parse its result line."""
    cmd = [sys.executable, __file__, "--child", "--device", device, "--model", config.model, "--mode", config.mode]
    cmd += ["--rows", str(config.rows), "--chunk", str(config.chunk or 0)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {config.label} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1][len(MARKER) :])


def _median(runs: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one repeat per configuration, c=8 only")
    p.add_argument("--json", type=Path, default=None, help="write the results and machine info to this file")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--chunks", nargs="+", type=int, default=None, help="chunk sizes c (default 8 32)")
    p.add_argument("--batch", type=int, default=64, help="batch B of the wrapped model (default 64)")
    p.add_argument("--repeats", type=int, default=None, help="fresh processes per configuration (default 3)")
    p.add_argument("--no-context", action="store_true", help="skip the plain model at 8·B rows (the stacked cost)")
    p.add_argument("--malloc-default", action="store_true", help="keep glibc's adaptive mmap threshold in children")
    # internal: one measurement in this process
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default="small_cnn", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=("plain", "wrapped"), default="plain", help=argparse.SUPPRESS)
    p.add_argument("--rows", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--chunk", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        result = child(args.model, args.mode, args.rows, args.chunk or None, args.device)
        print(MARKER + json.dumps(result), flush=True)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available", file=sys.stderr)
        return 2
    chunks = args.chunks or ([8] if args.quick else [8, 32])
    repeats = args.repeats or (1 if args.quick else 3)
    batch = args.batch
    info = machine_info(torch.device(args.device))
    env = dict(os.environ)
    if args.device == "cpu" and not args.malloc_default:
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    measure = "torch.cuda.max_memory_allocated" if args.device == "cuda" else "ru_maxrss (first), VmHWM (steady)"
    print(
        f"symwrap {info['symwrap']}, torch {info['torch']}, {info['device_name']} ({args.device}), "
        f"{info['cpu_count']} CPUs; peak MiB of a forward above its baseline [{measure}], median of {repeats} fresh "
        f"processes; group {GROUP}, wrapped on B={batch} ({GROUP_ORDER * batch} rows); target steady wrapped ≤ "
        f"{TARGET_RATIO:.1f} × plain at batch c"
    )
    started = time.perf_counter()
    configs: list[Config] = []
    for model in args.models:
        for c in chunks:
            configs.append(Config(model, "plain", c, None, f"{model} plain rows={c}"))
            configs.append(Config(model, "wrapped", batch, c, f"{model} wrapped B={batch} chunk={c}"))
        if not args.no_context:
            rows = GROUP_ORDER * batch
            configs.append(Config(model, "plain", rows, None, f"{model} plain rows={rows}"))
    samples: dict[str, list[dict[str, Any]]] = {c.label: [] for c in configs}
    for _ in range(repeats):  # interleaved over configurations
        for config in configs:
            samples[config.label].append(run_child(config, args.device, env))

    results: list[dict[str, Any]] = []
    head = f"{'model':<14} {'c':>4} | {'steady: plain@c':>15} {'wrapped':>8} {'ratio':>6}"
    print(f"\n{head} | {'first: plain@c':>14} {'wrapped':>8} {'ratio':>6} | verdict (steady)")
    for model in args.models:
        for c in chunks:
            plain, wrapped = samples[f"{model} plain rows={c}"], samples[f"{model} wrapped B={batch} chunk={c}"]
            row: dict[str, Any] = {"model": model, "chunk": c, "batch": batch}
            for phase in ("steady", "first"):
                row[f"{phase}_plain_mib"] = _median(plain, f"{phase}_mib")
                row[f"{phase}_wrapped_mib"] = _median(wrapped, f"{phase}_mib")
                row[f"{phase}_ratio"] = _ratio(row[f"{phase}_wrapped_mib"], row[f"{phase}_plain_mib"])
            ok = row["steady_ratio"] <= TARGET_RATIO
            verdict = "ok" if ok else f"MISSES target {TARGET_RATIO:.1f}"
            print(
                f"{model:<14} {c:>4} | {row['steady_plain_mib']:>15.1f} {row['steady_wrapped_mib']:>8.1f} "
                f"{row['steady_ratio']:>6.2f} | {row['first_plain_mib']:>14.1f} {row['first_wrapped_mib']:>8.1f} "
                f"{row['first_ratio']:>6.2f} | {verdict}"
            )
            results.append(row)
    if not args.no_context:
        rows = GROUP_ORDER * batch
        print(f"\ncontext: the plain model on all {rows} rows at once (what the stacked strategy needs)")
        for model in args.models:
            runs = samples[f"{model} plain rows={rows}"]
            steady, first = _median(runs, "steady_mib"), _median(runs, "first_mib")
            print(f"{model:<14} {rows:>4} rows: steady {steady:.1f} MiB, first {first:.1f} MiB")
    print("\nall samples, MiB (steady / first):")
    for label, runs in samples.items():
        values = ", ".join(f"{r.get('steady_mib') or math.nan:.1f} / {r['first_mib']:.1f}" for r in runs)
        print(f"  {label:<38} {values}")
    total = time.perf_counter() - started
    print(f"\ntotal {total:.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "benchmark": "memory",
            "group": GROUP,
            "batch": batch,
            "target_ratio": TARGET_RATIO,
            "measure": measure,
            "malloc_mmap_threshold": env.get("MALLOC_MMAP_THRESHOLD_"),
            "machine": info,
            "total_s": total,
            "results": results,
            "configs": [asdict(c) for c in configs],
            "samples": samples,
        }
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
