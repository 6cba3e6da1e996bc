"""A wrapped model is an ordinary torch object: pickle, ``copy.deepcopy`` and ``torch.save(model)`` work before and
after calls (caches are dropped, never pickled as closures) and the copy gives the same outputs; ``state_dict``
loads into a fresh ``wrap()`` of the same options and gives the same outputs.
"""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import symwrap
from tests.conftest import PointMLP

pytestmark = pytest.mark.slow


class PoolCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2))
        self.head = nn.Linear(8 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(torch.relu(self.features(x)), 2).flatten(1))


def _images() -> torch.Tensor:
    return torch.randn(3, 3, 8, 8)


def _clouds() -> torch.Tensor:
    return torch.randn(3, 6, 3)


def _feature_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


#: name -> (wrap a given base model, base model factory, data). A fixed chunk size (2: several chunks): "auto"
#: times forwards, and a copy tunes on its own, which may change float32 rounding.
CASES: dict[str, tuple[Callable[[nn.Module], symwrap.SymmetrizedModel], Callable[[], nn.Module], Callable]] = {
    "group_averaging": (lambda m: symwrap.wrap(m, "d4", chunk_size=2), PoolCNN, _images),
    "equizero": (lambda m: symwrap.wrap(m, "d4", "equizero", chunk_size=2), PoolCNN, _images),
    "lambda_equitune features=": (
        lambda m: symwrap.wrap(m, "rot90", "lambda_equitune", features="features", feature_dim=8, chunk_size=2),
        PoolCNN,
        _images,
    ),
    "lambda_equitune feature_model=": (
        lambda m: symwrap.wrap(
            m, "rot90", "lambda_equitune", feature_model=_feature_model(), feature_dim=6, chunk_size=2
        ),
        PoolCNN,
        _images,
    ),
    "frame_averaging": (lambda m: symwrap.wrap(m, "o3", "frame_averaging", chunk_size=2), PointMLP, _clouds),
    "canonicalization (learned)": (
        lambda m: symwrap.wrap(m, "d4", "canonicalization", chunk_size=None),
        PoolCNN,
        _images,
    ),
    "canonicalization (PCA)": (lambda m: symwrap.wrap(m, "o3", "canonicalization", chunk_size=None), PointMLP, _clouds),
    "monte_carlo": (
        lambda m: symwrap.wrap(m, "so3", "monte_carlo", samples=4, seed=0, chunk_size=2),
        PointMLP,
        _clouds,
    ),
    "equivariant": (
        lambda m: symwrap.wrap(m, "d4", output="equivariant", chunk_size=2),
        lambda: nn.Conv2d(3, 2, 3, padding=1),
        _images,
    ),
}


def _random_learned_parts(wrapped: symwrap.SymmetrizedModel) -> symwrap.SymmetrizedModel:
    """λ-nets start constant (their last layer is zero): give them weights that matter."""
    net = getattr(wrapped.method, "lambda_net", None)
    if net is not None:
        nn.init.normal_(net.last.weight)
    return wrapped.eval()


def _torch_save_roundtrip(model: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)  # the test's own object: full unpickling is what it checks


COPIERS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "pickle": lambda m: pickle.loads(pickle.dumps(m)),
    "deepcopy": copy.deepcopy,
    "torch.save": _torch_save_roundtrip,
}


@pytest.mark.filterwarnings("ignore::symwrap.frames.base.DegenerateFrameWarning")
@pytest.mark.parametrize("copier", list(COPIERS))
@pytest.mark.parametrize("case", list(CASES))
def test_copies_before_and_after_calls_give_the_same_outputs(case: str, copier: str) -> None:
    build, base, data = CASES[case]
    wrapped = _random_learned_parts(build(base()))
    x, y = data(), data()
    cold = COPIERS[copier](wrapped)  # before any call
    expected = wrapped(x)
    wrapped(y)  # the caches (fast path closures, index tables, tuned sizes) now exist
    warm = COPIERS[copier](wrapped)
    for copied in (cold, warm):
        assert type(copied) is type(wrapped) and copied.base_model is not wrapped.base_model
        torch.testing.assert_close(copied(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(copied(x), expected, rtol=0, atol=0)  # its own caches, filled
    torch.testing.assert_close(wrapped(x), expected, rtol=0, atol=0)  # the original is unchanged by copying


def test_a_copy_keeps_its_features_hook_on_its_own_base_model() -> None:
    wrapped = _random_learned_parts(
        symwrap.wrap(PoolCNN(), "rot90", "lambda_equitune", features="features", feature_dim=8)
    )
    x = _images()
    expected = wrapped(x)
    copied = copy.deepcopy(wrapped)
    with torch.no_grad():  # change the original's weights: the copy must not see them through a shared hook
        wrapped.base_model.head.weight.add_(1.0)
    torch.testing.assert_close(copied(x), expected, rtol=0, atol=0)
    assert not torch.allclose(wrapped(x), expected)


@pytest.mark.filterwarnings("ignore::symwrap.frames.base.DegenerateFrameWarning")
@pytest.mark.parametrize("case", list(CASES))
def test_state_dict_loads_into_a_fresh_wrap(case: str) -> None:
    build, base, data = CASES[case]
    torch.manual_seed(1)
    trained = _random_learned_parts(build(base()))
    with torch.no_grad():  # symwrap's own learned parts differ from a fresh wrap's (a canonicalizer's, a λ-net's)
        for parameter in trained.method.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    x = data()
    expected = trained(x)
    torch.manual_seed(2)
    fresh = build(base()).eval()  # other random weights everywhere
    assert set(fresh.state_dict()) == set(trained.state_dict())
    fresh.load_state_dict(trained.state_dict(), strict=True)
    torch.testing.assert_close(fresh(x), expected, rtol=0, atol=0)
