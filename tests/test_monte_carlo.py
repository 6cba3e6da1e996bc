"""Monte-Carlo averaging over continuous groups: unbiased, error ~ 1/sqrt(k), honest standard errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

import symwrap
from tests.conftest import PointMLP, smooth_disk_image


def _image_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 5, padding=2), torch.nn.Tanh(), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten()
    ).eval()


CASES = {
    "so2": (_image_model, lambda: smooth_disk_image(17, batch=2)[0]),
    "o3": (lambda: PointMLP(points=6, dim=3), lambda: torch.randn(2, 6, 3)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_monte_carlo_error_shrinks_like_one_over_sqrt_k(name: str) -> None:
    make_model, make_x = CASES[name]
    model, x = make_model().eval(), make_x()
    group = symwrap.get_group(name)
    moved_x = group.default_action().apply(x, torch.arange(2), group.sample(2, torch.Generator().manual_seed(9)), group)
    ks = [4, 16, 64, 256]
    errors = []
    with torch.no_grad():
        for k in ks:
            # invariance error |f_k(g·x) - f_k(x)| with independent draws, averaged over 12 seeds
            trials = []
            for seed in range(12):
                a = symwrap.wrap(model, name, "monte_carlo", samples=k, seed=seed, chunk_size=None)(x)
                b = symwrap.wrap(model, name, "monte_carlo", samples=k, seed=1000 + seed, chunk_size=None)(moved_x)
                trials.append((a - b).pow(2).mean())
            errors.append(torch.stack(trials).mean().sqrt().item())
    slope = (math.log(errors[-1]) - math.log(errors[0])) / (math.log(ks[-1]) - math.log(ks[0]))
    assert -0.65 <= slope <= -0.35, f"error should shrink like k^-1/2; slope {slope:.2f}, errors {errors}"
    assert errors[-1] < errors[0] / 4


@pytest.mark.parametrize("name", list(CASES))
def test_standard_error_matches_the_spread_across_seeds(name: str) -> None:
    make_model, make_x = CASES[name]
    model, x = make_model().eval(), make_x()
    k = 32
    with torch.no_grad():
        runs = [symwrap.wrap(model, name, "monte_carlo", samples=k, seed=s, return_stderr=True)(x) for s in range(40)]
    assert all(isinstance(r, symwrap.SymmetrizedOutput) for r in runs)
    outputs = torch.stack([r.output for r in runs])
    observed = outputs.std(0).mean()
    reported = torch.stack([r.stderr for r in runs]).mean()
    assert 0.7 <= float(reported / observed) <= 1.4, (float(reported), float(observed))


def test_seed_makes_calls_reproducible_and_none_draws_fresh() -> None:
    model, x = PointMLP().eval(), torch.randn(2, 6, 3)
    seeded = symwrap.wrap(model, "o3", "monte_carlo", samples=8, seed=3)
    assert torch.equal(seeded(x), seeded(x))
    fresh = symwrap.wrap(model, "o3", "monte_carlo", samples=8)
    assert not torch.equal(fresh(x), fresh(x))


def test_euclidean_monte_carlo_is_exactly_translation_invariant() -> None:
    model, x = PointMLP().eval(), torch.randn(2, 6, 3)
    wrapped = symwrap.wrap(model, "e3", "monte_carlo", samples=16, seed=0)
    assert_close(wrapped(x + torch.tensor([3.0, -1.0, 2.0])), wrapped(x), rtol=1e-5, atol=1e-5)


def test_monte_carlo_on_a_finite_group_samples_its_elements(images: torch.Tensor) -> None:
    from tests.conftest import SmallCNN

    model = SmallCNN().eval()
    wrapped = symwrap.wrap(model, "d4", "monte_carlo", samples=64, seed=0, return_stderr=True)
    result = wrapped(images)
    exact = symwrap.wrap(model, "d4")(images)
    assert ((result.output - exact).abs() <= 5 * result.stderr + 1e-6).all()


def test_gradients_flow_through_monte_carlo() -> None:
    model = PointMLP().train()
    x = torch.randn(2, 6, 3, requires_grad=True)
    symwrap.wrap(model, "so3", "monte_carlo", samples=4).forward(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
