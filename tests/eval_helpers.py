"""Models and a loader plugin for the ``symwrap eval`` tests (importable as ``tests.eval_helpers``).

The timm / transformers / open_clip loaders ship with their own plugins; these test loaders mimic their
contract (``loader(name, pretrained=..., device=..., **options) -> LoadedModel``) with small random-init
models, so every model-spec kind is exercised offline in the core's tests.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import symwrap
from symwrap.evaluation.digits import DigitsCNN
from symwrap.evaluation.digits_model import load_digits_model
from symwrap.evaluation.loading import LoadedModel

CALLS: list[tuple[str, str, Any, dict[str, Any]]] = []


def small_cnn(classes: int = 10, channels: int = 1) -> nn.Module:
    """A factory for ``tests.eval_helpers:small_cnn`` (random init, not invariant)."""
    with torch.random.fork_rng():
        torch.manual_seed(1)
        return nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, classes)
        ).eval()


def digits_loaded() -> LoadedModel:
    """A factory returning a LoadedModel (the shipped digits CNN)."""
    return load_digits_model("")


class _Slow(nn.Module):
    def __init__(self, model: nn.Module, seconds: float) -> None:
        super().__init__()
        self.model, self.seconds = model, seconds

    def forward(self, x: Tensor) -> Tensor:
        time.sleep(self.seconds)  # makes a run long enough to be killed half-way by the resume test
        return self.model(x)


def slow_digits() -> nn.Module:
    """The shipped digits CNN, 30 ms slower per forward."""
    return _Slow(load_digits_model("").model, 0.03)


class _Kind:
    """One mimicked plugin loader: records its calls and returns a small model."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __call__(self, name: str, *, pretrained: Any = False, device: str = "cpu", **options: Any) -> LoadedModel:
        CALLS.append((self.prefix, name, pretrained, options))
        if self.prefix == "hf":  # a local folder written by the test: config.json + model.safetensors
            folder = Path(name)
            config = json.loads((folder / "config.json").read_text())
            model = DigitsCNN(width=config["width"])
            from safetensors.torch import load_file

            model.load_state_dict(load_file(str(folder / "model.safetensors")))
            labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
            return LoadedModel(model=model.eval(), input_size=(8, 8), class_names=labels)
        return LoadedModel(model=small_cnn(), input_size=(8, 8))


def open_clip_like(
    name: str,
    *,
    pretrained: Any = False,
    device: str = "cpu",
    class_names: list[str] | None = None,
    templates: list[str] | None = None,
) -> LoadedModel:
    """A zero-shot loader: as many outputs as class names, which it names in its signature."""
    if class_names is None:
        raise ValueError("a zero-shot model needs class names")
    CALLS.append(("open_clip", name, pretrained, {"class_names": class_names, "templates": templates}))
    return LoadedModel(model=small_cnn(len(class_names)), input_size=(8, 8), class_names=list(class_names))


class MimicPlugin:
    """Registers ``timm``, ``hf`` and ``open_clip`` loaders like the real backbone plugins do."""

    @symwrap.hookimpl
    def symwrap_register_model_loaders(self, register: Any) -> None:
        for prefix in ("timm", "hf"):
            register(prefix, _Kind(prefix), f"test mimic of the {prefix} loader")
        register("open_clip", open_clip_like, "test mimic of the open_clip loader")
