"""Exact invariance/equivariance of wrapped graph models per group × method, on batches mixing a lone atom, real
molecules (RDKit conformers) and a 240-atom cluster; the plain model is far from invariant on the same batches."""

from __future__ import annotations

import pytest
import torch
from pyg_helpers import moved, random_rotation
from symwrap_pyg.molecules import molecule
from torch_geometric.data import Batch

import symwrap
from symwrap.frames import DegenerateFrameWarning

GROUPS = {"o3": (False, False), "so3": (True, False), "e3": (False, True), "se3": (True, True)}
KINDS = {"energy": "invariant", "forces": "vectors", "pos": "points"}


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def mixed_batch(real_molecules: list, big: object, translation: bool) -> Batch:
    """1 atom (only with translations: see test_pyg_inputs), 3 to 20 atoms, 240 atoms."""
    lone = [molecule([8], torch.tensor([[0.4, -1.1, 2.0]]))] if translation else []
    return Batch.from_data_list([*lone, *real_molecules, big])


@pytest.mark.parametrize("method", ["frame_averaging", "canonicalization"])
@pytest.mark.parametrize("group", list(GROUPS))
def test_wrapped_gnn_is_exactly_symmetric(group: str, method: str, gnn, real_molecules, big, symmetric) -> None:
    """Exact for every ordinary graph of a batch that also holds CO₂, benzene and CH₄, which the degenerate policy
    handles (enlarged frames for frame averaging, a warning for canonicalization): they are warned about."""
    special, translation = GROUPS[group]
    ordinary = mixed_batch(real_molecules, big, translation)
    batch = Batch.from_data_list([*ordinary.to_data_list(), *symmetric.values()])
    keep_graphs = torch.arange(batch.num_graphs) < ordinary.num_graphs
    keep_nodes = batch.batch < ordinary.num_graphs
    generator = torch.Generator().manual_seed(7)
    rotation = random_rotation(special, generator)
    shift = torch.randn(3, generator=generator) * 5 if translation else None
    other = moved(batch, rotation, shift)
    wrapped = symwrap.wrap(gnn, group, method, select=KINDS)
    with torch.no_grad():
        plain, plain_moved = gnn(batch), gnn(other)
        with pytest.warns(DegenerateFrameWarning, match=rf"index {ordinary.num_graphs}\b"):
            out = wrapped(batch)
        with pytest.warns(DegenerateFrameWarning):
            out_moved = wrapped(other)
    assert relative(plain_moved["energy"], plain["energy"]) > 1e-2  # the base model is not invariant
    assert out["energy"].shape == (batch.num_graphs,) and out["forces"].shape == batch.pos.shape
    energy, energy_moved = out["energy"][keep_graphs], out_moved["energy"][keep_graphs]
    assert relative(energy_moved, energy) <= 1e-5
    assert relative(out_moved["forces"][keep_nodes], (out["forces"] @ rotation.T)[keep_nodes]) <= 1e-5
    expected_pos = out["pos"] @ rotation.T + (0 if shift is None else shift)
    assert relative(out_moved["pos"][keep_nodes], expected_pos[keep_nodes]) <= 1e-5


def test_only_positions_move(real_molecules) -> None:
    """Each copy the model sees keeps the other attributes of its graph and its edges, renumbered."""
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, data: Batch) -> torch.Tensor:
            seen.append(data)
            return torch.zeros(data.num_graphs)

    batch = Batch.from_data_list(real_molecules[:2])
    batch.charge = torch.arange(batch.num_nodes, dtype=torch.float32)
    symwrap.wrap(Spy(), "e3", "frame_averaging", adapter="pyg")(batch)
    copies = seen[0]
    assert copies.num_graphs == 8 * batch.num_graphs  # 8 elements of O(3)'s frame per graph
    first, second = real_molecules[0].num_nodes, real_molecules[1].num_nodes
    assert torch.equal(copies.z[:first], batch.z[:first]) and torch.equal(copies.charge[:first], batch.charge[:first])
    eighth = 8 * first  # the copies of graph 1 start after graph 0's 8 copies
    assert torch.equal(copies.z[eighth : eighth + second], batch.z[first:])
    edges0 = real_molecules[0].edge_index
    assert torch.equal(copies.edge_index[:, edges0.shape[1] : 2 * edges0.shape[1]], edges0 + first)
    assert torch.equal(copies.batch, torch.arange(copies.num_graphs).repeat_interleave(torch.bincount(copies.batch)))
    # positions are moved: pairwise distances within a copy are kept, coordinates are not
    original = batch.pos[:first]
    copy = copies.pos[first : 2 * first]
    torch.testing.assert_close(torch.cdist(copy, copy), torch.cdist(original, original), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(copy, original, atol=1e-3)


def test_chunked_equals_unchunked(gnn, real_molecules) -> None:
    batch = Batch.from_data_list(real_molecules)
    whole = symwrap.wrap(gnn, "e3", "frame_averaging", select=KINDS, chunk_size=None)
    chunked = symwrap.wrap(gnn, "e3", "frame_averaging", select=KINDS, chunk_size=5)  # splits graphs' copies
    with torch.no_grad():
        a, b = whole(batch), chunked(batch)
    for key in KINDS:
        torch.testing.assert_close(b[key], a[key], rtol=1e-6, atol=1e-6)


def test_tensor_arguments(real_molecules) -> None:
    """model(z, pos, edge_index, batch): positions found by name, other tensors repeated per copy."""
    from pyg_helpers import TensorGNN

    torch.manual_seed(1)
    model = TensorGNN().eval()
    batch = Batch.from_data_list(real_molecules)
    rotation = random_rotation(True, torch.Generator().manual_seed(2))
    wrapped = symwrap.wrap(model, "se3", "frame_averaging")
    assert wrapped.adapter.name == "pyg"
    with torch.no_grad():
        a = wrapped(batch.z, batch.pos, batch.edge_index, batch.batch)
        b = wrapped(z=batch.z, pos=batch.pos @ rotation.T + 3.0, edge_index=batch.edge_index, batch=batch.batch)
        plain = model(batch.z, batch.pos, batch.edge_index, batch.batch)
        plain_moved = model(batch.z, batch.pos @ rotation.T + 3.0, batch.edge_index, batch.batch)
    assert a.shape == (len(real_molecules),)
    assert relative(b, a) <= 1e-5
    assert relative(plain_moved, plain) > 1e-2


def test_named_vector_features_rotate(real_molecules) -> None:
    """vectors=('vel',): node velocities rotate with the positions (no translation); the output is invariant only
    if they do."""

    class VelocityModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(6, 1)

        def forward(self, data: Batch) -> torch.Tensor:
            from torch_geometric.nn import global_add_pool

            return global_add_pool(torch.tanh(self.lin(torch.cat([data.pos, data.vel], 1))), data.batch).squeeze(-1)

    torch.manual_seed(0)
    model = VelocityModel()
    batch = Batch.from_data_list(real_molecules)
    batch.vel = torch.randn(batch.num_nodes, 3)
    rotation = random_rotation(False, torch.Generator().manual_seed(4))
    other = moved(batch, rotation, torch.tensor([1.0, 2.0, 3.0]))
    other.vel = batch.vel @ rotation.T
    with_vectors = symwrap.wrap(model, "e3", "frame_averaging", adapter=_adapter(model, vectors=("vel",)))
    without = symwrap.wrap(model, "e3", "frame_averaging", adapter="pyg")
    with torch.no_grad():
        assert relative(with_vectors(other), with_vectors(batch)) <= 1e-5
        assert relative(without(other), without(batch)) > 1e-3  # velocities left in place break the symmetry


def _adapter(model: torch.nn.Module, **options: object) -> object:
    from symwrap_pyg import PyGAdapter

    return PyGAdapter(model, **options)
