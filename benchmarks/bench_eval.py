"""Evaluation throughput of ``symwrap eval``'s methods: images/s of each method vs the plain model ÷ |G|.

An image folder of synthetic RGB PNGs is read through the same data path as ``symwrap eval`` (PIL decoding
in ``--workers`` DataLoader worker processes, ``symwrap.evaluation.data.collate``), and each method's model
(built by ``symwrap.evaluation.methods.build_methods``, as ``symwrap eval`` builds them) classifies every
image once. The target: ``group_averaging`` on rot90 ≥ 0.9 × (plain images/s ÷ 4).

    python benchmarks/bench_eval.py                       # rot90, small_cnn at 64×64, 512 images, 2 workers
    python benchmarks/bench_eval.py --workers 0 --rounds 5 --json bench-results/eval.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

import symwrap
from symwrap.evaluation.data import collate, open_data
from symwrap.evaluation.loading import LoadedModel
from symwrap.evaluation.methods import build_methods, parse_methods

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_chunking import small_cnn as _chunking_small_cnn  # the same model as the chunking benchmark


def small_cnn(classes: int = 10) -> nn.Module:
    """The chunking benchmark's small CNN (seeded, eval mode)."""
    torch.manual_seed(0)
    return _chunking_small_cnn(classes).eval()


def write_folder(root: Path, images: int, size: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(images):
        folder = root / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels, mode="RGB").save(folder / f"{i:05d}.png")


def throughput(model: nn.Module, loader: DataLoader) -> float:
    """Images/s of one pass over ``loader`` (data loading included, as in ``symwrap eval``)."""
    count = 0
    start = time.perf_counter()
    with torch.no_grad():
        for batch in loader:
            model(batch.images)
            count += len(batch.labels)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", default="rot90")
    parser.add_argument("--methods", default=None, help="default: every applicable method of symwrap eval")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="passes per method; the best counts")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    group = symwrap.get_group(args.group)
    methods, defaults = parse_methods(args.methods)
    loaded = LoadedModel(model=small_cnn(), input_size=(args.size, args.size))
    models, skipped = build_methods(methods, defaults, loaded, group, chunk_size="auto")
    with tempfile.TemporaryDirectory() as tmp:
        write_folder(Path(tmp), args.images, args.size)
        data = open_data(tmp)
        loader = DataLoader(
            data.dataset,
            batch_size=args.batch_size,
            num_workers=args.workers,
            collate_fn=collate,
            persistent_workers=args.workers > 0,
        )
        warm = next(iter(loader)).images
        with torch.no_grad():
            for model in models.values():  # the chunk tuner measures outside the timing
                model(warm)
                model(warm[: args.images % args.batch_size or args.batch_size])
        best = dict.fromkeys(models, 0.0)
        for _ in range(args.rounds):  # interleaved rounds: background load hits every method alike
            for label, model in models.items():
                best[label] = max(best[label], throughput(model, loader))
    order = group.order() if group.is_finite else None
    plain = best.get("plain")
    print(
        f"symwrap eval throughput: group {group.name} (|G| = {order}), small_cnn {args.size}×{args.size}, "
        f"{args.images} PNGs, batch {args.batch_size}, {args.workers} loader workers, best of {args.rounds}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"{'method':<18} {'images/s':>9} {'÷ plain':>8} {'vs plain/|G|':>13}")
    rows = []
    for label, value in best.items():
        ratio = value / plain if plain else float("nan")
        target = value / (plain / order) if plain and order else float("nan")
        rows.append({"method": label, "images_per_s": value, "vs_plain": ratio, "vs_plain_over_order": target})
        print(f"{label:<18} {value:9.1f} {ratio:8.3f} {target:13.3f}")
    for name, reason in skipped.items():
        print(f"  ({name} {reason.splitlines()[0]})")
    print("target: group_averaging ≥ 0.9 × plain/|G| (the last column ≥ 0.90)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"argv": sys.argv, "platform": platform.platform(), "torch": torch.__version__}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
