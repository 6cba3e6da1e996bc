"""One wrapped model called from 4 threads (as a threaded server does), cold then warm, for every method and the
adapters that capture features: every result equals a serial call, and no call raises.

Inputs mix batch sizes and image sizes, so threads plan and capture different layouts at the same time. Most cases
fix the chunk size (``None`` or an int) to test the method; ``"group_averaging auto"`` shares one learning tuner
between the threads, with a clock that advances on every reading (no wall clock), so it keeps exploring chunk sizes
while threads call it: the engine decides one call at a time (a lock), and a chunk size never changes a result
beyond rounding. The λ-nets get random last layers: an untrained λ is constant, and a feature captured from another
thread's forward would then change nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import symwrap
from symwrap.adapters.torch import TorchAdapter
from tests.conftest import PointMLP
from tests.thread_helpers import threaded_mismatches

pytestmark = pytest.mark.slow

CALLS = 400  # 4 threads × 100 calls per round; two rounds (cold, warm)


class PoolCNN(nn.Module):
    """Takes any image size; not invariant (strided conv, position-dependent pooled head)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2))
        self.head = nn.Linear(8 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(torch.relu(self.features(x)), 2).flatten(1))


@pytest.fixture(autouse=True)
def _one_intra_op_thread() -> Iterator[None]:
    """4 Python threads on a 2-core machine: torch's own intra-op threads on top would only oversubscribe it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _images(calls: int = CALLS, sizes: tuple[int, ...] = (8, 11)) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    shapes = [(b, s) for b in (1, 2, 3, 5) for s in sizes]
    return [
        torch.randn(shapes[i % len(shapes)][0], 3, *(shapes[i % len(shapes)][1],) * 2, generator=generator)
        for i in range(calls)
    ]


def _clouds(calls: int = CALLS) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return [torch.randn((1, 2, 3, 5)[i % 4], 6, 3, generator=generator) for i in range(calls)]


def _random_lambda(wrapped: symwrap.SymmetrizedModel) -> symwrap.SymmetrizedModel:
    torch.nn.init.normal_(wrapped.method.lambda_net.last.weight, std=1.0)
    return wrapped


def _feature_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _adapter_features() -> symwrap.SymmetrizedModel:
    model = PoolCNN()
    adapter = TorchAdapter(model, features="features")
    return _random_lambda(
        symwrap.wrap(model, "rot90", "lambda_equitune", adapter=adapter, feature_dim=8, chunk_size=None)
    )


def _auto_with_counting_clock() -> symwrap.SymmetrizedModel:
    """``chunk_size="auto"`` whose clock reads 1 ms more at every reading: every timed call costs the same, so the
    tuner explores its candidates on the threads' calls (and the memory meter runs on first calls)."""
    wrapped = symwrap.wrap(PoolCNN().eval(), "d4")
    readings = itertools.count()
    wrapped.engine.tuner.clock = lambda: next(readings) * 1e-3
    return wrapped


CASES: dict[str, tuple[Callable[[], symwrap.SymmetrizedModel], Callable[[], list[Any]]]] = {
    "group_averaging": (lambda: symwrap.wrap(PoolCNN().eval(), "d4", chunk_size=None), _images),
    "group_averaging chunked": (lambda: symwrap.wrap(PoolCNN().eval(), "d4", chunk_size=16), _images),
    "group_averaging auto": (_auto_with_counting_clock, _images),
    "equizero": (lambda: symwrap.wrap(PoolCNN().eval(), "d4", "equizero", chunk_size=None), _images),
    "lambda_equitune features=": (
        lambda: _random_lambda(
            symwrap.wrap(PoolCNN(), "rot90", "lambda_equitune", features="features", feature_dim=8, chunk_size=None)
        ),
        _images,
    ),
    "lambda_equitune feature_model=": (
        lambda: _random_lambda(
            symwrap.wrap(
                PoolCNN(), "rot90", "lambda_equitune", feature_model=_feature_model(), feature_dim=6, chunk_size=5
            )
        ),
        _images,
    ),
    "lambda_equitune torch adapter features=": (_adapter_features, _images),
    "frame_averaging (points)": (
        lambda: symwrap.wrap(PointMLP().eval(), "o3", "frame_averaging", chunk_size=None),
        _clouds,
    ),
    "canonicalization (learned)": (
        lambda: symwrap.wrap(PoolCNN().eval(), "d4", "canonicalization", chunk_size=None),
        _images,
    ),
    "canonicalization (points)": (
        lambda: symwrap.wrap(PointMLP().eval(), "o3", "canonicalization", chunk_size=None),
        _clouds,
    ),
    "monte_carlo": (
        lambda: symwrap.wrap(PointMLP().eval(), "so3", "monte_carlo", samples=6, seed=0, chunk_size=None),
        _clouds,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.filterwarnings("ignore::symwrap.frames.base.DegenerateFrameWarning")  # the same output in every thread
def test_threads_give_the_serial_results(case: str) -> None:
    build, inputs = CASES[case]
    report = threaded_mismatches(build(), inputs())
    assert report.calls == 2 * CALLS
    assert (report.wrong, report.raised) == (0, 0), (report.worst, report.errors)


def _vit_lambda() -> symwrap.SymmetrizedModel:
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        image_size=16,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    )
    model = transformers.ViTForImageClassification(config).eval()
    return _random_lambda(symwrap.wrap(model, "rot90", "lambda_equitune", feature_dim=16, chunk_size=None))


def _timm_lambda() -> symwrap.SymmetrizedModel:
    timm = pytest.importorskip("timm")
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3).eval()
    dim = model.num_features
    return _random_lambda(symwrap.wrap(model, "rot90", "lambda_equitune", feature_dim=dim, chunk_size=None))


@pytest.mark.parametrize("build", [_vit_lambda, _timm_lambda], ids=["transformers ViT", "timm"])
def test_threads_through_backbone_adapters(build: Callable[[], symwrap.SymmetrizedModel]) -> None:
    wrapped = build()
    report = threaded_mismatches(wrapped, _images(sizes=(16,)), output=lambda out: getattr(out, "logits", out))
    assert report.calls == 2 * CALLS
    assert (report.wrong, report.raised) == (0, 0), (report.worst, report.errors)
