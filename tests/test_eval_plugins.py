"""``symwrap eval`` through the REAL timm / transformers / open_clip loaders (the installed plugins), offline.

Every model is a small random-init architecture written to ``tmp_path`` (or registered in-process) by the
test itself; nothing is downloaded. Each run evaluates a 2-class image folder under every rot90 corruption and
checks that group averaging's accuracy is the same for all of them (exact invariance end to end).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import symwrap
from symwrap.errors import ConfigError
from symwrap.evaluation.runner import EvalConfig, run_eval

CLASSES = ["cat", "dog"]


@pytest.fixture
def real_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The installed plugins, loaded through their entry points (as `symwrap eval` does)."""
    monkeypatch.delenv("SYMWRAP_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("SYMWRAP_LOAD_PLUGINS", raising=False)
    symwrap.reload_plugins()
    registry = symwrap.get_registry("model_loader")
    for prefix, plugin in (("timm", "timm"), ("hf", "transformers"), ("open_clip", "open_clip")):
        assert registry.lookup(prefix)[0].plugin == plugin, f"the {plugin} plugin did not register {prefix}:"
    yield
    symwrap.reload_plugins()


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """2 classes × 3 random 40×40 RGB PNGs in ImageFolder layout (class folders named after CLASSES)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def _eval(tmp_path: Path, model: str, data: Path, **options: Any) -> dict[str, Any]:
    output = tmp_path / "out"
    results = run_eval(
        EvalConfig(
            model=model,
            data=str(data),
            group="rot90",
            methods="plain,group_averaging",
            batch_size=6,
            chunk_size="none",
            probe_size=2,
            plot=False,
            progress=False,
            output_dir=str(output),
            **options,
        )
    )
    assert results is not None
    assert results["evaluated"] == 6
    averaged = results["correct"]["group_averaging"]
    assert len(averaged) == 5 and len(set(averaged.values())) == 1, averaged  # 4 rotations + random: same score
    errors = results["invariance_error"]
    assert errors["plain"] > 1e-3 and errors["group_averaging"] < 1e-5, errors  # the model is not invariant alone
    saved = json.loads((output / "results.json").read_text())
    assert saved["config"]["model"] == model
    return saved


def test_hf_vit_from_a_local_folder(real_plugins: None, tmp_path: Path, image_folder: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=len(CLASSES),
        id2label=dict(enumerate(CLASSES)),
        label2id={name: i for i, name in enumerate(CLASSES)},
    )
    folder = tmp_path / "tiny-vit"
    ViTForImageClassification(config).eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    saved = _eval(tmp_path, f"hf:{folder}", image_folder)  # a local folder: its own weights by default
    assert saved["config"]["pretrained"] is None


def test_open_clip_tiny_zero_shot_with_the_folders_class_names(
    real_plugins: None, tmp_path: Path, image_folder: Path
) -> None:
    import open_clip
    from open_clip import factory

    # a tiny architecture registered like open_clip's own model configs (random init, no download)
    tiny = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    path = tmp_path / "symwrap-tiny-clip.json"
    path.write_text(json.dumps(tiny))
    open_clip.add_model_config(path)
    try:
        assert "symwrap-tiny-clip" in open_clip.list_models()
        saved = _eval(tmp_path, "open_clip:symwrap-tiny-clip", image_folder, templates="a photo of a {}.")
    finally:
        factory._MODEL_CONFIGS.pop("symwrap-tiny-clip", None)
    assert saved["config"]["pretrained"] is None  # the loader's default: random init


def test_timm_from_a_local_folder_with_its_own_head(real_plugins: None, tmp_path: Path, image_folder: Path) -> None:
    import timm
    from timm.models import save_for_hf

    folder = tmp_path / "tiny-timm"
    save_for_hf(timm.create_model("test_vit", num_classes=len(CLASSES)), str(folder), safe_serialization=True)
    # timm reads `local-dir:FOLDER` (config.json + model.safetensors) offline, head size from its config
    saved = _eval(tmp_path, f"timm:local-dir:{folder}", image_folder, pretrained="true")
    assert saved["config"]["pretrained"] == "true"


def test_timm_imagenet_head_on_a_two_class_folder_is_a_clear_error(
    real_plugins: None, tmp_path: Path, image_folder: Path
) -> None:
    with pytest.raises(ConfigError, match=r"the model's class names: 1000 names, but the dataset .* has 2 classes"):
        _eval(tmp_path, "timm:test_vit", image_folder)


def test_hf_folder_weights_are_the_ones_evaluated(real_plugins: None, tmp_path: Path) -> None:
    """Regression: ``hf:FOLDER`` without ``--pretrained`` scores the folder's weights (it used to re-initialise
    them at random from the config); ``--pretrained false`` still asks for random init."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from symwrap.evaluation.runner import parse_pretrained
    from symwrap.evaluation.specs import load_model

    config = ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    config.intermediate_size = 32
    folder = tmp_path / "vit"
    source = ViTForImageClassification(config).eval()
    source.save_pretrained(folder)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(folder)
    for flag in (None, "true"):
        loaded = load_model(f"hf:{folder}", pretrained=parse_pretrained(flag))
        for (name, p), q in zip(loaded.model.state_dict().items(), source.state_dict().values()):
            torch.testing.assert_close(p, q, msg=f"--pretrained {flag}: {name}")
    random = load_model(f"hf:{folder}", pretrained=parse_pretrained("false")).model.state_dict()
    weight = "classifier.weight"
    assert not torch.equal(random[weight], source.state_dict()[weight])
