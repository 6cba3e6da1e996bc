"""Graph batches (symwrap-pyg): per-graph frames against one forward, and the wrapped model against hand-written loops
and FAENet's frame averaging, on RDKit conformers of drug-like molecules.

1. **Frame construction vs one forward**: the plan of a batch of ``--graphs`` molecules (one segment sum, one batched
   ``eigh``, the elements of every graph) against one plain forward of two models on the batch (target ≤ 0.1×): the
   tiny model the other rows wrap (three GraphConv layers, ``--hidden`` 64), and PyG's ``SchNet()`` at its default
   size (hidden 128, 6 interactions, random weights) as an interatomic potential: energies alone, and energies with
   forces ``-∂E/∂pos`` by autograd. SchNet's interaction graph is the molecules' bonds with their lengths (its
   default radius graph needs torch-cluster); a 10 Å radius graph would hold nearly every atom pair of these
   molecules and cost more, so these SchNet ratios are the least favourable ones. The plans are timed twice: in the
   rounds (each round's ``--calls`` calls follow another contender's work, and the first plan after a forward finds
   the caches cold, as in a wrapped call) and ``--warm-calls`` calls back to back (warm caches; fastest of 5 runs).
2. **Wrapped vs by hand** (``--rounds`` interleaved rounds of ``--calls`` calls each; the ratios use each
   contender's fastest round, the least disturbed by other work on the machine): ``symwrap.wrap(gnn, "e3",
   "frame_averaging")``; a hand-written per-graph loop (each graph's PCA, its 8 copies as one small batch, one
   forward per graph); and FAENet's frame averaging (``faenet`` from PyPI: its per-graph ``FrameAveraging("3D",
   "all")`` transform, then ``model_forward``'s 8 forwards of the batch; also ``model_forward`` alone, as when the
   transform runs in the data loader) when it imports. The largest difference of
   energies and forces between them is printed too (all average over the same 8 elements per graph).

faenet 0.1.3 imports ``torch_scatter`` (a compiled extension) for its own model; this script does not use that model
and gives faenet ``torch_geometric.utils.scatter`` under that name.

    python benchmarks/bench_pyg.py --graphs 64 --rounds 15 --calls 3 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
from collections.abc import Callable
from typing import Any

import torch
from symwrap_pyg.graphs import bind_graphs
from symwrap_pyg.molecules import conformer, molecule
from symwrap_pyg.plans import plan_graphs
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn import GraphConv, global_add_pool
from torch_geometric.nn.models import SchNet

import symwrap
from symwrap.frames.pca import _sign_vectors

SMILES = (
    "CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "NCC(=O)O", "CC(C)Cc1ccc(cc1)C(C)C(=O)O", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
    "OC(=O)c1ccccc1OC(C)=O", "CCN(CC)CC", "C1CCCCC1N", "c1ccc2ccccc2c1", "CC(=O)OCC", "OCC(O)CO",
)  # fmt: skip
KINDS = {"energy": "invariant", "forces": "vectors"}


class CoordinateGNN(nn.Module):
    """Three GraphConv layers on atom embeddings plus the raw coordinates (not invariant by itself)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, hidden)
        self.lift = nn.Linear(3, hidden)
        self.convs = nn.ModuleList(GraphConv(hidden, hidden) for _ in range(3))
        self.energy_head = nn.Linear(hidden, 1)
        self.force_head = nn.Linear(hidden, 3)

    def forward(self, data: Batch, mode: str = "inference") -> dict[str, Tensor]:
        h = self.embed(data.z) + self.lift(data.pos)
        for conv in self.convs:
            h = torch.tanh(conv(h, data.edge_index))
        energy = global_add_pool(self.energy_head(h), data.batch, size=data.num_graphs).squeeze(-1)
        return {"energy": energy, "forces": self.force_head(h)}


class BondGraph(nn.Module):
    """SchNet's interaction graph for one fixed batch: its bonds (both directions) and their lengths."""

    def __init__(self, edge_index: Tensor) -> None:
        super().__init__()
        self.register_buffer("edge_index", edge_index)

    def forward(self, pos: Tensor, batch: Tensor) -> tuple[Tensor, Tensor]:
        row, col = self.edge_index
        return self.edge_index, (pos[row] - pos[col]).norm(dim=-1)


def energy_and_forces(schnet: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
    """SchNet's energies ``(G,)`` and forces ``-∂E/∂pos`` ``(N, 3)`` (autograd, also under ``torch.no_grad``)."""
    with torch.enable_grad():
        pos = batch.pos.detach().requires_grad_()
        energy = schnet(batch.z, pos, batch.batch).squeeze(-1)
        (grad,) = torch.autograd.grad(energy.sum(), pos)
    return energy.detach(), -grad


def molecules(count: int) -> list:
    return [molecule(*conformer(SMILES[i % len(SMILES)], seed=i // len(SMILES))) for i in range(count)]


def per_graph_loop(model: nn.Module, graphs: list) -> dict[str, Tensor]:
    """Frame averaging written by hand: for each graph its PCA frame, its 8 copies as one batch, one forward."""
    signs = _sign_vectors(3, 3, torch.device("cpu"), torch.float32)  # (8, 3)
    energies, forces = [], []
    for data in graphs:
        centred = data.pos - data.pos.mean(dim=0)
        _, vectors = torch.linalg.eigh(centred.T @ centred / data.num_nodes)
        bases = vectors.flip(-1)[None] * signs[:, None, :]  # (8, 3, 3): columns V S, so (x - c) V S
        copies = []
        for basis in bases:
            copy = data.clone()
            copy.pos = centred @ basis
            copies.append(copy)
        out = model(Batch.from_data_list(copies))
        energies.append(out["energy"].mean())
        forces.append((out["forces"].reshape(8, data.num_nodes, 3) @ bases.transpose(1, 2)).mean(dim=0))
    return {"energy": torch.stack(energies), "forces": torch.cat(forces)}


def copies_batch(wrapped: nn.Module, batch: Batch) -> Batch:
    """The batch of all frame copies the wrapped model runs (what its base model receives), built once."""
    call = bind_graphs(wrapped.base_model, (batch,), {}, "pos", (), ["data"])
    plan = plan_graphs(wrapped.method, wrapped.group, (3, False, True), call.pos, call.batch, call.num_graphs)
    layout = call.copies(plan.graph)
    rows = layout.node_copy
    pos = (call.pos.index_select(0, layout.node_src)[:, None] @ plan.elements[rows, :3, :3].transpose(1, 2))[:, 0]
    args, _ = call.arguments(layout, {"pos": pos + plan.elements[rows, :3, 3]})
    return args[0]


def load_faenet() -> Any:
    """faenet's per-graph ``FrameAveraging`` transform of a data list (what its data loader does) and its
    ``model_forward``, or None when faenet does not import."""
    if "torch_scatter" not in sys.modules:
        from torch_geometric.utils import scatter

        stub = types.ModuleType("torch_scatter")
        stub.scatter = scatter  # type: ignore[attr-defined]
        sys.modules["torch_scatter"] = stub
    try:
        from faenet.fa_forward import model_forward
        from faenet.transforms import FrameAveraging
    except ImportError as error:
        print(f"faenet not available ({error}); its rows are left out")
        return None
    transform = FrameAveraging("3D", "all")

    def prepare(graphs: list) -> Batch:
        return Batch.from_data_list([transform(data.clone()) for data in graphs])

    def forward(model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        return model_forward(batch, model, "3D", mode="inference", crystal_task=False)

    return prepare, forward


def timed(fn: Callable[[], Any], calls: int) -> float:
    """Mean seconds per call of ``calls`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", type=int, default=64, help="molecules per batch")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    parser.add_argument("--calls", type=int, default=3, help="calls per contender per round")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--warm-calls", type=int, default=50, help="back-to-back calls of each plan, warm caches")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = CoordinateGNN(args.hidden).eval()
    graphs = molecules(args.graphs)
    batch = Batch.from_data_list(graphs)
    wrapped = symwrap.wrap(model, "e3", "frame_averaging", select=KINDS)
    canonical = symwrap.wrap(model, "e3", "canonicalization", select=KINDS)
    schnet = SchNet(interaction_graph=BondGraph(batch.edge_index)).eval()
    per_graph_chunks = symwrap.wrap(model, "e3", "frame_averaging", select=KINDS, chunk_size=args.graphs)
    faenet = load_faenet()
    print(
        f"{args.graphs} molecules, {batch.num_nodes} atoms, {batch.num_edges} edges; torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)"
    )

    copies = copies_batch(wrapped, batch)
    contenders: dict[str, Callable[[], Any]] = {
        "plain forward (1 copy)": lambda: model(batch),
        "plain forward of the 8 copies, made in advance": lambda: model(copies),
        "frames of the batch (e3)": lambda: plan_graphs(
            wrapped.method, wrapped.group, (3, False, True), batch.pos, batch.batch, batch.num_graphs
        ),
        "canonical poses of the batch (e3)": lambda: plan_graphs(
            canonical.method, canonical.group, (3, False, True), batch.pos, batch.batch, batch.num_graphs
        ),
        "symwrap frame_averaging (8 copies)": lambda: wrapped(batch),
        f"symwrap frame_averaging, chunk_size={args.graphs} (8 forwards)": lambda: per_graph_chunks(batch),
        "symwrap canonicalization (1 copy)": lambda: canonical(batch),
        "per-graph loop by hand (8 copies)": lambda: per_graph_loop(model, graphs),
        "SchNet forward, energies": lambda: schnet(batch.z, batch.pos, batch.batch),
        "SchNet forward, energies and forces (autograd)": lambda: energy_and_forces(schnet, batch),
    }
    if faenet is not None:
        prepare, fa_forward = faenet
        prepared = prepare(graphs)
        contenders["FAENet transform + model_forward"] = lambda: fa_forward(model, prepare(graphs))
        contenders["FAENet model_forward, transform done in advance"] = lambda: fa_forward(model, prepared)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    with torch.no_grad():
        for fn in contenders.values():  # warm-up
            fn()
        for _ in range(args.rounds):
            for name, fn in contenders.items():
                times[name].append(timed(fn, args.calls))
        plans = ("frames of the batch (e3)", "canonical poses of the batch (e3)")
        warm = {name: min(timed(contenders[name], args.warm_calls) for _ in range(5)) * 1e3 for name in plans}
        reference = wrapped(batch)
        others = {"per-graph loop by hand": per_graph_loop(model, graphs)}
        if faenet is not None:
            others["FAENet"] = fa_forward(model, prepare(graphs))

    best = {name: min(values) * 1e3 for name, values in times.items()}
    forward, wrapped_ms = best["plain forward (1 copy)"], best["symwrap frame_averaging (8 copies)"]
    print(
        f"\n| what ({args.graphs} molecules) | ms, min | ms, median | ÷ one plain forward | ÷ symwrap frame averaging |"
    )
    print("|---|---|---|---|---|")
    for name, values in times.items():
        ms = best[name]
        median = statistics.median(values) * 1e3
        print(f"| {name} | {ms:.2f} | {median:.2f} | {ms / forward:.3f} | {ms / wrapped_ms:.2f} |")
    models = {
        "tiny GraphConv": "plain forward (1 copy)",
        "SchNet, energies": "SchNet forward, energies",
        "SchNet, energies and forces": "SchNet forward, energies and forces (autograd)",
    }
    print(f"\n| plan ({args.graphs} molecules) | ms | ÷ one forward of " + " | ÷ ".join(models) + " |")
    print("|---|---|" + "---|" * len(models))
    for name in plans:
        for label, ms in (("in the rounds", best[name]), (f"{args.warm_calls} calls back to back", warm[name])):
            ratios = " | ".join(f"{ms / best[row]:.3f}" for row in models.values())
            print(f"| {name}, {label} | {ms:.2f} | {ratios} |")
    print("\n| compared with symwrap frame_averaging | max relative difference, energy | forces |")
    print("|---|---|---|")
    for name, out in others.items():
        energy = (out["energy"] - reference["energy"]).abs().max() / reference["energy"].abs().max()
        forces = (out["forces"] - reference["forces"]).abs().max() / reference["forces"].abs().max()
        print(f"| {name} | {float(energy):.1e} | {float(forces):.1e} |")


if __name__ == "__main__":
    main()
