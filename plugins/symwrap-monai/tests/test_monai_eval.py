"""The monai: loader, the Dice metric, per-element Dice on synthetic volumes and the symwrap-monai-eval command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.metrics import compute_dice
from monai.networks.nets import UNet
from safetensors.torch import save_file
from symwrap_monai.evaluate import dice_per_class, main, per_element_dice, synthetic_volumes
from symwrap_monai.loader import parse_spec

import symwrap
from symwrap.errors import ConfigError
from symwrap.evaluation.specs import load_model

SMALL = "monai:UNet?channels=4,8&strides=2,"  # a trailing comma makes a one-element tuple


def test_the_plugin_registers_the_monai_loader() -> None:
    registry = symwrap.get_registry("model_loader")
    entry, _ = registry.lookup("monai")
    assert entry.plugin == "monai"


def test_a_spec_with_options_builds_that_network(tmp_path: Path) -> None:
    loaded = load_model(SMALL + "&out_channels=3", device="cpu")
    assert isinstance(loaded.model, UNet) and not loaded.model.training
    assert loaded.model(torch.randn(1, 1, 8, 8, 8)).shape == (1, 3, 8, 8, 8)
    assert parse_spec("SegResNet?init_filters=4&norm=batch&dropout_prob=0.1") == (
        "SegResNet",
        {"init_filters": 4, "norm": "batch", "dropout_prob": 0.1},
    )
    # a local safetensors state dict is read offline
    path = tmp_path / "unet.safetensors"
    save_file({k: v.contiguous() for k, v in loaded.model.state_dict().items()}, str(path))
    again = load_model(SMALL + "&out_channels=3", pretrained=str(path), device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(), loaded.model.state_dict().values()))


@pytest.mark.parametrize(
    ("spec", "pretrained", "message"),
    [
        ("monai:UNett", None, r"monai.networks.nets has no network 'UNett'.*UNet"),
        ("monai:UNet?channels", None, r"option 'channels' is not key=value"),
        ("monai:UNet?kernel=3", None, r"monai:UNet.*kernel.*option names of UNet"),
        ("monai:UNet", True, r"reads a local .safetensors state dict"),
    ],
)
def test_bad_specs_are_refused(spec: str, pretrained: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_model(spec, pretrained=pretrained, device="cpu")


def test_dice_matches_monai_compute_dice() -> None:
    prediction = torch.randint(0, 3, (2, 6, 6, 6))
    target = torch.randint(0, 3, (2, 6, 6, 6))
    ours = dice_per_class(prediction, target, 3)
    one_hot = [torch.nn.functional.one_hot(t, 3).permute(0, 4, 1, 2, 3) for t in (prediction, target)]
    # monai scores per volume; over the whole set: sum the intersections and sizes of both volumes
    joint = [torch.cat(list(t), dim=-1)[None] for t in one_hot]
    theirs = compute_dice(joint[0], joint[1], include_background=False)[0]
    torch.testing.assert_close(ours, theirs.double(), rtol=1e-6, atol=1e-6)
    assert torch.isnan(dice_per_class(torch.zeros(1, 2, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, 2), 2)).all()


def test_per_element_dice_is_flat_once_symmetrized() -> None:
    images, labels = synthetic_volumes(1, (8, 8, 8), classes=2, seed=0)
    assert images.shape == (1, 1, 8, 8, 8) and set(labels.unique().tolist()) <= {0, 1} and labels.sum() > 0
    net = load_model(SMALL, device="cpu").model
    group = symwrap.get_group("flip3d")
    wrapped = symwrap.wrap(net, "flip3d", output="equivariant", chunk_size=None)
    results = per_element_dice({"none": net, "group_averaging": wrapped}, group, images, labels, classes=2)
    assert len(results["none"]) == 8
    averaged = torch.tensor(results["group_averaging"])
    assert (averaged - averaged[0]).abs().max() < 1e-9, "a symmetrized model scores the same on every element"


def test_the_command_writes_the_table_the_json_and_the_plot(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "eval"
    argv = ["--model", SMALL, "--group", "cube", "--group-option", "plane=hw", "--size", "6,8,8", "--volumes", "1"]
    argv += ["--chunk-size", "none"]
    assert main([*argv, "--train-steps", "1", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Dice per element of cube(plane=hw)" in printed and "| group_averaging |" in printed
    results = json.loads((out / "results.json").read_text())
    assert len(results["dice_per_element"]["none"]) == 8
    assert (out / "dice_per_element.png").stat().st_size > 1000
    assert (out / "dice_per_element.md").read_text().startswith("Dice per element")


def test_the_command_names_a_bad_group_option() -> None:
    with pytest.raises(SystemExit, match=r"invalid option 'plane' of group 'cube'"):
        main(["--model", SMALL, "--group", "cube", "--group-option", "plane=xy", "--size", "8", "--volumes", "1"])
    with pytest.raises(SystemExit, match=r"--size.*at least 6"):
        main(["--model", SMALL, "--size", "2"])
