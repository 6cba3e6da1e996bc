"""symwrap.check: per-element invariance / equivariance errors of any model."""

from __future__ import annotations

import torch

import symwrap
from tests.conftest import DenseCNN, PointMLP, SmallCNN


def test_check_reports_every_element_of_a_finite_group(cnn: SmallCNN, images: torch.Tensor) -> None:
    result = symwrap.check(cnn, "d4", images)
    assert result.errors.shape == (8,) and result.elements.shape == (8, 2, 2)
    assert result.errors[0] == 0  # the identity
    assert bool((result.errors[1:] > 1e-2).all())
    assert result.max_error == float(result.errors.max())
    table = result.table()
    assert "invariant error of output under d4" in table and len(table.splitlines()) == 8 + 3


def test_check_of_an_invariant_model_is_round_off(images: torch.Tensor) -> None:
    pooled = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    assert symwrap.check(pooled, "d4", images).max_error < 1e-6  # 1x1 conv + global pooling is D4-invariant


def test_check_equivariance_of_dense_outputs(dense_cnn: DenseCNN, images: torch.Tensor) -> None:
    conv = torch.nn.Conv2d(3, 2, 1)  # pointwise: equivariant to every pixel permutation
    assert symwrap.check(conv, "d4", images, "equivariant").max_error < 1e-6
    assert symwrap.check(conv, symwrap.get_group("shift", stride=4), images, "equivariant").max_error < 1e-6
    assert symwrap.check(dense_cnn, "d4", images, "equivariant").max_error > 1e-2


def test_check_samples_continuous_groups_with_a_seed() -> None:
    model, x = PointMLP().eval(), torch.randn(2, 6, 3)
    a = symwrap.check(model, "o3", x, samples=5, seed=1)
    b = symwrap.check(model, "o3", x, samples=5, seed=1)
    assert a.errors.shape == (6,) and torch.equal(a.errors, b.errors) and a.errors[0] == 0
    norm = lambda x: x.norm(dim=-1).sum(-1, keepdim=True)  # noqa: E731
    invariant = torch.nn.Module()
    invariant.forward = norm  # type: ignore[method-assign]
    assert symwrap.check(invariant, "o3", x, samples=5).max_error < 1e-5


def test_check_accepts_tuples_and_dicts(images: torch.Tensor) -> None:
    class TwoArgs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cnn = SmallCNN()

        def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            return self.cnn(x) + bias

    model, bias = TwoArgs().eval(), torch.randn(3, 5)
    by_position = symwrap.check(model, "rot90", (images, bias))
    by_name = symwrap.check(model, "rot90", {"x": images, "bias": bias}, input="x")
    assert torch.allclose(by_position.errors, by_name.errors)


def test_quickstart_example_runs() -> None:
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
    before, after = runpy.run_path(str(script))["main"]()
    assert before > 1e-2
    assert after < 1e-5
