"""Wrap a timm model in three lines (random weights offline; --pretrained for timm's published weights).

python examples/backbones/timm_rot90.py                            # resnet18, random init, offline
python examples/backbones/timm_rot90.py --model convnext_atto --group d4
python examples/backbones/timm_rot90.py --pretrained               # downloads the weights the first time
"""

from __future__ import annotations

import argparse

import timm
import torch
from timm.data import resolve_data_config

import symwrap


def main(argv: list[str] | None = None) -> tuple[float, float]:
    """Returns the max relative invariance error before and after wrapping."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--group", default="rot90")
    parser.add_argument("--pretrained", action="store_true", help="timm's published weights (needs a network)")
    parser.add_argument("--size", type=int, default=None, help="image size (default: the model's data config)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=args.pretrained).eval()  # line 1
    wrapped = symwrap.wrap(model, group=args.group)  # line 2: the timm adapter is picked automatically
    size = args.size or resolve_data_config(model=wrapped)["input_size"][-1]  # pretrained_cfg reaches through
    images = torch.rand(2, 3, size, size)
    with torch.no_grad():
        before = symwrap.check(model, args.group, images).max_error
        after = symwrap.check(wrapped, args.group, images).max_error  # line 3: what you would call wrapped(images)
    print(f"{args.model} ({'pretrained' if args.pretrained else 'random init'}), group {args.group}, {size}×{size}:")
    print(f"  max relative invariance error before wrapping {before:.2e}, after {after:.2e}")
    return before, after


if __name__ == "__main__":
    main()
