"""symwrap beside its peers on the same models: ttach (test-time augmentation) and equiadapt (canonicalization).

Every round runs each contender once on the same input, in a rotated order (interleaved, so a slow spell of a busy
machine hits all of them alike); the table gives the median seconds per call and each ratio to the peer, with the
lowest and highest ratio of single rounds as its spread.

* classification, d4: ``ttach.ClassificationTTAWrapper(model, d4_transform(), "mean")`` against
  ``symwrap.wrap(model, "d4")`` with ``chunk_size=B`` (ttach's B rows per forward) and with ``"auto"``;
* segmentation, d4: ``ttach.SegmentationTTAWrapper`` against ``symwrap.wrap(model, "d4", output="equivariant")``,
  a timm resnet18 feature map, a 1×1 classifier and a bilinear upsampling back to the input size (21 classes);
* canonicalization, C4 (and D4 with ``--d4-canonicalization``): equiadapt's ``GroupEquivariantImageCanonicalization``
  with its ``CustomEquivariantNetwork`` canonicalizer in front of the classifier, against
  ``symwrap.wrap(model, "rot90", "canonicalization")`` (its learned canonicalizer); both divided by one plain
  forward. The invariance error under a 90° turn of the input is printed too: equiadapt turns images by
  interpolation (kornia), symwrap by an exact pixel permutation.

glibc is told to keep freed memory for reuse (``--default-malloc`` leaves its default): a forward of 64 images of
64×64 allocates activations of tens of MB, which glibc otherwise hands back to the OS and faults in again on every
call, at a cost that depends on the sizes of the calls before it (the same as ``bench_suite.py``).

The peers live in the ``bench`` extra (``pip install -e .[bench]``). Models are timm ``pretrained=False``.

    python benchmarks/bench_peers.py                      # resnet18, B = 1, 8, 64 at 64×64
    python benchmarks/bench_peers.py --backbone small     # a three-convolution model: the pull-back's share is large
    python benchmarks/bench_peers.py --quick              # B = 1, 8; fewer rounds
    python benchmarks/bench_peers.py --json bench-results/peers.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from bench_chunking import keep_freed_memory
from torch import Tensor, nn

import symwrap


class Segmenter(nn.Module):
    """A backbone's last feature map, a 1×1 classifier and a bilinear upsampling to the input size: timm resnet18, or
    (``small``) three 3×3 convolutions of 32 channels, strides 1, 2, 2."""

    def __init__(self, backbone: str = "resnet18", classes: int = 21) -> None:
        super().__init__()
        if backbone == "small":
            self.body = SmallBody()
            channels = 32
        else:
            self.body = timm.create_model(backbone, pretrained=False, features_only=True, out_indices=(4,))
            channels = self.body.feature_info.channels()[-1]
        self.classify = nn.Conv2d(channels, classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.classify(self.body(x)[-1])
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class SmallBody(nn.Module):
    """Three 3×3 convolutions of 32 channels (strides 1, 2, 2) with ReLUs; returns ``[feature map]`` like timm's
    ``features_only`` models."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        return [self.layers(x)]


def classifier(backbone: str) -> nn.Module:
    """timm ``backbone`` with 10 classes, or ``small``: :class:`SmallBody`, global average pooling and a linear head."""
    if backbone == "small":
        return nn.Sequential(SmallBody(), _First(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    return timm.create_model(backbone, pretrained=False, num_classes=10)


class _First(nn.Module):
    def forward(self, xs: list[Tensor]) -> Tensor:
        return xs[0]


def interleaved(contenders: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each contender, one call each per round, the order rotated every round."""
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm-up: allocator, oneDNN primitives, symwrap's first call of the shape
        contenders[name]()
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return times


def ratio_row(times: dict[str, list[float]], name: str, reference: str) -> str:
    """``median ratio [lowest, highest single-round ratio]`` of ``name`` to ``reference``."""
    per_round = [a / b for a, b in zip(times[name], times[reference])]
    ratio = statistics.median(times[name]) / statistics.median(times[reference])
    return f"{ratio:5.2f} [{min(per_round):.2f}, {max(per_round):.2f}]"


def bench_tta(kind: str, backbone: str, batch: int, size: int, rounds: int, settle: int) -> dict[str, Any]:
    """ttach against symwrap (chunk_size=B and auto) on the same model and input."""
    import ttach

    torch.manual_seed(0)
    if kind == "classification":
        model = classifier(backbone).eval()
        peer = ttach.ClassificationTTAWrapper(model, ttach.aliases.d4_transform(), merge_mode="mean")
        options: dict[str, Any] = {}
    else:
        model = Segmenter(backbone).eval()
        peer = ttach.SegmentationTTAWrapper(model, ttach.aliases.d4_transform(), merge_mode="mean")
        options = {"output": "equivariant", "class_dim": 1}
    same_chunks = symwrap.wrap(model, "d4", chunk_size=batch, **options)
    auto = symwrap.wrap(model, "d4", **options)
    x = torch.randn(batch, 3, size, size)
    key = (((tuple(x.shape), x.dtype, x.device),), 8, type(auto.group).__name__)
    with torch.no_grad():
        for _ in range(settle):  # auto's real calls explore its candidates until its choice is final
            auto(x)
            if auto.engine.tuner.cached(key) is not None:
                break
        difference = (peer(x) - same_chunks(x)).abs().max().item()
        times = interleaved(
            {"ttach": lambda: peer(x), "symwrap chunk=B": lambda: same_chunks(x), "symwrap auto": lambda: auto(x)},
            rounds,
        )
    return {
        "kind": kind,
        "backbone": backbone,
        "batch": batch,
        "size": size,
        "max_abs_difference_to_ttach": difference,
        "seconds": times,
        "auto_chunk": auto.engine.tuner.cached(key),
    }


def bench_canonicalization(backbone: str, batch: int, size: int, rounds: int, d4: bool) -> dict[str, Any]:
    """equiadapt's canonicalization and symwrap's, each divided by one plain forward."""
    from equiadapt.images.canonicalization.discrete_group import GroupEquivariantImageCanonicalization
    from equiadapt.images.canonicalization_networks import CustomEquivariantNetwork
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    model = classifier(backbone).eval()
    group_type = "roto-reflection" if d4 else "rotation"
    network = CustomEquivariantNetwork((3, size, size), 16, 5, group_type, 4, num_layers=2, device="cpu")
    # equiadapt 0.1.2's canonicalizer reads these two attributes, which its own CustomEquivariantNetwork never sets
    network.group_type, network.num_rotations = group_type, 4
    hyper = OmegaConf.create({"beta": 1.0, "input_crop_ratio": 0.9, "resize_shape": size})
    canonicalizer = GroupEquivariantImageCanonicalization(network, hyper, (3, size, size)).eval()
    wrapped = symwrap.wrap(model, "d4" if d4 else "rot90", "canonicalization").eval()
    x = torch.randn(batch, 3, size, size)
    turned = torch.rot90(x, 1, (-2, -1))
    with torch.no_grad():
        equiadapt_error = (model(canonicalizer(turned)) - model(canonicalizer(x))).abs().max().item()
        symwrap_error = (wrapped(turned) - wrapped(x)).abs().max().item()
        times = interleaved(
            {
                "plain": lambda: model(x),
                "equiadapt": lambda: model(canonicalizer(x)),
                "symwrap": lambda: wrapped(x),
            },
            rounds,
        )
    return {
        "kind": f"canonicalization {'D4' if d4 else 'C4'}",
        "backbone": backbone,
        "batch": batch,
        "size": size,
        "invariance_error": {"equiadapt": equiadapt_error, "symwrap": symwrap_error},
        "seconds": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--size", type=int, default=64, help="image side (pixels)")
    parser.add_argument("--backbone", default="resnet18", help="a timm model name, or 'small' (three convolutions)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--settle", type=int, default=30, help="most calls of symwrap auto before timing")
    parser.add_argument("--quick", action="store_true", help="B = 1, 8 and 3 rounds")
    parser.add_argument("--skip", nargs="*", default=[], choices=["classification", "segmentation", "equiadapt"])
    parser.add_argument("--d4-canonicalization", action="store_true", help="also equiadapt's roto-reflection case")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's default of returning large freed blocks to the OS (page faults on every call)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.batches, args.rounds = [b for b in args.batches if b <= 8], 3
    keep = False if args.default_malloc else keep_freed_memory()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"glibc keeps freed memory: {keep}"
    )
    results: list[dict[str, Any]] = []
    for kind in ("classification", "segmentation"):
        if kind in args.skip:
            continue
        print(
            f"\n{kind}, d4, {args.backbone}, {args.size}×{args.size}: median s/call; ratio to ttach [lowest, highest]"
        )
        print(f"{'B':>3} | {'ttach':>8} | {'chunk=B':>8} {'÷ ttach':>19} | {'auto':>8} {'÷ ttach':>19} | max |Δ|")
        for batch in args.batches:
            row = bench_tta(kind, args.backbone, batch, args.size, args.rounds, args.settle)
            results.append(row)
            t = row["seconds"]
            print(
                f"{batch:>3} | {statistics.median(t['ttach']):8.4f} | {statistics.median(t['symwrap chunk=B']):8.4f} "
                f"{ratio_row(t, 'symwrap chunk=B', 'ttach'):>19} | {statistics.median(t['symwrap auto']):8.4f} "
                f"{ratio_row(t, 'symwrap auto', 'ttach'):>19} | {row['max_abs_difference_to_ttach']:.1e} "
                f"| auto: {row['auto_chunk']} rows a forward"
            )
    if "equiadapt" not in args.skip:
        for d4 in (False, True) if args.d4_canonicalization else (False,):
            name = "D4" if d4 else "C4"
            print(f"\ncanonicalization {name}, {args.backbone}, {args.size}×{args.size}: ratio to one plain forward")
            print(
                f"{'B':>3} | {'plain':>8} | {'equiadapt':>19} | {'symwrap':>19} | invariance error equiadapt / symwrap"
            )
            for batch in args.batches:
                row = bench_canonicalization(args.backbone, batch, args.size, args.rounds, d4)
                results.append(row)
                t, err = row["seconds"], row["invariance_error"]
                print(
                    f"{batch:>3} | {statistics.median(t['plain']):8.4f} | {ratio_row(t, 'equiadapt', 'plain'):>19} | "
                    f"{ratio_row(t, 'symwrap', 'plain'):>19} | {err['equiadapt']:.1e} / {err['symwrap']:.1e}"
                )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
