"""open_clip zero-shot classification wrapped with rot90: text encoded once, image throughput vs plain ÷ |G|.

One run builds ``symwrap_open_clip.ZeroShotClassifier`` on a random-init open_clip model (``pretrained=None``,
nothing downloads), counts the text-tower forwards (``encode_text`` calls) while the classifier is built and
while the wrapped classifier classifies ``--batches`` batches, then times, interleaved round by round (the order
alternating so drift and background load hit both alike):

* ``plain``    the classifier on B images,
* ``wrapped``  ``symwrap.wrap(classifier, "rot90")`` on the same B images (4 copies each, ``chunk_size="auto"``,
  tuned by one untimed call before timing).

Throughput is images per second; the ratio is ``wrapped / (plain / |G|)`` with target ≥ 0.9 (the wrapped model
costs at most ~|G| plain forwards).

    python benchmarks/bench_open_clip_zero_shot.py                    # ViT-B-32 at 224×224, B=8
    python benchmarks/bench_open_clip_zero_shot.py --arch RN50 --batch 4 --rounds 5
    python benchmarks/bench_open_clip_zero_shot.py --json bench-results/open_clip.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import open_clip
import torch
from symwrap_open_clip import ZeroShotClassifier

import symwrap

GROUP = "rot90"
TARGET_RATIO = 0.9


def _time(fn, x: torch.Tensor, min_seconds: float) -> float:
    """Seconds per call, averaged over as many calls as fit in ``min_seconds`` (at least one)."""
    calls, start = 0, time.perf_counter()
    while True:
        fn(x)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32", help="open_clip architecture (random init)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--classes", type=int, default=100, help="the first N of open_clip's IMAGENET_CLASSNAMES")
    parser.add_argument("--batches", type=int, default=3, help="batches classified while counting text forwards")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=1.0, help="minimum time per sample")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms(args.arch, pretrained=None, device=args.device)
    model.eval()
    tokenizer = open_clip.get_tokenizer(args.arch)
    names = list(open_clip.IMAGENET_CLASSNAMES[: args.classes])
    templates = list(open_clip.SIMPLE_IMAGENET_TEMPLATES)

    text_calls = 0
    encode_text = model.encode_text

    def counted_encode_text(*a, **k):
        nonlocal text_calls
        text_calls += 1
        return encode_text(*a, **k)

    model.encode_text = counted_encode_text
    with torch.no_grad():
        classifier = ZeroShotClassifier(model, tokenizer, names, templates).eval()
        calls_building = text_calls
        wrapped = symwrap.wrap(classifier, GROUP)
        size = model.visual.image_size
        size = size if isinstance(size, int) else size[0]
        x = torch.randn(args.batch, 3, size, size, device=args.device)
        first_start = time.perf_counter()
        wrapped(x)  # tunes chunk_size="auto" outside the timing
        first_call = time.perf_counter() - first_start
        for _ in range(args.batches):
            wrapped(x)
        calls_classifying = text_calls - calls_building

        order = symwrap.get_group(GROUP).order()
        plain_times, wrapped_times = [], []
        classifier(x)  # warm-up
        for r in range(args.rounds):
            pair = [("plain", classifier), ("wrapped", wrapped)]
            for label, fn in pair if r % 2 == 0 else pair[::-1]:
                (plain_times if label == "plain" else wrapped_times).append(_time(fn, x, args.min_seconds))

    plain = statistics.median(plain_times)
    wrapped_t = statistics.median(wrapped_times)
    plain_ips, wrapped_ips = args.batch / plain, args.batch / wrapped_t
    ratio = wrapped_ips / (plain_ips / order)
    chunk = sorted(set(wrapped.engine.tuner.cache.values()))

    print(
        f"open_clip {args.arch} (random init) zero-shot, {len(names)} classes × {len(templates)} templates, "
        f"group {GROUP} (|G|={order}), B={args.batch}, device={args.device}, torch {torch.__version__}, "
        f"threads={torch.get_num_threads()}, {platform.processor() or platform.machine()}"
    )
    print()
    print("| text-tower forwards (encode_text calls) | count |")
    print("|---|---|")
    print(f"| while building the classifier ({len(names)} classes, 10 per forward) | {calls_building} |")
    print(f"| while classifying {args.batches + 1} batches with the wrapped classifier | {calls_classifying} |")
    print()
    print("| model | median s/call | images/s | min–max s/call |")
    print("|---|---|---|---|")
    print(f"| plain | {plain:.4f} | {plain_ips:.2f} | {min(plain_times):.4f}–{max(plain_times):.4f} |")
    print(
        f"| wrapped (rot90) | {wrapped_t:.4f} | {wrapped_ips:.2f} | {min(wrapped_times):.4f}–{max(wrapped_times):.4f} |"
    )
    print()
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    print(
        f"throughput ratio wrapped / (plain / |G|) = {ratio:.3f} ({verdict} the target ≥ {TARGET_RATIO}); "
        f"first wrapped call incl. chunk tuning {first_call:.2f} s; rows per forward chosen: {chunk}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "arch": args.arch,
                    "batch": args.batch,
                    "classes": len(names),
                    "templates": len(templates),
                    "text_calls_building": calls_building,
                    "text_calls_classifying": calls_classifying,
                    "plain_s": plain_times,
                    "wrapped_s": wrapped_times,
                    "ratio": ratio,
                    "device": args.device,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
