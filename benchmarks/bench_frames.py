"""Cost of frame averaging and canonicalization against the model they wrap.

Two measurements, each strategy timed in interleaved rounds (every round runs each strategy once, in an order
rotated from round to round, so drift and background load hit all of them alike); the tables report medians.

1. **Frame construction** on point clouds ``(B=64, N=1024, 3)``: ``method.plan`` of ``frame_averaging``
   (batched PCA, 8 frame elements for ``o3``) against one forward of the wrapped point model (which evaluates the
   8·B frame copies). Target: frame ÷ wrapped forward ≤ 0.1. The plain model's forward on B clouds is shown too.
2. **Canonicalization end to end** for a ResNet-18-like CNN (built from ``torch.nn``, random init) at 224×224:
   ``symwrap.wrap(model, "rot90", "canonicalization")`` (learned canonicalizer scoring 4 copies of a 32×32
   downscaled input, then one forward) against the plain model on the same batch. Target: ≤ 1.3.

    python benchmarks/bench_frames.py                    # full run
    python benchmarks/bench_frames.py --quick            # short smoke run
    python benchmarks/bench_frames.py --json bench-results/frames.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import symwrap

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_chunking import ResNet18Like, keep_freed_memory  # the same ResNet-18 layout as the chunking benchmark

FRAME_TARGET = 0.1
CANON_TARGET = 1.3


class PointNetLike(nn.Module):
    """Shared per-point MLP (3-64-128-256), max-pool over points, linear head: ``(B, N, 3)`` -> ``(B, 40)``."""

    def __init__(self, classes: int = 40) -> None:
        super().__init__()
        self.point = nn.Sequential(nn.Linear(3, 64), nn.ReLU(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 256))
        self.head = nn.Linear(256, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.point(x).amax(dim=1))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(strategies: dict[str, Callable[[], Any]], rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of each strategy, one sample per round, the order rotated each round."""
    names = list(strategies)
    samples: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for fn in strategies.values():  # warm-up (allocator, kernels, the chunk tuner's first-call measurement)
            fn()
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                _sync(device)
                start = time.perf_counter()
                strategies[name]()
                _sync(device)
                samples[name].append(time.perf_counter() - start)
    return samples


def bench_frame_construction(device: torch.device, rounds: int, batch: int, points: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = PointNetLike().to(device).eval()
    clouds = torch.randn(batch, points, 3, device=device) * torch.tensor([3.0, 2.0, 1.0], device=device)
    wrapped = symwrap.wrap(model, "o3", "frame_averaging")
    group = symwrap.get_group("o3")
    samples = interleaved(
        {
            "frame (plan)": lambda: wrapped.method.plan(clouds, group),
            "wrapped forward": lambda: wrapped(clouds),
            "plain forward (B rows)": lambda: model(clouds),
        },
        rounds,
        device,
    )
    medians = {k: statistics.median(v) for k, v in samples.items()}
    ratio = medians["frame (plan)"] / medians["wrapped forward"]
    best = min(samples["frame (plan)"]) / min(samples["wrapped forward"])
    return {
        "shape": [batch, points, 3],
        "medians_s": medians,
        "ratio": ratio,
        "ratio_of_minima": best,
        "samples_s": samples,
        "target": FRAME_TARGET,
    }


def bench_canonicalization(device: torch.device, rounds: int, batch: int, size: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = ResNet18Like().to(device).eval()
    images = torch.randn(batch, 3, size, size, device=device)
    wrapped = symwrap.wrap(model, "rot90", "canonicalization").to(device).eval()
    group = wrapped.group
    plan = wrapped.method.plan(images, group)
    src = torch.arange(batch, device=device)
    strategies = {
        "canonicalization": lambda: wrapped(images),
        "plain": lambda: model(images),
        # the parts of the overhead, timed alone: the canonicalizer's scores + argmax, and moving the input
        "  canonicalizer (plan)": lambda: wrapped.method.plan(images, group),
        "  input gather a(x)·x": lambda: wrapped.input_action.apply(images, src, plan.elements[:, 0], group),
    }
    samples = interleaved(strategies, rounds, device)
    medians = {k: statistics.median(v) for k, v in samples.items()}
    ratio = medians["canonicalization"] / medians["plain"]
    best = min(samples["canonicalization"]) / min(samples["plain"])
    return {
        "shape": [batch, 3, size, size],
        "medians_s": medians,
        "ratio": ratio,
        "ratio_of_minima": best,
        "samples_s": samples,
        "target": CANON_TARGET,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few rounds, smaller batches (smoke run)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 15, quick 3)")
    parser.add_argument("--image-batch", type=int, default=8, help="batch of 224×224 images (default 8)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--malloc-keep", action="store_true", help="keep freed memory in glibc (no per-call page faults, see README)"
    )
    args = parser.parse_args(argv)
    malloc_keep = keep_freed_memory() if args.malloc_keep else False
    device = torch.device(args.device)
    rounds = args.rounds or (3 if args.quick else 15)
    frames = bench_frame_construction(device, rounds, batch=8 if args.quick else 64, points=1024)
    canon = bench_canonicalization(device, rounds, batch=2 if args.quick else args.image_batch, size=224)
    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "threads": torch.get_num_threads(),
        "rounds": rounds,
        "malloc_keep": malloc_keep,
        "torch": torch.__version__,
        "frame_construction": frames,
        "canonicalization": canon,
    }
    print(
        f"device {result['device']} ({result['device_name']}), {result['threads']} threads, {rounds} rounds, "
        f"medians, malloc_keep={malloc_keep}"
    )
    print(f"\n1. frame_averaging on o3, clouds {tuple(frames['shape'])}")
    for name, seconds in frames["medians_s"].items():
        print(f"   {name:<24} {seconds * 1e3:10.2f} ms")
    verdict = "ok" if frames["ratio"] <= FRAME_TARGET else "ABOVE TARGET"
    print(f"   frame ÷ wrapped forward  {frames['ratio']:10.4f}   (target ≤ {FRAME_TARGET}: {verdict})")
    print(f"   (ratio of the fastest samples: {frames['ratio_of_minima']:.4f})")
    print(f"\n2. canonicalization (rot90, learned) of a ResNet-18-like CNN, images {tuple(canon['shape'])}")
    for name, seconds in canon["medians_s"].items():
        print(f"   {name:<24} {seconds * 1e3:10.2f} ms")
    verdict = "ok" if canon["ratio"] <= CANON_TARGET else "ABOVE TARGET"
    print(f"   canonicalized ÷ plain    {canon['ratio']:10.4f}   (target ≤ {CANON_TARGET}: {verdict})")
    print(f"   (ratio of the fastest samples: {canon['ratio_of_minima']:.4f})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
