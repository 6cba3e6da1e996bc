"""A Hugging Face ``ViTModel`` (small random-init config) wrapped with ``output=TokenGridAction()``: the patch tokens
of ``last_hidden_state`` move with the image (exactly equivariant), the CLS token stays invariant.

Tolerance: float32, ``rtol=1e-5`` and ``atol=1e-5 × max|output|``.
"""

from __future__ import annotations

import pytest
import torch
from transformers import ViTConfig, ViTModel

import symwrap
from symwrap.actions import ImageAction, TokenGridAction
from symwrap.errors import ConfigError, InputLayoutError

SIZE, PATCH, DIM = 32, 8, 32
SIDE = SIZE // PATCH  # a 4×4 patch grid, 1 + 16 tokens


def _vit_model() -> ViTModel:
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=SIZE,
        patch_size=PATCH,
        hidden_size=DIM,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    return ViTModel(config).eval()


def _images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def _grid(tokens: torch.Tensor) -> torch.Tensor:
    """Patch tokens ``(B, 1 + h·w, D)`` -> ``(B, D, h, w)`` (row-major, as ViT flattens patches)."""
    return tokens[:, 1:].reshape(tokens.shape[0], SIDE, SIDE, DIM).permute(0, 3, 1, 2)


def _move(x: torch.Tensor, element: torch.Tensor, group: symwrap.Group) -> torch.Tensor:
    src = torch.arange(x.shape[0])
    return ImageAction().apply(x, src, element.expand(x.shape[0], 2, 2), group)


def _assert_exact(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize("group", ["rot90", "d4"])
def test_vit_patch_tokens_are_equivariant_and_cls_invariant(group: str) -> None:
    model, x = _vit_model(), _images()
    g = symwrap.get_group(group)
    wrapped = symwrap.wrap(model, g, output=TokenGridAction(prefix=1), select="last_hidden_state", chunk_size=None)
    with torch.no_grad():
        plain = model(pixel_values=x).last_hidden_state
        out = wrapped(pixel_values=x)
        assert out.last_hidden_state.shape == plain.shape == (2, 1 + SIDE * SIDE, DIM)
        assert out.pooler_output is None  # not selected, so not combined
        gaps = []
        for element in g.elements()[1:]:
            moved_x = _move(x, element, g)
            moved_out = wrapped(pixel_values=moved_x).last_hidden_state
            _assert_exact(moved_out[:, 0], out.last_hidden_state[:, 0])  # CLS: invariant
            _assert_exact(_grid(moved_out), _move(_grid(out.last_hidden_state), element, g))  # patches: move
            plain_moved = model(pixel_values=moved_x).last_hidden_state
            gaps.append(float((_grid(plain_moved) - _move(_grid(plain), element, g)).abs().max()))
        # independent of ImageAction: a quarter turn of the image turns the patch grid by a quarter
        turned = wrapped(pixel_values=torch.rot90(x, 1, dims=(-2, -1))).last_hidden_state
        _assert_exact(_grid(turned), torch.rot90(_grid(out.last_hidden_state), 1, dims=(-2, -1)))
    assert min(gaps) > 1e-2 * float(plain.abs().max()), "the plain ViT is already equivariant: the test proves nothing"


def test_token_count_that_is_not_a_square_grid_is_a_layout_error() -> None:
    wrapped = symwrap.wrap(_vit_model(), "rot90", output=TokenGridAction(prefix=0), select="last_hidden_state")
    with pytest.raises(
        InputLayoutError, match=r"shape \(17, 32\).*17 tokens minus 0 prefix token\(s\) leaves 17.*prefix="
    ):
        wrapped(pixel_values=_images())


def test_non_square_grid_with_quarter_turns_is_a_layout_error() -> None:
    action = TokenGridAction(prefix=1, grid=(2, 8))  # 16 patches, but 2×8 cannot be turned by 90°
    wrapped = symwrap.wrap(_vit_model(), "d4", output=action, select="last_hidden_state")
    with pytest.raises(InputLayoutError, match=r"2×8 patch grid is not square.*'d4'.*flip"):
        wrapped(pixel_values=_images())


def test_pooled_output_selected_is_a_layout_error_that_says_select() -> None:
    wrapped = symwrap.wrap(_vit_model(), "rot90", output=TokenGridAction())  # default select: pooler_output too
    with pytest.raises(InputLayoutError, match=r"shape \(32,\).*select='last_hidden_state'"):
        wrapped(pixel_values=_images())


@pytest.mark.parametrize(("kwargs", "message"), [({"prefix": -1}, "'prefix'"), ({"grid": (4, 0)}, "'grid'")])
def test_bad_options_are_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid option " + message):
        TokenGridAction(**kwargs)
