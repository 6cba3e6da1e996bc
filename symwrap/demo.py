"""A short self-check: wrap small random models and print their invariance errors before and after.

Runs offline in seconds on a CPU (``symwrap demo``). The models are not invariant by themselves; the
numbers after wrapping are float32 round-off for exact groups and a stated tolerance for the
interpolated / sampled ones.
"""

from __future__ import annotations

import time

import torch
from torch import nn

import symwrap

__all__ = ["run_demo"]


def _cnn(classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 16 * 16, classes),
    )


def _dense() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 5, padding=2))


def _point_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16 * 3, 64), nn.Tanh(), nn.Linear(64, 5))


def run_demo(seed: int = 0) -> list[tuple[str, str, float, float]]:
    """Print a table of invariance / equivariance errors; returns its rows ``(model, group, before, after)``."""
    torch.manual_seed(seed)
    images = torch.randn(8, 3, 32, 32)
    clouds = torch.randn(8, 16, 3)
    cnn, dense, mlp = _cnn().eval(), _dense().eval(), _point_mlp().eval()
    cases = [
        ("CNN classifier", cnn, images, "rot90", "invariant", {}),
        ("CNN classifier", cnn, images, "flip", "invariant", {}),
        ("CNN classifier", cnn, images, "d4", "invariant", {}),
        ("CNN segmenter", dense, images, "d4", "equivariant", {}),
        ("CNN classifier", cnn, images, "shift", "invariant", {"group_options": {"stride": 8}}),
        ("point MLP", mlp, clouds, "o3", "invariant", {"method": "monte_carlo", "samples": 16, "seed": 0}),
        ("point MLP", mlp, clouds, "o3", "invariant", {"method": "monte_carlo", "samples": 1024, "seed": 0}),
    ]
    rows = []
    print(f"symwrap {symwrap.__version__} demo: relative error max|f(g·x) - f(x)| / max|f(x)| (equivariant: g·f(x))")
    print(f"{'model':<15} {'group':<16} {'output':<11} {'method':<20} {'before':>9} {'after':>9} {'time':>7}")
    for label, model, x, group, output, options in cases:
        options = dict(options)
        method = options.pop("method", "group_averaging")
        the_group = symwrap.get_group(group, **options.pop("group_options", {}))
        before = symwrap.check(model, the_group, x, output)
        wrapped = symwrap.wrap(model, the_group, method, output=output, **options)
        start = time.perf_counter()
        after = symwrap.check(wrapped, the_group, x, output)
        seconds = time.perf_counter() - start
        rows.append((label, the_group.name, before.max_error, after.max_error))
        if method == "monte_carlo":
            method = f"monte_carlo k={options['samples']}"
        print(
            f"{label:<15} {the_group.name:<16} {output:<11} {method:<20} {before.max_error:9.2e} {after.max_error:9.2e}"
            f" {seconds:6.2f}s"
        )
    print("Exact groups reach float32 round-off; monte_carlo on a continuous group shrinks like 1/sqrt(samples).")
    return rows
