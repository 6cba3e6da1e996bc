"""scikit-learn's bundled handwritten digits, split once for everyone, and the small CNN trained on them.

The digits (1,797 grey 8×8 images of 0-9, shipped inside scikit-learn, so nothing is downloaded) are the
project's offline real data: the examples, the tests and ``symwrap eval``'s default run all use the same
seeded split, so a number measured on ``"test"`` is never measured on images used for training.

Splits (a fixed permutation by ``seed``): ``"train"`` 60 %, ``"val"`` 10 %, ``"test"`` 30 % of the images.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SPLITS", "DigitsCNN", "load_digits", "train_digits_cnn"]

SPLITS = {"train": (0.0, 0.6), "val": (0.6, 0.7), "test": (0.7, 1.0)}


def load_digits(split: str = "test", *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """One split of scikit-learn's digits.

    Args:
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        seed: Seed of the permutation that defines the splits (keep the default to compare with the README).

    Returns:
        ``images`` ``(N, 1, 8, 8)`` float32 in ``[0, 1]`` and ``labels`` ``(N,)`` int64.
    """
    if split != "all" and split not in SPLITS:
        raise ValueError(f"invalid split {split!r}: use one of {', '.join([*SPLITS, 'all'])}")
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the digits data ships with scikit-learn, which is not installed: pip install 'symwrap[digits]'"
        ) from exc
    bunch = _sk_load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    if split == "all":
        return images, labels
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    lo, hi = SPLITS[split]
    index = order[int(lo * len(order)) : int(hi * len(order))]
    return images[index], labels[index]


class DigitsCNN(nn.Module):
    """A small CNN for ``(B, 1, 8, 8)`` digits: two 3×3 convolutions, a 2×2 max-pool, a linear head.

    Not rotation invariant by itself (the head sees the 4×4 spatial layout). ``features`` gives the
    ``(B, 512)`` penultimate features and ``head`` the ``(B, 10)`` logits, for λ-nets and canonicalizers.
    """

    def __init__(self, width: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width // 2, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width // 2, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(width * 16, classes)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 1, 8, 8)`` images -> ``(B, classes)`` logits."""
        return self.head(self.features(x))


def train_digits_cnn(
    images: Tensor, labels: Tensor, *, epochs: int = 30, batch_size: int = 64, lr: float = 3e-3, seed: int = 0
) -> DigitsCNN:
    """Train a :class:`DigitsCNN` on ``images`` ``(N, 1, 8, 8)`` with Adam; returns it in eval mode.

    Deterministic for a given ``seed`` on one machine (seeded init and shuffling).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(images[index]), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()
