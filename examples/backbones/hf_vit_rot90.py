"""Wrap a Hugging Face image classifier in three lines (a small random ViT offline; --pretrained NAME for a hub
checkpoint such as google/vit-base-patch16-224, downloaded the first time).

python examples/backbones/hf_vit_rot90.py
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification

import symwrap


def main(argv: list[str] | None = None) -> tuple[float, float]:
    """Returns the max relative invariance error of the logits before and after wrapping."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", default=None, help="a hub name or local folder (from_pretrained)")
    parser.add_argument("--group", default="d4")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    if args.pretrained:
        model = AutoModelForImageClassification.from_pretrained(args.pretrained).eval()
    else:
        config = ViTConfig(image_size=64, patch_size=16, hidden_size=64, num_hidden_layers=2, num_attention_heads=2)
        model = ViTForImageClassification(config).eval()
    wrapped = symwrap.wrap(model, group=args.group)  # pixel_values in, ImageClassifierOutput out
    size = model.config.image_size
    images = torch.rand(2, 3, size, size)
    with torch.no_grad():
        out = wrapped(pixel_values=images)
        before = symwrap.check(model, args.group, images, select="logits").max_error
        after = symwrap.check(wrapped, args.group, images, select="logits").max_error
    print(f"{type(out).__name__} logits {tuple(out.logits.shape)}, group {args.group}")
    print(f"  max relative invariance error before wrapping {before:.2e}, after {after:.2e}")
    return before, after


if __name__ == "__main__":
    main()
