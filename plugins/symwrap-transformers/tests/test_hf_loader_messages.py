"""``hf:NAME`` without a network fails within seconds with one message; a missing local folder is named."""

from __future__ import annotations

import pytest
from symwrap_transformers.loader import load_hf

from symwrap.errors import ConfigError
from symwrap.evaluation.loading import HubUnreachableError


def test_a_hub_name_without_a_network_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(HubUnreachableError, match=r"'hf:google/vit-base-patch16-224' needs files .*hf:\./my-model"):
        load_hf("google/vit-base-patch16-224")


def test_a_missing_local_folder_is_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"no folder '\./no-such-model'"):
        load_hf("./no-such-model")
