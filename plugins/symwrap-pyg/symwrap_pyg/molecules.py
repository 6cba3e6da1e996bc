"""Molecules made on the machine, as PyTorch Geometric ``Data``: RDKit conformers from SMILES, and exact symmetric
geometries (linear CO₂, planar benzene, tetrahedral CH₄) whose PCA frames are degenerate.

Nothing is downloaded: RDKit (``pip install rdkit``, the plugin's ``test`` extra) embeds a 3-D conformer from a SMILES
string with its ETKDG method and a fixed seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["SYMMETRIC_MOLECULES", "conformer", "molecule", "radius_edges", "symmetric_molecule"]

#: Element symbol -> atomic number, for the geometries built here.
_NUMBERS = {"H": 1, "C": 6, "N": 7, "O": 8}

#: Molecules whose covariance has repeated eigenvalues, and which eigenvalues tie.
SYMMETRIC_MOLECULES = {
    "CO2": "linear: the two axes across the molecule tie (at zero)",
    "benzene": "planar hexagon: the two in-plane axes tie",
    "CH4": "tetrahedron: all three axes tie",
}


def radius_edges(pos: Tensor, cutoff: float = 1.8) -> Tensor:
    """``(2, E)`` directed edges between atoms closer than ``cutoff`` Å (no self loops), from pairwise distances."""
    close = torch.cdist(pos, pos) < cutoff
    close.fill_diagonal_(False)
    return close.nonzero().t().contiguous()


def molecule(z: Sequence[int] | Tensor, pos: Tensor, cutoff: float = 1.8) -> object:
    """A ``torch_geometric.data.Data`` with atomic numbers ``z (N,)``, positions ``pos (N, 3)`` and radius edges."""
    from torch_geometric.data import Data

    z = torch.as_tensor(z, dtype=torch.long)
    pos = pos.to(torch.float32)
    return Data(z=z, pos=pos, edge_index=radius_edges(pos, cutoff))


def conformer(smiles: str, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Atomic numbers ``(N,)`` and a 3-D conformer ``(N, 3)`` in Å of ``smiles`` (hydrogens added), embedded by
    RDKit's ETKDG with ``seed``.

    Raises:
        ImportError: RDKit is not installed (``pip install rdkit``).
        ValueError: RDKit cannot parse or embed ``smiles``.
    """
    from rdkit import Chem
    from rdkit.Chem import AllChem

    parsed = Chem.MolFromSmiles(smiles)
    if parsed is None:
        raise ValueError(f"RDKit cannot parse the SMILES {smiles!r}")
    mol = Chem.AddHs(parsed)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise ValueError(f"RDKit could not embed a 3-D conformer of {smiles!r}")
    z = torch.tensor([atom.GetAtomicNum() for atom in mol.GetAtoms()], dtype=torch.long)
    pos = torch.tensor(mol.GetConformer().GetPositions(), dtype=torch.float64)
    return z, pos


def symmetric_molecule(name: str) -> tuple[Tensor, Tensor]:
    """Atomic numbers and exact float64 positions (Å) of ``"CO2"``, ``"benzene"`` or ``"CH4"`` (centred at 0)."""
    if name == "CO2":
        return torch.tensor([6, 8, 8]), torch.tensor([[0.0, 0, 0], [1.16, 0, 0], [-1.16, 0, 0]], dtype=torch.float64)
    if name == "benzene":
        angles = torch.arange(6, dtype=torch.float64) * (math.pi / 3)
        ring = torch.stack([torch.cos(angles), torch.sin(angles), torch.zeros(6, dtype=torch.float64)], dim=1)
        return torch.tensor([6] * 6 + [1] * 6), torch.cat([1.39 * ring, 2.48 * ring])
    if name == "CH4":
        corners = torch.tensor([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64)
        return torch.tensor([6, 1, 1, 1, 1]), torch.cat([torch.zeros(1, 3, dtype=torch.float64), corners * 0.629])
    raise ValueError(f"unknown symmetric molecule {name!r}; choose one of {', '.join(SYMMETRIC_MOLECULES)}")
