"""Helpers of the symwrap-pyg tests: graph models that are not invariant by themselves (raw coordinates as node
features), random rotations, moved batches and a large random cluster. A module of its own, not ``conftest``: the
repository's root ``conftest.py`` would make ``from conftest import ...`` ambiguous."""

from __future__ import annotations

import torch
from symwrap_pyg.molecules import molecule
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn import GraphConv, global_add_pool

#: Small drug-like molecules (RDKit conformers, seed 0): ethanol, phenol, paracetamol, glycine.
SMILES = ("CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "NCC(=O)O")


class CoordinateGNN(nn.Module):
    """Two GraphConv layers on atom embeddings plus a linear map of the raw coordinates: neither rotation nor
    translation invariant. Returns the energy per graph ``(G,)``, a vector per node ``(N, 3)``, positions ``(N, 3)``."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, hidden)
        self.lift = nn.Linear(3, hidden)
        self.conv1 = GraphConv(hidden, hidden)
        self.conv2 = GraphConv(hidden, hidden)
        self.energy_head = nn.Linear(hidden, 1)
        self.vector_head = nn.Linear(hidden, 3)

    def forward(self, data: Batch) -> dict[str, Tensor]:
        h = self.embed(data.z) + self.lift(data.pos)
        h = torch.tanh(self.conv1(h, data.edge_index))
        h = torch.tanh(self.conv2(h, data.edge_index))
        energy = global_add_pool(self.energy_head(h), data.batch, size=data.num_graphs).squeeze(-1)
        vectors = self.vector_head(h)
        return {"energy": energy, "forces": vectors, "pos": data.pos + 0.1 * vectors}


class TensorGNN(nn.Module):
    """The same kind of model called with tensors: ``model(z, pos, edge_index, batch)`` -> energy ``(G,)``."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, hidden)
        self.lift = nn.Linear(3, hidden)
        self.conv = GraphConv(hidden, hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, z: Tensor, pos: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        h = torch.tanh(self.conv(self.embed(z) + self.lift(pos), edge_index))
        return global_add_pool(self.head(h), batch).squeeze(-1)


def random_rotation(special: bool, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
    """A random orthogonal matrix (a reflection when not ``special``), ``(3, 3)``."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if not special:
        q = q @ torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    return q.to(dtype)


def moved(batch: Batch, rotation: Tensor, shift: Tensor | None) -> Batch:
    """The batch with positions ``pos Rᵀ + t`` (every other attribute shared)."""
    out = batch.clone()
    out.pos = batch.pos @ rotation.T + (0 if shift is None else shift)
    return out


def cluster(atoms: int, seed: int) -> object:
    """A random cluster of ``atoms`` atoms at liquid-like density (~0.1 atoms/Å³), radius edges."""
    generator = torch.Generator().manual_seed(seed)
    radius = (3 * atoms / (4 * torch.pi * 0.1)) ** (1 / 3)
    pos = torch.randn(atoms, 3, generator=generator, dtype=torch.float64) * radius / 2
    pos = pos * torch.tensor([1.0, 0.8, 0.6], dtype=torch.float64)  # distinct principal axes
    z = torch.randint(1, 9, (atoms,), generator=generator)
    return molecule(z, pos)
