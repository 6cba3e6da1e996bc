"""Inputs that used to end in a raw torch error: empty batches, a wrong class axis, a wrong number of output rows,
and the command line's code-execution note and import path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import symwrap
from symwrap import cli
from symwrap.errors import ConfigError
from tests.conftest import PointMLP


def _cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


@pytest.mark.parametrize(
    ("group", "method", "options"),
    [
        ("rot90", "group_averaging", {}),
        ("d4", "equizero", {}),
        ("so2", "monte_carlo", {}),
        ("rot90", "lambda_equitune", {"features": "1", "example_input": torch.randn(2, 1, 8, 8)}),
    ],
)
def test_an_empty_batch_gives_the_plain_models_empty_result(group: str, method: str, options: dict) -> None:
    model = _cnn()
    wrapped = symwrap.wrap(model, group, method, **options)
    empty = torch.randn(0, 1, 8, 8)
    for _ in range(2):  # before and after a real call (the second call may take the fast path)
        out = wrapped(empty)
        assert out.shape == model(empty).shape == (0, 5)
        assert wrapped(torch.randn(2, 1, 8, 8)).shape == (2, 5)


@pytest.mark.parametrize("method", ["frame_averaging", "canonicalization"])
def test_an_empty_batch_of_point_clouds(method: str) -> None:
    assert symwrap.wrap(PointMLP(), "o3", method)(torch.randn(0, 6, 3)).shape == (0, 4)


@pytest.mark.parametrize("class_dim", [5, -3, 0])
def test_class_dim_out_of_range_or_on_the_batch_axis(class_dim: int) -> None:
    wrapped = symwrap.wrap(_cnn(), "rot90", reduce="probs", class_dim=class_dim)
    with pytest.raises(
        ConfigError, match=rf"invalid option 'class_dim': {class_dim} is not a class axis .*\(batch, 5\)"
    ):
        wrapped(torch.randn(2, 1, 8, 8))


class WrongRows(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(3, 5)


def test_a_model_returning_the_wrong_number_of_rows() -> None:
    wrapped = symwrap.wrap(WrongRows(), "rot90", chunk_size=None)
    with pytest.raises(ConfigError, match=r"the model returned 3 rows for a forward of 8 rows .*output \(3, 5\)"):
        wrapped(torch.randn(2, 1, 8, 8))


# ----------------------------------------------------------------------------- command line
@pytest.mark.parametrize("command", [[], ["eval"], ["check"]])
def test_help_says_that_model_specs_run_code(command: list[str], capsys: Any) -> None:
    with pytest.raises(SystemExit):
        cli.main([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Model specs run code: 'pkg.module:factory' and 'python:pkg.module:factory' import that module" in text
    assert "The working directory is not on the import path (not even with python -m symwrap)" in text


@pytest.mark.slow
@pytest.mark.integration
def test_python_m_symwrap_does_not_import_from_the_working_directory(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    (tmp_path / "stray_module.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef build(): pass\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYMWRAP_")}
    env["SYMWRAP_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    command = [sys.executable, "-m", "symwrap", "check", "stray_module:build", "--group", "rot90"]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "UnknownNameError" in proc.stderr and not marker.exists()


def test_import_cwd_puts_the_working_directory_on_the_path(
    builtins_only: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cwd_factory_module.py").write_text("def build():\n    return 'not a model'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    args = ["check", "cwd_factory_module:build", "--group", "rot90", "--output-dir", str(tmp_path / "out")]
    assert cli.main(args) == 2  # not importable: an unknown name
    assert cli.main([*args, "--import-cwd"]) == 2  # imported and run: its result is not a model
    assert "cwd_factory_module" in sys.modules
    del sys.modules["cwd_factory_module"]


def test_cli_bounds_flags(builtins_only: None, tmp_path: Path, capsys: Any) -> None:
    args = ["check", "digits", "--group", "c12", "--output-dir", str(tmp_path), "--max-group-order", "8"]
    assert cli.main(args) == 2
    assert "LimitError: the order of c12 is 12, above the bound max_group_order=8" in capsys.readouterr().err
    assert cli.main(["eval", "--samples", "9999", "--output-dir", str(tmp_path), "--max-samples", "0"]) == 2
    assert "max_samples must be a positive int, got 0" in capsys.readouterr().err


def test_an_image_with_an_empty_axis() -> None:
    wrapped = symwrap.wrap(_cnn(), "d4")
    with pytest.raises(symwrap.InputLayoutError, match=r"an axis other than the batch axis is empty \(size 0\)"):
        wrapped(torch.randn(1, 0, 8, 8))


class FloatingCNN(nn.Module):
    """Takes integer images too (casts them), so an error can only come from symwrap's rotation."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _cnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float())


def test_integer_images_for_interpolated_rotations() -> None:
    wrapped = symwrap.wrap(FloatingCNN(), "c8")
    with pytest.raises(symwrap.InputLayoutError, match=r"interpolated rotations need floating-point data, got torch"):
        wrapped(torch.ones(1, 1, 8, 8, dtype=torch.int64))
