"""The ragged PCA frames themselves: the usual batch's one-sync path against the general path, far-from-origin
molecules, float64 positions and the cached constants."""

from __future__ import annotations

import pytest
import torch
from symwrap_pyg.molecules import molecule
from torch_geometric.data import Batch

from symwrap.errors import InputLayoutError
from symwrap.frames import DegenerateFrameWarning
from symwrap.frames.ragged import RaggedPCAFrame, segment_pca
from symwrap.tracing import no_caches

SPECS = {"o3": (False, False), "so3": (True, False), "e3": (False, True), "se3": (True, True)}


@pytest.mark.parametrize("name", list(SPECS))
def test_usual_batch_equals_the_general_path(name: str, real_molecules, big, symmetric) -> None:
    """A batch without lone atoms or degenerate graphs takes the one-sync path; with CO₂ added (degenerate='warn')
    the same graphs go through the general path, and their elements agree."""
    special, translation = SPECS[name]
    usual = Batch.from_data_list([*real_molecules, big])
    mixed = Batch.from_data_list([*real_molecules, big, symmetric["CO2"]])
    frame = RaggedPCAFrame(3, special=special, translation=translation, degenerate="warn")
    plan = frame.frame(usual.pos, usual.batch, usual.num_graphs)
    with pytest.warns(DegenerateFrameWarning, match=rf"index {usual.num_graphs}\)"):
        general = frame.frame(mixed.pos, mixed.batch, mixed.num_graphs)
    keep = general.graph < usual.num_graphs
    assert torch.equal(plan.graph, general.graph[keep])
    torch.testing.assert_close(plan.weights, general.weights[keep], rtol=0, atol=0)
    torch.testing.assert_close(plan.elements, general.elements[keep], rtol=1e-6, atol=1e-6)
    rotations = plan.elements[:, :3, :3]
    torch.testing.assert_close(
        rotations @ rotations.transpose(1, 2), torch.eye(3).expand_as(rotations), atol=1e-5, rtol=0
    )
    determinants = torch.linalg.det(rotations)
    if special:
        torch.testing.assert_close(determinants, torch.ones_like(determinants), atol=1e-5, rtol=0)
    else:  # every graph: half its elements are reflections
        assert (determinants < 0).reshape(usual.num_graphs, -1).sum(dim=1).tolist() == [4] * usual.num_graphs
    if translation:
        assert torch.equal(plan.elements[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(plan.copies, 4))
        centred = (
            plan.elements[:, :3, :3]
            @ segment_pca(usual.pos, usual.batch, usual.num_graphs).centroid[plan.graph, :, None]
        )
        torch.testing.assert_close(plan.elements[:, :3, 3:], -centred, rtol=1e-6, atol=1e-5)


def test_far_from_the_origin(real_molecules) -> None:
    """Molecules 65536 Å from the origin (coordinates on a 1/64 grid, so the shift is exact in float32) get the
    rotations they get at the origin: the covariance does not cancel away in float32."""
    batch = Batch.from_data_list(real_molecules)
    pos = torch.round(batch.pos * 64) / 64
    frame = RaggedPCAFrame(3, special=False, translation=True)
    near = frame.frame(pos, batch.batch, batch.num_graphs)
    far = frame.frame(pos + 65536.0, batch.batch, batch.num_graphs)
    torch.testing.assert_close(far.elements[:, :3, :3], near.elements[:, :3, :3], rtol=0, atol=1e-5)
    canonical = frame.canonical(pos + 65536.0, batch.batch, batch.num_graphs)
    torch.testing.assert_close(
        canonical.elements[:, :3, :3],
        frame.canonical(pos, batch.batch, batch.num_graphs).elements[:, :3, :3],
        rtol=0,
        atol=1e-5,
    )


@pytest.mark.parametrize("special", [False, True])
def test_float64_positions(special: bool, real_molecules) -> None:
    """float64 positions give float64 plans (constants cached per dtype) equal to the float32 ones to round-off."""
    batch = Batch.from_data_list(real_molecules)
    frame = RaggedPCAFrame(3, special=special, translation=True)
    single = frame.frame(batch.pos, batch.batch, batch.num_graphs)
    double = frame.frame(batch.pos.double(), batch.batch, batch.num_graphs)
    assert double.elements.dtype == double.weights.dtype == torch.float64
    assert single.elements.dtype == single.weights.dtype == torch.float32
    torch.testing.assert_close(double.elements.float(), single.elements, rtol=1e-5, atol=1e-5)
    assert torch.equal(double.graph, single.graph)


def test_plans_without_caches(real_molecules) -> None:
    """With every cache bypassed (as while tracing) the plan is the same."""
    batch = Batch.from_data_list(real_molecules)
    frame = RaggedPCAFrame(3, special=True, translation=True)
    cached = frame.frame(batch.pos, batch.batch, batch.num_graphs)
    with no_caches():
        fresh = frame.frame(batch.pos, batch.batch, batch.num_graphs)
    assert torch.equal(cached.elements, fresh.elements) and torch.equal(cached.weights, fresh.weights)
    assert torch.equal(cached.graph, fresh.graph)


def test_canonical_poses_with_and_without_lone_atoms(real_molecules) -> None:
    """A lone atom under E(3) is centred and marked fixed; without one, no graph is marked; under O(3) it is refused."""
    lone = molecule([8], torch.tensor([[0.4, -1.1, 2.0]]))
    usual = Batch.from_data_list(real_molecules)
    mixed = Batch.from_data_list([*real_molecules, lone])
    frame = RaggedPCAFrame(3, special=False, translation=True, degenerate="warn")
    plan = frame.canonical(usual.pos, usual.batch, usual.num_graphs)
    assert plan.fixed is None and plan.copies == usual.num_graphs
    with_lone = frame.canonical(mixed.pos, mixed.batch, mixed.num_graphs)
    assert with_lone.fixed is not None and with_lone.fixed.tolist() == [False] * usual.num_graphs + [True]
    torch.testing.assert_close(with_lone.elements[:-1], plan.elements, rtol=1e-6, atol=1e-6)
    expected = torch.eye(4)
    expected[:3, 3] = -lone.pos[0]
    torch.testing.assert_close(with_lone.elements[-1], expected)
    with pytest.raises(InputLayoutError, match="single atom"):
        RaggedPCAFrame(3, special=False, translation=False).canonical(mixed.pos, mixed.batch, mixed.num_graphs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("special", [False, True])
def test_cuda_plan_is_the_cpu_plan(special: bool, real_molecules, big) -> None:
    """The constants cached per device: a CUDA plan lists the CPU plan's elements per graph (in an order that may
    differ, as the eigensolvers may return other eigenvector signs)."""
    batch = Batch.from_data_list([*real_molecules, big])
    frame = RaggedPCAFrame(3, special=special, translation=True)
    cpu = frame.frame(batch.pos, batch.batch, batch.num_graphs)
    gpu = frame.frame(batch.pos.cuda(), batch.batch.cuda(), batch.num_graphs)
    assert {gpu.elements.device.type, gpu.graph.device.type, gpu.weights.device.type} == {"cuda"}
    assert torch.equal(gpu.graph.cpu(), cpu.graph) and torch.equal(gpu.weights.cpu(), cpu.weights)
    per_graph = cpu.copies // batch.num_graphs
    ours = gpu.elements.cpu().reshape(batch.num_graphs, per_graph, -1)
    theirs = cpu.elements.reshape(batch.num_graphs, per_graph, -1)
    assert float(torch.cdist(ours, theirs).amin(dim=2).amax()) < 1e-4


@pytest.mark.parametrize("name", list(SPECS))
def test_a_batch_of_no_graphs_plans_no_copies(name: str) -> None:
    """Zero graphs (an empty data loader shard): empty frames and poses, not an error from a reduction of nothing."""
    special, translation = SPECS[name]
    frame = RaggedPCAFrame(3, special=special, translation=translation)
    pos, batch = torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)
    size = 4 if translation else 3
    for plan in (frame.frame(pos, batch, 0), frame.canonical(pos, batch, 0)):
        assert plan.elements.shape == (0, size, size) and plan.graph.shape == (0,) and plan.num_graphs == 0
