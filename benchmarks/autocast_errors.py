"""How far a wrapped model under ``torch.autocast`` is from its float32 output, and whether it stays invariant.

Per method and autocast dtype (bfloat16, float16 on CPU) this prints:

* ``rel. error``: ``max |y_autocast - y_fp32| / max |y_fp32|`` over the whole test set,
* ``inputs off by > 1 %``: the share of inputs whose error exceeds 1 % of ``max |y_fp32|`` (for equizero: inputs
  where a different copy won because two copies' proxy losses were closer than the low-precision rounding),
* ``argmax agrees``: the fraction of inputs whose top class is the same as in float32,
* ``invariance``: ``max |f(g·x) - f(x)|`` under autocast for one non-trivial ``g`` (float32 run in brackets).

Models: a :class:`~symwrap.evaluation.digits.DigitsCNN` trained on the digits train split (``d4``, the test
split's 360 images) and a random point-cloud MLP (``o3``, 256 random clouds of 8 points). Usage::

    python benchmarks/autocast_errors.py
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

import symwrap
from symwrap.evaluation.digits import load_digits, train_digits_cnn

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

IMAGE_METHODS: dict[str, dict[str, Any]] = {
    "group_averaging": {},
    "monte_carlo": {"samples": 8, "seed": 0},
    "equizero": {},
    "lambda_equitune": {"features": "features"},
    "canonicalization": {"in_channels": 1, "size": 8},
}
POINT_METHODS = ("frame_averaging", "canonicalization")


class PointMLP(nn.Module):
    """An MLP on flattened clouds ``(B, N, 3)`` (neither rotation nor permutation invariant)."""

    def __init__(self, points: int = 8, classes: int = 5) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(points * 3, 64), nn.Tanh(), nn.Linear(64, classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def measure(model: nn.Module, x: Tensor, moved: Tensor | None, dtype: torch.dtype) -> tuple[float, float, float, str]:
    """``(relative error, share of inputs off by > 1 %, argmax agreement, invariance 'autocast (fp32)')``."""
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=dtype):
            low = model(x)
            low_moved = model(moved) if moved is not None else None
        if low.dtype != torch.float32:
            raise AssertionError(f"expected float32 combined outputs, got {low.dtype}")
        scale = reference.abs().max()
        error = float((low - reference).abs().max() / scale)
        off = float(((low - reference).abs().flatten(1).amax(1) > 0.01 * scale).float().mean())
        agree = float((low.argmax(-1) == reference.argmax(-1)).float().mean())
        if moved is None:
            return error, off, agree, "-"
        fp32 = float((model(moved) - reference).abs().max())
        return error, off, agree, f"{float((low_moved - low).abs().max()):.1e} ({fp32:.1e})"


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    train_x, train_y = load_digits("train")
    test_x, _ = load_digits("test")
    cnn = train_digits_cnn(train_x, train_y)
    turned = torch.rot90(test_x, 1, dims=(-2, -1)).flip(-1)  # an element of d4 (a reflection)

    clouds = torch.randn(256, 8, 3, generator=torch.Generator().manual_seed(0))
    rotation = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64))[0]
    rotated = clouds @ rotation.float().T
    torch.manual_seed(0)
    mlp = PointMLP().eval()

    cases: list[tuple[str, Callable[[], nn.Module], Tensor, Tensor | None]] = []
    for method, options in IMAGE_METHODS.items():
        moved = None if method == "monte_carlo" else turned  # a seeded Monte-Carlo draw is not invariant
        cases.append(
            (f"digits CNN, d4, {method}", lambda m=method, o=options: symwrap.wrap(cnn, "d4", m, **o), test_x, moved)
        )
    for method in POINT_METHODS:
        cases.append((f"point MLP, o3, {method}", lambda m=method: symwrap.wrap(mlp, "o3", m), clouds, rotated))

    print(f"torch {torch.__version__}, CPU autocast")
    print(
        "| model, group, method | autocast | rel. error vs fp32 | inputs off by > 1 % | argmax agrees "
        "| invariance: autocast (fp32) |"
    )
    print("|---|---|---|---|---|---|")
    for title, build, x, moved in cases:
        for name, dtype in DTYPES.items():
            torch.manual_seed(0)
            error, off, agree, invariance = measure(build(), x, moved, dtype)
            print(f"| {title} | {name} | {error:.1e} | {off:.3f} | {agree:.3f} | {invariance} |")


if __name__ == "__main__":
    main()
