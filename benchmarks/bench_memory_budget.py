"""Memory budgets of ``chunk_size="auto"``: the chunk chosen under a cap and its measured peak vs the cap.

Part 1, for each model and cap: ``symwrap.wrap(model, "d4", max_memory=cap)`` on B inputs (8·B orbit rows); the
first call measures and chooses. Reported: the rows per forward chosen, the chosen chunk's peak as the tuner
measured it, the peak of a whole second call (expand, forwards, reduce) measured independently, and for
comparison the peak of plain stacking (the plain model on all 8·B rows at once). Peaks are bytes above the
baseline: CUDA ``max_memory_allocated``; CPU live tensor storages (:class:`symwrap.memory.StorageMeter`).

Part 2 (``--vit``): probes only, no full run. The peak of a timm ``vit_base_patch16_224`` (random init) forward at
224×224 is measured at a few small batches; from the two largest, a per-row slope and a fixed part predict the
rows per forward that a budget (default 24 GB) allows at B=256 with d4 (2048 rows), and the peak that stacking all
2048 rows would need. These are predictions from measured probes, not a full run.

Part 3 (``--vit-run``, CUDA only): the full run. The process is capped at the budget
(``torch.cuda.set_per_process_memory_fraction``, so a bigger card behaves as a 24 GB one) and, at each
``--vit-run-batches`` B, plain stacking of the 8·B rows and ``wrap(vit, "d4", max_memory=budget)`` each run; reported:
out of memory or the peak, the chunk chosen, seconds per call, and the largest difference from a reference that
runs B rows per forward.

    python benchmarks/bench_memory_budget.py                      # part 1 on the two small models
    python benchmarks/bench_memory_budget.py --vit                # part 2 only
    python benchmarks/bench_memory_budget.py --json bench-results/memory_budget.json
    python benchmarks/bench_memory_budget.py --vit-run --device cuda     # part 3, on a GPU
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

import symwrap
from symwrap.chunking import chunk_candidates
from symwrap.memory import format_bytes, measure_peak, parse_memory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_chunking import GROUP, GROUP_ORDER, build_model, d4_copies, machine_info, model_specs

MIB = 2**20
CAPS = {"small_cnn": ("4MiB", "16MiB", "64MiB"), "resnet18_like": ("16MiB", "64MiB", "256MiB")}


def peak_of(fn: Any, device: torch.device) -> int:
    """Peak bytes of ``fn()`` above the memory in use before it (no gradients)."""
    with torch.no_grad(), measure_peak(device) as measured:
        fn()
    return measured.peak


def budget_rows(model_name: str, cap: str, batch: int, device: torch.device) -> dict[str, Any]:
    """Wrap with ``max_memory=cap``, run twice, and report the choice and the peaks."""
    spec = model_specs()[model_name]
    model = build_model(spec, device)
    x = torch.randn(batch, spec.channels, spec.size, spec.size, generator=torch.Generator().manual_seed(0)).to(device)
    wrapped = symwrap.wrap(model, GROUP, max_memory=cap)
    start = time.perf_counter()
    with torch.no_grad():
        out = wrapped(x)
    first_s = time.perf_counter() - start
    tuner = wrapped.engine.tuner
    (key,) = tuner.cache
    chosen, (known,) = tuner.cache[key], tuner.layouts.values()
    call_peak = peak_of(lambda: wrapped(x), device)
    start = time.perf_counter()
    with torch.no_grad():
        again = wrapped(x)
    call_s = time.perf_counter() - start
    with torch.no_grad():
        reference = symwrap.wrap(model, GROUP, chunk_size=None)(x)
    return {
        "model": model_name,
        "cap": cap,
        "cap_bytes": parse_memory(cap),
        "rows": GROUP_ORDER * batch,
        "chosen": chosen,
        "measured_peaks": {f"{rows} rows": peak for (rows, _), peak in known.peaks.items()},
        "call_peak": call_peak,
        "bytes_per_element": known.bytes_per_element,
        "first_call_s": first_s,
        "call_s": call_s,
        "max_abs_diff_vs_stacked": (out - reference).abs().max().item(),
        "repeat_identical": bool(torch.equal(out, again)),
    }


def stacked_peak(model_name: str, batch: int, device: torch.device) -> int:
    """Peak bytes of the plain model on all 8·B copies in one forward (plain stacking)."""
    spec = model_specs()[model_name]
    model = build_model(spec, device)
    x = torch.randn(batch, spec.channels, spec.size, spec.size, generator=torch.Generator().manual_seed(0)).to(device)
    return peak_of(lambda: model(torch.cat(d4_copies(x))), device)


def vit_probe(budget: str, batch: int, probes: list[int], device: torch.device, fused: bool) -> dict[str, Any]:
    """Measured peaks of a ViT-B/16 forward at ``probes`` rows and what they predict for ``batch`` inputs with d4.

    ``fused=False`` makes timm's attention materialise the (heads, tokens, tokens) attention matrix instead of
    calling ``scaled_dot_product_attention`` (as where no fused kernel applies).
    """
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224", pretrained=False).eval().to(device)
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = fused
    peaks: dict[int, int] = {}
    seconds: dict[int, float] = {}
    for n in probes:
        x = torch.randn(n, 3, 224, 224, device=device)
        start = time.perf_counter()
        peaks[n] = peak_of(lambda x=x: model(x), device)
        seconds[n] = time.perf_counter() - start
    (n_a, p_a), (n_b, p_b) = sorted(peaks.items())[-2:]
    per_row = (p_b - p_a) / (n_b - n_a)
    fixed = p_b - per_row * n_b
    limit = parse_memory(budget)
    assert limit is not None
    rows = GROUP_ORDER * batch
    allowed = min(rows, math.floor((limit - fixed) / per_row))
    candidates = [c for c in chunk_candidates(rows, batch, GROUP_ORDER) if c <= allowed]
    return {
        "model": f"timm vit_base_patch16_224 (random init), 224x224, {'fused' if fused else 'unfused'} attention",
        "probes": peaks,
        "probe_seconds": seconds,
        "per_row": per_row,
        "fixed": fixed,
        "budget": budget,
        "budget_bytes": limit,
        "batch": batch,
        "rows": rows,
        "max_rows_allowed": allowed,
        "largest_candidate_allowed": max(candidates) if candidates else allowed,
        "predicted_chunk_peak": fixed + per_row * (max(candidates) if candidates else allowed),
        "predicted_stacked_peak": fixed + per_row * rows,
        "first_batch_stacking_exceeds": math.floor((limit - fixed) / (per_row * GROUP_ORDER)) + 1,
        "params_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
    }


def vit_run(budget: str, batch: int, device: torch.device) -> dict[str, Any]:
    """ViT-B/16 with d4 at ``batch`` inputs under ``budget``: plain stacking vs ``chunk_size="auto"``, for real."""
    import timm

    limit = parse_memory(budget)
    assert limit is not None and device.type == "cuda"
    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224", pretrained=False).eval().to(device)
    x = torch.randn(batch, 3, 224, 224, device=device)
    row: dict[str, Any] = {"batch": batch, "rows": GROUP_ORDER * batch, "budget": budget}

    def attempt(label: str, fn: Any) -> Any:
        torch.cuda.empty_cache()
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        try:
            with torch.no_grad(), measure_peak(device) as measured:
                out = fn()
            torch.cuda.synchronize(device)
        except torch.OutOfMemoryError:
            row[label] = "out of memory"
            return None
        row[label] = {"peak": measured.peak, "seconds": time.perf_counter() - start}
        return out

    attempt("stacked", lambda: model(torch.cat(d4_copies(x))))
    wrapped = symwrap.wrap(model, GROUP, max_memory=budget)
    first = attempt("auto_first_call", lambda: wrapped(x))
    out = attempt("auto", lambda: wrapped(x))
    tuner = wrapped.engine.tuner
    row["chosen"] = next(iter(tuner.cache.values())) if len(tuner.cache) == 1 else None
    reference = attempt("reference", lambda: symwrap.wrap(model, GROUP, chunk_size=batch)(x))
    if out is not None and reference is not None and first is not None:
        row["max_abs_diff_vs_reference"] = (out - reference).abs().max().item()
        row["max_abs_reference"] = reference.abs().max().item()
        row["repeat_identical"] = bool(torch.equal(out, first))
    return row


def tuning_overhead(model_name: str, batch: int, repeats: int, device: torch.device) -> dict[str, Any]:
    """Seconds of the first (tuning) call with the default budget (0.9 × free memory, measured) vs none, median of
    ``repeats`` fresh wrappers, interleaved."""
    from symwrap.chunking import ChunkTuner
    from symwrap.memory import MemoryBudget

    spec = model_specs()[model_name]
    model = build_model(spec, device)
    x = torch.randn(batch, spec.channels, spec.size, spec.size, generator=torch.Generator().manual_seed(0)).to(device)
    seconds: dict[str, list[float]] = {"budget": [], "none": []}
    for _ in range(repeats):
        for label, memory in (("budget", MemoryBudget()), ("none", MemoryBudget(free_fraction=None))):
            wrapped = symwrap.wrap(model, GROUP)
            wrapped.engine.tuner = ChunkTuner(memory=memory)
            start = time.perf_counter()
            with torch.no_grad():
                wrapped(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[label].append(time.perf_counter() - start)
    budget, none = statistics.median(seconds["budget"]), statistics.median(seconds["none"])
    return {"model": model_name, "batch": batch, "budget_s": budget, "none_s": none, "samples": seconds}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", nargs="+", choices=tuple(CAPS), default=list(CAPS))
    p.add_argument("--batch", type=int, default=64, help="inputs per call in part 1 (default 64: 512 orbit rows)")
    p.add_argument("--vit", action="store_true", help="part 2 only: ViT-B/16 probes and the 24 GB prediction")
    p.add_argument("--vit-budget", default="24GB")
    p.add_argument("--vit-batch", type=int, default=256)
    p.add_argument("--vit-probes", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    p.add_argument("--vit-unfused", action="store_true", help="also probe with timm's unfused attention")
    p.add_argument("--vit-run", action="store_true", help="part 3 only (CUDA): the full ViT-B/16 run under the budget")
    p.add_argument("--vit-run-batches", nargs="+", type=int, default=[256, 512])
    p.add_argument("--tuning", action="store_true", help="only: first-call (tuning) time with vs without a budget")
    p.add_argument("--repeats", type=int, default=3, help="fresh wrappers per configuration for --tuning")
    p.add_argument("--json", type=Path, default=None, help="write the results and machine info to this file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    info = machine_info(device)
    meter = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "live tensor storages (StorageMeter)"
    print(f"symwrap {info['symwrap']}, torch {info['torch']}, {info['device_name']} ({args.device}), peaks: {meter}")
    payload: dict[str, Any] = {"benchmark": "memory_budget", "group": GROUP, "machine": info, "meter": meter}
    if args.vit_run:
        if device.type != "cuda":
            raise SystemExit("--vit-run needs --device cuda (it caps the GPU at the budget)")
        total = torch.cuda.get_device_properties(device).total_memory
        cap = parse_memory(args.vit_budget)
        assert cap is not None
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), torch.cuda.current_device())
        print(f"\npart 3: ViT-B/16, d4, the process capped at {args.vit_budget} of {format_bytes(total)}")
        payload["vit_run"] = []
        for batch in args.vit_run_batches:
            row = vit_run(args.vit_budget, batch, device)
            payload["vit_run"].append(row)
            print(f"  B={batch} ({row['rows']} rows): " + json.dumps({k: v for k, v in row.items() if k != "batch"}))
    elif args.tuning:
        payload["tuning"] = []
        print(f"\nfirst call (tuning) seconds, median of {args.repeats}: default budget (measured) vs no budget")
        for name in args.models:
            for batch in (1, 16):
                row = tuning_overhead(name, batch, args.repeats, device)
                payload["tuning"].append(row)
                print(
                    f"{name:<14} B={batch:<3} budget {row['budget_s']:.3f} s  none {row['none_s']:.3f} s  "
                    f"ratio {row['budget_s'] / row['none_s']:.2f}"
                )
    elif not args.vit:
        results = []
        print(f"\npart 1: wrap(model, {GROUP!r}, max_memory=cap) on B={args.batch} ({GROUP_ORDER * args.batch} rows)")
        head = f"{'model':<14} {'cap':>7} | {'chunk':>5} {'B/elem':>11} {'call peak':>10} {'≤ cap':>5} |"
        print(f"{head} {'stacked peak':>12} {'÷ cap':>6} | {'first s':>7} {'call s':>6} {'max |Δ|':>8}")
        for name in args.models:
            stacked = stacked_peak(name, args.batch, device)
            for cap in CAPS[name]:
                row = budget_rows(name, cap, args.batch, device)
                row["stacked_peak"] = stacked
                results.append(row)
                fits = "yes" if row["call_peak"] <= row["cap_bytes"] else "NO"
                print(
                    f"{name:<14} {cap:>7} | {row['chosen']:>5} {row['bytes_per_element']:>11.1f} "
                    f"{row['call_peak'] / MIB:>6.2f} MiB {fits:>5} | {stacked / MIB:>8.1f} MiB "
                    f"{stacked / row['cap_bytes']:>6.1f} | {row['first_call_s']:>7.2f} {row['call_s']:>6.2f} "
                    f"{row['max_abs_diff_vs_stacked']:>8.1e}"
                )
        payload["budget_runs"] = results
    else:
        payload["vit_probe"] = []
        for fused in (True, False) if args.vit_unfused else (True,):
            probe = vit_probe(args.vit_budget, args.vit_batch, args.vit_probes, device, fused)
            payload["vit_probe"].append(probe)
            print(f"\npart 2: {probe['model']}, forward peaks measured (probes only, no full run):")
            for n, peak in probe["probes"].items():
                print(f"  {n:>3} rows: {format_bytes(peak):>10}  ({probe['probe_seconds'][n]:.2f} s)")
            print(
                f"  per row {format_bytes(probe['per_row'])}, fixed {format_bytes(probe['fixed'])} "
                f"(from the two largest probes); weights {format_bytes(probe['params_bytes'])}"
            )
            print(
                f"  budget {probe['budget']}: at most {probe['max_rows_allowed']} rows per forward; d4 at "
                f"B={probe['batch']} ({probe['rows']} rows) -> chunk {probe['largest_candidate_allowed']} rows, "
                f"predicted peak {format_bytes(probe['predicted_chunk_peak'])}; stacking all {probe['rows']} rows: "
                f"predicted {format_bytes(probe['predicted_stacked_peak'])} "
                f"({probe['predicted_stacked_peak'] / probe['budget_bytes']:.2f} × the budget); stacking exceeds "
                f"the budget from B={probe['first_batch_stacking_exceeds']}"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
