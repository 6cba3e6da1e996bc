"""The timm plugin: exact invariance of real timm architectures (random init), the features/head split,
the fixed-size ViT error and the timm data config through the wrapper.

Tolerance: float32, ``rtol=1e-5`` and ``atol=1e-5 × max|output|`` (exact groups; round-off only).
"""

from __future__ import annotations

import pytest
import timm
import torch
from symwrap_timm import TimmAdapter
from timm.data import resolve_data_config

import symwrap
from symwrap.errors import InputLayoutError

# name -> (create_model options, image size): one per family the issue asks for, kept small for CPU tests.
ARCHITECTURES = {
    "resnet18": ({}, 32),
    "vit_tiny_patch16_224": ({"img_size": 32, "patch_size": 8}, 32),  # fixed (strict) input size
    "convnext_atto": ({}, 32),
    "efficientnet_b0": ({}, 32),
}


def _create(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    options, _ = ARCHITECTURES[name]
    return timm.create_model(name, pretrained=False, num_classes=7, **options).eval()


def _images(name: str, batch: int = 2) -> torch.Tensor:
    size = ARCHITECTURES[name][1]
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def _assert_exact(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * scale)


def _relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("group", ["rot90", "d4"])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_wrapped_timm_model_is_exactly_invariant(name: str, group: str) -> None:
    model = _create(name)
    x = _images(name)
    wrapped = symwrap.wrap(model, group, chunk_size=None)
    assert isinstance(wrapped.adapter, TimmAdapter)
    g = symwrap.get_group(group)
    with torch.no_grad():
        plain = model(x)
        out = wrapped(x)
        assert type(out) is type(plain) and out.shape == plain.shape == (2, 7)
        gaps = []
        for element in g.elements()[1:]:
            moved = wrapped.input_action.apply(x, torch.arange(2), element.expand(2, 2, 2), g)
            gaps.append(_relative_gap(model(moved), plain))
            _assert_exact(wrapped(moved), out)
    assert max(gaps) > 1e-3, f"{name} is already {group}-invariant at random init; the test would prove nothing"


def test_chunked_equals_stacked() -> None:
    model = _create("resnet18")
    x = _images("resnet18", batch=3)
    with torch.no_grad():
        stacked = symwrap.wrap(model, "d4", chunk_size=None)(x)
        chunked = symwrap.wrap(model, "d4", chunk_size=5)(x)
    _assert_exact(chunked, stacked)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_features_and_output_split_matches_the_model(name: str) -> None:
    """λ-equitune's split: forward_features + forward_head(pre_logits=True) -> (R, D); output = model(x)."""
    model = _create(name)
    adapter = symwrap.get_adapter(model)
    assert isinstance(adapter, TimmAdapter)
    x = _images(name, batch=3)
    call = adapter.bind((x,), {})
    src = torch.tensor([0, 2, 2, 1])
    rows = x[src]
    with torch.no_grad():
        features, output = adapter.features_and_output(call, [rows], src)
        expected = model(rows)
    assert features.shape == (4, model.num_features)
    assert not torch.allclose(features[1], features[3])
    torch.testing.assert_close(output, expected, rtol=1e-6, atol=1e-6)
    # the features are what the classifier sees: the head applied to them gives the logits
    torch.testing.assert_close(model.get_classifier()(features), expected, rtol=1e-5, atol=1e-5)


def test_pretrained_cfg_and_data_config_reach_through_the_wrapper() -> None:
    model = _create("resnet18")
    wrapped = symwrap.wrap(model, "rot90")
    assert wrapped.pretrained_cfg is model.pretrained_cfg
    assert resolve_data_config(model=wrapped) == resolve_data_config(model=model)


def test_fixed_non_square_vit_refuses_groups_that_swap_the_axes() -> None:
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=(32, 16), patch_size=8).eval()
    with pytest.raises(InputLayoutError, match=r"group 'rot90' rotates images by 90°.*32×16.*16×32.*dynamic_img_size"):
        symwrap.wrap(model, "rot90")
    with pytest.raises(InputLayoutError, match=r"group 'd4' rotates images by 90°"):
        symwrap.wrap(model, "d4")
    # groups that keep the shape are fine, and exact
    wrapped = symwrap.wrap(model, "flip", chunk_size=None)
    x = torch.randn(2, 3, 32, 16)
    with torch.no_grad():
        _assert_exact(wrapped(torch.flip(x, dims=[-1])), wrapped(x))


def test_fixed_size_vit_given_another_size_says_how_to_preprocess() -> None:
    wrapped = symwrap.wrap(_create("vit_tiny_patch16_224"), "rot90")
    with pytest.raises(InputLayoutError, match=r"takes 32×32 images.*shape \(1, 3, 48, 48\).*create_transform"):
        wrapped(torch.randn(1, 3, 48, 48))


def test_dynamic_size_vit_with_non_square_input_gets_the_square_error() -> None:
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, dynamic_img_size=True
    ).eval()
    wrapped = symwrap.wrap(model, "rot90")
    with pytest.raises(InputLayoutError, match=r"need square images.*H=32 != W=16"):
        wrapped(torch.randn(1, 3, 32, 16))


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny_patch16_224"])
def test_lambda_equitune_finds_the_split_without_help_and_stays_invariant(name: str) -> None:
    model = _create(name)
    x = _images(name, batch=3)
    wrapped = symwrap.wrap(model, "rot90", "lambda_equitune", chunk_size=None)  # no features=: the adapter splits
    with torch.no_grad():
        out = wrapped(x)  # sizes the λ-net from the adapter's (R, num_features) features
        for p in wrapped.method.parameters():  # a non-constant λ, as after training
            p.copy_(torch.randn_like(p))
        out = wrapped(x)
        group = wrapped.group
        ga = symwrap.wrap(model, "rot90", chunk_size=None)(x)
        assert _relative_gap(out, ga) > 1e-4  # λ really reweighs the copies
        for element in group.elements()[1:]:
            moved = wrapped.input_action.apply(x, torch.arange(3), element.expand(3, 2, 2), group)
            _assert_exact(wrapped(moved), out)


class _TokenFeatures(torch.nn.Module):
    """A timm ViT's ``forward_features``: tokens ``(B, 1 + registers + h·w, D)``."""

    def __init__(self, vit: torch.nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_features(x)


def test_vit_tokens_with_registers_are_equivariant_with_token_grid_action() -> None:
    from symwrap.actions import TokenGridAction

    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, reg_tokens=2, depth=2
    ).eval()
    model, x, g = _TokenFeatures(vit), _images("vit_tiny_patch16_224"), symwrap.get_group("rot90")
    action = TokenGridAction(prefix=3)  # CLS + 2 register tokens, then a 4×4 patch grid
    wrapped = symwrap.wrap(model, g, output=action, chunk_size=None)
    quarter = torch.rot90(x, 1, dims=(-2, -1))

    def grid(tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 3:].reshape(2, 4, 4, -1).permute(0, 3, 1, 2)

    with torch.no_grad():
        plain, plain_turned = model(x), model(quarter)
        assert plain.shape == (2, 3 + 16, 192)
        out, turned = wrapped(x), wrapped(quarter)
    _assert_exact(turned[:, :3], out[:, :3])  # CLS and registers: invariant
    _assert_exact(grid(turned), torch.rot90(grid(out), 1, dims=(-2, -1)))  # patches turn with the image
    assert _relative_gap(grid(plain_turned), torch.rot90(grid(plain), 1, dims=(-2, -1))) > 1e-2
