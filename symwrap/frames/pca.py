"""PCA frames for O(d), SO(d), E(d) and SE(d) acting on point clouds ``(B, N, d)``.

For a cloud with centroid ``c`` and covariance ``C = V Λ Vᵀ`` (eigenvalues descending), the frame is the set
of rotations ``R = S Vᵀ`` for the sign matrices ``S = diag(±1)`` (Puny et al. 2022, arXiv 2110.03336, §3.1):
all ``2^d`` of them for O(d), the ``2^(d-1)`` with ``det(S Vᵀ) = 1`` for SO(d). Each planned element moves the
cloud to a canonical pose, ``a·x = (x - c) Rᵀ`` (for O(d)/SO(d) without the translation), so the frame obeys
``F(h·x) = F(x)·h⁻¹`` whatever signs the eigensolver returns. Everything is batched on the input's device
and dtype (one ``torch.linalg.eigh`` call for the whole batch).

Scale: every test (eigen-gaps, the signs of third moments) is made on the cloud divided by its largest absolute
coordinate, so clouds at 1e-20 and at 1e20 get the same frame as at 1: unscaled, squares and cubes of float32
coordinates overflow above ~1e13 and vanish below ~1e-13. Scaled so, every centred coordinate lies in [-2, 2]; along
the coordinate that holds the largest value the points either all agree (a flat cloud, whose zero third moment the
canonical pose flags) or differ by at least float32's precision near 1 (~6e-8), so squares and cubes of the centred
cloud stay far above float32's smallest normal number. The one case this leaves out: the frame of a cloud that is
exactly flat along a coordinate axis and lies more than ~1e19 times its own extent from the origin, whose squares
vanish; centre such clouds before the model. Half and bfloat16 clouds
are analysed in float32 (``torch.linalg.eigh`` has no half kernel) and the elements come back in their dtype.

Degenerate clouds: when two eigenvalues are nearly equal (relative gap ``(λᵢ - λᵢ₊₁)/λ₁ < gap``) the eigenvectors
of that eigenspace are not determined (exactly equal) or are dominated by rounding error (nearly equal, error
≈ machine epsilon / gap). See :class:`PCAFrame` for what happens then.
"""

from __future__ import annotations

import itertools
import warnings

import torch
from torch import Tensor

from symwrap.autocast import as_dtype
from symwrap.caches import built_once
from symwrap.frames.base import DEGENERATE_MODES, DegenerateFrameWarning, DegenerateInputError, frame_weights
from symwrap.groups.matrix import haar_orthogonal
from symwrap.limits import check_group_order

__all__ = ["DEFAULT_EIGEN_GAP", "PCA", "PCAFrame", "analysis_dtype", "pca"]

#: Default relative eigen-gap below which a cloud counts as degenerate. With float32 coordinates the
#: eigenvectors of a cloud whose gaps are all above it are accurate to ~1e-4 (tested invariance tolerance).
DEFAULT_EIGEN_GAP = 1e-3


class PCA:
    """Batched principal axes of point clouds (what :func:`pca` returns).

    Attributes:
        eigenvalues: ``(B, d)`` covariance eigenvalues of the cloud scaled by ``1/size`` (``centred``), descending.
        eigenvectors: ``(B, d, d)``; column ``i`` belongs to ``eigenvalues[:, i]``.
        centred: ``(B, N, d)`` points minus the centroid, divided by ``size``, zero at padding.
        centroid: ``(B, d)`` mean of the (real) points (computed when read).
        size: ``(B,)`` largest absolute coordinate of a (real) point (the smallest normal float for an all-zero cloud).
    """

    __slots__ = ("_centroid", "_size", "centred", "eigenvalues", "eigenvectors")

    def __init__(
        self, centroid: Tensor, size: Tensor, eigenvalues: Tensor, eigenvectors: Tensor, centred: Tensor
    ) -> None:
        # centroid (B, 1, d) of the cloud divided by size (B, 1, 1)
        self._centroid, self._size = centroid, size
        self.eigenvalues, self.eigenvectors, self.centred = eigenvalues, eigenvectors, centred

    @property
    def centroid(self) -> Tensor:
        return (self._centroid * self._size).flatten(1)

    @property
    def size(self) -> Tensor:
        return self._size.flatten()

    def relative_gaps(self) -> Tensor:
        """``(B, d-1)`` gaps ``(λᵢ - λᵢ₊₁) / λ₁`` (0 when every eigenvalue is 0)."""
        lam = self.eigenvalues
        scale = lam[:, :1].clamp_min(torch.finfo(lam.dtype).tiny)
        return (lam[:, :-1] - lam[:, 1:]) / scale

    def tied(self, gap: float) -> Tensor:
        """``(B, d-1)``: relative gap below ``gap`` (:meth:`relative_gaps` ``< gap``, without the division)."""
        lam = self.eigenvalues
        return lam[:, :-1] - lam[:, 1:] < gap * lam[:, :1].clamp_min(torch.finfo(lam.dtype).tiny)


def analysis_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a ``dtype`` cloud is analysed in: float32 for half and bfloat16 (no ``eigh`` kernel), else its own."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _unit(values: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Per-cloud positive scale of ``values`` over ``dims``, kept as size-1 axes: the largest absolute value (the
    smallest normal float where all are 0, which leaves them 0; NaN where one is NaN)."""
    scale = values.abs().amax(dim=dims, keepdim=True)  # ~3× faster than vector_norm(ord=inf) on a small cloud
    return scale.clamp_min(_tiny(scale.dtype))


#: ``torch.finfo(dtype).tiny`` by dtype (``finfo`` costs a microsecond a call).
_TINY: dict[torch.dtype, float] = {}


def _tiny(dtype: torch.dtype) -> float:
    tiny = _TINY.get(dtype)
    if tiny is None:
        tiny = _TINY[dtype] = torch.finfo(dtype).tiny
    return tiny


def pca(x: Tensor, mask: Tensor | None = None) -> PCA:
    """Centroid and principal axes of each cloud, on ``x``'s device (float32 for half/bfloat16 inputs).

    The cloud is divided by its largest absolute coordinate before the centroid is taken, so no square or cube of
    a centred point overflows or vanishes at any scale float32 can hold (see the module docstring).

    Args:
        x: ``(B, N, d)`` point clouds (finite).
        mask: ``(B, N)`` bool, ``True`` for real points (padding is ignored), or ``None``.
    """
    centroid, size, values, vectors, centred = _principal(x, mask)
    return PCA(centroid, size, values.flip(-1), vectors.flip(-1), centred)


def _principal(x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """:func:`pca`'s arithmetic: the scaled centroid ``(B, 1, d)``, the size ``(B, 1, 1)``, the eigenvalues ``(B, d)``
    and eigenvectors ``(B, d, d)`` in ``eigh``'s ascending order, and the centred scaled cloud ``(B, N, d)``."""
    x = as_dtype(x, analysis_dtype(x.dtype))
    weight = None if mask is None else mask.to(x.dtype)
    if mask is not None:  # padding (possibly huge or non-finite garbage) takes no part in any scale
        x = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
    size = _unit(x, (1, 2))  # (B, 1, 1)
    unit = x / size
    if weight is None:
        count: Tensor | float = float(x.shape[1])  # every cloud has N points: a Python divisor
        centroid = unit.mean(dim=1, keepdim=True)  # (B, 1, d)
        centred = unit - centroid
    else:
        count = weight.sum(dim=1).clamp_min(1)[:, None, None]  # (B, 1, 1)
        centroid = unit.sum(dim=1, keepdim=True) / count
        centred = (unit - centroid) * weight[..., None]
    cov = torch.bmm(centred.transpose(1, 2), centred).div_(count)  # bmm: the same products as @, fewer steps
    values, vectors = torch.linalg.eigh(cov)  # ascending
    return centroid, size, values, vectors, centred


_FRAME_ADVICE = "; use method='canonicalization' (one pose per cloud) or 'monte_carlo' for high-dimensional clouds"

#: :func:`_sign_vectors` by ``(free, device, dtype)``: built once, not from a Python list every call.
_SIGN_VECTORS: dict[tuple[int, torch.device, torch.dtype], Tensor] = {}


def _sign_vectors(d: int, free: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """All ``2^free`` sign vectors of length ``free`` ``(2^free, free)``, all-positive first (cached; read-only)."""

    def build() -> Tensor:
        signs = torch.tensor(list(itertools.product([1.0, -1.0], repeat=free)), dtype=dtype, device=device)
        return signs.reshape(-1, free)

    return built_once(_SIGN_VECTORS, (free, device, dtype), build)


#: :meth:`PCAFrame._margins` by ``(d, special, gap, dtype, device)``.
_MARGINS: dict[tuple[int, bool, float, torch.dtype, torch.device], Tensor] = {}

#: :func:`_one` by ``(device, dtype)``.
_ONES: dict[tuple[torch.device, torch.dtype], Tensor] = {}


def _one(device: torch.device, dtype: torch.dtype) -> Tensor:
    """A 0-d tensor ``1`` (cached; read-only)."""
    return built_once(_ONES, (device, dtype), lambda: torch.ones((), device=device, dtype=dtype))


def _tie_blocks(gaps_tied: Tensor) -> list[list[int]]:
    """Blocks of consecutive eigen-indices joined by tied gaps, e.g. ``[F, T]`` -> ``[[0], [1, 2]]``."""
    blocks = [[0]]
    for i, tied in enumerate(gaps_tied.tolist()):
        if tied:
            blocks[-1].append(i + 1)
        else:
            blocks.append([i + 1])
    return blocks


class PCAFrame:
    """Builds PCA frames (and single canonical poses) for O(d)/SO(d), optionally with translations.

    Args:
        d: Dimension of the points.
        special: SO(d)/SE(d): keep only elements with determinant +1.
        translation: E(d)/SE(d): elements are homogeneous ``(d+1, d+1)`` and centre the cloud.
        gap: Relative eigen-gap below which a cloud is degenerate.
        degenerate: What to do with degenerate clouds:

            * ``"enlarge"``: the frame of a degenerate cloud is enlarged by ``enlarge_samples`` rotations
              ``W`` of each degenerate eigenspace (Haar-random, fixed ``seed``): ``{S (V W)ᵀ}``. This averages
              the ambiguous in-eigenspace rotation out — approximately (Monte-Carlo error ~ 1/√samples), not
              exactly; a :class:`DegenerateFrameWarning` says so.
            * ``"warn"``: keep the plain frame and warn (the output of those clouds is not exactly invariant).
            * ``"error"``: raise :class:`DegenerateInputError`.
        enlarge_samples: Rotations per degenerate eigenspace with ``"enlarge"``.
        seed: Seed of those rotations (a fixed seed keeps the wrapped model a deterministic function).
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
    ) -> None:
        if degenerate not in DEGENERATE_MODES:
            raise ValueError(f"degenerate must be one of {DEGENERATE_MODES}, got {degenerate!r}")
        self.d, self.special, self.translation = d, special, translation
        self.gap, self.degenerate = gap, degenerate
        self.enlarge_samples, self.seed = enlarge_samples, seed

    # ------------------------------------------------------------------ frames
    def frame(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The frame of each cloud as planned elements and weights.

        Args:
            x: ``(B, N, d)`` clouds (checked by :func:`~symwrap.frames.check_cloud`).
            mask: ``(B, N)`` bool padding mask or ``None``.

        Returns:
            ``elements`` ``(B, k, c, c)`` with ``c = d`` (or ``d + 1`` with translations), ``k = 2^d`` (O(d)) or
            ``2^(d-1)`` (SO(d)), times ``enlarge_samples`` when a cloud of the batch is enlarged; ``weights``
            ``(B, k)`` uniform.
        """
        size = 2 ** (self.d - 1 if self.special else self.d)
        check_group_order(size, f"the PCA frame of {self.d}-d clouds (2^d sign choices)", _FRAME_ADVICE)
        p = pca(x, mask)
        bases = p.eigenvectors[:, None]  # (B, 1, d, d): one basis per input unless enlarged
        tied = p.tied(self.gap)  # (B, d-1)
        degenerate = tied.any(dim=1)
        if bool(degenerate.any()):
            self._handle(degenerate, p, "frame")
            if self.degenerate == "enlarge":
                check_group_order(size * self.enlarge_samples, "an enlarged PCA frame", _FRAME_ADVICE)
                bases = bases @ self._eigenspace_rotations(tied, degenerate, x)
        rotations = self._signed(bases)  # (B, m, S, d, d)
        batch = x.shape[0]
        rotations = rotations.reshape(batch, -1, self.d, self.d)
        elements = as_dtype(self._with_translation(rotations, p.centroid), x.dtype)
        return elements, frame_weights(elements.shape[0], elements.shape[1], x.dtype, x.device)

    def canonical(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """One canonical element per cloud ``(B, 1, c, c)``: signs chosen so each axis has positive skewness.

        The sign of axis ``i`` is the sign of the third moment ``Σₙ ((xₙ - c)·vᵢ)³``; for SO(d) the last sign
        is fixed by the determinant instead. Degenerate clouds (near-equal eigenvalues, or a third moment
        below ``gap`` relative to ``Σₙ |(xₙ - c)·vᵢ|³``) are warned about or refused per ``degenerate``
        (``"enlarge"`` is not possible with one element and acts as ``"warn"``).
        """
        p = pca(x, mask)
        v = p.eigenvectors
        skew, scale, signs = self._moments_and_signs(p.centred, v)
        weak = skew.abs() <= self.gap * scale  # a third moment below gap relative to Σ|a|³ (all-zero cubes: weak)
        if self.special:
            weak = weak[:, :-1]  # the last sign comes from the determinant
        ambiguous = torch.cat([p.tied(self.gap), weak], dim=1)  # (B, ·): one test and one sync for the batch
        if bool(ambiguous.any()):
            self._handle(ambiguous.any(dim=1), p, "canonical pose")
        return self._pose(signs, v, p.centroid if self.translation else None, x.dtype)

    def clear_canonical(self, x: Tensor) -> Tensor | None:
        """:meth:`canonical` of clouds without a padding mask, with fewer steps when no cloud comes near a test:
        the same elements ``(B, 1, c, c)`` (the same arithmetic), or ``None`` when a cloud is not finite, or its
        eigen-gaps or third moments come near a tie (:meth:`_margins`: a little more than ``gap``). Then
        :meth:`canonical` must answer, with its error or warning. The tests of the batch are one matrix product,
        one reduction and one sync, and a non-finite cloud is found by them (its scaled cloud is NaN), not by a pass
        of its own.

        Args:
            x: ``(B, N, d)`` clouds with ``N >= d`` (the shape and dtype checks of
                :func:`~symwrap.frames.check_cloud`; not their values).
        """
        try:
            centroid, size, values, vectors, centred = _principal(x, None)
        except torch.linalg.LinAlgError:  # eigh refuses a NaN covariance (a non-finite cloud) on CPU
            return None
        v = vectors.flip(-1)
        skew, scale, signs = self._moments_and_signs(centred, v)
        tests = torch.cat([values, skew.abs(), scale], dim=1).detach()  # (B, 3d); a test, no gradient
        # one product gives every test's margin, >= 0 wherever canonical's test flags the cloud
        if not float(torch.mm(tests, self._margins(tests)).amax()) < 0:  # NaN (a non-finite cloud) is not < 0
            return None
        return self._pose(signs, v, (centroid * size).flatten(1) if self.translation else None, x.dtype)

    # ------------------------------------------------------------------ helpers
    def _margins(self, like: Tensor) -> Tensor:
        """``(3d, m)``: the map from ``[eigenvalues (ascending), |third moments|, Σ|a|³]`` ``(B, 3d)`` to the margins of
        :meth:`clear_canonical`'s tests ``(B, m)``, each ``>= 0`` wherever :meth:`canonical`'s test flags the cloud:
        ``g·λ₁ - (λᵢ - λᵢ₊₁)`` for each eigen-gap and ``g·Σ|a|³ - |Σa³|`` for each third moment (not the last one for
        SO(d)), with ``g = gap·(1 + 2⁻⁸) + 2⁻¹²``. That margin over ``gap`` is far above the rounding of either form
        (a few units in the last place of ``λ₁`` or ``Σ|a|³``), so a cloud the product passes, canonical passes too.
        Cached per frame options, dtype and device (read-only)."""
        d, g = self.d, self.gap * (1 + 2**-8) + 2**-12

        def build() -> Tensor:
            columns = []
            for i in range(d - 1):  # eigenvalues ascending: λ₁ is values[d - 1], gap i is values[i + 1] - values[i]
                column = [0.0] * (3 * d)
                column[d - 1] += g
                column[i + 1] -= 1.0
                column[i] += 1.0
                columns.append(column)
            for i in range(d - 1 if self.special else d):  # the last third moment of SO(d) is not tested
                column = [0.0] * (3 * d)
                column[d + i], column[2 * d + i] = -1.0, g
                columns.append(column)
            return torch.tensor(columns, dtype=like.dtype, device=like.device).T.contiguous()

        return built_once(_MARGINS, (d, self.special, self.gap, like.dtype, like.device), build)

    def _moments_and_signs(self, centred: Tensor, axes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The third moments ``Σₙ aₙ³`` ``(B, d)`` of the coordinates ``a = centred @ axes`` along each axis, their
        scale ``Σₙ |aₙ|³``, and the pose's signs: +1 for a third moment >= +0, else -1; for SO(d) the last sign is
        the one that makes the pose a rotation (``det(S Vᵀ) = +1``)."""
        cubes = torch.bmm(centred, axes).pow(3)  # (B, N, d), zero at padding; bmm: the same products as @
        skew = cubes.sum(dim=1)
        # |a|³ = |a³| exactly (a float product only changes sign with its factors): one pass fewer over the points
        scale = cubes.abs().sum(dim=1)
        # signs are piecewise constant (no gradient): detached, the SO(d) sign may be set in place under autograd
        signs = _one(cubes.device, cubes.dtype).copysign(skew.detach())
        if self.special:
            signs[:, -1] = torch.linalg.det(axes).sign() * signs[:, :-1].prod(dim=1)
        return skew, scale, signs

    def _pose(self, signs: Tensor, axes: Tensor, centroid: Tensor | None, dtype: torch.dtype) -> Tensor:
        """The canonical elements ``(B, 1, c, c)`` ``S Vᵀ`` (with the translation by ``-centroid`` ``(B, d)`` for
        E(d)/SE(d)) in ``dtype``."""
        rotation = (signs[..., None] * axes.transpose(1, 2))[:, None]  # (B, 1, d, d)
        if centroid is not None:
            rotation = self._with_translation(rotation, centroid)
        return as_dtype(rotation, dtype)

    def _signed(self, bases: Tensor) -> Tensor:
        """``S Uᵀ`` for every allowed sign matrix ``S`` and basis ``U`` ``(B, m, d, d)`` -> ``(B, m, S, d, d)``."""
        d = self.d
        transposed = bases.transpose(-1, -2)[:, :, None]  # (B, m, 1, d, d)
        if not self.special:
            signs = _sign_vectors(d, d, bases.device, bases.dtype)  # (2^d, d)
            return signs[None, None, :, :, None] * transposed
        free = _sign_vectors(d, d - 1, bases.device, bases.dtype)  # (2^(d-1), d-1)
        det = torch.linalg.det(bases).sign()  # (B, m)
        last = det[..., None] * free.prod(dim=1)  # (B, m, S): det(S) = det(U) makes det(S Uᵀ) = +1
        signs = torch.cat([free.expand(*last.shape, d - 1), last[..., None]], dim=-1)  # (B, m, S, d)
        return signs[..., None] * transposed

    def _with_translation(self, rotations: Tensor, centroid: Tensor) -> Tensor:
        """Homogeneous ``[[R, -R c], [0, 1]]`` ``(B, k, d+1, d+1)`` for E(d)/SE(d), else ``R`` as is."""
        if not self.translation:
            return rotations
        d = self.d
        out = torch.zeros(*rotations.shape[:2], d + 1, d + 1, dtype=rotations.dtype, device=rotations.device)
        out[..., :d, :d] = rotations
        out[..., :d, d] = -(rotations @ centroid[:, None, :, None]).squeeze(-1)
        out[..., d, d] = 1
        return out

    def _eigenspace_rotations(self, tied: Tensor, degenerate: Tensor, x: Tensor) -> Tensor:
        """``(B, m, d, d)`` block-diagonal rotations of each degenerate eigenspace (identity for other clouds)."""
        m, d = self.enlarge_samples, self.d
        generator = torch.Generator().manual_seed(self.seed)
        out = torch.eye(d, dtype=torch.float64).repeat(x.shape[0], m, 1, 1)
        # Only the (rare) degenerate clouds reach this loop; the frame of every other cloud stays batched.
        for b in degenerate.nonzero().flatten().tolist():
            for block in _tie_blocks(tied[b].cpu()):
                if len(block) > 1:
                    lo, hi = block[0], block[-1] + 1
                    out[b, :, lo:hi, lo:hi] = haar_orthogonal(m, hi - lo, special=False, generator=generator)
        return out.to(device=x.device, dtype=analysis_dtype(x.dtype))

    def _handle(self, degenerate: Tensor, p: PCA, what: str) -> None:
        index = degenerate.nonzero().flatten().tolist()
        gaps = p.relative_gaps()[degenerate].amin().item() if p.eigenvalues.shape[1] > 1 else 0.0
        shown = ", ".join(map(str, index[:8])) + (", ..." if len(index) > 8 else "")
        detail = (
            f"{len(index)} input(s) (index {shown}) have a degenerate {what}: near-equal covariance eigenvalues "
            f"(smallest relative gap {gaps:.2e} < gap={self.gap:g}) or, for a canonical pose, a near-zero third "
            "moment (planar or symmetric clouds)"
        )
        if self.degenerate == "error":
            raise DegenerateInputError(
                f"{detail}. Their frame is ambiguous, so the output would not be invariant. Use degenerate='enlarge' "
                "(average over rotations of the ambiguous eigenspace), degenerate='warn', or method='monte_carlo'."
            )
        if self.degenerate == "enlarge" and what == "frame":
            message = (
                f"{detail}; their frame was enlarged by {self.enlarge_samples} rotations of each degenerate "
                "eigenspace, so their invariance is approximate (Monte-Carlo error ~ 1/sqrt(enlarge_samples))."
            )
        else:
            message = f"{detail}; their output is not exactly invariant (degenerate='{self.degenerate}')."
        warnings.warn(message, DegenerateFrameWarning, stacklevel=4)
