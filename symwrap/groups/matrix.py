"""Groups of orthogonal matrices: finite planar groups (rot90, flips, D4, C_N, D_N) and O(d) / SO(d).

Convention (planar groups acting on images):
    Elements are 2×2 matrices acting on centred pixel coordinates ``(row, col)``. The rotation by θ
    is ``[[cos θ, -sin θ], [sin θ, cos θ]]``: θ = 90° is exactly ``torch.rot90(x, 1, dims=(-2, -1))``
    (counter-clockwise on screen, from dim -2 toward dim -1). The mirror ``flip`` is ``diag(1, -1)``:
    it reverses the width axis (dim -1), like ``torch.flip(x, dims=[-1])``; ``vflip`` is ``diag(-1, 1)``.
    Composition is matrix product, ``compose(a, b) = a @ b`` (``b`` acts first); the inverse is the
    transpose. ``d4`` lists its elements as ``r^k m^f`` in the order ``(k, f) = (0,0), (0,1), (1,0), ...``
    where ``r`` is the 90° rotation and ``m`` the mirror, i.e. the mirror acts first.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from symwrap.errors import ConfigError, GroupLawError
from symwrap.groups.base import ContinuousGroup, FiniteGroup
from symwrap.groups.laws import check_group_laws
from symwrap.limits import check_dimension, check_group_order

if TYPE_CHECKING:
    from symwrap.actions.base import Action

__all__ = [
    "EuclideanGroup",
    "MatrixGroup",
    "OrthogonalGroup",
    "cyclic",
    "d4",
    "dihedral",
    "flip",
    "haar_orthogonal",
    "product",
    "rot90",
    "rot180",
    "rotation_matrix",
    "vflip",
]


def rotation_matrix(k: int, n: int) -> Tensor:
    """The planar rotation by ``2πk/n`` as a float64 ``(2, 2)`` matrix, exact for multiples of 90°."""
    if (4 * k) % n == 0:  # multiples of 90°: exact integers, no rounding error
        quarter = (4 * k // n) % 4
        c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][quarter]
    else:
        angle = 2 * math.pi * k / n
        c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


def _rotation_matrices(n: int) -> Tensor:
    """All ``n`` planar rotations by ``2πk/n`` as float64 ``(n, 2, 2)``, multiples of 90° exact (no Python loop)."""
    k = torch.arange(n, dtype=torch.int64)
    angle = 2 * math.pi * k.double() / n
    cos, sin = torch.cos(angle), torch.sin(angle)
    exact = (4 * k) % n == 0
    quarter = ((4 * k) // n) % 4
    cos = torch.where(exact, torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=torch.float64)[quarter], cos)
    sin = torch.where(exact, torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=torch.float64)[quarter], sin)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def _positive_order(n: object, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{what} must be a positive integer (c1, c2, ...), got {n!r}")
    return n


def _default_action_for_dim(dim: int, kind: str | None) -> Action:
    from symwrap.actions.image import ImageAction
    from symwrap.actions.points import PointCloudAction

    kind = kind or ("image" if dim == 2 else "points")
    return ImageAction() if kind == "image" else PointCloudAction()


class MatrixGroup(FiniteGroup):
    """A finite subgroup of O(d), listed as matrices ``(|G|, d, d)`` with the identity first.

    Args:
        elements: ``(|G|, d, d)`` orthogonal matrices; the set must be closed under products.
        name: Registry name.
        exact: Whether its action on data is exact (true for signed permutation matrices on images).
        action: ``"image"`` or ``"points"``: the default action (images for d = 2).
    """

    def __init__(self, elements: Tensor, name: str, *, exact: bool | None = None, action: str | None = None) -> None:
        elements = torch.as_tensor(elements, dtype=torch.float64)
        if elements.ndim != 3 or elements.shape[-1] != elements.shape[-2]:
            raise ValueError(f"MatrixGroup elements must have shape (n, d, d), got {tuple(elements.shape)}")
        eye = torch.eye(elements.shape[-1], dtype=torch.float64)
        if not torch.allclose(elements[0], eye, atol=1e-9):
            raise ValueError("MatrixGroup elements must list the identity first")
        self._elements = elements
        self.name = name
        self.code_shape = tuple(elements.shape[1:])
        integer = bool(torch.all((elements - elements.round()).abs() < 1e-12))
        self.exact = integer if exact is None else exact
        self._action_kind = action

    @property
    def dim(self) -> int:
        return self.code_shape[0]

    def elements(self) -> Tensor:
        return self._elements.float()

    def order(self) -> int:
        return int(self._elements.shape[0])

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return a @ b

    def inverse(self, a: Tensor) -> Tensor:
        return a.transpose(-1, -2)

    def default_action(self) -> Action:
        return _default_action_for_dim(self.dim, self._action_kind)


def _planar(mats: list[Tensor], name: str) -> MatrixGroup:
    return MatrixGroup(torch.stack(mats), name)


def rot90() -> MatrixGroup:
    """C4: rotations by 0°, 90°, 180°, 270° (counter-clockwise, as ``torch.rot90``). Exact."""
    return _planar([rotation_matrix(k, 4) for k in range(4)], "rot90")


def rot180() -> MatrixGroup:
    """C2 of rotations by 0° and 180° (the same as flipping both axes). Exact."""
    return _planar([rotation_matrix(0, 2), rotation_matrix(1, 2)], "rot180")


def flip() -> MatrixGroup:
    """The horizontal mirror: identity and reversing the width axis (dim -1). Exact."""
    return _planar([torch.eye(2, dtype=torch.float64), torch.diag(torch.tensor([1.0, -1.0]))], "flip")


def vflip() -> MatrixGroup:
    """The vertical mirror: identity and reversing the height axis (dim -2). Exact."""
    return _planar([torch.eye(2, dtype=torch.float64), torch.diag(torch.tensor([-1.0, 1.0]))], "vflip")


def cyclic(n: int) -> MatrixGroup:
    """C_N: rotations by ``360°·k/N``. Exact for N ∈ {1, 2, 4}; otherwise interpolated (``exact=False``).

    Raises:
        ConfigError: ``n`` is not a positive int.
        LimitError: ``n`` is above ``max_group_order`` (see :mod:`symwrap.limits`).
    """
    _positive_order(n, "the cyclic group order N of c{N}")
    check_group_order(n, f"c{n}")
    return MatrixGroup(_rotation_matrices(n), f"c{n}", exact=4 % n == 0)


def product(*factors: MatrixGroup, name: str | None = None) -> MatrixGroup:
    """The group ``{a·b·…}`` of products of one element of each factor (rightmost acts first).

    The factors must be finite matrix groups of the same dimension whose products form a group
    (e.g. ``product(rot90(), flip())`` is D4). Elements are listed lexicographically by factor index.

    Raises:
        ValueError: if the products are not closed (the factors do not normalise each other).
    """
    if not factors or not all(isinstance(f, MatrixGroup) for f in factors):
        raise TypeError("product() takes finite matrix groups, e.g. product(rot90(), flip())")
    if len({f.dim for f in factors}) != 1:
        raise ValueError("product() factors must act in the same dimension")
    check_group_order(math.prod(f.order() for f in factors), f"the product of {', '.join(f.name for f in factors)}")
    result = factors[0]._elements
    for factor in factors[1:]:
        result = (result[:, None] @ factor._elements[None]).reshape(-1, factor.dim, factor.dim)
    elements = result[_first_occurrences(result.reshape(len(result), -1))]
    candidate = MatrixGroup(elements, name or "×".join(f.name for f in factors), exact=True)
    try:
        check_group_laws(candidate)
    except GroupLawError as exc:
        raise GroupLawError(
            f"the products of {', '.join(f.name for f in factors)} do not form a group; "
            f"the factors must normalise each other (like rotations and a mirror): {exc}"
        ) from None
    exact = all(f.exact for f in factors)
    return MatrixGroup(elements, name or "×".join(f.name for f in factors), exact=exact, action=factors[0]._action_kind)


def _first_occurrences(rows: Tensor, tolerance: float = 1e-9) -> Tensor:
    """Indices of the rows ``(n, m)`` not equal (within ``tolerance``) to an earlier row, in order; chunked."""
    n = rows.shape[0]
    keep = torch.ones(n, dtype=torch.bool)
    chunk = max(1, (1 << 22) // max(1, n * rows.shape[1]))
    for start in range(0, n, chunk):
        part = rows[start : start + chunk]
        close = (part[:, None] - rows[None]).abs().amax(dim=-1) < tolerance  # (c, n)
        earlier = torch.arange(n)[None] < torch.arange(start, start + len(part))[:, None]
        keep[start : start + len(part)] = ~(close & earlier).any(dim=1)
    return keep.nonzero().flatten()


def d4() -> MatrixGroup:
    """D4, the 8 symmetries of the square, built as ``product(rot90(), flip())``. Exact."""
    return product(rot90(), flip(), name="d4")


def dihedral(n: int) -> MatrixGroup:
    """D_N = ``product(cyclic(n), flip())``, 2N elements. Exact for N ∈ {1, 2, 4}.

    Raises:
        ConfigError: ``n`` is not a positive int.
        LimitError: ``2n`` is above ``max_group_order`` (see :mod:`symwrap.limits`).
    """
    _positive_order(n, "the dihedral group parameter N of d{N}")
    check_group_order(2 * n, f"d{n}")
    # The elements product(cyclic(n), flip()) lists, r^k m^f in (k, f) order, built without its O(N²) search for
    # repeats: these 2N matrices are distinct for every N (the laws are checked when the group is first used).
    mirror = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))
    rotations = _rotation_matrices(n)
    elements = torch.stack([rotations, rotations @ mirror], dim=1).reshape(2 * n, 2, 2)
    return MatrixGroup(elements, f"d{n}", exact=4 % n == 0)


def haar_orthogonal(n: int, d: int, *, special: bool, generator: torch.Generator | None = None) -> Tensor:
    """``n`` Haar-distributed matrices of O(d) (or SO(d) when ``special``), float64 ``(n, d, d)``.

    QR of a Gaussian matrix with the sign of R's diagonal fixed (Mezzadri 2007, "How to generate
    random matrices from the classical compact groups"); for SO(d) the first column of the
    reflections is negated, which maps Haar(O(d)) restricted to det = -1 onto Haar(SO(d)).
    """
    z = torch.randn(n, d, d, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(z)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    if special:
        det = torch.linalg.det(q)
        q[:, :, 0] = q[:, :, 0] * det.sign().unsqueeze(-1)
    return q


class OrthogonalGroup(ContinuousGroup):
    """O(d) (``special=False``) or SO(d) (``special=True``) as ``(d, d)`` matrices, sampled from Haar measure.

    ``so2``/``o2`` act on images by default (interpolated, ``exact=False``); ``d ≥ 3`` act on point clouds.
    """

    def __init__(self, d: int, *, special: bool, name: str | None = None, action: str | None = None) -> None:
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ConfigError(
                f"the dimension d of {'so' if special else 'o'}{{d}} must be a positive integer, got {d!r}"
            )
        check_dimension(d, f"{'so' if special else 'o'}{d}")
        if action not in (None, "image", "points"):
            raise ConfigError(f"invalid group option 'action': use 'image', 'points' or None, got {action!r}")
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"invalid group option 'name': must be a string, got {name!r}")
        self.d, self.special = d, special
        self.name = name or f"{'so' if special else 'o'}{d}"
        self.code_shape = (d, d)
        self._action_kind = action or ("image" if d == 2 else "points")
        self.exact = self._action_kind != "image"

    def identity(self) -> Tensor:
        return torch.eye(self.d)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return a @ b

    def inverse(self, a: Tensor) -> Tensor:
        return a.transpose(-1, -2)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return haar_orthogonal(n, self.d, special=self.special, generator=generator).float()

    def default_action(self) -> Action:
        return _default_action_for_dim(self.d, self._action_kind)


class EuclideanGroup(ContinuousGroup):
    """E(d) (``special=False``) or SE(d): rigid motions ``x ↦ R x + t`` as homogeneous ``(d+1, d+1)`` matrices.

    Convention:
        Code ``[[R, t], [0, 1]]``; composition is matrix product; acts on point clouds ``(B, N, d)``.
        ``sample`` draws ``R`` from Haar measure and ``t ~ N(0, translation_scale² I)`` (translations
        have no Haar probability measure). For averaging, :meth:`sample_for` instead centres each
        cloud, so sampled averages are exactly translation invariant.
    """

    def __init__(self, d: int, *, special: bool, translation_scale: float = 1.0, name: str | None = None) -> None:
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ConfigError(
                f"the dimension d of {'se' if special else 'e'}{{d}} must be a positive integer, got {d!r}"
            )
        check_dimension(d, f"{'se' if special else 'e'}{d}")
        if isinstance(translation_scale, bool) or not isinstance(translation_scale, (int, float)):
            raise ConfigError(f"invalid group option 'translation_scale': must be a number, got {translation_scale!r}")
        if not math.isfinite(translation_scale) or translation_scale < 0:
            raise ConfigError(
                f"invalid group option 'translation_scale': must be finite and ≥ 0, got {translation_scale!r}"
            )
        self.d, self.special, self.translation_scale = d, special, float(translation_scale)
        self.name = name or f"{'se' if special else 'e'}{d}"
        self.code_shape = (d + 1, d + 1)

    def identity(self) -> Tensor:
        return torch.eye(self.d + 1)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return a @ b

    def inverse(self, a: Tensor) -> Tensor:
        rot = a[..., : self.d, : self.d].transpose(-1, -2)
        t = a[..., : self.d, self.d :]
        out = torch.zeros_like(a)
        out[..., : self.d, : self.d] = rot
        out[..., : self.d, self.d :] = -rot @ t
        out[..., self.d, self.d] = 1
        return out

    def _homogeneous(self, rot: Tensor, t: Tensor) -> Tensor:
        out = torch.zeros(*rot.shape[:-2], self.d + 1, self.d + 1, dtype=rot.dtype, device=rot.device)
        out[..., : self.d, : self.d] = rot
        out[..., : self.d, self.d] = t
        out[..., self.d, self.d] = 1
        return out

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        rot = haar_orthogonal(n, self.d, special=self.special, generator=generator)
        t = torch.randn(n, self.d, generator=generator, dtype=torch.float64) * self.translation_scale
        return self._homogeneous(rot, t).float()

    def sample_for(self, x: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Elements ``x ↦ R (x - centroid(x))`` with Haar ``R``, ``(B, n, d+1, d+1)`` for clouds ``x`` ``(B, N, d)``."""
        batch = x.shape[0]
        rot = haar_orthogonal(batch * n, self.d, special=self.special, generator=generator)
        rot = rot.reshape(batch, n, self.d, self.d).to(device=x.device, dtype=x.dtype)
        centroid = x.mean(dim=1)  # (B, d)
        t = -(rot @ centroid[:, None, :, None]).squeeze(-1)  # (B, n, d)
        return self._homogeneous(rot, t)

    def default_action(self) -> Action:
        from symwrap.actions.points import PointCloudAction

        return PointCloudAction()
