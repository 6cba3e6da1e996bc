"""The per-backbone examples run offline with random weights (or the packaged MiniLM) and do what they say."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "backbones"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_timm_example() -> None:
    before, after = _load("timm_rot90").main(["--model", "resnet18", "--size", "64"])
    assert before > 1e-3 and after < 1e-5


@pytest.mark.slow
def test_hf_vit_example() -> None:
    before, after = _load("hf_vit_rot90").main([])
    assert before > 1e-3 and after < 1e-5


@pytest.mark.slow
def test_hf_vit_tokens_example() -> None:
    errors = list(_load("hf_vit_tokens").main(["--group", "rot90"]).values())
    plain, invariant, token_grid = errors
    assert plain > 1e-2 and invariant > 1e-2 and token_grid < 1e-5


@pytest.mark.slow
def test_hf_word_swap_example_reports_cosines() -> None:
    results = _load("hf_word_swap").main([])
    assert all(before < 0.999 for before, _ in results)
    assert all(after > 1 - 1e-6 for _, after in results)


@pytest.mark.slow
def test_open_clip_example() -> None:
    before, after = _load("open_clip_zero_shot").main(["--classes", "2", "--templates", "simple", "--stacked"])
    assert before > 1e-4 and after < 1e-5
