"""The ``timm`` model loader (registered through the plugin hook): random init, and real-weight loading from a
local checkpoint file (the offline form of ``pretrained=True``)."""

from __future__ import annotations

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

import symwrap
from symwrap.errors import ConfigError


def _loader():
    entry = symwrap.get_registry("model_loader").lookup("timm")[0]
    assert entry.plugin == "timm"
    return entry.factory


def test_random_init_with_the_models_own_preprocessing() -> None:
    loaded = _loader()("resnet18", pretrained=False, num_classes=5)
    assert loaded.input_size == (224, 224) and loaded.class_names is None
    pixels = loaded.preprocess(Image.new("RGB", (300, 250), (10, 200, 30)))
    assert pixels.shape == (3, 224, 224)
    assert not loaded.model.training


def test_imagenet_heads_get_timm_class_names() -> None:
    loaded = _loader()("resnet18", pretrained=False)
    assert loaded.class_names is not None and len(loaded.class_names) == 1000
    assert loaded.class_names[0] == "tench, Tinca tinca"


def test_weights_from_a_local_checkpoint(tmp_path) -> None:
    torch.manual_seed(3)
    source = timm.create_model("resnet18", pretrained=False, num_classes=5)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = _loader()("resnet18", pretrained=str(path), num_classes=5)
    for (name, p), q in zip(loaded.model.state_dict().items(), source.state_dict().values()):
        torch.testing.assert_close(p, q, msg=name)
    with pytest.raises(ConfigError, match=r"pretrained='.*missing.safetensors': no checkpoint file"):
        _loader()("resnet18", pretrained=str(tmp_path / "missing.safetensors"))
