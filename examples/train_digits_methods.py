"""Train the two learned methods that ``symwrap eval`` compares by default, and write their shipped weights.

    python examples/train_digits_methods.py     # writes symwrap/evaluation/trained/digits-rot90-*/

Both start from the shipped ``DigitsCNN`` (``symwrap/evaluation/digits_cnn.safetensors``, made by
``examples/train_digits_cnn.py``), which stays frozen, and both learn from the ``"train"`` split only;
``symwrap eval`` measures them on the held-out ``"test"`` split.

* ``lambda_equitune`` over ``rot90``: a λ-net on the CNN's ``features`` output, trained with
  :func:`symwrap.train.fit` on training digits, each rotated by a random multiple of 90°, to minimise the
  cross-entropy of the weighted orbit average.
* ``canonicalization`` over ``rot90``: a small CNN canonicalizer trained with the prior of Mondal et al.
  (arXiv 2310.01647): an upright training digit should be canonicalized to the identity.

Each is written with ``SymmetrizedModel.save_pretrained`` (a JSON config and a safetensors file of the
method's own weights, a few tens of KB; never the base model) and read back by ``symwrap eval`` with
``SymmetrizedModel.from_pretrained``. Seeded; a few seconds on a CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import symwrap
import symwrap.train
from symwrap.evaluation.digits import load_digits
from symwrap.evaluation.digits_model import load_digits_model
from symwrap.evaluation.methods import SHIPPED_DIR


def train_lambda_equitune(cnn: torch.nn.Module, images, labels, *, steps: int, seed: int) -> symwrap.SymmetrizedModel:
    """λ-equitune over rot90 with the λ-net on ``cnn.features``; only the λ-net learns."""
    torch.manual_seed(seed)  # the λ-net's initialisation
    wrapped = symwrap.wrap(cnn, "rot90", "lambda_equitune", features="features")
    augment = symwrap.train.group_augment(symwrap.get_group("rot90"))
    symwrap.train.fit(wrapped, images, labels, steps=steps, batch_size=64, lr=3e-3, augment=augment, seed=seed)
    return wrapped.eval()


def train_canonicalization(cnn: torch.nn.Module, upright, *, epochs: int, seed: int) -> symwrap.SymmetrizedModel:
    """Learned rot90 canonicalization: Adam on the canonicalizer's prior loss over upright training digits."""
    torch.manual_seed(seed)
    wrapped = symwrap.wrap(cnn, "rot90", "canonicalization", in_channels=1, size=8, hidden=16)
    optimizer = torch.optim.Adam(wrapped.method.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    wrapped.method.train()
    for _ in range(epochs):
        order = torch.randperm(len(upright), generator=generator)
        for start in range(0, len(order), 64):
            loss = wrapped.method.prior_loss(upright[order[start : start + 64]])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    wrapped.method.eval()
    return wrapped.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=SHIPPED_DIR, help="folder for the two save_pretrained folders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=300, help="λ-net training steps (batch 64)")
    parser.add_argument("--epochs", type=int, default=30, help="canonicalizer training epochs")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    cnn = load_digits_model().model
    for parameter in cnn.parameters():
        parameter.requires_grad_(False)
    images, labels = load_digits("train")
    trained = {
        "lambda_equitune": train_lambda_equitune(cnn, images, labels, steps=args.steps, seed=args.seed),
        "canonicalization": train_canonicalization(cnn, images, epochs=args.epochs, seed=args.seed),
    }
    val_x, val_y = load_digits("val")
    turns = torch.randint(0, 4, (len(val_y),), generator=torch.Generator().manual_seed(args.seed))
    rotated = torch.stack([torch.rot90(x, int(k), dims=(-2, -1)) for x, k in zip(val_x, turns)])
    for name, wrapped in trained.items():
        folder = args.output / f"digits-rot90-{name}"
        wrapped.save_pretrained(folder)
        with torch.no_grad():
            accuracy = (wrapped(rotated).argmax(-1) == val_y).float().mean().item()
        size = sum(f.stat().st_size for f in folder.iterdir())
        print(f"{name}: {100 * accuracy:.2f}% on randomly rotated val digits; wrote {folder} ({size} bytes)")


if __name__ == "__main__":
    main()
