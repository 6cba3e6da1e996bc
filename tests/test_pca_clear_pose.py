"""``PCAFrame.clear_canonical``: the canonical pose with fewer steps, exactly ``canonical``'s elements, and ``None``
for every cloud ``canonical`` would warn about, refuse or that is not finite (the fast path then plans in full)."""

from __future__ import annotations

import warnings

import pytest
import torch

from symwrap.frames.base import DegenerateInputError
from symwrap.frames.pca import PCAFrame, pca

GROUPS = {"o3": (False, False), "so3": (True, False), "e3": (False, True), "se3": (True, True)}


def _frame(group: str, gap: float = 1e-3, degenerate: str = "error") -> PCAFrame:
    special, translation = GROUPS[group]
    return PCAFrame(3, special=special, translation=translation, gap=gap, degenerate=degenerate)


def _clouds(batch: int, points: int = 12, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, points, 3, generator=generator) * torch.tensor([3.0, 1.5, 0.5]) + 2.0


@pytest.mark.parametrize("group", list(GROUPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("scale", [1e-20, 1.0, 1e20])
def test_a_clear_pose_is_canonical_s_pose_exactly(group: str, dtype: torch.dtype, scale: float) -> None:
    frame = _frame(group)
    x = (_clouds(5) * scale).to(dtype)
    clear = frame.clear_canonical(x)
    assert clear is not None, "well separated axes and skewed clouds pass every test"
    assert clear.dtype == dtype
    assert torch.equal(clear, frame.canonical(x))


def _octahedron() -> torch.Tensor:
    return torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda x: x.index_fill_(1, torch.tensor([3]), float("nan")), id="nan"),
        pytest.param(lambda x: x.index_fill_(1, torch.tensor([0]), float("inf")), id="inf"),
        pytest.param(lambda x: x.index_fill_(1, torch.tensor([5]), -float("inf")), id="-inf"),
        pytest.param(lambda x: x.zero_(), id="all-zero"),
        pytest.param(lambda x: x.fill_(3.0), id="one-point-repeated"),
        pytest.param(lambda x: x.copy_(_octahedron().repeat(1, 2, 1)), id="isotropic"),
        pytest.param(lambda x: x.copy_(torch.cat([x[:, :6], -x[:, :6]], dim=1)), id="point-symmetric"),
    ],
)
def test_a_cloud_canonical_would_not_pass_quietly_gets_none(make: object) -> None:
    frame = _frame("o3")
    x = _clouds(3)
    make(x[1:2])  # type: ignore[operator]
    assert frame.clear_canonical(x) is None


def _relative_tests(x: torch.Tensor, special: bool) -> torch.Tensor:
    """The smallest of each cloud's relative eigen-gaps and relative third moments ``(B,)`` (what ``gap`` is
    compared with)."""
    p = pca(x)
    cubes = (p.centred @ p.eigenvectors).pow(3)
    moments = cubes.sum(dim=1).abs() / cubes.abs().sum(dim=1)
    moments = moments[:, :-1] if special else moments
    return torch.cat([p.relative_gaps(), moments], dim=1).amin(dim=1)


@pytest.mark.parametrize("group", list(GROUPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_cloud_near_the_gap_is_left_to_canonical_whenever_canonical_would_flag_it(
    group: str, dtype: torch.dtype
) -> None:
    """``gap`` set around each cloud's own smallest relative test, on both sides and within rounding of it: wherever
    ``canonical`` flags the cloud, ``clear_canonical`` says ``None``; wherever it gives a pose, it is canonical's."""
    special = GROUPS[group][0]
    passed = flagged = 0
    for seed in range(40):
        x = _clouds(1, points=8, seed=seed).to(dtype)
        closest = float(_relative_tests(x, special)[0])
        for factor in (0.5, 0.99, 1 - 1e-6, 1.0, 1 + 1e-6, 1.001, 1.01, 2.0):
            frame = _frame(group, gap=closest * factor)
            try:
                expected = frame.canonical(x)
            except DegenerateInputError:
                expected = None
            clear = frame.clear_canonical(x)
            if expected is None:
                flagged += 1
                assert clear is None, f"seed {seed}, gap {closest * factor:.6g}: canonical flags it"
            elif clear is not None:
                passed += 1
                assert torch.equal(clear, expected)
    assert passed > 0 and flagged > 0, "the sweep reaches both sides of the tests"


def test_a_user_gap_of_zero_is_served_and_only_exact_ties_are_flagged_by_canonical() -> None:
    frame = _frame("o3", gap=0.0)
    x = _clouds(4)
    clear = frame.clear_canonical(x)
    assert clear is not None and torch.equal(clear, frame.canonical(x))


def test_clear_canonical_never_warns() -> None:
    frame = _frame("o3", degenerate="warn")
    x = _octahedron()[None].repeat(2, 2, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert frame.clear_canonical(x) is None


def test_a_clear_pose_of_clouds_that_need_a_gradient_passes_it_as_canonical_does() -> None:
    frame = _frame("se3")
    x = _clouds(2).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "converting a tensor that requires grad to a scalar"
        clear = frame.clear_canonical(x)
    assert clear is not None
    (grad,) = torch.autograd.grad(clear.square().sum(), x)
    (expected,) = torch.autograd.grad(frame.canonical(x).square().sum(), x)
    assert torch.equal(grad, expected)


@pytest.mark.parametrize("group", ["so3", "se3"])
def test_forces_through_a_special_canonical_pose_are_equivariant(group: str) -> None:
    """``-∂E/∂x`` of an energy made invariant by the SO(3)/SE(3) pose (the sign fixed by the determinant is set in
    place, on signs that carry no gradient): rotating the cloud rotates the forces."""
    import symwrap
    from symwrap.groups import haar_orthogonal
    from tests.conftest import PointMLP

    torch.manual_seed(0)
    wrapped = symwrap.wrap(PointMLP(), group, "canonicalization")
    x = torch.randn(2, 6, 3).exp() * torch.tensor([3.0, 2.0, 1.0])
    rotation = haar_orthogonal(1, 3, special=True, generator=torch.Generator().manual_seed(2))[0].float()

    def forces(points: torch.Tensor) -> torch.Tensor:
        points = points.clone().requires_grad_()
        (grad,) = torch.autograd.grad(wrapped(points)[:, 0].sum(), points)
        return -grad

    for _ in range(2):  # the general path, then the fast path
        torch.testing.assert_close(forces(x @ rotation.T), forces(x) @ rotation.T, rtol=1e-4, atol=1e-4)
