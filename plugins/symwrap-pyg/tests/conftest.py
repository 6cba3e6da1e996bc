"""Fixtures of the symwrap-pyg tests: molecule batches made on the machine (RDKit conformers, exact symmetric
geometries, a large random cluster) and a graph model that is not invariant by itself."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from pyg_helpers import SMILES, CoordinateGNN, cluster
from symwrap_pyg.molecules import conformer, molecule, symmetric_molecule


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """These graphs are small (a few thousand edges): a second intra-op thread costs more in synchronisation than it
    saves, up to ~100× on PyG's scatter when the cores are shared with other work. Restored after each module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def real_molecules() -> list:
    """RDKit conformers of :data:`SMILES`."""
    return [molecule(*conformer(smiles, seed=0)) for smiles in SMILES]


@pytest.fixture(scope="session")
def symmetric() -> dict[str, object]:
    """Exact CO₂, benzene, CH₄ (degenerate PCA frames)."""
    return {name: molecule(*symmetric_molecule(name)) for name in ("CO2", "benzene", "CH4")}


@pytest.fixture(scope="session")
def big() -> object:
    """A 240-atom cluster."""
    return cluster(240, seed=1)


@pytest.fixture
def gnn() -> CoordinateGNN:
    torch.manual_seed(0)
    return CoordinateGNN().eval()
