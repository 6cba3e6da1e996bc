"""The degenerate= policy per graph: linear CO₂, planar benzene and tetrahedral CH₄ in a batch of ordinary molecules."""

from __future__ import annotations

import pytest
import torch
from pyg_helpers import moved, random_rotation
from symwrap_pyg.molecules import molecule
from torch_geometric.data import Batch

import symwrap
from symwrap.frames import DegenerateFrameWarning, DegenerateInputError
from symwrap.frames.ragged import RaggedPCAFrame

KINDS = {"energy": "invariant", "forces": "vectors", "pos": "points"}


def test_frame_sizes_per_graph(real_molecules, symmetric) -> None:
    """Only the degenerate graphs are enlarged; a lone atom under E(3) has one element; nothing is padded."""
    lone = molecule([1], torch.tensor([[1.0, 2.0, 3.0]]))
    batch = Batch.from_data_list([real_molecules[0], symmetric["CH4"], lone, real_molecules[1], symmetric["CO2"]])
    frame = RaggedPCAFrame(3, special=False, translation=True, enlarge_samples=4)
    with pytest.warns(DegenerateFrameWarning, match=r"2 graph\(s\) of the batch \(index 1, 4\) have a degenerate"):
        plan = frame.frame(batch.pos, batch.batch, batch.num_graphs)
    assert torch.bincount(plan.graph).tolist() == [8, 32, 1, 8, 32]
    assert plan.fixed is not None and plan.fixed.tolist() == [False, False, True, False, False]
    torch.testing.assert_close(torch.zeros(5).index_add_(0, plan.graph, plan.weights), torch.ones(5))
    special = RaggedPCAFrame(3, special=True, translation=True, enlarge_samples=4)
    with pytest.warns(DegenerateFrameWarning):
        assert torch.bincount(special.frame(batch.pos, batch.batch, 5).graph).tolist() == [4, 16, 1, 4, 16]
    rotations = plan.elements[:, :3, :3]
    torch.testing.assert_close(
        rotations @ rotations.transpose(1, 2), torch.eye(3).expand_as(rotations), atol=1e-5, rtol=0
    )


def test_degenerate_graph_leaves_the_others_unchanged(gnn, real_molecules, symmetric) -> None:
    alone = Batch.from_data_list(real_molecules)
    mixed = Batch.from_data_list([symmetric["CH4"], *real_molecules[:2], symmetric["benzene"], *real_molecules[2:]])
    others = [1, 2, 4, 5]
    wrapped = symwrap.wrap(gnn, "e3", "frame_averaging", select=KINDS)
    with torch.no_grad():
        reference = wrapped(alone)
        with pytest.warns(DegenerateFrameWarning, match=r"index 0, 3\)"):
            out = wrapped(mixed)
    torch.testing.assert_close(out["energy"][others], reference["energy"], rtol=1e-6, atol=1e-6)
    keep = torch.isin(mixed.batch, torch.tensor(others))
    torch.testing.assert_close(out["forces"][keep], reference["forces"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out["pos"][keep], reference["pos"], rtol=1e-6, atol=1e-6)


def test_enlarged_frames_keep_the_others_exact(gnn, real_molecules, symmetric, big) -> None:
    """With degenerate graphs in the batch, the other graphs stay exact; CO₂'s energy is exact too (its atoms lie
    on the axis, so every rotation of the tied plane gives the same copy), benzene's and CH₄'s approximate."""
    names = ["CO2", "benzene", "CH4"]
    batch = Batch.from_data_list([*real_molecules, big, *(symmetric[n] for n in names)])
    generator = torch.Generator().manual_seed(5)
    rotation, shift = random_rotation(False, generator), torch.randn(3, generator=generator)
    wrapped = symwrap.wrap(gnn, "e3", "frame_averaging", select=KINDS)
    with torch.no_grad(), pytest.warns(DegenerateFrameWarning):
        a, b = wrapped(batch), wrapped(moved(batch, rotation, shift))
    ordinary = len(real_molecules) + 1
    scale = a["energy"].abs().max()
    assert float((b["energy"] - a["energy"])[:ordinary].abs().max() / scale) <= 1e-5
    keep = batch.batch < ordinary
    force_error = (b["forces"] - a["forces"] @ rotation.T)[keep].abs().max() / a["forces"].abs().max()
    assert float(force_error) <= 1e-5
    assert float((b["energy"] - a["energy"])[ordinary].abs() / scale) <= 1e-5  # CO2
    assert float((b["energy"] - a["energy"])[ordinary + 1 :].abs().max() / scale) <= 1e-3  # Monte-Carlo-like


def test_policy_error_names_the_graph(gnn, real_molecules, symmetric) -> None:
    batch = Batch.from_data_list([*real_molecules[:2], symmetric["benzene"]])
    wrapped = symwrap.wrap(gnn, "o3", "frame_averaging", degenerate="error", select=KINDS)
    with pytest.raises(DegenerateInputError, match=r"1 graph\(s\) of the batch \(index 2\).*degenerate='enlarge'"):
        wrapped(batch)
    canonical = symwrap.wrap(gnn, "o3", "canonicalization", degenerate="error", select=KINDS)
    with pytest.raises(DegenerateInputError, match=r"index 2\).*canonical pose"):
        canonical(batch)


def test_policy_warn_keeps_the_plain_frame(real_molecules, symmetric) -> None:
    batch = Batch.from_data_list([real_molecules[0], symmetric["CH4"]])
    frame = RaggedPCAFrame(3, special=False, translation=False, degenerate="warn")
    with pytest.warns(DegenerateFrameWarning, match=r"index 1\).*not exactly invariant \(degenerate='warn'\)"):
        plan = frame.frame(batch.pos, batch.batch, 2)
    assert torch.bincount(plan.graph).tolist() == [8, 8]
