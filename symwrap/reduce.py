"""Streaming weighted reductions over the orbit copies of each input, in a chosen space."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from symwrap.autocast import as_dtype, float32_or_64
from symwrap.errors import ConfigError

if TYPE_CHECKING:
    from symwrap.methods.base import Reweighing

__all__ = ["REDUCE_SPACES", "OrbitReducer", "combine_reweighed", "finish", "reduce_whole_orbit"]

#: ``logits``: weighted mean of raw outputs. ``probs``: weighted mean of ``softmax(y, class_dim)``.
#: ``log_probs``: log of that mean, computed stably in log space. ``features``: weighted mean of
#: L2-normalised vectors (last dim), as for CLIP-style embeddings. ``max``: element-wise maximum of the raw outputs
#: over the copies with a positive weight. ``gmean``: the normalised weighted geometric mean of the probabilities,
#: ``softmax(Σ_j w_j · log_softmax(y_j))`` along ``class_dim``. Every space is a symmetric function of the orbit's
#: (pulled-back) outputs, so each keeps invariance and equivariance exact.
REDUCE_SPACES = ("logits", "probs", "log_probs", "features", "max", "gmean")


class OrbitReducer:
    """Accumulates ``Σ_j w[b, j] · y[b, j]`` over chunks of rows, for several output leaves at once.

    Rows arrive in chunks: row ``r`` belongs to input ``src[r]`` and orbit slot ``slot[r]``. The sum runs
    in float32 (or float64 when the outputs are float64), out of place so gradients flow.

    Args:
        batch: Number of inputs ``B``.
        weights: ``(B, k)`` weights summing to 1 per input.
        space: One of :data:`REDUCE_SPACES`.
        class_dim: The class axis of each output for ``probs``/``log_probs`` (default -1).
        second_moment: Also accumulate ``Σ w y²`` (for Monte-Carlo standard errors).
    """

    def __init__(
        self, batch: int, weights: Tensor, space: str = "logits", class_dim: int = -1, second_moment: bool = False
    ) -> None:
        self.batch, self.weights, self.space, self.class_dim = batch, weights, space, class_dim
        self.second_moment = second_moment
        self._sum: list[Tensor | None] = []
        self._sq: list[Tensor | None] = []
        self._max: list[Tensor | None] = []

    def _prepare(self, y: Tensor) -> Tensor:
        return _in_space(y, self.space, self.class_dim)

    def update(self, src: Tensor, slot: Tensor, leaves: list[Tensor]) -> None:
        """Add a chunk: ``leaves[i]`` has shape ``(R, ...)`` with rows belonging to ``src`` ``(R,)``."""
        if not self._sum:
            self._sum = [None] * len(leaves)
            self._sq = [None] * len(leaves)
            self._max = [None] * len(leaves)
        w = self.weights[src, slot]
        for i, leaf in enumerate(leaves):
            y = self._prepare(leaf)
            wr = w.to(y.dtype).reshape(-1, *([1] * (y.ndim - 1)))
            if self.space == "log_probs":
                self._update_log(i, src, y, wr)
                continue
            if self.space == "max":
                self._update_max(i, src, y, wr)
                continue
            acc = self._sum[i]
            if acc is None:
                acc = y.new_zeros((self.batch, *y.shape[1:]))
            self._sum[i] = acc.index_add(0, src, wr * y)
            if self.second_moment:
                sq = self._sq[i]
                if sq is None:
                    sq = y.new_zeros((self.batch, *y.shape[1:]))
                self._sq[i] = sq.index_add(0, src, wr * y.detach() ** 2)

    def _update_max(self, i: int, src: Tensor, y: Tensor, w: Tensor) -> None:
        acc = self._sum[i]
        if acc is None:
            acc = torch.full((self.batch, *y.shape[1:]), -torch.inf, dtype=y.dtype, device=y.device)
        y = torch.where(w > 0, y, -torch.inf)  # a copy of weight 0 takes no part
        index = src.reshape(-1, *([1] * (y.ndim - 1))).expand_as(y)
        self._sum[i] = acc.scatter_reduce(0, index, y, reduce="amax")

    def _update_log(self, i: int, src: Tensor, log_p: Tensor, w: Tensor) -> None:
        # Online log-sum-exp: keep a running max M (detached; the result log S + M does not depend on it).
        log_wp = log_p + torch.log(w)
        chunk_max = torch.full((self.batch, *log_p.shape[1:]), -torch.inf, dtype=log_p.dtype, device=log_p.device)
        index = src.reshape(-1, *([1] * (log_p.ndim - 1))).expand_as(log_wp)
        chunk_max = chunk_max.scatter_reduce(0, index, log_wp.detach(), reduce="amax")
        old_max, acc = self._max[i], self._sum[i]
        new_max = chunk_max if old_max is None else torch.maximum(old_max, chunk_max)
        # Keep -inf for inputs without rows yet (a stand-in 0 kept as their max would later under-flow their
        # very negative terms to exp(-3000) = 0); shift by a finite value only.
        shift = _finite_or_zero(new_max)
        scaled = torch.exp(log_wp - shift[src])
        acc = scaled.new_zeros(new_max.shape) if acc is None else acc * torch.exp(old_max - shift)
        self._sum[i] = acc.index_add(0, src, scaled)
        self._max[i] = new_max

    def result(self) -> list[Tensor]:
        """The reduced leaves, each ``(B, ...)``."""
        if self.space == "log_probs":
            return [torch.log(s) + _finite_or_zero(m) for s, m in zip(self._sum, self._max)]  # type: ignore[arg-type]
        return [finish(s, self.space, self.class_dim) for s in self._sum]  # type: ignore[arg-type]

    def variance(self) -> list[Tensor]:
        """Weighted variance of the copies per input, ``Σ w y² - (Σ w y)²`` (needs ``second_moment``)."""
        return [(sq - s.detach() ** 2).clamp_min(0) for s, sq in zip(self._sum, self._sq)]  # type: ignore[operator]


def reduce_whole_orbit(
    leaves: list[Tensor], weights: Tensor, space: str = "logits", class_dim: int = -1, finished: bool = True
) -> list[Tensor]:
    """The reduction of :class:`OrbitReducer` when every row of the orbit is at hand, in row order ``r = b·k + j``.

    One weighted sum over the copy axis per leaf, instead of the scatter of the streamed path (fewer kernels: it
    matters for small models, where the per-call bookkeeping is a visible share of the time). Same spaces and the
    same float32 (float64 for float64 outputs) accumulation; results agree with the streamed path up to the order
    of the floating-point sum.

    Args:
        leaves: Each ``(B·k, ...)``.
        weights: ``(B, k)``.
        space: One of :data:`REDUCE_SPACES`.
        class_dim: The class axis of each leaf for ``probs``/``log_probs``/``gmean``.
        finished: Apply :func:`finish` (``False`` leaves ``gmean``'s weighted log-probabilities, to be added to).

    Returns:
        Each leaf reduced to ``(B, ...)``.
    """
    batch, copies = weights.shape
    if copies == 1 and not weights.requires_grad:  # one copy per input, weight 1 (they sum to 1): the copy itself
        return [_finished(_in_space(leaf, space, class_dim), space, class_dim, finished) for leaf in leaves]
    out = []
    for leaf in leaves:
        y = _in_space(leaf, space, class_dim)
        w = as_dtype(weights, y.dtype)
        if space == "log_probs":
            y = y.reshape(batch, copies, *y.shape[1:])
            out.append(torch.logsumexp(y + torch.log(w.reshape(batch, copies, *([1] * (y.ndim - 2)))), dim=1))
        elif space == "max":
            y = y.reshape(batch, copies, *y.shape[1:])
            if bool((w <= 0).any()):  # copies of weight 0 (a padded frame) take no part
                y = torch.where(w.reshape(batch, copies, *([1] * (y.ndim - 2))) > 0, y, -torch.inf)
            out.append(y.amax(dim=1))
        else:  # (B, 1, k) @ (B, k, D): the weighted sum over the copies as one batched matmul
            summed = torch.bmm(w.unsqueeze(1), y.reshape(batch, copies, -1))
            out.append(_finished(summed.reshape(batch, *y.shape[1:]), space, class_dim, finished))
    return out


def combine_reweighed(leaves: list[Tensor], reweighing: Reweighing, space: str, class_dim: int) -> list[Tensor]:
    """:func:`reduce_whole_orbit` with a method's :class:`~symwrap.methods.base.Reweighing`.

    With ``gradient_weights`` (straight-through training) the value is the ``weights`` sum and the gradient flows as
    through the ``gradient_weights`` sum: ``R(w).detach() + (R(gradient_weights) - R(gradient_weights).detach())``.
    With ``selected`` the ``weights`` sum is the selected copy's output itself.

    Args:
        leaves: Each ``(B·k, ...)``, rows ``r = b·k + j``.
        reweighing: The weights ``(B, k)`` (and optional gradient weights).
        space: One of :data:`REDUCE_SPACES`.
        class_dim: The class axis of each leaf for ``probs``/``log_probs``.
    """
    if reweighing.selected is not None:  # one copy per input: its output, without 0 · (the others') terms
        result = [
            finish(
                _take_copy(_in_space(leaf, space, class_dim), reweighing.selected, reweighing.copies), space, class_dim
            )
            for leaf in leaves
        ]
    else:
        result = reduce_whole_orbit(leaves, reweighing.weights, space, class_dim)
    if reweighing.gradient_weights is None:
        return result
    surrogate = reduce_whole_orbit(leaves, reweighing.gradient_weights, space, class_dim)
    # The value is exactly R(weights) (s - s is 0 for finite s); where the surrogate is not finite (a copy that
    # overflowed) it adds nothing and passes no gradient, instead of making the value NaN.
    return [
        r.detach() + torch.nan_to_num(s - s.detach(), nan=0.0, posinf=0.0, neginf=0.0)
        for r, s in zip(result, surrogate)
    ]


def _take_copy(y: Tensor, selected: Tensor, copies: int) -> Tensor:
    """Rows ``(B·k, ...)`` -> the selected copy of each input ``(B, ...)``: what a one-hot weighted mean equals
    (exactly, in every space: the log of a one-term sum is the term) when every copy is finite."""
    batch = selected.shape[0]
    if batch == 1:  # row b·k + j of input 0 is row j: one index_select
        return y.index_select(0, selected)
    return y.index_select(0, selected + torch.arange(0, batch * copies, copies, device=selected.device))


def finish(y: Tensor, space: str, class_dim: int) -> Tensor:
    """The last step of a reduction: ``gmean``'s weighted mean of log-probabilities normalised to probabilities
    (``softmax`` along ``class_dim``); every other space is already final."""
    return torch.softmax(y, dim=class_dim) if space == "gmean" else y


def _finished(y: Tensor, space: str, class_dim: int, finished: bool) -> Tensor:
    return finish(y, space, class_dim) if finished else y


def _in_space(y: Tensor, space: str, class_dim: int) -> Tensor:
    """``y`` in float32 (float64 stays float64) and mapped to the reduction ``space`` (see :data:`REDUCE_SPACES`)."""
    y = float32_or_64(y)
    if space in ("probs", "log_probs"):
        _check_class_dim(y, class_dim)
    if space == "probs":
        return torch.softmax(y, dim=class_dim)
    if space in ("log_probs", "gmean"):
        return torch.log_softmax(y, dim=class_dim)
    if space == "features":
        return F.normalize(y, dim=-1)
    return y


def _check_class_dim(y: Tensor, class_dim: int) -> None:
    """A class axis of the output ``(rows, ...)`` that exists and is not the batch axis (a softmax across the copies
    of an input would mix them silently)."""
    if not -y.ndim <= class_dim < y.ndim or class_dim % y.ndim == 0:
        raise ConfigError(
            f"invalid option 'class_dim': {class_dim} is not a class axis of the model's output of shape "
            f"(batch, {', '.join(map(str, y.shape[1:]))}); use an axis from 1 to {y.ndim - 1} (or -1 for the last)"
        )


def _finite_or_zero(values: Tensor) -> Tensor:
    """``values`` with non-finite entries replaced by 0 (the shift used for inputs that have no terms yet)."""
    return torch.where(torch.isfinite(values), values, torch.zeros_like(values))
