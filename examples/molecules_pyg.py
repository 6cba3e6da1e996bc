"""A PyTorch Geometric molecule model made exactly E(3)-invariant (energies) and equivariant (forces) by frame
averaging per graph (runs offline, on CPU; needs ``pip install -e plugins/symwrap-pyg[test]`` for torch_geometric and
RDKit).

Molecules are RDKit conformers embedded from SMILES on the machine, plus a lone atom and CO₂ / benzene / CH₄ in exact
symmetric geometry (degenerate frames). The base model feeds the raw coordinates to its first layer, so it is
neither rotation nor translation invariant. Wrapped, each graph of the batch gets its own PCA frame (8 copies, one
batch of copies for the whole batch); forces are ``-∂E/∂pos`` through the wrapped model.

    python examples/molecules_pyg.py
"""

from __future__ import annotations

import warnings

import torch
from symwrap_pyg.molecules import conformer, molecule, symmetric_molecule
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn import GraphConv, global_add_pool

import symwrap
from symwrap.frames import DegenerateFrameWarning
from symwrap.groups.matrix import haar_orthogonal

SMILES = {
    "ethanol": "CCO",
    "phenol": "c1ccccc1O",
    "paracetamol": "CC(=O)Nc1ccc(O)cc1",
    "ibuprofen": "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
    "caffeine": "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
}


class EnergyGNN(nn.Module):
    """Atom embeddings plus a linear map of the raw coordinates, two GraphConv layers, a sum-pooled energy."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, hidden)
        self.lift = nn.Linear(3, hidden)
        self.conv1 = GraphConv(hidden, hidden)
        self.conv2 = GraphConv(hidden, hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, data: Batch) -> Tensor:
        h = torch.tanh(self.conv1(self.embed(data.z) + self.lift(data.pos), data.edge_index))
        h = torch.tanh(self.conv2(h, data.edge_index))
        return global_add_pool(self.head(h), data.batch, size=data.num_graphs).squeeze(-1)


def energy_and_forces(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
    data = batch.clone()
    data.pos = batch.pos.clone().requires_grad_(True)
    energy = model(data)
    (grad,) = torch.autograd.grad(energy.sum(), data.pos)
    return energy.detach(), -grad


def errors(model: nn.Module, batch: Batch, rotation: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    """Per graph: relative energy change and relative force error after moving the batch by ``x ↦ x Rᵀ + t``."""
    moved = batch.clone()
    moved.pos = batch.pos @ rotation.T + shift
    energy, force = energy_and_forces(model, batch)
    energy_moved, force_moved = energy_and_forces(model, moved)
    energy_error = (energy_moved - energy).abs() / energy.abs().max()
    per_node = (force_moved - force @ rotation.T).norm(dim=1) / force.norm(dim=1).max()
    force_error = torch.zeros(batch.num_graphs).index_reduce_(0, batch.batch, per_node, "amax", include_self=False)
    return energy_error, force_error


def main() -> None:
    torch.manual_seed(0)
    names = [*SMILES, "O (lone atom)", "CO2", "benzene", "CH4"]
    graphs = [molecule(*conformer(smiles, seed=0)) for smiles in SMILES.values()]
    graphs.append(molecule([8], torch.tensor([[0.3, -1.0, 2.0]])))
    graphs += [molecule(*symmetric_molecule(name)) for name in ("CO2", "benzene", "CH4")]
    batch = Batch.from_data_list(graphs)
    model = EnergyGNN().eval()
    wrapped = symwrap.wrap(model, "e3", "frame_averaging")
    generator = torch.Generator().manual_seed(1)
    rotation = haar_orthogonal(1, 3, special=False, generator=generator)[0].float()
    shift = torch.randn(3, generator=generator) * 3
    plain_energy, plain_force = errors(model, batch, rotation, shift)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateFrameWarning)
        energy, force = errors(wrapped, batch, rotation, shift)
    print(f"{batch.num_graphs} graphs, {batch.num_nodes} atoms; moved by a random E(3) element (with reflection)")
    print(
        f"{'molecule':<16}{'atoms':>6}  {'energy error plain':>18}  {'wrapped':>8}  "
        f"{'force error plain':>17}  {'wrapped':>8}"
    )
    for i, name in enumerate(names):
        print(
            f"{name:<16}{graphs[i].num_nodes:>6}  {plain_energy[i]:>18.1e}  {energy[i]:>8.1e}  "
            f"{plain_force[i]:>17.1e}  {force[i]:>8.1e}"
        )
    print(
        f"degenerate-frame warnings: {len({str(w.message) for w in caught})} ("
        + "; ".join(sorted({str(w.message).split(":")[0] for w in caught}))
        + ")"
    )


if __name__ == "__main__":
    main()
