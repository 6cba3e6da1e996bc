"""``symwrap eval`` as users run it: the no-argument default, ``torchrun``, and ``--resume`` after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYMWRAP_")}
    # offline: no network is needed, and none may be used
    env.update(PYTHONIOENCODING="utf-8", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO)
    return env


def _eval(args: list[str], cwd: Path, *, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [*(prefix or [sys.executable, "-m", "symwrap"]), "eval", *args]
    return subprocess.run(
        command, cwd=cwd, env=_env(), capture_output=True, text=True, encoding="utf-8", timeout=600, check=False
    )


def _results(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "results.json").read_text(encoding="utf-8"))


@pytest.mark.slow
@pytest.mark.integration
def test_no_argument_run_prints_the_table_and_writes_results_and_plot(tmp_path: Path) -> None:
    proc = _eval([], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("accuracy (%)"))
    assert header.split()[2:] == ["0°", "90°", "180°", "270°", "random", "mean", "inv.", "error"]
    assert any(line.startswith("plain ") for line in lines)
    assert any(line.startswith("group_averaging ") for line in lines)
    out = tmp_path / "symwrap-eval"
    results = _results(out)
    assert results["config"]["data"] == "digits" and results["config"]["split"] is None
    assert results["evaluated"] == 540  # the whole held-out test split
    plain = results["accuracy"]["plain"]
    assert plain["0°"] > 0.95
    assert max(plain["90°"], plain["180°"], plain["270°"]) < plain["0°"] - 0.3  # drops under rotation
    for method in results["methods"]:
        if method != "plain":  # every default method is invariant: identical counts for every rotation
            assert len(set(results["correct"][method].values())) == 1, method
            assert results["invariance_error"][method] < 1e-5, method
    png = (out / "accuracy.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 10_000
    from PIL import Image

    with Image.open(out / "accuracy.png") as image:
        image.load()
        assert image.size[0] >= 400 and image.size[1] >= 300
        colours = np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)
        assert len(colours) > 50  # lines and text, not a blank canvas
    # the shipped trained methods are compared by default, and they recover what the rotations cost
    assert results["methods"] == [
        "plain",
        "group_averaging",
        "equizero",
        "frame_averaging",
        "lambda_equitune",
        "canonicalization",
    ]
    assert set(results["trained"]) == {"lambda_equitune", "canonicalization"}
    mean = {m: sum(row.values()) / len(row) for m, row in results["accuracy"].items()}
    for trained in results["trained"]:
        assert mean[trained] > 0.9 > mean["plain"] + 0.3, mean
    assert any(line.startswith("trained (weights from a save_pretrained folder)") for line in lines)


@pytest.mark.slow
@pytest.mark.integration
def test_torchrun_two_processes_equal_one(tmp_path: Path) -> None:
    args = ["--limit", "150", "--batch-size", "16", "--methods", "plain,group_averaging", "--no-plot", "--no-progress"]
    single = _eval([*args, "--output-dir", str(tmp_path / "one")], cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "symwrap"]
    double = _eval([*args, "--output-dir", str(tmp_path / "two")], cwd=tmp_path, prefix=torchrun)
    assert double.returncode == 0, double.stdout + double.stderr
    one, two = _results(tmp_path / "one"), _results(tmp_path / "two")
    assert two["world_size"] == 2
    assert two["evaluated"] == one["evaluated"] == 150
    assert two["correct"] == one["correct"]
    assert two["accuracy"] == one["accuracy"]
    assert double.stdout.count("accuracy (%)") == 1  # only rank 0 prints


@pytest.mark.slow
@pytest.mark.integration
def test_resume_after_a_killed_run_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    # a model 30 ms slower per forward (16 batches x 5 corruptions: >= 2.4 s), still running when it is killed
    args = ["tests.eval_helpers:slow_digits", "--limit", "128", "--batch-size", "8", "--methods", "plain"]
    args += ["--no-plot", "--no-progress"]
    killed_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "symwrap", "eval", *args, "--output-dir", str(killed_dir)]
    proc = subprocess.Popen(command, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    progress = killed_dir / "progress.json"
    for _ in range(15_000):  # at most 15,000 polls, 20 ms apart
        if proc.poll() is not None:
            break
        if progress.is_file() and json.loads(progress.read_text())["step"] >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    step = json.loads(progress.read_text())["step"]
    assert 3 <= step < 16  # killed half-way
    assert not (killed_dir / "results.json").exists()

    resumed = _eval([*args, "--output-dir", str(killed_dir), "--resume"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming after batch {step}" in resumed.stderr
    whole = _eval([*args, "--output-dir", str(tmp_path / "whole")], cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    a, b = _results(killed_dir), _results(tmp_path / "whole")
    assert a["evaluated"] == b["evaluated"] == 128  # nothing counted twice
    assert a["correct"] == b["correct"]
