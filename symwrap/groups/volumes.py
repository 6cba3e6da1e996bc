"""Exact groups of volumes ``(B, C, D, H, W)``: the 8 axis mirrors, the cube's 24 rotations and its 48 symmetries.

Convention:
    Elements are 3×3 signed permutation matrices ``A`` acting on centred voxel coordinates ``p = (d, h, w)``
    (axis order D, H, W = dims -3, -2, -1): the voxel at ``p`` moves to ``A p``, so ``(g·x)[q] = x[Aᵀ q]``.
    A matrix with ``A[i, π(i)] = s_i`` is ``x.permute(π)`` of the three spatial dims followed by reversing every
    dim ``i`` with ``s_i = -1`` (one gather of voxels; no interpolation, exact). The 90° rotation of the
    ``(i, j)`` plane has ``A[i, j] = -1, A[j, i] = 1`` and equals ``torch.rot90(x, 1, dims=(i, j))`` (from axis
    ``i`` toward axis ``j``, the 2-D rotation sense of :mod:`symwrap.groups.matrix` in every plane). Composition
    is the matrix product, ``compose(a, b) = a @ b`` (``b`` acts first); the inverse is the transpose.

    Element order: permutations ``π`` in the lexicographic order of ``itertools.permutations((0, 1, 2))``, and for
    each the signs ``(s_D, s_H, s_W)`` in the order of ``itertools.product((1, -1), repeat=3)``; ``cube`` keeps
    the elements with ``det A = +1``, ``flip3d`` those with ``π`` the identity (element ``k`` reverses D if
    ``k & 4``, H if ``k & 2``, W if ``k & 1``: nnU-Net's 8 mirrors). The identity is always first.

    Anisotropic volumes: an element that swaps two axes of different sizes would change the shape. With
    ``plane="hw"`` (``D ≠ H = W``, the usual CT/MR stack of square slices), ``"dh"`` or ``"dw"``, ``cube`` and
    ``cube_full`` keep only the elements that map the third axis onto itself: the 90° rotations of the square
    plane with the mirrors (8 rotations for ``cube``, 16 symmetries for ``cube_full``), in the same order.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from symwrap.errors import ConfigError
from symwrap.groups.matrix import MatrixGroup

if TYPE_CHECKING:
    from symwrap.actions.base import Action

__all__ = ["PLANES", "VolumeGroup", "cube", "cube_full", "flip3d", "signed_permutations"]

#: The square plane of an anisotropic volume -> the index (0 = D, 1 = H, 2 = W) of the axis left on its own.
PLANES = {"hw": 0, "dw": 1, "dh": 2}


def signed_permutations(n: int) -> Tensor:
    """All ``n``-dim signed permutation matrices in the documented order, float64 ``(2ⁿ·n!, n, n)``."""
    mats = []
    for perm in itertools.permutations(range(n)):
        for signs in itertools.product((1.0, -1.0), repeat=n):
            m = torch.zeros(n, n, dtype=torch.float64)
            m[torch.arange(n), torch.tensor(perm)] = torch.tensor(signs, dtype=torch.float64)
            mats.append(m)
    return torch.stack(mats)


class VolumeGroup(MatrixGroup):
    """A finite group of 3×3 signed permutation matrices acting on volumes ``(B, C, D, H, W)``.

    See the module's ``Convention:`` block for the coordinates, the rotation sense and the element order.

    Args:
        elements: ``(|G|, 3, 3)`` signed permutation matrices, identity first, closed under products.
        name: Registry name (``"cube"``, ``"cube_full"``, ``"flip3d"``).
        plane: ``None`` (all three axes may be swapped: needs ``D = H = W``), or the square plane of an anisotropic
            volume (``"hw"``, ``"dh"``, ``"dw"``) that the elements keep.
    """

    def __init__(self, elements: Tensor, name: str, *, plane: str | None = None) -> None:
        super().__init__(elements, name, exact=True)
        self.plane = plane
        self.family = name
        if plane is not None:
            self.name = f"{name}(plane={plane})"
        off_diagonal = self._elements.abs() * (1 - torch.eye(3, dtype=torch.float64))
        #: Pairs ``(i, j)``, ``i < j``, of spatial axes that some element swaps (they must have equal sizes).
        self.swapped_axes: tuple[tuple[int, int], ...] = tuple(
            (i, j) for i in range(3) for j in range(i + 1, 3) if bool(off_diagonal[:, i, j].any())
        )

    def default_action(self) -> Action:
        from symwrap.actions.volume import VolumeAction

        return VolumeAction()


def _check_plane(plane: object, name: str) -> str | None:
    if plane is None or plane in PLANES:
        return plane  # type: ignore[return-value]
    raise ConfigError(
        f"invalid option 'plane' of group {name!r}: {plane!r}. Use None (cubic volumes, D = H = W) or the square "
        "plane of an anisotropic volume: 'hw' (D ≠ H = W, square slices), 'dh' (D = H ≠ W) or 'dw' (D = W ≠ H)."
    )


def _volume_group(name: str, keep: Tensor, plane: str | None) -> VolumeGroup:
    elements = signed_permutations(3)[keep]
    if plane is not None:
        alone = PLANES[plane]
        elements = elements[elements[:, alone, alone].abs() > 0.5]
    return VolumeGroup(elements, name, plane=plane)


def flip3d(plane: str | None = None) -> VolumeGroup:
    """The 8 mirror combinations of the D, H and W axes (nnU-Net's test-time mirroring). Exact, any shape.

    Element ``k`` reverses D if ``k & 4``, H if ``k & 2`` and W if ``k & 1``.

    Args:
        plane: Not used: mirrors keep every shape. Given, it is an error (it applies to ``cube``/``cube_full``).
    """
    if plane is not None:
        raise ConfigError(
            f"invalid option 'plane' of group 'flip3d': {plane!r}. Mirrors keep every volume's shape, so flip3d takes "
            "no plane; the option applies to 'cube' and 'cube_full' (group_options={'plane': 'hw'})."
        )
    all_elements = signed_permutations(3)
    return _volume_group("flip3d", torch.arange(all_elements.shape[0]) < 8, None)


def cube(plane: str | None = None) -> VolumeGroup:
    """The 24 rotations of the cube (chiral octahedral group), or with ``plane`` the 8 that keep an anisotropic
    volume's shape (90° turns of the square plane, and 180° turns that reverse the third axis). Exact."""
    plane = _check_plane(plane, "cube")
    all_elements = signed_permutations(3)
    return _volume_group("cube", torch.linalg.det(all_elements) > 0, plane)


def cube_full(plane: str | None = None) -> VolumeGroup:
    """The 48 rotations and reflections of the cube (full octahedral group), or with ``plane`` the 16 that keep an
    anisotropic volume's shape (the square plane's D4 times the mirror of the third axis). Exact."""
    plane = _check_plane(plane, "cube_full")
    all_elements = signed_permutations(3)
    return _volume_group("cube_full", torch.ones(all_elements.shape[0], dtype=torch.bool), plane)
