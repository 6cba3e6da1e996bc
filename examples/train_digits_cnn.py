"""Train the DigitsCNN that ``symwrap eval`` evaluates by default, and write its shipped weights.

    python examples/train_digits_cnn.py            # writes symwrap/evaluation/digits_cnn.safetensors

Trains on the upright ``"train"`` split only (``symwrap.evaluation.digits.train_digits_cnn``, seeded, ~4 s
on a CPU); ``symwrap eval`` then measures it on the held-out ``"test"`` split under every rotation. The
weights are written with safetensors (never pickled), ~40 KB.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file

from symwrap.evaluation.digits import load_digits, train_digits_cnn
from symwrap.evaluation.digits_model import DIGITS_WEIGHTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DIGITS_WEIGHTS, help="where to write the safetensors file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    images, labels = load_digits("train")
    model = train_digits_cnn(images, labels, epochs=args.epochs, seed=args.seed)
    with torch.no_grad():
        for split in ("val", "test"):
            x, y = load_digits(split)
            accuracy = (model(x).argmax(-1) == y).float().mean().item()
            print(f"upright {split} accuracy: {100 * accuracy:.2f}% ({len(y)} images)")
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(args.output), metadata={"trained_on": "digits train split", "seed": str(args.seed)})
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
