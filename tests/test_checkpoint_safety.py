"""from_pretrained reads only the checkpoint folder, refuses tampered fields by name, and keeps the work bounded."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import symwrap
from symwrap.errors import CheckpointError, LimitError
from symwrap.saving import CONFIG_NAME, WEIGHTS_NAME
from tests.conftest import SmallCNN
from tests.test_saving import _trained_lambda


@pytest.fixture(scope="module")
def _saved_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SmallCNN]:
    """One save for the module (a λ-equitune with weights); each test edits its own copy."""
    torch.manual_seed(0)
    base = SmallCNN().eval()
    folder = tmp_path_factory.mktemp("saved")
    _trained_lambda(base, torch.randn(3, 3, 16, 16)).save_pretrained(folder)
    return folder, base


@pytest.fixture
def cnn(_saved_once: tuple[Path, SmallCNN]) -> SmallCNN:
    return copy.deepcopy(_saved_once[1])


@pytest.fixture
def saved(tmp_path: Path, _saved_once: tuple[Path, SmallCNN]) -> Path:
    folder = tmp_path / "checkpoint"
    shutil.copytree(_saved_once[0], folder)
    return folder


def _edit(folder: Path, **changes: Any) -> None:
    document = json.loads((folder / CONFIG_NAME).read_text())
    for key, value in changes.items():
        if key.startswith("wrap_"):
            document["wrap"][key[5:]] = value
        elif key == "checksum":
            document["base_model"]["checksum"] = value
        else:
            document[key] = value
    (folder / CONFIG_NAME).write_text(json.dumps(document))


def _load(cnn: SmallCNN, folder: Path) -> symwrap.SymmetrizedModel:
    return symwrap.SymmetrizedModel.from_pretrained(cnn, folder)


@pytest.mark.parametrize("weights", ["../other/symwrap_weights.safetensors", "sub/w.safetensors", "..", 3])
def test_weights_outside_the_folder_are_refused(saved: Path, cnn: SmallCNN, weights: Any) -> None:
    other = saved.parent / "other"
    other.mkdir()
    (other / WEIGHTS_NAME).write_bytes((saved / WEIGHTS_NAME).read_bytes())
    _edit(saved, weights=weights)
    with pytest.raises(CheckpointError, match=r"'weights' is .*; it must be the name of a file inside .*not a path"):
        _load(cnn, saved)


def test_absolute_weights_path_is_refused(saved: Path, cnn: SmallCNN) -> None:
    _edit(saved, weights=str((saved / WEIGHTS_NAME).resolve()))
    with pytest.raises(CheckpointError, match=r"'weights' is '/.*'; it must be the name of a file inside"):
        _load(cnn, saved)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
def test_weights_link_out_of_the_folder_is_refused(saved: Path, cnn: SmallCNN) -> None:
    outside = saved.parent / "elsewhere.safetensors"
    (saved / WEIGHTS_NAME).rename(outside)
    (saved / "linked.safetensors").symlink_to(outside)
    _edit(saved, weights="linked.safetensors")
    with pytest.raises(CheckpointError, match=r"the weights file 'linked.safetensors' is a link to .*outside"):
        _load(cnn, saved)


def test_weights_named_inside_the_folder_still_load(saved: Path, cnn: SmallCNN) -> None:
    (saved / WEIGHTS_NAME).rename(saved / "renamed.safetensors")
    _edit(saved, weights="renamed.safetensors")
    assert _load(cnn, saved).method.name == "lambda_equitune"


@pytest.mark.parametrize("version", ["1", "two", 1.5, True, -1])
def test_format_version_that_is_not_a_whole_number(saved: Path, cnn: SmallCNN, version: Any) -> None:
    _edit(saved, format_version=version)
    with pytest.raises(CheckpointError, match=r"is corrupt: 'format_version' is .*, not a whole number"):
        _load(cnn, saved)


def test_deeply_nested_json_is_a_corrupt_config(saved: Path, cnn: SmallCNN) -> None:
    (saved / CONFIG_NAME).write_text('{"format": "symwrap", "wrap": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(CheckpointError, match="is corrupt: its JSON is nested too deeply to read"):
        _load(cnn, saved)


@pytest.mark.parametrize("checksum", ["12.5", [1.0], True])
def test_checksum_that_is_not_a_number(saved: Path, cnn: SmallCNN, checksum: Any) -> None:
    _edit(saved, checksum=checksum)
    with pytest.raises(CheckpointError, match=r"the base model 'checksum' is .*, not a number"):
        _load(cnn, saved)


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64])
def test_weights_stored_as_bool_or_int_are_refused(saved: Path, cnn: SmallCNN, dtype: torch.dtype) -> None:
    tensors = load_file(str(saved / WEIGHTS_NAME))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].to(dtype)
    save_file(tensors, str(saved / WEIGHTS_NAME), metadata={"group": "d4", "method": "lambda_equitune"})
    with pytest.raises(CheckpointError, match=rf"{name}: saved as {dtype}, expected torch.float32"):
        _load(cnn, saved)


@pytest.mark.parametrize(("group", "shown"), [("c999999999999", "999999999999"), ("d30000", "60000")])
def test_tampered_group_order_is_refused_before_any_work(saved: Path, cnn: SmallCNN, group: str, shown: str) -> None:
    _edit(saved, wrap_group=group)
    with pytest.raises(LimitError, match=rf"the order of {group} is {shown}, above the bound max_group_order"):
        _load(cnn, saved)
