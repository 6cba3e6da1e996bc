"""Streams of shapes: what ``chunk_size="auto"`` costs when the shapes keep changing, beside the limit.

The limit ("plain×|G|") is the plain model on all ``|G|·B`` rotated copies in one forward, plus the mean: the work
every symmetrization has to do. Each call of a stream runs every contender once on the same input, in a rotated
order (interleaved, so a slow spell of the machine and the first-time cost of a new shape in the math library hit
all contenders alike). Fresh wrappers start every stream: the tuner learns during it.

* ``sizes``: timm resnet18, B = 4, rot90; 20 image sizes, the list run 3 times (each size seen 3 times, other sizes in
  between). Contenders: the limit, ``symwrap.wrap(model, "rot90")`` (auto) and ``chunk_size=None``.
* ``batches``: the same model at one image size; batch sizes 1..64 in a shuffled order, each 3 times.
* ``first``: a new shape's first call (the wrapper has run another shape before) against the same shape's steady
  state (the median of its last 5 of 12 calls), for symwrap auto and the plain model on the stacked copies. The
  plain model runs the new shape first, so the math library's first-time cost of the shape lands in its column.

    OMP_NUM_THREADS=1 python benchmarks/bench_streams.py            # all three parts
    OMP_NUM_THREADS=1 python benchmarks/bench_streams.py --parts sizes --repeats 3
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch
from torch import Tensor, nn

import symwrap

GROUP, ORDER = "rot90", 4


def limit(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """The plain model on the ``|G|·B`` rotated copies in one forward, and the mean over the copies."""

    def run(x: Tensor) -> Tensor:
        copies = torch.cat([torch.rot90(x, k, (-2, -1)) for k in range(ORDER)])
        return model(copies).reshape(ORDER, x.shape[0], -1).mean(0)

    return run


def stream(contenders: dict[str, Callable[[Tensor], Any]], inputs: list[Tensor]) -> dict[str, list[float]]:
    """Seconds of every call per contender, the contenders of each call in a rotated order."""
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.no_grad():
        for i, x in enumerate(inputs):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                start = time.perf_counter()
                contenders[name](x)
                times[name].append(time.perf_counter() - start)
    return times


def report(title: str, runs: list[dict[str, list[float]]], reference: str) -> list[dict[str, Any]]:
    """Print total seconds per contender and their ratio to ``reference`` per run, and the median ratio."""
    print(f"\n{title}")
    names = list(runs[0])
    print("run | " + " | ".join(f"{name:>22}" for name in names))
    ratios: dict[str, list[float]] = {name: [] for name in names}
    for r, times in enumerate(runs):
        cells = []
        for name in names:
            ratio = sum(times[name]) / sum(times[reference])
            ratios[name].append(ratio)
            cells.append(f"{sum(times[name]):9.2f} s {ratio:5.2f}×   ")
        print(f"{r:>3} | " + " | ".join(f"{c:>22}" for c in cells))
    print(
        "median ratio: "
        + ", ".join(f"{n} {statistics.median(v):.2f}× [{min(v):.2f}, {max(v):.2f}]" for n, v in ratios.items())
    )
    return [{name: times[name] for name in names} for times in runs]


def sizes_part(model: nn.Module, args: argparse.Namespace) -> list[dict[str, list[float]]]:
    sizes = list(range(args.first_size, args.first_size + 2 * 20, 2))
    runs = []
    for repeat in range(args.repeats):
        torch.manual_seed(repeat)
        inputs = [torch.randn(4, 3, s, s) for _ in range(3) for s in sizes]
        contenders = {
            "plain×|G|": limit(model),
            "symwrap auto": symwrap.wrap(model, GROUP),
            "symwrap chunk=None": symwrap.wrap(model, GROUP, chunk_size=None),
        }
        runs.append(stream(contenders, inputs))
    return report(
        f"sizes: resnet18, B=4, {GROUP}, 20 sizes {sizes[0]}..{sizes[-1]} px, each seen 3 times: total and ÷ limit",
        runs,
        "plain×|G|",
    )


def batches_part(model: nn.Module, args: argparse.Namespace) -> list[dict[str, list[float]]]:
    runs = []
    for repeat in range(args.repeats):
        order = random.Random(repeat).sample(range(1, 65), 64)[: args.batch_count]
        inputs = [torch.randn(b, 3, args.batch_size_px, args.batch_size_px) for _ in range(3) for b in order]
        contenders = {"plain×|G|": limit(model), "symwrap auto": symwrap.wrap(model, GROUP)}
        runs.append(stream(contenders, inputs))
    return report(
        f"batches: resnet18, {args.batch_size_px} px, {GROUP}, {args.batch_count} batch sizes from 1..64, each 3 times",
        runs,
        "plain×|G|",
    )


def first_part(model: nn.Module, args: argparse.Namespace) -> list[dict[str, Any]]:
    print("\nfirst call of a new shape ÷ the shape's steady-state call (median of its last 5 of 12 calls)")
    print(f"{'shape':>16} | {'symwrap auto':>12} | {'plain×|G|':>10}")
    wrapped, plain = symwrap.wrap(model, GROUP), limit(model)
    with torch.no_grad():
        wrapped(torch.randn(2, 3, 81, 81))  # the model's first call (memory measured on B rows first): not counted
    rows = []
    for batch, size in ((1, 73), (4, 75), (8, 77), (16, 79)):  # sizes no other part uses: new to the math library
        x = torch.randn(batch, 3, size, size)
        first = stream({"plain×|G|": plain}, [x])  # plain first: the math library's first-time cost of the shape
        first.update(stream({"symwrap auto": wrapped}, [x]))
        times = stream({"symwrap auto": wrapped, "plain×|G|": plain}, [x] * 12)
        row = {"batch": batch, "size": size}
        for name, seconds in times.items():
            row[name] = first[name][0] / statistics.median(seconds[-5:])
        rows.append(row)
        print(f"{f'B={batch}, {size}²':>16} | {row['symwrap auto']:>11.2f}× | {row['plain×|G|']:>9.2f}×")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--parts", nargs="+", default=["sizes", "batches", "first"], choices=["sizes", "batches", "first"]
    )
    parser.add_argument("--repeats", type=int, default=3, help="streams per part (fresh wrappers each)")
    parser.add_argument("--first-size", type=int, default=32, help="the smallest of the 20 sizes (step 2 px)")
    parser.add_argument("--batch-size-px", type=int, default=32, help="image side of the batches part")
    parser.add_argument("--batch-count", type=int, default=16, help="distinct batch sizes of the batches part")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    results: dict[str, Any] = {}
    if "sizes" in args.parts:
        results["sizes"] = sizes_part(model, args)
    if "batches" in args.parts:
        results["batches"] = batches_part(model, args)
    if "first" in args.parts:
        results["first"] = first_part(model, args)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
