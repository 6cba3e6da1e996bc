"""Doors of wrapped backbones (timm, HF ViT, HF GPT-2, open_clip; random init, tiny configs): learned parts sized
by the adapter at wrap time, ``config`` vs ``symwrap_config``, and every public callable of the base model either
symmetrized through the adapter, passed through as not computing from inputs, or refused with an error naming
``wrapped.base_model.<name>``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import symwrap

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
open_clip = pytest.importorskip("open_clip")

pytestmark = pytest.mark.integration


def _timm() -> nn.Module:
    return timm.create_model("resnet10t", pretrained=False, num_classes=3, in_chans=1).eval()


def _vit() -> nn.Module:
    config = transformers.ViTConfig(
        image_size=16,
        patch_size=8,
        hidden_size=24,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
        num_channels=2,
    )
    return transformers.ViTForImageClassification(config).eval()


def _gpt2() -> nn.Module:
    config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    return transformers.GPT2LMHeadModel(config).eval()


def _open_clip() -> nn.Module:
    vision = {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16}
    text = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
    model, _, _ = open_clip.create_model_and_transforms(
        "ViT-B-32", pretrained=None, vision_cfg=vision, embed_dim=20, text_cfg=text
    )
    return model.eval()


@pytest.mark.parametrize(
    ("make", "width", "channels"), [(_timm, 512, 1), (_vit, 24, 2), (_open_clip, 20, 3)], ids=["timm", "vit", "clip"]
)
def test_adapter_sizes_the_learned_parts_at_wrap_time(make, width: int, channels: int) -> None:
    base = make()
    lam = symwrap.wrap(base, "rot90", "lambda_equitune")
    assert lam.method.lambda_net is not None and lam.method.options.feature_dim == width
    assert any(p is lam.method.lambda_net.last.weight for p in lam.parameters())
    canon = symwrap.wrap(base, "rot90", "canonicalization", canonicalizer="learned")
    assert canon.method.canonicalizer.in_channels == channels


def test_vit_lambda_net_built_at_wrap_time_is_the_one_the_forward_uses() -> None:
    wrapped = symwrap.wrap(_vit(), "rot90", "lambda_equitune").train()
    with torch.no_grad():
        wrapped.method.lambda_net.last.weight.normal_()
    out = wrapped(pixel_values=torch.randn(2, 2, 16, 16)).logits  # a training-mode call: nothing is built now
    out.sum().backward()
    assert wrapped.method.lambda_net.last.weight.grad is not None


def test_config_is_the_hf_config_and_symwrap_config_symwraps() -> None:
    vit = _vit()
    wrapped = symwrap.wrap(vit, "rot90")
    assert wrapped.config is vit.config and wrapped.config.num_labels == 3 and wrapped.config.id2label[0]
    assert wrapped.symwrap_config.group == "rot90" and wrapped.symwrap_config.adapter == "transformers"
