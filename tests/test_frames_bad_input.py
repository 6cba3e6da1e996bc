"""Every bad input named in the frame averaging / canonicalization issue: error type and message asserted."""

from __future__ import annotations

import pytest
import torch

import symwrap
from symwrap.errors import ConfigError, InputLayoutError
from symwrap.frames.base import all_finite
from tests.conftest import PointMLP, SmallCNN
from tests.test_frame_averaging import PointNet, SetMLP

POINT_METHODS = ["frame_averaging", "canonicalization"]


@pytest.mark.parametrize("method", POINT_METHODS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_clouds_with_nan_or_inf_coordinates(method: str, bad: float) -> None:
    x = torch.randn(3, 6, 3)
    x[1, 4, 2] = bad
    with pytest.raises(
        InputLayoutError, match=r"point cloud 1 has a NaN or inf coordinate \(point 4\).*Remove or repair"
    ):
        symwrap.wrap(PointMLP(), "o3", method)(x)


@pytest.mark.parametrize("method", POINT_METHODS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_sets_with_nan_or_inf_entries(method: str, bad: float) -> None:
    x = torch.randn(2, 6, 3)
    x[1, 3, 0] = bad
    with pytest.raises(InputLayoutError, match=r"with group 'perm' cannot sort entries with NaN or inf values"):
        symwrap.wrap(SetMLP(), "perm", method)(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), None])
def test_all_finite_finds_every_non_finite_value(dtype: torch.dtype, bad: float | None) -> None:
    x = torch.randn(3, 50, 3).to(dtype)
    if bad is not None:
        x[2, 49, 1] = bad
    assert all_finite(x) is (bad is None)
    assert all_finite(x[:0]) is True


@pytest.mark.parametrize("method", POINT_METHODS)
def test_fewer_points_than_dimensions(method: str) -> None:
    with pytest.raises(InputLayoutError, match=r"needs at least 3 points per cloud.*cloud 0 has 2.*N >= 3"):
        symwrap.wrap(PointMLP(points=2), "se3", method)(torch.randn(2, 2, 3))


def test_fewer_real_points_than_dimensions_under_a_mask() -> None:
    mask = torch.tensor([[True] * 6, [True, True] + [False] * 4])
    with pytest.raises(InputLayoutError, match="cloud 1 has 2"):
        symwrap.wrap(PointNet(), "o3", "frame_averaging", mask="mask")(torch.randn(2, 6, 3), mask=mask)


@pytest.mark.parametrize("method", POINT_METHODS)
def test_wrong_last_axis_size_for_the_group(method: str) -> None:
    with pytest.raises(InputLayoutError, match=r"group 'o3'.*\(2, 6, 4\).*last axis must hold the 3 coordinates"):
        symwrap.wrap(PointMLP(dim=4), "o3", method)(torch.randn(2, 6, 4))
    # the method's own check, when it is used directly
    with pytest.raises(InputLayoutError, match=r"needs point clouds \(B, N, 3\).*\(2, 6, 4\)"):
        symwrap.get_method(method).plan(torch.randn(2, 6, 4), symwrap.get_group("o3"))


def test_learned_canonicalizer_for_a_continuous_group_needs_a_discretization() -> None:
    with pytest.raises(ConfigError, match=r"group 'so2' is continuous\. Pass discretization=N"):
        symwrap.wrap(SmallCNN(), "so2", "canonicalization")
    with pytest.raises(ConfigError, match=r"group 'o2' is continuous"):
        symwrap.wrap(SmallCNN(), "o2", "canonicalization", canonicalizer="learned")


def test_canonicalizer_that_does_not_fit_the_group() -> None:
    with pytest.raises(ConfigError, match=r"'learned' does not apply to group 'shift'; use canonicalizer='shift'"):
        symwrap.wrap(SmallCNN(), "shift", "canonicalization", canonicalizer="learned")
    with pytest.raises(ConfigError, match=r"invalid option 'canonicalizer': use one of auto, learned"):
        symwrap.wrap(SmallCNN(), "rot90", "canonicalization", canonicalizer="magic")


def test_frame_averaging_for_a_group_without_frames() -> None:
    with pytest.raises(ConfigError, match=r"not for group 'so2'.*method='monte_carlo'"):
        symwrap.wrap(SmallCNN(), "so2", "frame_averaging")


@pytest.mark.parametrize(
    ("model", "group", "x", "mask", "shape"),
    [
        (PointNet(), "o3", torch.randn(2, 6, 3), torch.ones(2, 5, dtype=torch.bool), r"\(2, 5\).*\(2, 6\)"),
        (PointNet(), "e3", torch.randn(2, 6, 3), torch.ones(6, dtype=torch.bool), r"\(6,\).*\(2, 6\)"),
        (SetMLP(), "perm", torch.randn(2, 6, 3), torch.ones(2, 6, 1, dtype=torch.bool), r"\(2, 6, 1\).*\(2, 6\)"),
    ],
)
def test_masks_whose_shape_does_not_match(model, group: str, x, mask, shape: str) -> None:
    for method in POINT_METHODS:
        with pytest.raises(InputLayoutError, match=f"padding mask has shape {shape}.*True = real point"):
            symwrap.wrap(model, group, method, mask="mask")(x, mask=mask)


def test_mask_that_is_not_boolean_or_not_passed() -> None:
    x = torch.randn(2, 6, 3)
    with pytest.raises(InputLayoutError, match=r"must be boolean \(or 0/1 integers\), got dtype torch.float32"):
        symwrap.wrap(PointNet(), "o3", "frame_averaging", mask="mask")(x, mask=torch.rand(2, 6))
    with pytest.raises(InputLayoutError, match=r"mask='mask' names no argument of this call"):
        symwrap.wrap(PointNet(), "o3", "frame_averaging", mask="mask")(x)


def test_invalid_frame_options_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"invalid option 'degenerate': use one of enlarge, warn, error"):
        symwrap.wrap(PointNet(), "o3", "frame_averaging", degenerate="ignore")
    with pytest.raises(ConfigError, match=r"invalid option 'gap'"):
        symwrap.wrap(PointNet(), "o3", "frame_averaging", gap=2.0)
    with pytest.raises(ConfigError, match=r"invalid option 'sort_by': feature index 7 is out of range"):
        symwrap.wrap(SetMLP(), "perm", "frame_averaging", sort_by=[7])(torch.randn(2, 6, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_all_finite_holds_for_the_largest_finite_values_of_both_signs(dtype: torch.dtype) -> None:
    biggest = torch.finfo(dtype).max
    x = torch.tensor([[[-biggest, 0.0, biggest]]], dtype=dtype)  # their difference overflows, they do not
    assert all_finite(x) is True
    x[0, 0, 1] = float("inf")
    assert all_finite(x) is False
