"""The benchmark suite's hand-written floors compute what symwrap computes, so "symwrap ÷ floor" compares like
with like (``benchmarks/suite_floors.py``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch.testing import assert_close

import symwrap
from symwrap.evaluation.digits import DigitsCNN
from tests.test_frame_averaging import PointNet


@pytest.fixture(scope="module")
def floors() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "suite_floors.py"
    spec = importlib.util.spec_from_file_location("suite_floors", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("suite_floors", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def digits() -> DigitsCNN:
    torch.manual_seed(0)
    return DigitsCNN().eval()


@pytest.mark.parametrize("batch", [1, 3])
def test_image_floors_match_symwrap(floors: ModuleType, digits: DigitsCNN, batch: int) -> None:
    x = torch.randn(batch, 1, 8, 8)
    lam = symwrap.wrap(digits, "d4", "lambda_equitune", features="features").eval()
    canon = symwrap.wrap(digits, "d4", "canonicalization", in_channels=1).eval()
    with torch.no_grad():
        lam(x)  # builds the λ-net
        torch.nn.init.normal_(lam.method.lambda_net.mlp[-1].weight)  # a λ that is not constant
        cases = {
            "group_averaging": floors.d4_floor(digits, x),
            "equizero": floors.equizero_floor(digits, x),
            "lambda_equitune": floors.lambda_floor(digits.features, digits.head, x, lambda: lam.method.lambda_net),
            "canonicalization": floors.learned_canonicalization_floor(digits, x, canon.method.canonicalizer),
        }
        for method, floor in cases.items():
            wrapped = {"lambda_equitune": lam, "canonicalization": canon}.get(method)
            wrapped = wrapped or symwrap.wrap(digits, "d4", method).eval()
            assert_close(floor(), wrapped(x), rtol=1e-5, atol=1e-5, msg=method)


@pytest.mark.parametrize("batch", [1, 3])
def test_point_floors_match_symwrap(floors: ModuleType, batch: int) -> None:
    torch.manual_seed(0)
    model = PointNet().eval()
    x = torch.randn(batch, 40, 3).exp() * torch.tensor([3.0, 2.0, 1.0])  # distinct axes, a clear third moment
    with torch.no_grad():
        frames = symwrap.wrap(model, "o3", "frame_averaging")(x)
        for loop in (False, True):
            assert_close(floors.pca_frame_floor(model, x, loop=loop)(), frames, rtol=1e-4, atol=1e-5)
        pose = symwrap.wrap(model, "o3", "canonicalization")(x)
        assert_close(floors.pca_pose_floor(model, x)(), pose, rtol=1e-4, atol=1e-5)
