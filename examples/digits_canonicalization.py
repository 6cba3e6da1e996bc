"""Learned rot90 canonicalization on the digits: train the canonicalizer with the prior, test on rotated digits.

1. Train the shared ``DigitsCNN`` on upright training digits (the "pretrained" model; it is then frozen).
2. Wrap it with ``method="canonicalization"`` over ``rot90``: a small CNN scores the 4 rotations of each input
   and the best-scoring one is fed to the frozen model (one forward pass per input).
3. Train only the canonicalizer with the prior of Mondal et al. (arXiv 2310.01647): upright training digits
   should be canonicalized to the identity (``wrapped.method.prior_loss``).
4. Evaluate on the held-out *test* split, rotated by 0°, 90°, 180° and 270°.

    python examples/digits_canonicalization.py
"""

from __future__ import annotations

import torch

import symwrap
from symwrap.evaluation.digits import load_digits, train_digits_cnn


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(images).argmax(dim=1) == labels).float().mean())


def train_canonicalizer(
    wrapped: symwrap.SymmetrizedModel, upright: torch.Tensor, *, epochs: int = 30, batch_size: int = 64, seed: int = 0
) -> list[float]:
    """Adam on the canonicalizer's weights only, minimising the prior loss; returns the loss per epoch."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(wrapped.method.parameters(), lr=3e-3)
    losses = []
    wrapped.method.train()
    for _ in range(epochs):
        order = torch.randperm(len(upright), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            loss = wrapped.method.prior_loss(upright[order[start : start + batch_size]])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(order[start : start + batch_size])
        losses.append(total / len(order))
    wrapped.method.eval()
    return losses


def main(epochs: int = 30) -> dict[str, object]:
    """Prints and returns test accuracies per rotation, identity rates and the prior loss curve."""
    torch.manual_seed(0)
    train_x, train_y = load_digits("train")
    test_x, test_y = load_digits("test")
    model = train_digits_cnn(train_x, train_y)
    for p in model.parameters():
        p.requires_grad_(False)

    torch.manual_seed(0)
    wrapped = symwrap.wrap(model, "rot90", "canonicalization", in_channels=1, size=8, hidden=16).eval()
    rate_before = wrapped.method.identity_rate(test_x)
    losses = train_canonicalizer(wrapped, train_x, epochs=epochs)
    averaged = symwrap.wrap(model, "rot90")  # group averaging, for comparison (4 passes per input)

    rows: dict[str, list[float]] = {"plain": [], "canonicalization": [], "group_averaging": []}
    for k in range(4):
        rotated = torch.rot90(test_x, k, dims=(-2, -1))
        rows["plain"].append(accuracy(model, rotated, test_y))
        rows["canonicalization"].append(accuracy(wrapped, rotated, test_y))
        rows["group_averaging"].append(accuracy(averaged, rotated, test_y))
    result = {
        "accuracy": rows,
        "identity_rate_test_before": rate_before,
        "identity_rate_test_after": wrapped.method.identity_rate(test_x),
        "prior_loss_first_last": (losses[0], losses[-1]),
        "test_images": len(test_y),
    }
    print(f"test split: {len(test_y)} digits; canonicalizer trained on {len(train_y)} upright training digits")
    print(f"prior loss: {losses[0]:.3f} (epoch 1) -> {losses[-1]:.3f} (epoch {epochs})")
    print(
        f"identity rate on upright test digits: {rate_before:.3f} before, "
        f"{result['identity_rate_test_after']:.3f} after training"
    )
    print(f"{'model':<18} {'0°':>6} {'90°':>6} {'180°':>6} {'270°':>6}  passes/input")
    passes = {"plain": 1, "canonicalization": 1, "group_averaging": 4}
    for name, accs in rows.items():
        print(f"{name:<18} " + " ".join(f"{a:6.3f}" for a in accs) + f"  {passes[name]}")
    return result


if __name__ == "__main__":
    main()
