"""Every bad input named in the core issue raises a clear error: type and message asserted."""

from __future__ import annotations

import re

import pytest
import torch

import symwrap
from symwrap.errors import ConfigError, IncompatibleModelError, InputLayoutError, UnknownNameError
from tests.conftest import PointMLP, SmallCNN


@pytest.mark.parametrize(
    ("call", "kind", "wrong", "suggestion"),
    [
        (lambda m: symwrap.wrap(m, "rot91"), "group", "rot91", "rot90"),
        (lambda m: symwrap.wrap(m, "rot90", "group_averagin"), "method", "group_averagin", "group_averaging"),
        (lambda m: symwrap.wrap(m, "rot90", adapter="torhc"), "adapter", "torhc", "torch"),
    ],
)
def test_unknown_names_list_close_matches(call, kind: str, wrong: str, suggestion: str, cnn: SmallCNN) -> None:
    with pytest.raises(UnknownNameError) as info:
        call(cnn)
    message = str(info.value)
    assert isinstance(info.value, KeyError)
    assert f"unknown {kind} {wrong!r}" in message
    assert f"Did you mean {suggestion!r}" in message
    assert f"Available {kind}s:" in message


def test_rot90_on_non_square_images_names_group_layout_and_shape(cnn: SmallCNN) -> None:
    wrapped = symwrap.wrap(cnn, "rot90")
    with pytest.raises(InputLayoutError) as info:
        wrapped(torch.randn(2, 3, 16, 12))
    message = str(info.value)
    assert "group 'rot90'" in message and "images (B, ..., H, W)" in message and "(2, 3, 16, 12)" in message
    assert "square" in message and "centre-crop" in message


def test_flip_works_on_non_square_images() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 6, 2))
    out = symwrap.wrap(net, "flip")(torch.randn(2, 3, 8, 6))
    assert out.shape == (2, 2)


def test_point_cloud_group_on_a_4d_tensor() -> None:
    wrapped = symwrap.wrap(PointMLP(), "o3", "monte_carlo")
    with pytest.raises(InputLayoutError) as info:
        wrapped(torch.randn(2, 3, 8, 8))
    message = str(info.value)
    assert "group 'o3'" in message and "point clouds (B, N, d)" in message and "(2, 3, 8, 8)" in message
    assert "reshape the input to (B, N, 3)" in message


def test_point_cloud_with_wrong_coordinate_count() -> None:
    with pytest.raises(InputLayoutError, match="last axis must hold the 3 coordinates, got size 2"):
        symwrap.wrap(PointMLP(dim=2), "so3", "monte_carlo")(torch.randn(2, 6, 2))


def test_image_group_on_a_flat_tensor() -> None:
    with pytest.raises(InputLayoutError, match=r"group 'flip' acts on images .* shape \(4, 10\)"):
        symwrap.wrap(torch.nn.Linear(10, 2), "flip")(torch.randn(4, 10))


@pytest.mark.parametrize("bad", [0, -3, 2.5, "big", True])
def test_invalid_chunk_size(bad: object, cnn: SmallCNN) -> None:
    with pytest.raises(ConfigError) as info:
        symwrap.wrap(cnn, "rot90", chunk_size=bad)
    assert f"'chunk_size': {bad!r}" in str(info.value) and "positive int" in str(info.value)


def test_equivariant_output_the_action_cannot_pull_back(cnn: SmallCNN, images: torch.Tensor) -> None:
    wrapped = symwrap.wrap(cnn, "rot90", output="equivariant")
    with pytest.raises(InputLayoutError) as info:
        wrapped(images)
    message = str(info.value)
    assert "output='equivariant'" in message and "shape (5,) per input" in message and "group 'rot90'" in message
    assert "use output='invariant'" in message.lower()


def test_continuous_group_with_group_averaging(cnn: SmallCNN) -> None:
    with pytest.raises(ConfigError) as info:
        symwrap.wrap(cnn, "so2", "group_averaging")
    message = str(info.value)
    assert "needs a finite group" in message and "'so2' is continuous" in message
    assert "monte_carlo" in message and "frame_averaging" in message


def test_too_large_permutation_group_for_averaging() -> None:
    wrapped = symwrap.wrap(PointMLP(points=10), "perm")
    with pytest.raises(InputLayoutError, match=r"10! elements, too many to list .* method='monte_carlo'"):
        wrapped(torch.randn(2, 10, 3))


def test_unknown_and_invalid_method_options(cnn: SmallCNN) -> None:
    with pytest.raises(ConfigError, match=r"method 'monte_carlo' has no option 'sample'. Did you mean 'samples'\?"):
        symwrap.wrap(cnn, "so2", "monte_carlo", sample=4)
    with pytest.raises(ConfigError, match=r"invalid option 'samples': must be an int >= 1, got 0"):
        symwrap.wrap(cnn, "so2", "monte_carlo", samples=0)
    with pytest.raises(ConfigError, match="method 'group_averaging' has no option 'samples'"):
        symwrap.wrap(cnn, "rot90", samples=4)


def test_invalid_output_and_reduce(cnn: SmallCNN) -> None:
    with pytest.raises(ConfigError, match="invalid option 'output'"):
        symwrap.wrap(cnn, "rot90", output="invarient")
    with pytest.raises(ConfigError, match="invalid option 'reduce': 'prob'"):
        symwrap.wrap(cnn, "rot90", reduce="prob")


def test_input_selector_that_names_no_argument(cnn: SmallCNN, images: torch.Tensor) -> None:
    with pytest.raises(InputLayoutError, match=r"input='pixel_values' does not name an argument .* position 0"):
        symwrap.wrap(cnn, "rot90", input="pixel_values")(images)


def test_select_that_matches_no_output(cnn: SmallCNN, images: torch.Tensor) -> None:
    with pytest.raises(ConfigError, match=r"select='logits' matches no output of the model"):
        symwrap.wrap(cnn, "rot90", select="logits")(images)


def test_model_that_no_adapter_matches() -> None:
    with pytest.raises(IncompatibleModelError) as info:
        symwrap.wrap(lambda x: x, "rot90")
    message = str(info.value)
    # installed backbone plugins add their adapters to the list; the generic torch adapter is always tried last
    assert re.search(r"tried: ([a-z_]+, )*torch\)", message) and "input=" in message and "select=" in message


def test_shift_stride_that_does_not_divide_the_image(cnn: SmallCNN) -> None:
    wrapped = symwrap.wrap(cnn, "shift", group_options={"stride": 5})
    with pytest.raises(InputLayoutError, match=r"stride=5 needs H and W divisible by 5; got H=16, W=16"):
        wrapped(torch.randn(1, 3, 16, 16))


def test_input_on_another_device_than_the_weights_names_both_devices() -> None:
    # The meta device stands in for a GPU here (tests/test_cuda.py checks a real CPU input on a CUDA model).
    wrapped = symwrap.wrap(SmallCNN(8).eval().to("meta"), "d4", chunk_size=None)
    with pytest.raises(symwrap.InputLayoutError, match=r"argument 0\) is on cpu but .* weights are on meta.*x\.to"):
        wrapped(torch.randn(2, 3, 8, 8))


def test_learned_parts_start_on_the_base_models_device() -> None:
    # A canonicalizer left on the CPU beside a GPU model would run there, silently and slowly, on every call
    # (tests/test_cuda.py checks CUDA; the meta device stands in for it here).
    wrapped = symwrap.wrap(SmallCNN(8).eval().to("meta"), "d4", "canonicalization")
    assert {p.device.type for p in wrapped.method.parameters()} == {"meta"}
