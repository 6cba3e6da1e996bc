"""Exact invariance / equivariance of group averaging for every image group, on non-invariant models."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import symwrap
from tests.conftest import DenseCNN, PointMLP, SmallCNN, smooth_disk_image

EXACT_IMAGE_GROUPS = ["rot90", "rot180", "flip", "vflip", "d4", "c2", "c4", "d2"]


def _moved(group: symwrap.groups.Group, x: torch.Tensor) -> list[torch.Tensor]:
    """``g·x`` for every element, each ``(B, ...)``."""
    action = group.default_action()
    batch = x.shape[0]
    return [action.apply(x, torch.arange(batch), g.expand(batch, *g.shape), group) for g in group.elements()]


@pytest.mark.parametrize("name", EXACT_IMAGE_GROUPS)
def test_group_averaging_is_exactly_invariant(name: str, cnn: SmallCNN, images: torch.Tensor) -> None:
    group = symwrap.get_group(name)
    assert symwrap.check(cnn, group, images).max_error > 1e-2, "the base model must not be invariant already"
    wrapped = symwrap.wrap(cnn, name)
    reference = wrapped(images)
    for moved in _moved(group, images):
        assert_close(wrapped(moved), reference, rtol=1e-5, atol=1e-5)


def test_equitune_alias_is_group_averaging(cnn: SmallCNN, images: torch.Tensor) -> None:
    a = symwrap.wrap(cnn, "d4", "equitune")
    b = symwrap.wrap(cnn, "d4", "group_averaging")
    assert a.method.name == "group_averaging"
    assert_close(a(images), b(images))


def test_shift_group_averaging_is_exactly_shift_invariant(cnn: SmallCNN, images: torch.Tensor) -> None:
    group = symwrap.get_group("shift", stride=4)
    wrapped = symwrap.wrap(cnn, group)
    sized = group.for_input(tuple(images.shape), group.default_action())
    assert sized.order() == 16
    reference = wrapped(images)
    for dy, dx in [(4, 0), (0, 8), (12, 4)]:
        assert_close(wrapped(torch.roll(images, (dy, dx), dims=(-2, -1))), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", EXACT_IMAGE_GROUPS)
def test_group_averaging_is_exactly_equivariant_for_dense_outputs(
    name: str, dense_cnn: DenseCNN, images: torch.Tensor
) -> None:
    group = symwrap.get_group(name)
    assert symwrap.check(dense_cnn, group, images, "equivariant").max_error > 1e-2
    wrapped = symwrap.wrap(dense_cnn, name, output="equivariant")
    reference = wrapped(images)
    for moved_x, moved_y in zip(_moved(group, images), _moved(group, reference)):
        assert_close(wrapped(moved_x), moved_y, rtol=1e-5, atol=1e-5)


def test_equivariant_pull_back_works_on_smaller_feature_maps(images: torch.Tensor) -> None:
    net = torch.nn.Conv2d(3, 2, 3, stride=2, padding=1)  # 16x16 -> 8x8 map
    wrapped = symwrap.wrap(net, "d4", output="equivariant")
    reference = wrapped(images)
    group = symwrap.get_group("d4")
    for moved_x, moved_y in zip(_moved(group, images), _moved(group, reference)):
        assert_close(wrapped(moved_x), moved_y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["c8", "d8", "c3"])
def test_interpolated_group_averaging_within_stated_tolerance(name: str) -> None:
    # Approximate groups: invariance holds up to interpolation error. Stated tolerance (README):
    # relative error <= 5% on smooth, disk-masked images for a CNN with global pooling.
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 5, padding=2), torch.nn.Tanh(), torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten()
    ).eval()
    x, _ = smooth_disk_image(33, batch=2)
    group = symwrap.get_group(name)
    assert symwrap.check(net, group, x).max_error > 0.1
    result = symwrap.check(symwrap.wrap(net, group), group, x)
    assert result.max_error <= 0.05


@pytest.mark.parametrize("chunk_size", [1, 3, 8, None, "auto"])
def test_chunk_sizes_give_equal_outputs(chunk_size: int | str | None, cnn: SmallCNN, images: torch.Tensor) -> None:
    reference = symwrap.wrap(cnn, "d4", chunk_size=None)(images)
    out = symwrap.wrap(cnn, "d4", chunk_size=chunk_size)(images)
    assert_close(out, reference, rtol=1e-6, atol=1e-6)


def test_auto_chunk_size_keeps_one_final_choice_per_shape(cnn: SmallCNN, images: torch.Tensor) -> None:
    wrapped = symwrap.wrap(cnn, "d4")  # tests give tuners no clock: the largest chunk that fits, final at once
    wrapped(images)
    wrapped(images)
    wrapped(images[:2])
    tuner = wrapped.engine.tuner
    assert len(tuner.cache) == 2
    for key, chosen in tuner.cache.items():
        assert chosen == key[0][0][0][0] * 8  # the whole orbit fits the free memory
    (layout,) = tuner.layouts.values()
    assert layout.peaks, "memory was measured, during the first call"


def test_gradients_match_the_average_of_per_copy_gradients(cnn: SmallCNN, images: torch.Tensor) -> None:
    x = images.clone().requires_grad_(True)
    wrapped = symwrap.wrap(cnn, "d4", chunk_size=5)
    wrapped(x).square().sum().backward()
    grads = {n: p.grad.clone() for n, p in cnn.named_parameters()}
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(g.abs().sum() > 0 for g in grads.values())
    # the same loss written by hand
    cnn.zero_grad()
    x2 = images.clone().requires_grad_(True)
    outs = [cnn(torch.rot90(torch.flip(x2, [-1]) if f else x2, k, (-2, -1))) for k in range(4) for f in range(2)]
    torch.stack(outs).mean(0).square().sum().backward()
    for n, p in cnn.named_parameters():
        assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-6)
    assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [3, None], ids=["chunked", "whole-orbit"])
@pytest.mark.parametrize("reduce", ["logits", "probs", "log_probs", "features"])
def test_reduce_spaces(reduce: str, chunk_size: int | None, cnn: SmallCNN, images: torch.Tensor) -> None:
    # chunk_size=3 runs 4 forwards and None one (tests/test_engine_chunks.py covers the streamed reduction too)
    wrapped = symwrap.wrap(cnn, "rot90", reduce=reduce, chunk_size=chunk_size)
    copies = torch.stack([cnn(torch.rot90(images, k, (-2, -1))) for k in range(4)])
    expected = {
        "logits": copies.mean(0),
        "probs": copies.softmax(-1).mean(0),
        "log_probs": copies.softmax(-1).mean(0).log(),
        "features": torch.nn.functional.normalize(copies, dim=-1).mean(0),
    }[reduce]
    assert_close(wrapped(images), expected, rtol=1e-5, atol=1e-6)
    assert_close(wrapped(torch.rot90(images, 1, (-2, -1))), expected, rtol=1e-5, atol=1e-6)


def test_log_probs_stay_finite_for_extreme_logits() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4))
    with torch.no_grad():
        net[1].weight.mul_(1e4)
    out = symwrap.wrap(net, "rot90", reduce="log_probs")(torch.randn(2, 3, 16, 16))
    assert torch.isfinite(out).all()
    assert_close(out.exp().sum(-1), torch.ones(2), rtol=1e-5, atol=1e-5)


class _NestedModel(torch.nn.Module):
    """Takes extra batched and broadcast arguments and returns nested outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = SmallCNN()

    def forward(self, x: torch.Tensor, bias: torch.Tensor, scale: float = 1.0, extra: dict | None = None) -> dict:
        logits = self.cnn(x) * scale + bias
        if extra is not None:
            logits = logits + extra["offset"]
        return {"logits": logits, "aux": (logits.sum(-1), torch.zeros(x.shape[0], dtype=torch.long)), "note": "hi"}


def test_nested_inputs_and_outputs(images: torch.Tensor) -> None:
    model = _NestedModel().eval()
    bias = torch.randn(3, 5)
    offset = torch.randn(1, 5)  # batch 1 is broadcast
    wrapped = symwrap.wrap(model, "rot90", input="x")
    out = wrapped(images, bias, scale=2.0, extra={"offset": offset})
    assert set(out) == {"logits", "aux", "note"} and out["note"] == "hi"
    assert out["aux"][1] is None  # an integer output cannot be averaged; it is dropped, not faked
    expected = torch.stack([model.cnn(torch.rot90(images, k, (-2, -1))) for k in range(4)]).mean(0) * 2 + bias + offset
    assert_close(out["logits"], expected, rtol=1e-5, atol=1e-5)
    assert_close(out["aux"][0], expected.sum(-1), rtol=1e-5, atol=1e-5)
    moved = wrapped(torch.rot90(images, 3, (-2, -1)), bias, scale=2.0, extra={"offset": offset})
    assert_close(moved["logits"], out["logits"], rtol=1e-5, atol=1e-5)


def test_select_and_keyword_input(images: torch.Tensor) -> None:
    model = _NestedModel().eval()
    bias = torch.zeros(3, 5)
    wrapped = symwrap.wrap(model, "flip", input="x", select="logits")
    out = wrapped(x=images, bias=bias)
    assert out["aux"][0] is None and out["logits"].shape == (3, 5)


def test_model_output_like_dataclass_is_rebuilt(images: torch.Tensor) -> None:
    from collections import OrderedDict
    from dataclasses import dataclass

    @dataclass
    class FakeModelOutput(OrderedDict):  # the shape of transformers.utils.ModelOutput
        logits: torch.Tensor | None = None
        hidden: torch.Tensor | None = None

        def __post_init__(self) -> None:
            for k in ("logits", "hidden"):
                if getattr(self, k) is not None:
                    self[k] = getattr(self, k)

        def to_tuple(self) -> tuple:
            return tuple(self.values())

    class HFLike(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cnn = SmallCNN()

        def forward(self, pixel_values: torch.Tensor) -> FakeModelOutput:
            return FakeModelOutput(logits=self.cnn(pixel_values), hidden=pixel_values.mean((2, 3)))

    wrapped = symwrap.wrap(HFLike().eval(), "rot90", input="pixel_values", select="logits")
    out = wrapped(pixel_values=images)
    assert isinstance(out, FakeModelOutput) and out.logits.shape == (3, 5) and out.hidden is None


def test_wrapper_forwards_attributes_and_can_be_disabled(cnn: SmallCNN, images: torch.Tensor) -> None:
    wrapped = symwrap.wrap(cnn, "rot90")
    assert wrapped.head is cnn.head  # attribute forwarding
    assert wrapped.unwrap() is cnn and wrapped.base_model is cnn
    with wrapped.disable_symmetrization() as base:
        assert base is cnn
        assert_close(wrapped(images), cnn(images))
    assert not torch.allclose(wrapped(images), cnn(images))
    assert "rot90" in repr(wrapped) and wrapped.symwrap_config.method == "group_averaging"


def test_permutation_group_averaging_on_sets() -> None:
    model = PointMLP(points=4, dim=3).eval()
    x = torch.randn(2, 4, 3)
    wrapped = symwrap.wrap(model, "perm")
    perm = torch.tensor([2, 0, 3, 1])
    assert symwrap.check(model, "perm", x).max_error > 1e-2
    assert_close(wrapped(x[:, perm]), wrapped(x), rtol=1e-5, atol=1e-5)
    assert symwrap.check(wrapped, "perm", x).max_error < 1e-5


def test_permutation_equivariant_outputs() -> None:
    class PerPoint(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mlp = PointMLP(points=4, dim=3, out=4 * 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mlp(x).reshape(x.shape[0], 4, 2)

    model = PerPoint().eval()
    x = torch.randn(2, 4, 3)
    assert symwrap.check(model, "perm", x, "equivariant").max_error > 1e-2
    wrapped = symwrap.wrap(model, "perm", output="equivariant")
    assert symwrap.check(wrapped, "perm", x, "equivariant").max_error < 1e-5


def test_wrapped_model_deep_copies(cnn: SmallCNN, images: torch.Tensor) -> None:
    import copy

    wrapped = symwrap.wrap(cnn, "rot90", chunk_size=4)
    clone = copy.deepcopy(wrapped)
    assert clone.base_model is not cnn
    assert_close(clone(images), wrapped(images))


def test_auto_prefers_the_smallest_chunk_within_tolerance_of_the_fastest() -> None:
    from symwrap.chunking import pick_chunk

    assert pick_chunk({8: 0.30, 64: 0.104, 128: 0.100, 512: 0.2}, tolerance=0.05) == 64
    assert pick_chunk({8: 0.30, 64: 0.110, 128: 0.100}, tolerance=0.05) == 128
    assert pick_chunk({16: 0.1, 128: 0.1}, tolerance=0.0) == 16


def test_auto_prefers_the_whole_orbit_on_a_near_tie() -> None:
    from symwrap.chunking import pick_chunk

    fast_ms = {8: 3.0e-3, 64: 1.04e-3, 128: 1.00e-3, 512: 1.04e-3}  # a small model: 0.04 ms apart
    assert pick_chunk(fast_ms, tolerance=0.05, whole=512) == 512
    assert pick_chunk({**fast_ms, 512: 2e-3}, tolerance=0.05, whole=512) == 64
    slow = {8: 3.0, 64: 1.04, 128: 1.00, 512: 1.04}  # a large model: 40 ms apart, far more than the fast path saves
    assert pick_chunk(slow, tolerance=0.05, whole=512) == 64


def test_unbatched_keyword_arguments_reach_every_chunk_unchanged() -> None:
    """A keyword argument named in ``unbatched`` (CLIP prompts: as many as images) is never gathered by row."""
    from symwrap.adapters.base import BoundCall

    model = torch.nn.Identity()
    x, prompts = torch.randn(2, 1, 4, 4), torch.randn(2, 3)
    src = torch.tensor([0, 0, 1, 1, 1])
    gathered = BoundCall(model, (x,), {"prompts": prompts}, [("arg", 0)]).arguments([x[src]], src)[1]
    assert gathered["prompts"].shape[0] == 5  # batched by default: its first dim equals B
    kept = BoundCall(model, (x,), {"prompts": prompts}, [("arg", 0)], unbatched=("prompts",)).arguments([x[src]], src)
    assert kept[1]["prompts"] is prompts
    assert torch.equal(kept[0][0], x[src])
