"""Zero-shot classification with open_clip, made exactly rot90-invariant (random weights offline;
--pretrained openai for OpenAI's weights, downloaded the first time).

python examples/backbones/open_clip_zero_shot.py                       # ViT-B-32, random init
python examples/backbones/open_clip_zero_shot.py --pretrained openai   # real zero-shot ImageNet classifier
"""

from __future__ import annotations

import argparse

import open_clip
import torch
from symwrap_open_clip import ZeroShotClassifier

import symwrap


def main(argv: list[str] | None = None) -> tuple[float, float]:
    """Returns the max relative invariance error of the logits before and after wrapping."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--pretrained", default=None, help="an open_clip tag such as 'openai' (needs a network)")
    parser.add_argument("--classes", type=int, default=10, help="the first N ImageNet classes (1000 for all)")
    parser.add_argument(
        "--templates", choices=["openai", "simple"], default="openai", help="open_clip's 80 OpenAI or 7 simple prompts"
    )
    parser.add_argument(
        "--stacked", action="store_true", help="chunk_size=None: all copies in one forward, no first-call tuning"
    )
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    # the third value is the image transform for real (PIL) images; random tensors need none
    model, _, _ = open_clip.create_model_and_transforms(args.arch, pretrained=args.pretrained)
    names = open_clip.IMAGENET_CLASSNAMES[: args.classes]  # open_clip's own class names and OpenAI templates
    templates = (
        open_clip.OPENAI_IMAGENET_TEMPLATES if args.templates == "openai" else open_clip.SIMPLE_IMAGENET_TEMPLATES
    )
    classifier = ZeroShotClassifier(model.eval(), open_clip.get_tokenizer(args.arch), names, templates)  # text once
    wrapped = symwrap.wrap(classifier, "rot90", chunk_size=None if args.stacked else "auto")  # image side only

    size = model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    images = torch.rand(2, 3, size, size)
    with torch.no_grad():
        before = symwrap.check(classifier, "rot90", images).max_error
        after = symwrap.check(wrapped, "rot90", images).max_error
        top = wrapped(images).argmax(dim=-1).tolist()
    print(
        f"{args.arch} ({args.pretrained or 'random init'}), {len(names)} classes: predictions {[names[i] for i in top]}"
    )
    print(f"  max relative invariance error of the logits before wrapping {before:.2e}, after {after:.2e}")
    return before, after


if __name__ == "__main__":
    main()
