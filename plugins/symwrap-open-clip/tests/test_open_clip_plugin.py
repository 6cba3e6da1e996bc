"""The open_clip plugin on small random-init open_clip configs (a ViT and a ModifiedResNet tower):
exact rot90/d4 invariance of the zero-shot classifier and of bare models' image features, prompts encoded
once, the features/head split, the loader, and bad prompts.

Tolerance: float32, ``rtol=1e-5`` and ``atol=1e-5 × max|output|``.
"""

from __future__ import annotations

import math

import open_clip
import pytest
import torch
from PIL import Image
from symwrap_open_clip import OpenCLIPAdapter, ZeroShotClassifier, imagenet_metadata, load_open_clip

import symwrap
from symwrap.errors import ConfigError

TEXT_CFG = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
VISION_CFGS = {
    "vit": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "resnet": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None},
}
SMALL = {"embed_dim": 16, "text_cfg": TEXT_CFG}
CLASSES = ["cat", "dog", "bird", "fish", "horse", "cow", "sheep", "goat", "duck", "frog", "mouse", "owl"]
TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]


def _model(tower: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms(
        "ViT-B-32", pretrained=None, vision_cfg=VISION_CFGS[tower], **SMALL
    )
    return model.eval()


def _tokenizer():
    return open_clip.get_tokenizer("ViT-B-32", context_length=TEXT_CFG["context_length"])


def _images(tower: str, batch: int = 2) -> torch.Tensor:
    size = VISION_CFGS[tower]["image_size"]
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def _assert_exact(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def _moved(x: torch.Tensor, group: str) -> list[torch.Tensor]:
    g = symwrap.get_group(group)
    action, src = g.default_action(), torch.arange(x.shape[0])
    return [action.apply(x, src, e.expand(x.shape[0], 2, 2), g) for e in g.elements()[1:]]


@pytest.mark.parametrize("group", ["rot90", "d4"])
@pytest.mark.parametrize("tower", list(VISION_CFGS))
def test_zero_shot_classifier_is_invariant_and_encodes_text_once(
    tower: str, group: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model(tower)
    calls: list[int] = []
    encode_text = model.encode_text
    monkeypatch.setattr(model, "encode_text", lambda *a, **k: calls.append(1) or encode_text(*a, **k))
    head = ZeroShotClassifier(model, _tokenizer(), CLASSES, TEMPLATES)
    built = len(calls)
    assert built == math.ceil(len(CLASSES) / 10)  # open_clip's builder: 10 classes per text forward
    wrapped = symwrap.wrap(head, group, chunk_size=None)
    assert isinstance(wrapped.adapter, OpenCLIPAdapter)
    x = _images(tower)
    with torch.no_grad():
        plain, out = head(x), wrapped(x)
        assert type(out) is type(plain) and out.shape == plain.shape == (2, len(CLASSES))
        gaps = []
        for moved in _moved(x, group):
            gaps.append(float((head(moved) - plain).abs().max()))
            _assert_exact(wrapped(moved), out)
    assert max(gaps) > 1e-4 * float(plain.abs().max())
    assert len(calls) == built, "the text tower ran again after the classifier was built"


@pytest.mark.parametrize("tower", list(VISION_CFGS))
def test_bare_open_clip_model_image_features_are_invariant(tower: str) -> None:
    model = _model(tower)
    text = _tokenizer()(["a cat", "a dog"])  # as many texts as images: must not be split by image row
    x = _images(tower)
    wrapped = symwrap.wrap(model, "rot90", chunk_size=None)
    with torch.no_grad():
        plain = model(x, text)
        out = wrapped(x, text)
        assert isinstance(out, tuple) and len(out) == len(plain)
        assert out[0].shape == plain[0].shape and out[1] is None
        by_hand = torch.stack([model(m, text)[0] for m in [x, *_moved(x, "rot90")]]).mean(0)
        _assert_exact(out[0], by_hand)
        for moved in _moved(x, "rot90"):
            _assert_exact(wrapped(image=moved, text=text)[0], out[0])


def test_features_and_output_split() -> None:
    head = ZeroShotClassifier(_model("vit"), _tokenizer(), CLASSES[:3], TEMPLATES)
    adapter = symwrap.get_adapter(head)
    x = _images("vit", 3)
    call = adapter.bind((x,), {})
    src = torch.tensor([1, 1, 0, 2])
    with torch.no_grad():
        features, output = adapter.features_and_output(call, [x[src]], src)
        expected = head(x[src])
    assert features.shape == (4, 16)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(output, expected)


def test_defaults_are_open_clips_own_imagenet_names_and_templates() -> None:
    names, templates = imagenet_metadata()
    assert names == tuple(open_clip.IMAGENET_CLASSNAMES) and len(names) == 1000
    assert templates == tuple(open_clip.OPENAI_IMAGENET_TEMPLATES) and len(templates) == 80


def test_loader_builds_a_zero_shot_classifier_offline() -> None:
    loader = symwrap.get_registry("model_loader").lookup("open_clip")[0].factory
    assert loader is load_open_clip
    loaded = loader(
        "ViT-B-32",
        pretrained=False,
        class_names=CLASSES[:2],
        templates=TEMPLATES,
        vision_cfg=VISION_CFGS["vit"],
        **SMALL,
    )
    assert isinstance(loaded.model, ZeroShotClassifier) and loaded.class_names == CLASSES[:2]
    assert loaded.input_size == (32, 32)
    pixels = loaded.preprocess(Image.new("RGB", (40, 50), (0, 0, 255)))
    assert pixels.shape == (3, 32, 32)
    with torch.no_grad():
        assert symwrap.wrap(loaded.model, "rot90")(pixels[None]).shape == (1, 2)
    with pytest.raises(
        ConfigError, match=r"pretrained=True needs the weights named in the spec, e.g. 'open_clip:RN50@openai'"
    ):
        loader("RN50", pretrained=True)


@pytest.mark.parametrize(
    ("class_names", "templates", "message"),
    [
        ([], TEMPLATES, r"'class_names': expected a non-empty list"),
        (["cat"], ["a photo of a cat"], r"'templates': 'a photo of a cat' has no '\{\}' slot"),
        (["cat"], [], r"'templates': expected a non-empty list"),
    ],
)
def test_bad_prompts(class_names: list[str], templates: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid option " + message):
        ZeroShotClassifier(_model("vit"), _tokenizer(), class_names, templates)


def test_lambda_equitune_on_a_zero_shot_head_finds_the_split_without_help_and_stays_invariant() -> None:
    head = ZeroShotClassifier(_model("vit"), _tokenizer(), CLASSES[:3], TEMPLATES)
    x = _images("vit", 3)
    wrapped = symwrap.wrap(head, "rot90", "lambda_equitune", chunk_size=None)
    with torch.no_grad():
        wrapped(x)  # sizes the λ-net from encode_image features
        for p in wrapped.method.parameters():
            p.copy_(torch.randn_like(p))
        out = wrapped(x)
        ga = symwrap.wrap(head, "rot90", chunk_size=None)(x)
        assert float((out - ga).abs().max()) > 1e-4 * float(ga.abs().max())
        for moved in _moved(x, "rot90"):
            _assert_exact(wrapped(moved), out)
