"""Bad inputs and options get named errors; a lone atom is handled exactly under E(3) and refused under O(3)."""

from __future__ import annotations

import pytest
import torch
from pyg_helpers import TensorGNN, moved, random_rotation
from symwrap_pyg.molecules import molecule
from torch_geometric.data import Batch, Data

import symwrap
from symwrap.errors import ConfigError, InputLayoutError

KINDS = {"energy": "invariant", "forces": "vectors", "pos": "points"}


@pytest.fixture
def batch(real_molecules) -> Batch:
    return Batch.from_data_list(real_molecules[:2])


def test_batch_without_positions(gnn, batch) -> None:
    del batch.pos
    wrapped = symwrap.wrap(gnn, "o3", "frame_averaging", select=KINDS)
    with pytest.raises(
        InputLayoutError, match=r"the graph batch has no positions 'pos'.*attributes: batch, edge_index"
    ):
        wrapped(batch)
    tensors = symwrap.wrap(TensorGNN(), "o3", "frame_averaging")
    with pytest.raises(InputLayoutError, match=r"the call passed no positions 'pos' .*it passed 'z', 'edge_index'"):
        tensors(z=batch.z, edge_index=batch.edge_index)


def test_positions_of_the_wrong_width(gnn, batch) -> None:
    batch.pos = batch.pos[:, :2]
    wrapped = symwrap.wrap(gnn, "e3", "frame_averaging", select=KINDS)
    with pytest.raises(InputLayoutError, match=r"group 'e3' moves 3-D positions, but data.pos has shape \(22, 2\)"):
        wrapped(batch)


def test_unsorted_batch_vector(gnn, real_molecules) -> None:
    data = Batch.from_data_list(real_molecules[:2])
    order = torch.cat([torch.arange(9, 22), torch.arange(9)])  # graph 1's nodes first
    shuffled = Data(z=data.z[order], pos=data.pos[order], batch=data.batch[order], edge_index=data.edge_index)
    wrapped = symwrap.wrap(gnn, "so3", "canonicalization", select=KINDS)
    with pytest.raises(
        InputLayoutError, match=r"the batch vector is not sorted: node 13 belongs to graph 0 after a node of graph 1"
    ):
        wrapped(shuffled)


def test_lone_atom_under_rotations_about_the_origin_is_refused(gnn, real_molecules) -> None:
    lone = molecule([1], torch.tensor([[0.5, 0.0, 1.0]]))
    batch = Batch.from_data_list([real_molecules[0], lone])
    for method in ("frame_averaging", "canonicalization"):
        wrapped = symwrap.wrap(gnn, "o3", method, select=KINDS)
        with pytest.raises(InputLayoutError, match=r"graph\(s\) 1 of the batch have a single atom: group 'o3'.*'e3'"):
            wrapped(batch)


@pytest.mark.parametrize("method", ["frame_averaging", "canonicalization"])
def test_lone_atom_under_euclidean_groups_is_exact(gnn, method: str) -> None:
    """A centred lone atom is fixed by every rotation: its energy is the model's at the origin, its vectors average
    to 0 over the rotation group and its position output is the atom's own position."""
    atoms = Batch.from_data_list([molecule([6], torch.tensor([[0.5, -2.0, 1.0]])), molecule([8], torch.zeros(1, 3))])
    wrapped = symwrap.wrap(gnn, "se3", method, select=KINDS)
    rotation = random_rotation(True, torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = wrapped(atoms)
        other = wrapped(moved(atoms, rotation, torch.tensor([3.0, 1.0, -1.0])))
        at_origin = gnn(Batch.from_data_list([molecule([6], torch.zeros(1, 3)), molecule([8], torch.zeros(1, 3))]))
    torch.testing.assert_close(out["energy"], at_origin["energy"])
    torch.testing.assert_close(other["energy"], out["energy"])
    assert torch.equal(out["forces"], torch.zeros(2, 3))
    torch.testing.assert_close(out["pos"], atoms.pos)


def test_empty_graph_and_nan_positions(gnn, real_molecules) -> None:
    empty = Data(
        z=torch.zeros(0, dtype=torch.long), pos=torch.zeros(0, 3), edge_index=torch.zeros(2, 0, dtype=torch.long)
    )
    wrapped = symwrap.wrap(gnn, "e3", "frame_averaging", select=KINDS)
    with pytest.raises(InputLayoutError, match=r"graph 1 of the batch has no nodes"):
        wrapped(Batch.from_data_list([real_molecules[0], empty]))
    bad = Batch.from_data_list(real_molecules[:1])
    bad.pos[4, 1] = float("nan")
    with pytest.raises(InputLayoutError, match=r"data.pos has a NaN or inf coordinate \(node 4\)"):
        wrapped(bad)


def test_option_errors(gnn, batch) -> None:
    with pytest.raises(ConfigError, match=r"pyg adapter moves node positions .* not group 'rot90'"):
        symwrap.wrap(gnn, "rot90", "frame_averaging")
    with pytest.raises(
        ConfigError, match=r"output kinds \{'forces': 'vector'\} are not among invariant, vectors, points"
    ):
        symwrap.wrap(gnn, "e3", "frame_averaging", select={"energy": "invariant", "forces": "vector"})
    with pytest.raises(ConfigError, match=r"option 'mask' is for padded point clouds"):
        symwrap.wrap(gnn, "e3", "frame_averaging", mask="mask", select=KINDS)(batch)
    with pytest.raises(ConfigError, match=r"graph batches average the raw outputs \(reduce='logits'\)"):
        symwrap.wrap(gnn, "e3", "frame_averaging", reduce="probs", select=KINDS)(batch)
    with pytest.raises(
        ConfigError, match=r"select names output 'dipole', but the model's outputs are energy, forces, pos"
    ):
        symwrap.wrap(gnn, "e3", "frame_averaging", select={"dipole": "vectors"})(batch)


def test_equivariant_output_needs_coordinates(gnn, batch) -> None:
    wrapped = symwrap.wrap(gnn, "e3", "frame_averaging", output="equivariant")
    with pytest.raises(
        InputLayoutError,
        match=r"output 'energy' has shape \(16,\) for the copies of this call but is pulled back as points.*'energy'",
    ):
        wrapped(batch)
    only_pos = symwrap.wrap(gnn, "e3", "frame_averaging", output="equivariant", select="pos")
    with torch.no_grad():
        out = only_pos(batch)
    assert out["energy"] is None and out["pos"].shape == batch.pos.shape
