"""Per-patch ViT features that move with the image: a Hugging Face ``ViTModel`` wrapped with
``output=TokenGridAction()`` (a small random ViT offline; --pretrained NAME for a hub checkpoint).

Prints the max relative equivariance error of ``last_hidden_state`` (patch grid moved like the image, CLS token
unchanged) for the plain model, the default invariant wrap (patch tokens averaged, so they do not move), and the
token-grid wrap.

python examples/backbones/hf_vit_tokens.py
"""

from __future__ import annotations

import argparse

import torch
from transformers import ViTConfig, ViTModel

import symwrap
from symwrap.actions import TokenGridAction


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Returns the max relative equivariance error of ``last_hidden_state`` for each model."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", default=None, help="a hub name or local folder (from_pretrained)")
    parser.add_argument("--group", default="d4")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    if args.pretrained:
        model = ViTModel.from_pretrained(args.pretrained).eval()
    else:
        config = ViTConfig(image_size=64, patch_size=16, hidden_size=64, num_hidden_layers=2, num_attention_heads=2)
        model = ViTModel(config).eval()
    tokens = TokenGridAction(prefix=1)  # CLS first, then the patch grid (row-major)
    models = {
        "plain ViTModel": model,
        "wrap(..., output='invariant')": symwrap.wrap(model, args.group, select="last_hidden_state"),
        "wrap(..., output=TokenGridAction())": symwrap.wrap(
            model, args.group, output=tokens, select="last_hidden_state"
        ),
    }
    size = model.config.image_size
    images = torch.rand(2, 3, size, size)
    errors = {}
    with torch.no_grad():
        for name, candidate in models.items():
            result = symwrap.check(candidate, args.group, {"pixel_values": images}, tokens, select="last_hidden_state")
            errors[name] = result.max_error
    print(f"last_hidden_state equivariance (patch grid moved, CLS kept), group {args.group}:")
    for name, error in errors.items():
        print(f"  {name:<40} max relative error {error:.2e}")
    return errors


if __name__ == "__main__":
    main()
