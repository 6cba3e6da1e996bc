"""A new user's mistakes get one clear message, not a traceback: ``symwrap eval`` and the loader helpers.

Everything runs offline: the hub is simulated unreachable with ``HF_HUB_OFFLINE`` or a monkeypatched socket.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import symwrap
from symwrap.cli import main
from symwrap.errors import ConfigError, InputLayoutError
from symwrap.evaluation import loading, runner
from symwrap.evaluation.report import format_table
from symwrap.evaluation.runner import EvalConfig, run_eval


def rgb_classifier() -> nn.Module:
    """A model spec factory (``tests.test_cli_messages:rgb_classifier``) for 3-channel 32×32 images."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 10))


def _eval_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["eval", "--limit", "16", "--batch-size", "8", "--methods", "plain", "--no-plot", "--no-progress",
            "--chunk-size", "none", "--probe-size", "2", "--output-dir", str(tmp_path / "out"), *extra]  # fmt: skip


def _stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


# ----------------------------------------------------------------------------- model vs data
def test_a_model_that_does_not_take_the_data_fails_on_one_image_before_the_run(tmp_path: Path) -> None:
    config = EvalConfig(model="tests.test_cli_messages:rgb_classifier", methods="plain,group_averaging", limit=8)
    config.output_dir, config.plot, config.progress = str(tmp_path / "out"), False, False
    with pytest.raises(InputLayoutError, match=r"does not take the images of digits.*channels 1, size 8×8") as info:
        run_eval(config)
    assert "--image-mode" in str(info.value)
    assert not (tmp_path / "out" / "progress.json").exists()  # nothing ran


def test_the_cli_prints_the_mismatch_as_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _eval_args(tmp_path)
    args.insert(1, "tests.test_cli_messages:rgb_classifier")
    assert main(args) == 2
    lines = _stderr_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("symwrap eval: error: InputLayoutError: model "), lines


# ----------------------------------------------------------------------------- Ctrl-C and --resume
def test_ctrl_c_ends_with_one_line_naming_resume_and_resume_says_where_it_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    counted = runner._count_batch
    calls = []

    def interrupt_on_the_second_batch(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        counted(*args, **kwargs)

    monkeypatch.setattr(runner, "_count_batch", interrupt_on_the_second_batch)
    assert main(_eval_args(tmp_path)) == 130
    lines = _stderr_lines(capsys)
    assert len(lines) == 1, lines
    assert "interrupted" in lines[0] and "--resume" in lines[0] and str(tmp_path / "out") in lines[0]
    assert json.loads((tmp_path / "out" / "progress.json").read_text())["step"] == 1

    monkeypatch.setattr(runner, "_count_batch", counted)
    assert main([*_eval_args(tmp_path), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "resuming after batch 1 of 2 from" in err and "going on with batch 2" in err


def test_resume_without_a_checkpoint_says_there_is_nothing_to_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*_eval_args(tmp_path), "--resume"]) == 0
    assert f"--resume: no checkpoint at {tmp_path / 'out' / 'progress.json'}; starting" in capsys.readouterr().err


# ----------------------------------------------------------------------------- CLI advice in CLI syntax
@pytest.mark.parametrize("method", ["lambda_equitune", "canonicalization"])
def test_a_learned_method_without_a_folder_gets_cli_advice(
    method: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _eval_args(tmp_path)
    args[args.index("plain")] = f"plain,{method}"
    assert main(args) == 2
    lines = _stderr_lines(capsys)
    assert len(lines) == 1
    assert f"--methods {method}=DIR" in lines[0] and "symwrap.wrap(" not in lines[0]
    assert f"--methods {method}=" in lines[0].split("shipped for `symwrap eval` on digits")[1]


# ----------------------------------------------------------------------------- the table
def test_approximate_groups_and_trained_methods_are_marked_in_the_table() -> None:
    results = {
        "corruptions": ["0°", "45°"],
        "accuracy": {"plain": {"0°": 1.0, "45°": 0.5}, "group_averaging": {"0°": 0.7, "45°": 0.7}},
        "invariance_error": {"plain": 1.0, "group_averaging": 0.1},
        "trained": {},
        "group_exact": False,
        "config": {"group": "c8"},
    }
    assert "group c8 is approximate" in format_table(results)
    results["group_exact"], results["trained"] = True, {"group_averaging": "DIR"}
    table = format_table(results)
    assert "approximate" not in table and "trained (weights from a save_pretrained folder): group_averaging" in table


# ----------------------------------------------------------------------------- offline hub
def test_an_offline_variable_is_reason_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert loading.hub_offline_reason() == "HF_HUB_OFFLINE=1 is set"


def test_the_connection_probe_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in loading.OFFLINE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(loading.socket, "create_connection", refuse)
    assert (
        loading.hub_offline_reason("hub.example") == "hub.example cannot be reached (OSError: network is unreachable)"
    )
    release = threading.Event()

    def hang(*args: Any, **kwargs: Any) -> None:  # a name lookup that does not answer
        release.wait(5)
        raise OSError("late")

    monkeypatch.setattr(loading.socket, "create_connection", hang)
    try:
        assert loading.hub_offline_reason("hub.example", timeout=0.05) == "hub.example did not answer within 0.05 s"
    finally:
        release.set()


def test_load_from_hub_reads_the_cache_only_and_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    seen = []

    def load() -> None:
        seen.append(huggingface_hub.constants.HF_HUB_OFFLINE)
        raise OSError("not in the cache")

    with pytest.raises(
        loading.HubUnreachableError, match=r"'hf:org/model' needs files from the Hugging Face hub.*HF_HOME"
    ):
        loading.load_from_hub("hf:org/model", load, probe=lambda: "no network")
    assert seen == [True]
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False  # restored
    assert loading.load_from_hub("hf:org/model", lambda: "loaded", probe=lambda: None) == "loaded"


# ----------------------------------------------------------------------------- groups and check
def test_repr_works_for_every_registered_group() -> None:
    for name in symwrap.list_groups():
        if "{" in name:  # patterns like c{n}: their instances are tested below
            continue
        try:
            group = symwrap.get_group(name)
        except TypeError:  # needs options (word_swap's words)
            continue
        assert name in repr(group) or type(group).__name__ in repr(group)
    assert repr(symwrap.get_group("shift")) == "ShiftGroup(name='shift', order=sized by the input)"
    assert repr(symwrap.get_group("c8")).endswith("exact=False)")


def test_check_accepts_group_options() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    result = symwrap.check(model, "shift", torch.randn(2, 1, 8, 8), group_options={"stride": 4})
    assert result.group == "shift(stride=4)" and len(result.errors) == 4
    with pytest.raises(ConfigError, match="group options are only accepted with a group name"):
        symwrap.check(model, symwrap.get_group("rot90"), torch.randn(2, 1, 8, 8), group_options={"stride": 4})
