"""Forces as -∂E/∂pos through the wrapped model: exactly equivariant, and the true gradient of the wrapped energy."""

from __future__ import annotations

import pytest
import torch
from pyg_helpers import SMILES, moved, random_rotation
from symwrap_pyg.molecules import conformer, molecule
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn import GraphConv, global_add_pool

import symwrap
from symwrap.frames import DegenerateFrameWarning


class EnergyGNN(nn.Module):
    """Energy per graph from raw coordinates and atom types (not invariant by itself)."""

    def __init__(self, hidden: int = 24) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, hidden)
        self.lift = nn.Linear(3, hidden)
        self.conv = GraphConv(hidden, hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, data: Batch) -> Tensor:
        h = torch.tanh(self.conv(torch.tanh(self.embed(data.z) + self.lift(data.pos)), data.edge_index))
        return global_add_pool(self.head(h), data.batch, size=data.num_graphs).squeeze(-1)


def forces(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
    pos = batch.pos.detach().clone().requires_grad_(True)
    data = batch.clone()
    data.pos = pos
    energy = model(data)
    (grad,) = torch.autograd.grad(energy.sum(), pos)
    return energy.detach(), -grad


@pytest.mark.parametrize(
    ("group", "method"), [("e3", "frame_averaging"), ("so3", "frame_averaging"), ("se3", "canonicalization")]
)
def test_autograd_forces_are_exactly_equivariant(group: str, method: str, real_molecules, big) -> None:
    torch.manual_seed(3)
    model = EnergyGNN()
    batch = Batch.from_data_list([*real_molecules, big])
    generator = torch.Generator().manual_seed(11)
    rotation = random_rotation(group.startswith("s"), generator)
    shift = torch.randn(3, generator=generator) if group.startswith(("e", "se")) else None
    wrapped = symwrap.wrap(model, group, method)
    energy, force = forces(wrapped, batch)
    energy_moved, force_moved = forces(wrapped, moved(batch, rotation, shift))
    assert float((energy_moved - energy).abs().max() / energy.abs().max()) <= 1e-5
    assert float((force_moved - force @ rotation.T).abs().max() / force.abs().max()) <= 1e-5
    _, plain = forces(model, batch)
    _, plain_moved = forces(model, moved(batch, rotation, shift))
    assert float((plain_moved - plain @ rotation.T).abs().max() / plain.abs().max()) > 1e-2


def test_forces_are_the_gradient_of_the_wrapped_energy() -> None:
    """Central differences of the wrapped energy (float64) match the autograd forces along random directions: the
    frame's own dependence on the positions is differentiated too, so the forces are conservative."""
    torch.manual_seed(4)
    model = EnergyGNN().double()
    data = molecule(*conformer(SMILES[2], seed=0))
    data.pos = data.pos.double()
    batch = Batch.from_data_list([data])
    wrapped = symwrap.wrap(model, "e3", "frame_averaging")
    _, force = forces(wrapped, batch)
    generator = torch.Generator().manual_seed(0)
    step = 1e-6
    for _ in range(3):
        direction = torch.randn(batch.pos.shape, generator=generator, dtype=torch.float64)
        with torch.no_grad():
            plus, minus = batch.clone(), batch.clone()
            plus.pos, minus.pos = batch.pos + step * direction, batch.pos - step * direction
            slope = (wrapped(plus) - wrapped(minus)).sum() / (2 * step)
        torch.testing.assert_close(slope, -(force * direction).sum(), rtol=1e-6, atol=1e-8)


def test_forces_stay_finite_on_degenerate_graphs(symmetric, real_molecules) -> None:
    """Tied eigenvalues make eigh's usual backward infinite; their eigenspace's rotation is left out instead."""
    torch.manual_seed(5)
    batch = Batch.from_data_list([real_molecules[0], symmetric["CH4"], symmetric["CO2"], symmetric["benzene"]])
    wrapped = symwrap.wrap(EnergyGNN(), "e3", "frame_averaging")
    with pytest.warns(DegenerateFrameWarning):
        _, force = forces(wrapped, batch)
    assert bool(torch.isfinite(force).all())
    _, alone = forces(wrapped, Batch.from_data_list([real_molecules[0]]))
    torch.testing.assert_close(force[: real_molecules[0].num_nodes], alone, rtol=1e-5, atol=1e-6)
