"""symwrap's flip3d group averaging vs nnU-Net-style hand-written mirroring, on a MONAI 3-D UNet.

The reference is the loop a MONAI user writes for test-time mirroring: for each of the 8 subsets of the spatial axes,
``torch.flip(net(torch.flip(x, axes)), axes)``, summed and divided by 8 (one forward per mirror). symwrap runs the
same 8 forwards (``symwrap.wrap(net, "flip3d", output="equivariant")``), stacked into chunks of its choice. Rounds
interleave the two (alternating which goes first) so that a busy machine slows both alike; the table gives the
median time of each and the median and range of the per-round ratio symwrap / loop.

    python benchmarks/bench_volumes.py --size 64 --batches 1,2 --rounds 5

Needs the symwrap-monai plugin's dependency (``pip install -e ./plugins/symwrap-monai``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

import symwrap

SUBSETS = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]


def mirrored_average(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """nnU-Net's test-time mirroring, written out: the mean over the 8 axis subsets of flip(net(flip(x)))."""
    total = net(x)
    for axes in SUBSETS[1:]:
        total = total + torch.flip(net(torch.flip(x, axes)), axes)
    return total / len(SUBSETS)


def _time(fn: Callable[..., torch.Tensor], *args: object) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="volume edge (D = H = W)")
    parser.add_argument("--batches", default="1,2", help="comma-separated batch sizes")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per batch size")
    parser.add_argument("--chunk-size", default="auto", help="symwrap's chunk_size: auto, none or an int")
    args = parser.parse_args()
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(3, 1, 2, channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=1).eval()
    chunk = (
        None if args.chunk_size == "none" else args.chunk_size if args.chunk_size == "auto" else int(args.chunk_size)
    )
    print(f"MONAI UNet (channels 8-16-32-64, 1 residual unit), {args.size}³ volumes, flip3d (8 forwards per volume)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, chunk_size={args.chunk_size}\n")
    print("| batch | loop (s) | symwrap (s) | ratio symwrap/loop, median | ratio range | max abs difference |")
    print("|---|---|---|---|---|---|")
    for batch in [int(b) for b in args.batches.split(",")]:
        x = torch.randn(batch, 1, args.size, args.size, args.size)
        wrapped = symwrap.wrap(net, "flip3d", output="equivariant", chunk_size=chunk)
        with torch.no_grad():
            reference, ours = mirrored_average(net, x), wrapped(x)  # warm-up (and chunk tuning for "auto")
            difference = float((reference - ours).abs().max())
            loop_times, ours_times, ratios = [], [], []
            for r in range(args.rounds):
                if r % 2:
                    t_ours = _time(wrapped, x)
                    t_loop = _time(mirrored_average, net, x)
                else:
                    t_loop = _time(mirrored_average, net, x)
                    t_ours = _time(wrapped, x)
                loop_times.append(t_loop)
                ours_times.append(t_ours)
                ratios.append(t_ours / t_loop)
        print(
            f"| {batch} | {statistics.median(loop_times):.3f} | {statistics.median(ours_times):.3f} "
            f"| {statistics.median(ratios):.3f} | {min(ratios):.3f}–{max(ratios):.3f} | {difference:.1e} |"
        )


if __name__ == "__main__":
    main()
