"""Mixed precision: the base model's forwards run under the caller's autocast, symwrap's arithmetic in float32.

Tolerances (the README's "Mixed precision and torch.compile" section lists the measured values,
``python benchmarks/autocast_errors.py``): the autocast output differs from the float32 output by the
low-precision forwards only, ``max|y_autocast - y_fp32| / max|y_fp32|`` ≤ 3e-2 for bfloat16 and 4e-3 for
float16. Invariance/equivariance under autocast stays exact (float32 rounding) for groups that move data
exactly (rot90, d4): the orbit of a transformed input is the same set of bit-identical copies.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

import symwrap
from tests.conftest import DenseCNN, PointMLP, SmallCNN

DTYPES = [torch.bfloat16, torch.float16]
#: Relative tolerance (max abs error / max abs fp32 output) of an autocast run against the float32 run.
TOLERANCE = {torch.bfloat16: 3e-2, torch.float16: 4e-3}

IMAGE_METHODS: dict[str, dict[str, Any]] = {
    "group_averaging": {},
    "monte_carlo": {"samples": 6, "seed": 0},
    "equizero": {},
    "lambda_equitune": {"features": "features"},
    "canonicalization": {},
}


def _relative_error(y: Tensor, reference: Tensor) -> float:
    return float((y.float() - reference).abs().max() / reference.abs().max())


def _image_model(method: str) -> nn.Module:
    return symwrap.wrap(SmallCNN().eval(), "d4", method, chunk_size=None, **IMAGE_METHODS[method])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("method", list(IMAGE_METHODS))
def test_autocast_matches_float32_images(method: str, dtype: torch.dtype, images: Tensor) -> None:
    model = _image_model(method)
    with torch.no_grad():
        reference = model(images)
        with torch.autocast("cpu", dtype=dtype):
            low = model(images)
    assert low.dtype == torch.float32  # the reduce runs in float32
    error = _relative_error(low, reference)
    assert 0 < error <= TOLERANCE[dtype]  # > 0: the forwards really ran in low precision


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("method", ["frame_averaging", "canonicalization"])
def test_autocast_matches_float32_point_clouds(method: str, dtype: torch.dtype) -> None:
    model = symwrap.wrap(PointMLP().eval(), "o3", method, chunk_size=None)
    clouds = torch.randn(32, 6, 3)
    with torch.no_grad():
        reference = model(clouds)
        with torch.autocast("cpu", dtype=dtype):
            low = model(clouds)
    assert low.dtype == torch.float32
    assert 0 < _relative_error(low, reference) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("method", ["group_averaging", "equizero", "lambda_equitune", "canonicalization"])
def test_invariance_under_autocast_is_exact(method: str, dtype: torch.dtype, images: Tensor) -> None:
    model = _image_model(method)
    turned = torch.rot90(images, 1, dims=(-2, -1)).flip(-1)  # an element of d4
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        torch.testing.assert_close(model(turned), model(images), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_equivariance_under_autocast_is_exact(dtype: torch.dtype, images: Tensor) -> None:
    model = symwrap.wrap(DenseCNN().eval(), "d4", output="equivariant", chunk_size=None)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        out = model(images)
        turned = model(torch.rot90(images, 1, dims=(-2, -1)))
    assert out.dtype == torch.float32
    torch.testing.assert_close(turned, torch.rot90(out, 1, dims=(-2, -1)), rtol=1e-6, atol=1e-6)


class _Bfloat16Corner(nn.Module):
    """Returns a corner of the image rounded to bfloat16 (no arithmetic, so each copy's output is exact)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen_autocast: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen_autocast.append(torch.is_autocast_enabled("cpu"))
        return x[:, 0, 0, :4].to(torch.bfloat16)


def test_reduce_sums_in_float32() -> None:
    base = _Bfloat16Corner()
    model = symwrap.wrap(base, "rot90", chunk_size=None)
    x = torch.randn(5, 1, 6, 6) * 100
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert base.seen_autocast and all(base.seen_autocast)  # the base model ran under the caller's autocast
    copies = torch.stack([torch.rot90(x, k, dims=(-2, -1))[:, 0, 0, :4].to(torch.bfloat16) for k in range(4)])
    expected = copies.float().mean(dim=0)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    assert not torch.equal(copies.mean(dim=0).float(), expected)  # a bfloat16 mean would differ


def test_symwrap_arithmetic_runs_outside_autocast(images: Tensor) -> None:
    seen: dict[str, bool] = {}

    def proxy(outputs: Tensor) -> Tensor:
        seen["proxy"] = torch.is_autocast_enabled("cpu")
        seen["proxy_float32"] = outputs.float().dtype == torch.float32
        return -outputs.amax(dim=-1)

    model = symwrap.wrap(SmallCNN().eval(), "rot90", "equizero", proxy=proxy, chunk_size=None)
    base_forward = model.base_model.forward

    def forward(x: Tensor) -> Tensor:
        seen["model"] = torch.is_autocast_enabled("cpu")
        return base_forward(x)

    model.base_model.forward = forward  # type: ignore[method-assign]
    plan = model.method.plan_for_call

    def plan_for_call(call: Any, group: Any) -> Any:
        seen["plan"] = torch.is_autocast_enabled("cpu")
        return plan(call, group)

    model.method.plan_for_call = plan_for_call  # type: ignore[method-assign]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(images)
        assert torch.is_autocast_enabled("cpu")  # the caller's autocast is back after the call
    assert seen == {"model": True, "plan": False, "proxy": False, "proxy_float32": True}


def test_lambda_net_runs_in_float32(images: Tensor) -> None:
    model = symwrap.wrap(
        SmallCNN().eval(), "rot90", "lambda_equitune", features="features", feature_dim=8, chunk_size=None
    )
    dtypes: list[torch.dtype] = []
    model.method.lambda_net.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(images)
    assert dtypes == [torch.float32]


def test_autocast_off_is_unchanged(images: Tensor) -> None:
    model = _image_model("group_averaging")
    with torch.no_grad():
        plain = model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
            disabled = model(images)
    torch.testing.assert_close(disabled, plain, rtol=0, atol=0)
