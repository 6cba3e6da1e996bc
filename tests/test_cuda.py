"""On a CUDA device: exactness, the fast path, autocast, compile and no host-device synchronisation.

Every test here is marked ``gpu`` and skips without CUDA (``conftest.py``); CI has no GPU, so these run where one is
lent (the README's "GPU" section records the run). The models are the CPU tests' non-invariant ones, moved to the GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

import symwrap
from symwrap.fast_path import FastPath
from tests.conftest import DenseCNN, PointMLP, SmallCNN

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda")

#: Every exact method for an image group, with the options that make it run on a small CNN.
IMAGE_METHODS: list[tuple[str, dict[str, Any]]] = [
    ("group_averaging", {}),
    ("equizero", {}),
    ("lambda_equitune", {"features": "features"}),
    ("frame_averaging", {}),
    ("canonicalization", {}),
]
OPTIONS = {**dict(IMAGE_METHODS), "monte_carlo": {"samples": 5, "seed": 0}}  # seeded draws: not exact, but static
#: Methods whose steady-state call of a known shape takes the fast path (symwrap.fast_path).
STATIC = ["group_averaging", "equizero", "lambda_equitune", "frame_averaging", "monte_carlo"]
#: Relative autocast tolerance, as on the CPU (tests/test_autocast.py).
TOLERANCE = {torch.bfloat16: 3e-2, torch.float16: 4e-3}


@pytest.fixture(autouse=True)
def _deterministic() -> Iterator[None]:
    """cuDNN picks one algorithm per shape, so that repeated calls are comparable bit for bit."""
    before = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


def d4_images(x: Tensor) -> list[Tensor]:
    rotations = [torch.rot90(x, k, (-2, -1)) for k in range(4)]
    return rotations + [torch.flip(r, dims=[-1]) for r in rotations]


def _wrap(method: str, options: dict[str, Any], **extra: Any) -> symwrap.SymmetrizedModel:
    torch.manual_seed(0)
    return symwrap.wrap(SmallCNN(8).eval().to(CUDA), "d4", method, **options, **extra).eval().to(CUDA)


@pytest.mark.parametrize(("method", "options"), IMAGE_METHODS, ids=[m for m, _ in IMAGE_METHODS])
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_image_methods_are_exactly_invariant_on_cuda(method: str, options: dict, chunk_size: int | None) -> None:
    wrapped = _wrap(method, options, chunk_size=chunk_size)
    x = torch.randn(3, 3, 8, 8, device=CUDA)
    with torch.no_grad():
        base = wrapped.base_model
        assert not torch.allclose(base(x), base(torch.rot90(x, 1, (-2, -1))), atol=1e-3)  # not invariant alone
        reference = wrapped(x)
        assert reference.device.type == "cuda"
        for moved in d4_images(x)[1:]:
            assert_close(wrapped(moved), reference, rtol=1e-5, atol=1e-5)


def test_equivariant_output_on_cuda() -> None:
    torch.manual_seed(0)
    wrapped = symwrap.wrap(DenseCNN(8).eval().to(CUDA), "c4", output="equivariant", chunk_size=None)
    x = torch.randn(2, 3, 8, 8, device=CUDA)
    with torch.no_grad():
        y = wrapped(x)
        for k in range(1, 4):
            assert_close(wrapped(torch.rot90(x, k, (-2, -1))), torch.rot90(y, k, (-2, -1)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["frame_averaging", "canonicalization"])
def test_point_cloud_frames_are_exactly_invariant_on_cuda(method: str) -> None:
    torch.manual_seed(0)
    wrapped = symwrap.wrap(PointMLP().eval().to(CUDA), "o3", method, chunk_size=None)
    clouds = torch.randn(4, 6, 3, device=CUDA) * torch.tensor([3.0, 2.0, 1.0], device=CUDA)
    orthogonal = torch.linalg.qr(torch.randn(3, 3, device=CUDA))[0]  # a rotation or a reflection
    with torch.no_grad():
        assert not torch.allclose(wrapped.base_model(clouds @ orthogonal.T), wrapped.base_model(clouds), atol=1e-3)
        reference = wrapped(clouds)
        moved = wrapped(clouds @ orthogonal.T)
    assert_close(moved, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", STATIC)
@pytest.mark.parametrize("batch", [1, 8])
def test_fast_path_repeats_the_general_path_exactly_on_cuda(method: str, batch: int) -> None:
    wrapped = _wrap(method, OPTIONS[method], chunk_size=None)
    x = torch.randn(batch, 3, 8, 8, device=CUDA)
    with torch.no_grad():
        general = wrapped(x)
        assert isinstance(wrapped.engine.fast_paths.get((x.shape, x.dtype, x.device)), FastPath)
        fast = wrapped(x)
    assert_close(fast, general, rtol=0, atol=0)


@pytest.mark.parametrize("method", STATIC)
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_steady_state_calls_never_synchronise_with_the_host(method: str, chunk_size: int | None) -> None:
    """A host-device sync (``.item()``, ``bool(tensor)``, ``nonzero``) in the hot path would stall the CPU until
    the GPU drains, so the next call's kernels could not be queued behind the running ones. The fast path
    (``chunk_size=None``) and the general chunked path (``4``) must queue everything without one."""
    wrapped = _wrap(method, OPTIONS[method], chunk_size=chunk_size)
    x = torch.randn(8, 3, 8, 8, device=CUDA)
    with torch.no_grad():
        wrapped(x)  # first call of the shape: plans and learns (may synchronise)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            y = wrapped(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert y.shape[0] == 8


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize(("method", "options"), IMAGE_METHODS, ids=[m for m, _ in IMAGE_METHODS])
def test_autocast_matches_float32_on_cuda(method: str, options: dict, dtype: torch.dtype) -> None:
    wrapped = _wrap(method, options, chunk_size=None)
    x = torch.randn(3, 3, 8, 8, device=CUDA)
    with torch.no_grad():
        reference = wrapped(x)
        with torch.autocast("cuda", dtype=dtype):
            low = wrapped(x)
            again = wrapped(x)  # the fast path, where the method has one
            moved = wrapped(torch.rot90(x, 1, (-2, -1)))
    assert low.dtype == torch.float32  # the reduce runs in float32
    error = float((low - reference).abs().max() / reference.abs().max())
    assert 0 < error <= TOLERANCE[dtype]
    assert_close(again, low, rtol=0, atol=0)
    assert_close(moved, low, rtol=1e-5, atol=1e-5)  # exact d4 moves: the same copies, float32 sums


def test_half_model_on_cuda_group_averaging() -> None:
    torch.manual_seed(0)
    wrapped = symwrap.wrap(SmallCNN(8).eval().to(CUDA).half(), "d4", chunk_size=None)
    x = torch.randn(2, 3, 8, 8, device=CUDA, dtype=torch.half)
    with torch.no_grad():
        y = wrapped(x)
        moved = wrapped(torch.flip(x, dims=[-1]))
    assert y.device.type == "cuda" and torch.isfinite(y).all()
    assert_close(moved.float(), y.float(), rtol=1e-3, atol=1e-3)  # flips move float16 data exactly


@pytest.mark.slow
@pytest.mark.parametrize("method", ["group_averaging", "lambda_equitune"])
def test_inductor_compiled_matches_eager_on_cuda(method: str) -> None:
    torch._dynamo.reset()
    wrapped = _wrap(method, OPTIONS[method])
    x = torch.randn(4, 3, 8, 8, device=CUDA)
    with torch.no_grad():
        eager = wrapped(x)
        compiled = torch.compile(wrapped)
        out = compiled(x)
        moved = compiled(torch.rot90(x, 1, (-2, -1)))
    torch._dynamo.reset()
    assert_close(out, eager, rtol=1e-4, atol=1e-4)
    assert_close(moved, eager, rtol=1e-4, atol=1e-4)


def test_training_step_on_cuda_reaches_the_learned_parts() -> None:
    wrapped = _wrap("lambda_equitune", {"features": "features"}, chunk_size=None).train()
    x = torch.randn(4, 3, 8, 8, device=CUDA)
    loss = wrapped(x).square().mean()
    loss.backward()
    learned = [p for n, p in wrapped.named_parameters() if not n.startswith("base_model.")]
    assert learned and all(p.grad is not None and p.grad.device.type == "cuda" for p in learned)


def test_input_on_the_wrong_device_gets_a_clear_error() -> None:
    wrapped = _wrap("group_averaging", {}, chunk_size=None)
    with pytest.raises(symwrap.InputLayoutError, match=r"argument 0\) is on cpu .* weights are on cuda:0.*x\.to"):
        wrapped(torch.randn(2, 3, 8, 8))


def test_a_cuda_model_gets_its_learned_canonicalizer_on_cuda_without_moving_the_wrapper() -> None:
    torch.manual_seed(0)
    wrapped = symwrap.wrap(SmallCNN(8).eval().to(CUDA), "d4", "canonicalization")  # no wrapped.to(...)
    assert {p.device.type for p in wrapped.method.parameters()} == {"cuda"}
    with torch.no_grad():
        x = torch.randn(2, 3, 8, 8, device=CUDA)
        assert_close(wrapped(torch.rot90(x, 1, (-2, -1))), wrapped(x), rtol=1e-5, atol=1e-5)
