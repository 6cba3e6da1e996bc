"""The plugin as a distribution (entry point, adapter choice) and Monte-Carlo estimates on graph batches."""

from __future__ import annotations

import pytest
import torch
from conftest import moved, random_rotation
from torch import Tensor, nn
from torch_geometric.data import Batch

import symwrap
from symwrap import cli
from symwrap.engine import SymmetrizedOutput


def test_listed_by_symwrap_plugins_strict(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plugins", "--strict"]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:2] == ["pyg", "pyg"] for line in out.splitlines())


def test_adapter_is_chosen_for_graph_models(gnn) -> None:
    class Annotated(nn.Module):
        def forward(self, data: Batch) -> Tensor:
            return data.pos.sum()

    class Plain(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x

    assert symwrap.wrap(gnn, "e3", "frame_averaging").adapter.name == "pyg"  # torch_geometric layers inside
    assert symwrap.wrap(Annotated(), "e3", "frame_averaging").adapter.name == "pyg"  # forward(data: Batch)
    assert symwrap.wrap(Plain(), "e3", "frame_averaging").adapter.name == "torch"


def test_monte_carlo_is_translation_exact_with_standard_errors(gnn, real_molecules) -> None:
    batch = Batch.from_data_list(real_molecules)
    kinds = {"energy": "invariant", "forces": "vectors"}
    errors = []
    for samples in (4, 64):
        wrapped = symwrap.wrap(gnn, "e3", "monte_carlo", samples=samples, seed=0, return_stderr=True, select=kinds)
        with torch.no_grad():
            result = wrapped(batch)
            shifted = wrapped(moved(batch, torch.eye(3), torch.tensor([4.0, -2.0, 1.0])))
        assert isinstance(result, SymmetrizedOutput)
        assert result.stderr["energy"].shape == (len(real_molecules),)
        assert result.stderr["forces"].shape == batch.pos.shape
        torch.testing.assert_close(shifted.output["energy"], result.output["energy"], rtol=1e-5, atol=1e-5)
        errors.append(result.stderr["energy"])
    ratio = (errors[1] / errors[0]).median()
    assert 0.1 < float(ratio) < 0.5  # 1/sqrt(16) = 0.25


def test_monte_carlo_converges_to_rotation_invariance(gnn, real_molecules) -> None:
    batch = Batch.from_data_list(real_molecules)
    rotation = random_rotation(True, torch.Generator().manual_seed(9))
    gaps = []
    for samples in (2, 128):
        wrapped = symwrap.wrap(gnn, "so3", "monte_carlo", samples=samples, seed=1)
        with torch.no_grad():
            a, b = wrapped(batch), wrapped(moved(batch, rotation, None))
        gaps.append(float((a["energy"] - b["energy"]).abs().max() / a["energy"].abs().max()))
    assert gaps[1] < gaps[0] / 3
