"""``symwrap eval``: resume checkpoints validated, output folder checked first, odd images skipped, named errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import symwrap
from symwrap import cli
from symwrap.errors import ConfigError, InputLayoutError, LimitError
from symwrap.evaluation.runner import _covered
from symwrap.evaluation.state import PROGRESS_FILE
from tests.test_eval import _digit_pngs, _run


@pytest.fixture(scope="module")
def _finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run of 16 digits in 2 batches of 8 (plain model only) for the module; tests copy its output."""
    root = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SYMWRAP_DISABLE_PLUGIN_AUTOLOAD", "1")
        patch.delenv("SYMWRAP_LOAD_PLUGINS", raising=False)
        symwrap.reload_plugins()
        _run(root, methods="plain", limit=16)
    symwrap.reload_plugins()
    return root / "out"


@pytest.fixture
def checkpoint(builtins_only: None, tmp_path: Path, _finished_run: Path) -> Path:
    """A copy of that run's output folder: its progress.json."""
    shutil.copytree(_finished_run, tmp_path / "out")
    return tmp_path / "out" / PROGRESS_FILE


def _tamper(path: Path, **changes: Any) -> None:
    saved = json.loads(path.read_text())
    saved.update(changes)
    path.write_text(json.dumps(saved))


def test_an_untouched_checkpoint_resumes(checkpoint: Path, tmp_path: Path) -> None:
    results = _run(tmp_path, methods="plain", limit=16, resume=True)
    assert results["evaluated"] == 16


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: {"counts": [-1000] * len(c)}, r"counts hold -1000, not a whole number ≥ 0"),
        (lambda c: {"step": -3}, r"step is -3, not a whole number ≥ 0"),
        (lambda c: {"step": 7}, r"step 7 is past the 2 batches of this run"),
        (lambda c: {"step": "2"}, r"step is '2', not a whole number ≥ 0"),
        (lambda c: {"counts": [c[0] + 190, *c[1:-2], 16, 0]}, r"a correct count \(\d+\) is above the 16 images"),
        (
            lambda c: {"counts": [0] * (len(c) - 2) + [8, 0]},
            r"8 evaluated \+ 0 skipped images after 2 batches, but those .* 16",
        ),
        (lambda c: {"counts": c[1:]}, r"\d+ counts, this run keeps \d+"),
        (lambda c: {"counts": [True] * len(c)}, r"counts hold True, not a whole number"),
    ],
)
def test_resume_refuses_a_checkpoint_that_does_not_fit(
    checkpoint: Path, tmp_path: Path, edit: Any, message: str
) -> None:
    counts = json.loads(checkpoint.read_text())["counts"]
    _tamper(checkpoint, **edit(counts))
    with pytest.raises(ConfigError, match=rf"--resume: .*progress.json' does not fit this run: {message}"):
        _run(tmp_path, methods="plain", limit=16, resume=True)


def test_resume_refuses_a_checkpoint_that_is_not_one(checkpoint: Path, tmp_path: Path) -> None:
    checkpoint.write_text('{"fingerprint": ' + "[" * 50_000 + "]" * 50_000 + ', "step": 1, "counts": []}')
    with pytest.raises(ConfigError, match=r"is not a symwrap eval checkpoint \(RecursionError"):
        _run(tmp_path, methods="plain", limit=16, resume=True)


def test_covered_images_follow_the_shards() -> None:
    assert _covered(1, 10, 1, 4) == 4 and _covered(3, 10, 1, 4) == 10
    assert _covered(1, 10, 3, 2) == 6 and _covered(2, 10, 3, 2) == 10  # shards of 4, 3, 3


# ----------------------------------------------------------------------------- output folder
def test_output_dir_that_is_a_file(builtins_only: None, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"--output-dir '.*file' is a file, not a folder"):
        _run(tmp_path, output_dir=str(tmp_path / "file"))


def test_results_json_that_is_a_folder(builtins_only: None, tmp_path: Path) -> None:
    (tmp_path / "out" / "results.json").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"results.json is a folder, so the run could not write it"):
        _run(tmp_path, methods="plain")
    assert not (tmp_path / "out" / PROGRESS_FILE).exists()  # refused before the first batch


def test_output_dir_inside_a_file(builtins_only: None, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"--output-dir '.*file/sub' cannot be created"):
        _run(tmp_path, output_dir=str(tmp_path / "file" / "sub"))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions and a non-root user")
def test_read_only_output_dir(builtins_only: None, tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=r"--output-dir '.*ro' is not writable \(PermissionError"):
            _run(tmp_path, output_dir=str(folder))
    finally:
        folder.chmod(0o700)


# ----------------------------------------------------------------------------- images and options
def test_an_image_of_another_size_is_skipped_and_counted_and_resume_gets_past_it(
    builtins_only: None, tmp_path: Path
) -> None:
    from PIL import Image

    _digit_pngs(tmp_path / "folder", count=12)
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8), mode="L").save(tmp_path / "folder" / "digit9" / "big.png")
    options = {
        "model": "tests.eval_helpers:small_cnn",  # no preprocessing of its own: the images are not resized
        "data": str(tmp_path / "folder"),
        "image_mode": "L",
        "methods": "plain",
        "batch_size": 5,
    }
    results = _run(tmp_path, **options)
    assert (results["evaluated"], results["skipped_unreadable"]) == (12, 1)
    progress = tmp_path / "out" / PROGRESS_FILE
    saved = json.loads(progress.read_text())
    _tamper(progress, step=2, counts=[*saved["counts"][:-2], 10, 0])  # as if killed after 2 of the 3 batches
    resumed = _run(tmp_path, **options, resume=True)
    assert resumed["evaluated"] + resumed["skipped_unreadable"] == 13


def test_rgb_images_for_the_one_channel_default_model(builtins_only: None, tmp_path: Path) -> None:
    _digit_pngs(tmp_path / "folder", count=4)
    with pytest.raises(
        InputLayoutError, match=r"shape \(1, 3, 8, 8\) \(channels 3.*--image-mode is RGB: pass --image-mode L"
    ):
        _run(tmp_path, data=str(tmp_path / "folder"), methods="plain")


def test_unknown_device_is_a_one_line_error(builtins_only: None, tmp_path: Path, capsys: Any) -> None:
    code = cli.main(["eval", "--device", "tpu", "--output-dir", str(tmp_path), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--device 'tpu' is not a device torch knows; use cpu, cuda, cuda:N or mps" in err
    assert "Traceback" not in err


def test_huge_sample_count_is_refused(builtins_only: None, tmp_path: Path) -> None:
    with pytest.raises(LimitError, match=r"--samples is 100000000, above the bound max_samples=4096"):
        _run(tmp_path, samples=100_000_000)
