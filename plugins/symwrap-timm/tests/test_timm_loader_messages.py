"""``timm:NAME`` mistakes get one clear message: unknown names with close matches, ``@TAG``, no network."""

from __future__ import annotations

import pytest
from symwrap_timm.loader import load_timm

from symwrap.errors import ConfigError
from symwrap.evaluation.loading import HubUnreachableError, UnknownBackboneError


def test_an_unknown_architecture_lists_close_matches_from_timm() -> None:
    with pytest.raises(UnknownBackboneError, match=r"unknown timm model 'resnet5'\. Did you mean 'resnet50'"):
        load_timm("resnet5")


def test_an_unknown_weights_tag_lists_the_published_ones() -> None:
    with pytest.raises(UnknownBackboneError, match=r"unknown weights tag 'a1_in1'\. Did you mean 'a1_in1k'"):
        load_timm("resnet18@a1_in1")
    with pytest.raises(UnknownBackboneError, match=r"'resnet18' has these published weights: .*a1_in1k"):
        load_timm("resnet18.nope")


def test_a_tag_means_those_weights_never_a_silent_random_init(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"timm:resnet18@a1_in1k names published weights, but --pretrained false"):
        load_timm("resnet18@a1_in1k", pretrained=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network: the weights are asked for, and are not in this cache
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    for name in ("resnet18@a1_in1k", "resnet18.a1_in1k"):
        with pytest.raises(HubUnreachableError, match=r"'timm:resnet18\.a1_in1k' needs files .*HF_HUB_OFFLINE=1"):
            load_timm(name)


def test_published_weights_without_a_network_fail_fast(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(HubUnreachableError, match=r"not reachable here .* give a local copy"):
        load_timm("resnet18", pretrained=True)
    assert load_timm("resnet18").model.training is False  # random init needs no network
