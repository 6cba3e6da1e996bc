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


def _public_callables(model: nn.Module) -> list[str]:
    """The base model's public methods (functions and bound methods; not data, submodules or classes)."""
    import inspect

    names = []
    for name in dir(model):
        if name.startswith("_") or hasattr(nn.Module, name):
            continue  # nn.Module's own methods (to, eval, parameters, state_dict...) are the wrapper's
        value = getattr(model, name, None)
        if inspect.ismethod(value) or inspect.isfunction(value) or inspect.isbuiltin(value):
            names.append(name)
    return names


@pytest.mark.parametrize(
    ("make", "symmetrized"),
    [(_timm, set()), (_vit, set()), (_gpt2, {"generate"}), (_open_clip, set())],
    ids=["timm", "vit", "gpt2", "clip"],
)
def test_every_public_method_of_the_base_is_symmetrized_passed_or_refused(make, symmetrized: set[str]) -> None:
    from symwrap.errors import UnsymmetrizedCallError

    base = make()
    wrapped = symwrap.wrap(base, "rot90")
    names = _public_callables(base)
    own = [n for n in names if hasattr(symwrap.SymmetrizedModel, n)]  # the wrapper's own: save_pretrained, generate
    assert set(own) <= {"save_pretrained", "from_pretrained", "generate", "state_dict"}
    # the wrapper's generate dispatches through the door too (the symmetrized one, or a refusal)
    doors = {n: wrapped.adapter.door(n) for n in names if n not in own or n == "generate"}
    assert {n for n, d in doors.items() if d.kind == "symmetrized"} == symmetrized
    passed = {n for n, d in doors.items() if d.kind == "passthrough"}
    assert passed <= wrapped.adapter.passthrough_methods()  # passed through only when listed, never by default
    refused = [n for n, d in doors.items() if d.kind == "refused"]
    assert refused, "each of these models has methods that compute from inputs"
    for name in refused:
        with pytest.raises(
            UnsymmetrizedCallError, match=rf"wrapped\.{name}\(\.\.\.\) is refused: .*wrapped\.base_model\.{name}\("
        ):
            getattr(wrapped, name)()
    for name in passed:
        assert getattr(wrapped, name) == getattr(base, name)


def test_a_method_no_list_knows_is_refused() -> None:
    from symwrap.errors import UnsymmetrizedCallError

    base = _timm()
    base.brand_new_forward = lambda x: x  # what a future timm version might add
    wrapped = symwrap.wrap(base, "rot90")
    with pytest.raises(UnsymmetrizedCallError, match=r"run the base model's brand_new_forward on the inputs as given"):
        wrapped.brand_new_forward(torch.zeros(1))


def test_data_attributes_pass_through() -> None:
    timm_model = _timm()
    wrapped = symwrap.wrap(timm_model, "rot90")
    assert wrapped.pretrained_cfg is timm_model.pretrained_cfg and wrapped.num_classes == 3
    vit = _vit()
    wrapped = symwrap.wrap(vit, "rot90")
    assert wrapped.main_input_name == "pixel_values" and wrapped.device == vit.device and wrapped.dtype == vit.dtype
    assert wrapped.classifier is vit.classifier  # submodules are structure, not doors


def test_generate_where_generation_does_not_apply_names_the_raw_route() -> None:
    from symwrap.errors import UnsymmetrizedCallError
    from tests.conftest import SmallCNN

    with pytest.raises(
        UnsymmetrizedCallError, match=r"SmallCNN has no generate method \(wrapped\.base_model\.generate"
    ):
        symwrap.wrap(SmallCNN(), "rot90").generate(torch.zeros(1, 3, 16, 16))
    gpt2 = _gpt2()
    gpt2.can_generate = lambda: False  # a model that says it cannot generate: its generate is refused
    with pytest.raises(
        UnsymmetrizedCallError, match=r"wrapped\.generate\(\.\.\.\) is refused.*wrapped\.base_model\.generate\("
    ):
        symwrap.wrap(gpt2, "rot90", adapter="transformers").generate(torch.zeros(1, 2, dtype=torch.long))
