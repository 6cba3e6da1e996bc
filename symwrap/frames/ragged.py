"""PCA frames of ragged batches of point clouds: graphs concatenated along the node axis, as PyTorch Geometric
batches are (``pos (N, d)`` and a sorted ``batch (N,)`` vector naming each node's graph).

Each graph's centroid and covariance come from one segment sum (``index_add_`` over the batch vector) of the raw
moments ``1, x, x xᵀ`` in float64, where ``E[x xᵀ] - c cᵀ`` keeps ~1e-16 relative precision times
``(|c| / spread)²`` (float32 would lose every digit for a molecule ~1e4 spreads from the origin); the principal axes
come from one batched ``torch.linalg.eigh`` of the ``(G, d, d)`` covariances in the positions' dtype, and the frame
elements are listed per graph: nothing is padded to the largest graph. A batch without lone atoms or degenerate
graphs (the usual one) costs one host sync and builds every element with one broadcast product of cached sign
vectors and each graph's homogeneous ``[[Uᵀ, -Uᵀ c], [0, 1]]``.

The elements are those of :class:`~symwrap.frames.pca.PCAFrame` (Puny et al. 2022, arXiv 2110.03336, §3.1):
``R = S Vᵀ`` for the sign matrices ``S`` (all ``2^d`` for O(d), the ``2^(d-1)`` with ``det = +1`` for SO(d)), acting
as ``x ↦ (x - c) Rᵀ`` for E(d)/SE(d) and ``x ↦ x Rᵀ`` for O(d)/SO(d).

Graphs may have different numbers of elements: the ``degenerate=`` policy is applied per graph, so only the
degenerate graphs of a batch are enlarged (or warned about, or refused) and the frames of the others are exactly
what they would be alone. A graph of one atom under E(d)/SE(d) is fixed by every rotation once centred: its frame is
one element (the centring), and its equivariant outputs are averaged over the whole rotation group (see
:attr:`RaggedPlan.fixed`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

from symwrap.caches import built_once, keep_newest
from symwrap.errors import InputLayoutError
from symwrap.frames.base import DEGENERATE_MODES, DegenerateFrameWarning, DegenerateInputError, all_finite
from symwrap.frames.pca import DEFAULT_EIGEN_GAP, _sign_vectors, _tie_blocks
from symwrap.groups.matrix import haar_orthogonal
from symwrap.tracing import caches_off

__all__ = ["RaggedPCA", "RaggedPCAFrame", "RaggedPlan", "check_ragged", "segment_pca", "symmetric_eigh"]


@dataclass
class RaggedPlan:
    """The elements planned for a ragged batch: copies listed graph by graph.

    Attributes:
        elements: ``(K, c, c)`` one element per copy (``c = d``, or ``d + 1`` homogeneous for E(d)/SE(d)); copy ``k``
            of graph ``graph[k]`` moves its positions by ``elements[k]``.
        graph: ``(K,)`` int64 graph of each copy, non-decreasing.
        weights: ``(K,)`` weights, summing to 1 over each graph's copies.
        fixed: ``(G,)`` bool or ``None``: graphs that every rotation fixes (one atom, centred). Their equivariant
            outputs are the average over the whole rotation group: vectors pull back to 0, positions to the centroid.
        num_graphs: ``G``.
    """

    elements: Tensor
    graph: Tensor
    weights: Tensor
    fixed: Tensor | None
    num_graphs: int

    @property
    def copies(self) -> int:
        """``K``, the number of copies of all graphs together."""
        return int(self.graph.shape[0])


@dataclass
class RaggedPCA:
    """Principal axes of each graph of a ragged batch.

    Attributes:
        centroid: ``(G, d)`` mean position of each graph.
        eigenvalues: ``(G, d)`` covariance eigenvalues, descending.
        eigenvectors: ``(G, d, d)``; column ``i`` belongs to ``eigenvalues[:, i]``.
        counts: ``(G,)`` int64 nodes per graph.
        pos: ``(N, d)`` the positions, and ``batch`` ``(N,)`` their graphs (for :attr:`centred`).
    """

    centroid: Tensor
    eigenvalues: Tensor
    eigenvectors: Tensor
    counts: Tensor
    pos: Tensor = field(repr=False)
    batch: Tensor = field(repr=False)

    @property
    def centred(self) -> Tensor:
        """``(N, d)`` positions minus their graph's centroid."""
        return self.pos - self.centroid.index_select(0, self.batch)

    def tied(self, gap: float) -> Tensor:
        """``(G, d-1)``: consecutive eigenvalues whose gap is below ``gap`` relative to the largest one."""
        lam = self.eigenvalues.detach()
        return lam[:, :-1] - lam[:, 1:] < gap * lam[:, :1].clamp_min(torch.finfo(lam.dtype).tiny)

    def relative_gaps(self) -> Tensor:
        """``(G, d-1)`` gaps ``(λᵢ - λᵢ₊₁) / λ₁``."""
        lam = self.eigenvalues.detach()
        return (lam[:, :-1] - lam[:, 1:]) / lam[:, :1].clamp_min(torch.finfo(lam.dtype).tiny)


class _SymmetricEigh(torch.autograd.Function):
    """``torch.linalg.eigh`` whose backward drops the rotation within (near-)degenerate eigenspaces.

    The usual backward divides by ``λⱼ - λᵢ``, which is infinite for equal eigenvalues (a linear or symmetric
    molecule): the eigenvectors of such a space are arbitrary, so their derivative is too. Pairs whose gap is below
    ``tie`` times the largest eigenvalue contribute nothing instead; every other pair is differentiated as torch does.
    """

    @staticmethod
    def forward(ctx, matrix: Tensor, tie: float) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        values, vectors = torch.linalg.eigh(matrix)
        ctx.save_for_backward(values, vectors)
        ctx.tie = tie
        return values, vectors

    @staticmethod
    def backward(ctx, grad_values: Tensor | None, grad_vectors: Tensor | None) -> tuple[Tensor | None, None]:  # type: ignore[override]
        values, vectors = ctx.saved_tensors
        inner = torch.zeros_like(vectors)
        if grad_vectors is not None:
            projected = vectors.transpose(-1, -2) @ grad_vectors
            projected = 0.5 * (projected - projected.transpose(-1, -2))
            gaps = values[..., None, :] - values[..., :, None]  # [i, j] = λⱼ - λᵢ
            scale = values.abs().amax(dim=-1, keepdim=True)[..., None].clamp_min(torch.finfo(values.dtype).tiny)
            distinct = gaps.abs() > ctx.tie * scale
            inner = torch.where(distinct, projected / torch.where(distinct, gaps, torch.ones_like(gaps)), inner)
        if grad_values is not None:
            inner = inner + torch.diag_embed(grad_values)
        grad = vectors @ inner @ vectors.transpose(-1, -2)
        return 0.5 * (grad + grad.transpose(-1, -2)), None


def symmetric_eigh(matrix: Tensor, tie: float = DEFAULT_EIGEN_GAP) -> tuple[Tensor, Tensor]:
    """Eigenvalues (ascending) and eigenvectors of symmetric ``(..., d, d)`` matrices, differentiable with a finite
    gradient at degenerate eigenvalues (see :class:`_SymmetricEigh`). Plain ``eigh`` when no gradient is needed."""
    if torch.is_grad_enabled() and matrix.requires_grad:
        return _SymmetricEigh.apply(matrix, tie)
    return torch.linalg.eigh(matrix)


def check_ragged(pos: object, batch: object, num_graphs: int, d: int, group_name: str, what: str) -> None:
    """Raise :class:`~symwrap.errors.InputLayoutError` for positions and batch vectors a ragged frame cannot use.

    Args:
        pos: ``(N, d)`` positions.
        batch: ``(N,)`` int64 graph of each node, sorted (non-decreasing), values in ``[0, num_graphs)``.
        num_graphs: ``G``.
        d: The group's dimension.
        group_name: For messages.
        what: Names the positions in messages (``"data.pos"``).
    """
    if not isinstance(pos, Tensor):
        raise InputLayoutError(f"{what} must be a tensor of node positions (N, {d}), got {type(pos).__name__}")
    if pos.ndim != 2 or pos.shape[1] != d:
        raise InputLayoutError(
            f"group {group_name!r} moves {d}-D positions, but {what} has shape {tuple(pos.shape)}: it must be "
            f"(num_nodes, {d}). Use a group of the positions' dimension (o{pos.shape[-1]}, e{pos.shape[-1]}...) "
            f"or pass {d}-D coordinates."
        )
    if not pos.dtype.is_floating_point:
        raise InputLayoutError(f"{what} must hold floating-point coordinates, got {pos.dtype}; pass pos.float().")
    if not all_finite(pos):
        node = int((~torch.isfinite(pos).all(dim=1)).nonzero()[0, 0])
        raise InputLayoutError(
            f"{what} has a NaN or inf coordinate (node {node}); a frame built from it would be NaN. "
            "Repair or remove that node before calling the model."
        )
    if not isinstance(batch, Tensor) or batch.ndim != 1 or batch.shape[0] != pos.shape[0]:
        shape = tuple(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
        raise InputLayoutError(
            f"the batch vector must be a (num_nodes,) = ({pos.shape[0]},) integer tensor naming each node's graph, "
            f"got {shape}"
        )
    if batch.dtype.is_floating_point or batch.dtype == torch.bool:
        raise InputLayoutError(f"the batch vector must hold integer graph indices, got dtype {batch.dtype}")
    if batch.numel() and bool((batch[1:] < batch[:-1]).any()):
        where = int((batch[1:] < batch[:-1]).nonzero()[0, 0]) + 1
        raise InputLayoutError(
            f"the batch vector is not sorted: node {where} belongs to graph {int(batch[where])} after a node of graph "
            f"{int(batch[where - 1])}. PyTorch Geometric batches list each graph's nodes together, in graph order; "
            "build the batch with torch_geometric.data.Batch.from_data_list (or sort the nodes by graph)."
        )
    if batch.numel() and (int(batch[0]) < 0 or int(batch[-1]) >= num_graphs):
        raise InputLayoutError(
            f"the batch vector names graphs {int(batch[0])}..{int(batch[-1])} but the batch has {num_graphs} graph(s)"
        )


#: Per ``d``: the index pairs ``(i, j)``, ``i ≤ j``, of ``h = [x, 1]`` whose products ``hᵢ hⱼ`` are summed per graph
#: (first ``x``, then ``1``, then the upper triangle of ``x xᵀ``), and the ``(d·d,)`` columns of those sums that fill a
#: ``(d, d)`` second-moment matrix.
_MOMENT_PAIRS: dict[tuple[int, torch.device], tuple[Tensor, Tensor, Tensor]] = {}


def _moment_pairs(d: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:

    def build() -> tuple[Tensor, Tensor, Tensor]:
        upper = [(i, j) for i in range(d) for j in range(i, d)]
        pairs = [(i, d) for i in range(d)] + [(d, d)] + upper
        square = [d + 1 + upper.index((min(i, j), max(i, j))) for i in range(d) for j in range(d)]
        first, second = [i for i, _ in pairs], [j for _, j in pairs]
        return tuple(torch.tensor(index, device=device) for index in (first, second, square))  # type: ignore[return-value]

    return built_once(_MOMENT_PAIRS, (d, device), build)


def _segment_moments(pos: Tensor, batch: Tensor, num_graphs: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per graph: ``(G,)`` float64 node count, ``(G, d)`` float64 centroid and ``(G, d, d)`` float64 covariance, from
    one segment sum of the products ``hᵢ hⱼ`` of ``h = [x, 1]`` in float64 (differentiable)."""
    n, d = pos.shape
    first, second, square = _moment_pairs(d, pos.device)
    lifted = pos.new_empty(d + 1, n, dtype=torch.float64)  # h, one row per coordinate: the products run along N
    lifted[:d].copy_(pos.T)
    lifted[d].fill_(1.0)
    products = lifted.index_select(0, first) * lifted.index_select(0, second)  # (P, N)
    sums = torch.zeros(num_graphs, first.shape[0], dtype=torch.float64, device=pos.device)
    sums = sums.index_add_(0, batch, products.T)  # (G, P)
    count = sums[:, d]
    means = sums / count.clamp_min(1.0)[:, None]
    centroid = means[:, :d]
    second_moment = means.index_select(1, square).reshape(num_graphs, d, d)
    covariance = torch.baddbmm(second_moment, centroid[:, :, None], centroid[:, None, :], alpha=-1.0)
    return count, centroid, covariance


#: The constant parts of the usual frame plan, by ``(G, d, special, translation, device, dtype)``: the graph of each
#: copy, its weight, the sign of every entry of every element, and the homogeneous bottom row ``[0, ..., 0, 1]``.
#: Read-only; the last few sizes only.
_USUAL_PLANS: dict[tuple, tuple[Tensor, Tensor, Tensor, Tensor]] = {}
_USUAL_PLANS_KEPT = 8


def _usual_constants(
    num_graphs: int, d: int, special: bool, translation: bool, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(K,)`` graph of each copy, ``(K,)`` weights, ``(1, S, c·c)`` signs of the entries of the ``S`` elements of a
    plain frame (row ``i`` of element ``s`` has sign ``sᵢ``; ``c = d + 1`` under ``translation``, with a last row of
    + and ``-sᵢ`` in the last column, which receives ``Uᵀ c``; under ``special`` the last sign is the one with
    ``det(S) = +1``, to be multiplied by ``det(U)``), and the ``(1, 1, c)`` bottom row of homogeneous matrices."""
    key = (num_graphs, d, special, translation, device, dtype)
    found = None if caches_off() else _USUAL_PLANS.get(key)
    if found is not None:
        return keep_newest(_USUAL_PLANS, key, found, _USUAL_PLANS_KEPT)  # the newest again: kept longest
    if special:
        free = _sign_vectors(d, d - 1, device, dtype)
        signs = torch.cat([free, free.prod(dim=1, keepdim=True)], dim=1)
    else:
        signs = _sign_vectors(d, d, device, dtype)
    count, size = signs.shape[0], d + 1 if translation else d
    if translation:
        signs = torch.cat([signs, signs.new_ones(count, 1)], dim=1)
    entries = signs[:, :, None].repeat(1, 1, size)  # (S, c, c)
    if translation:  # the shift column holds U^T c: its sign is -s_i
        entries[:, :d, d] *= -1
    entries = entries.reshape(1, count, size * size)  # (1, S, c·c), row-major
    graph = torch.arange(num_graphs, device=device).repeat_interleave(count)
    weights = torch.full((graph.shape[0],), 1.0 / count, dtype=dtype, device=device)
    bottom = torch.zeros(1, 1, d + 1, dtype=dtype, device=device)
    bottom[0, 0, d] = 1.0
    found = (graph, weights, entries, bottom)
    if not caches_off():
        keep_newest(_USUAL_PLANS, key, found, _USUAL_PLANS_KEPT)
    return found


def segment_pca(pos: Tensor, batch: Tensor, num_graphs: int, tie: float = DEFAULT_EIGEN_GAP) -> RaggedPCA:
    """Centroid and principal axes of every graph of a ragged batch: one segment sum and one batched ``eigh``.

    The moments are summed in float64 (see the module docstring); centroid, eigenvalues and eigenvectors come back
    in the positions' dtype.

    Args:
        pos: ``(N, d)`` positions.
        batch: ``(N,)`` int64 graph of each node (checked by :func:`check_ragged`).
        num_graphs: ``G``.
        tie: Relative eigen-gap below which the backward treats two eigenvalues as equal (see :func:`symmetric_eigh`).
    """
    count, centroid, covariance = _segment_moments(pos, batch, num_graphs)
    values, vectors = symmetric_eigh(covariance.to(pos.dtype), tie)  # ascending
    return RaggedPCA(centroid.to(pos.dtype), values.flip(-1), vectors.flip(-1), count.to(torch.int64), pos, batch)


#: Haar rotations of a degenerate eigenspace by ``(size, samples, seed)``: the same for every graph, so a degenerate
#: graph's enlarged frame does not depend on the other graphs of its batch.
_SPACE_ROTATIONS: dict[tuple[int, int, int], Tensor] = {}


def _space_rotations(size: int, samples: int, seed: int) -> Tensor:
    key = (size, samples, seed)
    found = _SPACE_ROTATIONS.get(key)
    if found is None:
        generator = torch.Generator().manual_seed(seed)
        found = _SPACE_ROTATIONS[key] = haar_orthogonal(samples, size, special=False, generator=generator)
    return found


class RaggedPCAFrame:
    """PCA frames and canonical poses of every graph of a ragged batch (see the module docstring).

    Args:
        d: Dimension of the positions.
        special: SO(d)/SE(d): keep only elements with determinant +1.
        translation: E(d)/SE(d): elements are homogeneous ``(d+1, d+1)`` and centre each graph.
        gap: Relative eigen-gap below which a graph is degenerate.
        degenerate: ``"enlarge"``, ``"warn"`` or ``"error"``, applied to each degenerate graph alone (as
            :class:`~symwrap.frames.pca.PCAFrame` does per cloud).
        enlarge_samples: Rotations of each degenerate eigenspace added by ``"enlarge"``.
        seed: Seed of those rotations.
        group_name: For messages.
    """

    def __init__(
        self,
        d: int,
        *,
        special: bool,
        translation: bool,
        gap: float = DEFAULT_EIGEN_GAP,
        degenerate: str = "enlarge",
        enlarge_samples: int = 16,
        seed: int = 0,
        group_name: str = "",
    ) -> None:
        if degenerate not in DEGENERATE_MODES:
            raise ValueError(f"degenerate must be one of {DEGENERATE_MODES}, got {degenerate!r}")
        self.d, self.special, self.translation = d, special, translation
        self.gap, self.degenerate = gap, degenerate
        self.enlarge_samples, self.seed = enlarge_samples, seed
        self.group_name = group_name or f"{'s' if special else ''}{'e' if translation else 'o'}{d}"

    # ------------------------------------------------------------------ frames
    def frame(self, pos: Tensor, batch: Tensor, num_graphs: int) -> RaggedPlan:
        """The frame of every graph: ``2^d`` (O(d)) or ``2^(d-1)`` (SO(d)) elements per graph, ``enlarge_samples``
        times more for a degenerate graph under ``"enlarge"``, one for a lone atom under E(d)/SE(d).

        Args:
            pos: ``(N, d)`` positions (checked by :func:`check_ragged`).
            batch: ``(N,)`` sorted graph index of each node.
            num_graphs: ``G``.
        """
        count, centroid, covariance = _segment_moments(pos, batch, num_graphs)
        values, vectors = symmetric_eigh(covariance.to(pos.dtype), self.gap)  # ascending
        lam = values.detach()
        scale = lam[:, -1:].clamp_min(torch.finfo(lam.dtype).tiny)
        unusual = ((lam[:, 1:] - lam[:, :-1]) < self.gap * scale).any() | (count < 2).any()
        if not bool(unusual):  # the usual batch (one host sync): every graph has the same plain frame
            return self._usual(vectors.transpose(1, 2).flip(1), centroid.to(pos.dtype), num_graphs)
        p = RaggedPCA(centroid.to(pos.dtype), values.flip(-1), vectors.flip(-1), count.to(torch.int64), pos, batch)
        lone = self._lone(p)
        any_lone = bool(lone.any())
        tied = p.tied(self.gap) & ~lone[:, None]
        degenerate = tied.any(dim=1)
        enlarge = torch.zeros_like(degenerate)
        if bool(degenerate.any()):
            self._handle(degenerate, p, "frame")
            if self.degenerate == "enlarge":
                enlarge = degenerate
        signs_count = 2 ** (self.d - 1 if self.special else self.d)
        plain = ~lone & ~enlarge
        parts: list[tuple[Tensor, Tensor]] = []  # (rotations (k, d, d), graph (k,))
        index = plain.nonzero().flatten()
        if index.numel():
            rot = self._signed(p.eigenvectors.index_select(0, index)[:, None]).flatten(0, 2)
            parts.append((rot, index.repeat_interleave(signs_count)))
        index = enlarge.nonzero().flatten()
        if index.numel():
            bases = p.eigenvectors.index_select(0, index)[:, None] @ self._eigenspace_rotations(tied[index], pos)
            rot = self._signed(bases).flatten(0, 2)
            parts.append((rot, index.repeat_interleave(rot.shape[0] // index.numel())))
        index = lone.nonzero().flatten()
        if index.numel():
            eye = torch.eye(self.d, dtype=pos.dtype, device=pos.device)
            parts.append((eye.expand(index.numel(), self.d, self.d), index))
        rotations = torch.cat([r for r, _ in parts]) if len(parts) > 1 else parts[0][0]
        graph = torch.cat([g for _, g in parts]) if len(parts) > 1 else parts[0][1]
        if len(parts) > 1:  # list the copies graph by graph
            order = torch.argsort(graph, stable=True)
            rotations, graph = rotations.index_select(0, order), graph.index_select(0, order)
        per_graph = torch.bincount(graph, minlength=num_graphs).to(pos.dtype)
        weights = (1.0 / per_graph).index_select(0, graph)
        elements = self._with_translation(rotations, p.centroid.index_select(0, graph))
        return RaggedPlan(elements, graph, weights, lone if any_lone else None, num_graphs)

    def canonical(self, pos: Tensor, batch: Tensor, num_graphs: int) -> RaggedPlan:
        """One canonical element per graph: principal axes with signs of positive skewness (as
        :meth:`~symwrap.frames.pca.PCAFrame.canonical`), from segment sums of the third moments.

        Graphs with near-equal eigenvalues or a near-zero third moment are warned about (``"warn"``, and
        ``"enlarge"``, which one element cannot do) or refused (``"error"``).
        """
        p = segment_pca(pos, batch, num_graphs, self.gap)
        d = self.d
        small = num_graphs > 0 and bool(p.counts.amin() < 2)  # empty graphs or lone atoms: checked below
        lone = self._lone(p) if small else None
        vectors = p.eigenvectors
        proj = torch.einsum("nd,nde->ne", p.centred, vectors.index_select(0, batch))  # (N, d)
        cubes = proj.detach().pow(3)
        moments = pos.new_zeros(num_graphs, 2 * d).index_add_(0, batch, torch.cat([cubes, cubes.abs()], dim=1))
        skew, scale = moments[:, :d], moments[:, d:].clamp_min(torch.finfo(pos.dtype).tiny)
        signs = torch.where(skew >= 0, 1.0, -1.0).to(pos.dtype)
        weak = skew.abs() < self.gap * scale
        if self.special:
            signs[:, -1] = torch.linalg.det(vectors.detach()).sign() * signs[:, :-1].prod(dim=1)
            weak = weak[:, :-1]
        ambiguous = torch.cat([p.tied(self.gap), weak], dim=1).any(dim=1)
        if lone is not None:
            ambiguous = ambiguous & ~lone
        if bool(ambiguous.any()):
            self._handle(ambiguous, p, "canonical pose")
        rotations = signs[..., None] * vectors.transpose(1, 2)  # (G, d, d)
        if lone is not None and bool(lone.any()):
            eye = torch.eye(d, dtype=pos.dtype, device=pos.device)
            rotations = torch.where(lone[:, None, None], eye, rotations)
        else:
            lone = None
        graph = torch.arange(num_graphs, device=pos.device)
        weights = torch.ones(num_graphs, dtype=pos.dtype, device=pos.device)
        elements = self._with_translation(rotations, p.centroid)
        return RaggedPlan(elements, graph, weights, lone, num_graphs)

    # ------------------------------------------------------------------ helpers
    def _lone(self, p: RaggedPCA) -> Tensor:
        """``(G,)`` graphs of one node; raise for empty graphs, and for lone atoms without translations."""
        counts = p.counts
        if bool((counts == 0).any()):
            graph = int((counts == 0).nonzero()[0, 0])
            raise InputLayoutError(
                f"graph {graph} of the batch has no nodes, so it has no frame. Drop empty graphs from the batch."
            )
        lone = counts == 1
        if not self.translation and bool(lone.any()):
            index = lone.nonzero().flatten().tolist()
            shown = ", ".join(map(str, index[:8])) + (", ..." if len(index) > 8 else "")
            raise InputLayoutError(
                f"graph(s) {shown} of the batch have a single atom: group {self.group_name!r} rotates about the "
                "origin, and one point has no principal axes to fix a frame. Use the group with translations "
                f"('{'se' if self.special else 'e'}{self.d}': a centred atom is fixed by every rotation, handled "
                "exactly), method='monte_carlo', or leave single atoms out of the batch."
            )
        return lone

    def _usual(self, axes: Tensor, centroid: Tensor, num_graphs: int) -> RaggedPlan:
        """The plan of a batch where every graph has its plain frame, from ``(G, d, d)`` ``axes = Uᵀ`` (principal axes
        as rows, descending) and ``(G, d)`` centroids: ``elements[g, s] = diag(s) [[Uᵀ, -Uᵀ c], [0, 1]]``, as one
        product of each graph's ``[[Uᵀ, Uᵀ c], [0, 1]]`` with the cached signs of every entry."""
        d = self.d
        graph, weights, entries, bottom = _usual_constants(
            num_graphs, d, self.special, self.translation, axes.device, axes.dtype
        )
        if self.translation:
            shift = torch.bmm(axes, centroid[:, :, None])  # (G, d, 1): Uᵀ c, negated by the signs in entries
            axes = torch.cat([torch.cat([axes, shift], dim=2), bottom.expand(num_graphs, 1, d + 1)], dim=1)
        size = axes.shape[1]
        if self.special:  # det(diag(s) Uᵀ) = det(U) for the cached s: flip the last sign where det(U) = -1
            det = torch.linalg.det(axes[:, :d, :d].detach()).sign()
            axes = axes * torch.nn.functional.pad(det[:, None], (d - 1, size - d), value=1.0)[:, :, None]
        elements = axes.reshape(num_graphs, 1, size * size) * entries  # (G, S, c·c): one product, rows scaled
        return RaggedPlan(elements.reshape(-1, size, size), graph, weights, None, num_graphs)

    def _signed(self, bases: Tensor) -> Tensor:
        """``S Uᵀ`` for every allowed sign matrix ``S`` and basis ``U`` ``(G, m, d, d)`` -> ``(G, m, S, d, d)``."""
        d = self.d
        transposed = bases.transpose(-1, -2)[:, :, None]
        if not self.special:
            signs = _sign_vectors(d, d, bases.device, bases.dtype)
            return signs[None, None, :, :, None] * transposed
        free = _sign_vectors(d, d - 1, bases.device, bases.dtype)
        det = torch.linalg.det(bases.detach()).sign()
        last = det[..., None] * free.prod(dim=1)
        signs = torch.cat([free.expand(*last.shape, d - 1), last[..., None]], dim=-1)
        return signs[..., None] * transposed

    def _with_translation(self, rotations: Tensor, centroid: Tensor) -> Tensor:
        """Homogeneous ``[[R, -R c], [0, 1]]`` ``(K, d+1, d+1)`` for E(d)/SE(d), else ``R`` as is."""
        if not self.translation:
            return rotations
        d = self.d
        shift = -(rotations @ centroid[:, :, None])  # (K, d, 1)
        top = torch.cat([rotations, shift], dim=2)
        bottom = torch.zeros(rotations.shape[0], 1, d + 1, dtype=rotations.dtype, device=rotations.device)
        bottom[:, 0, d] = 1
        return torch.cat([top, bottom], dim=1)

    def _eigenspace_rotations(self, tied: Tensor, pos: Tensor) -> Tensor:
        """``(Gd, m, d, d)`` block-diagonal rotations of each degenerate eigenspace of the ``Gd`` degenerate graphs."""
        m, d = self.enlarge_samples, self.d
        out = torch.eye(d, dtype=torch.float64).repeat(tied.shape[0], m, 1, 1)
        for row, gaps in enumerate(tied.cpu()):
            for block in _tie_blocks(gaps):
                if len(block) > 1:
                    lo, hi = block[0], block[-1] + 1
                    out[row, :, lo:hi, lo:hi] = _space_rotations(hi - lo, m, self.seed)
        return out.to(device=pos.device, dtype=pos.dtype)

    def _handle(self, degenerate: Tensor, p: RaggedPCA, what: str) -> None:
        index = degenerate.nonzero().flatten().tolist()
        shown = ", ".join(map(str, index[:8])) + (", ..." if len(index) > 8 else "")
        tied = p.tied(self.gap)[degenerate].any(dim=1)
        reasons = []
        if bool(tied.any()):
            gaps = p.relative_gaps()[degenerate][tied].amin().item()
            reasons.append(
                f"near-equal covariance eigenvalues (smallest relative gap {gaps:.2e} < gap={self.gap:g}: a linear, "
                "planar-symmetric or symmetric-top molecule)"
            )
        if not bool(tied.all()):
            reasons.append("a near-zero third moment along an axis (a centrosymmetric molecule has no canonical sign)")
        detail = f"{len(index)} graph(s) of the batch (index {shown}) have a degenerate {what}: {' or '.join(reasons)}"
        if self.degenerate == "error":
            raise DegenerateInputError(
                f"{detail}. Their frame is ambiguous, so their output would not be invariant. Use "
                "degenerate='enlarge' (average over rotations of the ambiguous eigenspace), degenerate='warn', or "
                "method='monte_carlo'."
            )
        if self.degenerate == "enlarge" and what == "frame":
            message = (
                f"{detail}; their frame was enlarged by {self.enlarge_samples} rotations of each degenerate "
                "eigenspace, so their invariance is approximate (Monte-Carlo error ~ 1/sqrt(enlarge_samples)). "
                "The other graphs of the batch are not affected."
            )
        else:
            message = f"{detail}; their output is not exactly invariant (degenerate='{self.degenerate}')."
        warnings.warn(message, DegenerateFrameWarning, stacklevel=4)
