"""``open_clip:ARCH@TAG`` means those weights (or is refused); unknown names get close matches."""

from __future__ import annotations

import pytest
from symwrap_open_clip.loader import load_open_clip

from symwrap.errors import ConfigError
from symwrap.evaluation.loading import HubUnreachableError, UnknownBackboneError


def test_unknown_architecture_and_tag_list_close_matches() -> None:
    with pytest.raises(
        UnknownBackboneError, match=r"unknown open_clip architecture 'ViT-B-33'\. Did you mean 'ViT-B-32'"
    ):
        load_open_clip("ViT-B-33")
    with pytest.raises(UnknownBackboneError, match=r"'opena'\. Did you mean 'openai'"):
        load_open_clip("ViT-B-32@opena")


def test_a_tag_loads_those_weights_or_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"open_clip:RN50@openai names the 'openai' weights, but --pretrained false"):
        load_open_clip("RN50@openai", pretrained=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the weights are asked for (not a random init), and cannot come
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(HubUnreachableError, match=r"'open_clip:RN50@openai' needs files from the Hugging Face hub"):
        load_open_clip("RN50@openai")
