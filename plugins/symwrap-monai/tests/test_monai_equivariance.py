"""MONAI 3-D networks at random init, wrapped in one line: exact equivariance for flip3d, cube and the anisotropic
plane option; nnU-Net's mirroring average as the reference; sliding-window inference per patch and whole."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import SegResNet, SwinUNETR, UNet
from symwrap_monai import SlidingWindow
from torch import nn
from torch.testing import assert_close

import symwrap


def _unet() -> nn.Module:
    return UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,)).eval()


def _segresnet() -> nn.Module:
    return SegResNet(
        spatial_dims=3, init_filters=4, in_channels=1, out_channels=2, blocks_down=(1, 1), blocks_up=(1,),
        norm=("GROUP", {"num_groups": 2}),
    ).eval()  # fmt: skip


def _swin_unetr() -> nn.Module:
    # the smallest valid configuration: feature_size 12, one block and head per stage, 2³ windows; batch norm so
    # that the 1³ bottleneck of a 32³ input is allowed (instance norm needs more than one voxel)
    return SwinUNETR(
        in_channels=1, out_channels=2, feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=2,
        norm_name="batch",
    ).eval()  # fmt: skip


def _move(group: symwrap.groups.Group, x: torch.Tensor, element: torch.Tensor) -> torch.Tensor:
    return group.default_action().apply(x, torch.arange(x.shape[0]), element.expand(x.shape[0], 3, 3), group)


def _last_generic_element(group: symwrap.groups.FiniteGroup) -> torch.Tensor:
    """The last listed element: for cube/cube_full it swaps axes and reverses some (a generic rotation)."""
    return group.elements()[-1]


# (network, group, group options, volume (D, H, W))
CASES = [
    (_unet, "flip3d", {}, (8, 12, 16)),
    (_unet, "cube", {}, (8, 8, 8)),
    (_unet, "cube_full", {"plane": "hw"}, (4, 8, 8)),
    (_segresnet, "flip3d", {}, (8, 8, 12)),
    (_segresnet, "cube", {}, (8, 8, 8)),
    (_segresnet, "cube", {"plane": "hw"}, (4, 8, 8)),
]


@pytest.mark.parametrize(("make", "name", "options", "size"), CASES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_monai_networks_are_exactly_equivariant_once_wrapped(make, name: str, options: dict, size: tuple) -> None:
    net = make()
    wrapped = symwrap.wrap(net, name, output="equivariant", chunk_size=None, group_options=options)
    group = wrapped.group
    x = torch.randn(1, 1, *size)
    g = _last_generic_element(group)
    with torch.no_grad():
        assert (net(_move(group, x, g)) - _move(group, net(x), g)).abs().max() > 1e-4, "not equivariant by itself"
        both = wrapped(torch.cat([x, _move(group, x, g)]))  # one call: the volume and its moved copy
    assert_close(both[1:], _move(group, both[:1], g), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_swin_unetr_is_exactly_equivariant_for_flip3d() -> None:
    net = _swin_unetr()
    wrapped = symwrap.wrap(net, "flip3d", output="equivariant", chunk_size=None)
    x = torch.randn(1, 1, 32, 32, 32)
    moved = x.flip((-3, -1))  # element 5: reverses D and W
    with torch.no_grad():
        both = wrapped(torch.cat([x, moved]))
    assert_close(both[1:], both[:1].flip((-3, -1)), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("group", "options", "volume"),
    [("cube", {}, (32, 32, 32)), ("cube", {"plane": "hw"}, (32, 64, 64))],
    ids=["cube", "cube-plane-hw"],
)
def test_swin_unetr_is_exactly_equivariant_for_cube_rotations(group: str, options: dict, volume: tuple) -> None:
    # 24 copies of a cubic patch, or the 8 shape-keeping elements of an anisotropic volume (D ≠ H = W)
    net = _swin_unetr()
    wrapped = symwrap.wrap(net, group, output="equivariant", group_options=options, chunk_size=8)
    the_group = wrapped.group
    element = _last_generic_element(the_group)
    x = torch.randn(1, 1, *volume)
    with torch.no_grad():
        both = torch.cat([x, _move(the_group, x, element)])
        out, plain = wrapped(both), net(both)
    assert not torch.allclose(plain[1:], _move(the_group, plain[:1], element), atol=1e-3), "the bare net is equivariant"
    assert_close(out[1:], _move(the_group, out[:1], element), rtol=1e-5, atol=1e-5)


def test_flip3d_average_equals_nnunet_mirroring() -> None:
    # nnU-Net's test-time mirroring written out: the mean over all 8 subsets of the axes of flip(f(flip(x))).
    net = _unet()
    x = torch.randn(2, 1, 8, 12, 16)
    subsets = [[], [2], [3], [4], [2, 3], [2, 4], [3, 4], [2, 3, 4]]
    with torch.no_grad():
        reference = sum(torch.flip(net(torch.flip(x, s)), s) if s else net(x) for s in subsets) / 8
        wrapped = symwrap.wrap(net, "flip3d", output="equivariant", chunk_size=None)(x)
    assert_close(wrapped, reference, rtol=1e-5, atol=1e-6)


def test_the_wrapped_model_is_a_sliding_window_predictor() -> None:
    # Per patch: every patch prediction is symmetrized. On a grid that the mirrors map onto itself (volume = 2 × roi,
    # no overlap) the stitched volume is exactly equivariant too.
    wrapped = symwrap.wrap(_unet(), "flip3d", output="equivariant", chunk_size=None)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        out = sliding_window_inference(x, (8, 8, 8), 4, wrapped, overlap=0.0)
        moved = sliding_window_inference(x.flip((-1,)), (8, 8, 8), 4, wrapped, overlap=0.0)
    assert out.shape == (1, 2, 16, 16, 16)
    assert_close(torch.as_tensor(moved), torch.as_tensor(out).flip((-1,)), rtol=1e-5, atol=1e-5)


def test_whole_sliding_window_inference_is_exact_where_per_patch_is_not() -> None:
    # W = 22 with 8-wide patches and overlap 0.25: patches start at 0, 6, 12 and 14 (the last one flush with the end),
    # a grid that the mirror of W does not map onto itself, so per-patch symmetrization is not exact for the whole
    # volume; wrapping the whole inference (SlidingWindow) is.
    net = _unet()
    x = torch.randn(1, 1, 8, 8, 22)
    per_patch = symwrap.wrap(net, "flip3d", output="equivariant", chunk_size=None)
    window = SlidingWindow(net, (8, 8, 8), 4, overlap=0.25)
    whole = symwrap.wrap(window, "flip3d", output="equivariant", chunk_size=None)
    with torch.no_grad():
        patch_out = torch.as_tensor(sliding_window_inference(x, (8, 8, 8), 4, per_patch, overlap=0.25))
        patch_moved = torch.as_tensor(sliding_window_inference(x.flip((-1,)), (8, 8, 8), 4, per_patch, overlap=0.25))
        whole_out = whole(torch.cat([x, x.flip((-1,))]))
    assert (patch_moved - patch_out.flip((-1,))).abs().max() > 1e-4
    assert_close(whole_out[1:], whole_out[:1].flip((-1,)), rtol=1e-5, atol=1e-5)
