"""Wrap a model in three lines and measure its invariance before and after (runs offline, on CPU).

python examples/quickstart.py
"""

from __future__ import annotations

import torch
from torch import nn

import symwrap


def main() -> tuple[float, float]:
    """Returns the max relative invariance error before and after wrapping."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10)).eval()
    images = torch.randn(4, 3, 32, 32)
    model(images)  # materialise the lazy layer

    before = symwrap.check(model, "d4", images)  # the plain model: far from invariant
    wrapped = symwrap.wrap(model, group="d4")  # the three lines: import, wrap, call
    after = symwrap.check(wrapped, "d4", images)  # float32 round-off
    print(before.table(), after.table(), sep="\n")
    print(
        "logits of a rotated, mirrored batch equal the original's:",
        torch.allclose(wrapped(torch.rot90(images.flip(-1), 1, (-2, -1))), wrapped(images), atol=1e-5),
    )
    return before.max_error, after.max_error


if __name__ == "__main__":
    main()
