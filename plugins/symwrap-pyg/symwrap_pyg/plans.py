"""The copies each method plans for a ragged graph batch: frames, canonical poses or Haar samples, per graph."""

from __future__ import annotations

import torch
from torch import Tensor

from symwrap.errors import ConfigError
from symwrap.frames.pca import DEFAULT_EIGEN_GAP
from symwrap.frames.ragged import RaggedPCAFrame, RaggedPlan
from symwrap.groups.base import Group
from symwrap.groups.matrix import haar_orthogonal
from symwrap.methods.base import Method
from symwrap.methods.canonicalization import Canonicalization
from symwrap.methods.frame_averaging import FrameAveraging
from symwrap.methods.monte_carlo import MonteCarlo

__all__ = ["GRAPH_METHODS", "check_graph_method", "plan_graphs"]

#: Methods that plan copies of ragged graph batches (others may implement ``plan_ragged``).
GRAPH_METHODS = ("frame_averaging", "canonicalization", "monte_carlo")


def check_graph_method(method: Method) -> None:
    """Raise :class:`ConfigError` for a method (or options) that cannot plan copies of graph batches."""
    if hasattr(method, "plan_ragged"):
        return
    if not isinstance(method, (FrameAveraging, Canonicalization, MonteCarlo)):
        raise ConfigError(
            f"method {method.name!r} does not take PyTorch Geometric graph batches; use one of "
            f"{', '.join(GRAPH_METHODS)} (frames, canonical poses or Haar samples per graph)."
        )
    opts = method.options
    if getattr(opts, "mask", None) is not None:
        raise ConfigError(
            "option 'mask' is for padded point clouds (B, N, d); a graph batch has no padding (its batch vector says "
            "which nodes form each graph). Drop mask=."
        )
    if isinstance(method, Canonicalization) and opts.canonicalizer not in ("auto", "pca"):
        raise ConfigError(
            f"invalid option 'canonicalizer': {opts.canonicalizer!r} does not apply to graph batches; use 'pca' "
            "(or 'auto'): principal axes with signs of positive skewness, per graph."
        )


def plan_graphs(
    method: Method,
    group: Group,
    spec: tuple[int, bool, bool],
    pos: Tensor,
    batch: Tensor,
    num_graphs: int,
) -> RaggedPlan:
    """The copies of every graph that ``method`` evaluates.

    Args:
        method: The wrapper's method (its options: ``degenerate``, ``gap``, ``samples``, ``seed``...).
        group: The group (for messages and sampling).
        spec: ``(d, special, translation)`` of the group.
        pos: ``(N, d)`` positions (checked).
        batch: ``(N,)`` sorted graph of each node.
        num_graphs: ``G``.
    """
    custom = getattr(method, "plan_ragged", None)
    if custom is not None:
        return custom(pos, batch, num_graphs, group)
    check_graph_method(method)
    d, special, translation = spec
    opts = method.options
    if isinstance(method, MonteCarlo):
        return _haar_plan(opts.samples, opts.seed, spec, pos, batch, num_graphs)
    gap = DEFAULT_EIGEN_GAP if opts.gap is None else opts.gap
    frame = RaggedPCAFrame(
        d,
        special=special,
        translation=translation,
        gap=gap,
        degenerate=opts.degenerate,
        enlarge_samples=getattr(opts, "enlarge_samples", 16),
        seed=getattr(opts, "seed", 0),
        group_name=group.name,
    )
    if isinstance(method, Canonicalization):
        return frame.canonical(pos, batch, num_graphs)
    return frame.frame(pos, batch, num_graphs)


def _haar_plan(
    samples: int, seed: int | None, spec: tuple[int, bool, bool], pos: Tensor, batch: Tensor, num_graphs: int
) -> RaggedPlan:
    """``samples`` Haar rotations per graph (seeded: the same draw every call); E(d)/SE(d) also centre each graph,
    so the estimate is exactly translation invariant."""
    d, special, translation = spec
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    rotations = haar_orthogonal(num_graphs * samples, d, special=special, generator=generator)
    rotations = rotations.to(device=pos.device, dtype=pos.dtype)
    graph = torch.arange(num_graphs, device=pos.device).repeat_interleave(samples)
    weights = torch.full((graph.shape[0],), 1.0 / samples, dtype=pos.dtype, device=pos.device)
    if not translation:
        return RaggedPlan(rotations, graph, weights, None, num_graphs)
    counts = torch.bincount(batch, minlength=num_graphs).to(pos.dtype).clamp_min(1)
    centroid = pos.new_zeros(num_graphs, d).index_add_(0, batch, pos) / counts[:, None]
    shift = -(rotations @ centroid.index_select(0, graph)[:, :, None])
    bottom = torch.zeros(graph.shape[0], 1, d + 1, dtype=pos.dtype, device=pos.device)
    bottom[:, 0, d] = 1
    return RaggedPlan(
        torch.cat([torch.cat([rotations, shift], dim=2), bottom], dim=1), graph, weights, None, num_graphs
    )
