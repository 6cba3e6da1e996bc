"""The plugin as a distribution (entry point, adapter choice) and Monte-Carlo estimates on graph batches."""

from __future__ import annotations

import pytest
import torch
from pyg_helpers import moved, random_rotation
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


def test_dense_calls_of_a_model_with_a_pyg_layer_keep_the_engine() -> None:
    """A model that only uses a torch_geometric layer on (B, N, 3) clouds is still wrapped by the core engine."""
    from torch_geometric.nn import MLP

    class CloudNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mlp = MLP([3, 16, 4], norm=None)

        def forward(self, x: Tensor) -> Tensor:
            return self.mlp(x).max(dim=1).values

    torch.manual_seed(0)
    model = CloudNet().eval()
    wrapped = symwrap.wrap(model, "o3", "frame_averaging")
    assert wrapped.adapter.name == "pyg"
    clouds = torch.randn(2, 12, 3) * torch.tensor([3.0, 2.0, 1.0])
    rotation = random_rotation(False, torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(wrapped(clouds @ rotation.T), wrapped(clouds), rtol=1e-5, atol=1e-5)
