"""Group algebra: planar groups, shifts, permutations, volume and signal groups, O(d), SO(d), E(d), SE(d), products."""

from symwrap.groups.base import ContinuousGroup, FiniteGroup, Group
from symwrap.groups.discrete import PermutationGroup, ShiftGroup
from symwrap.groups.matrix import (
    EuclideanGroup,
    MatrixGroup,
    OrthogonalGroup,
    cyclic,
    d4,
    dihedral,
    flip,
    haar_orthogonal,
    product,
    rot90,
    rot180,
    rotation_matrix,
    vflip,
)
from symwrap.groups.signals import CircularShift1d, ReverseGroup, reverse
from symwrap.groups.volumes import VolumeGroup, cube, cube_full, flip3d

__all__ = [
    "CircularShift1d",
    "ContinuousGroup",
    "EuclideanGroup",
    "FiniteGroup",
    "Group",
    "MatrixGroup",
    "OrthogonalGroup",
    "PermutationGroup",
    "ReverseGroup",
    "ShiftGroup",
    "VolumeGroup",
    "cube",
    "cube_full",
    "cyclic",
    "d4",
    "dihedral",
    "flip",
    "flip3d",
    "haar_orthogonal",
    "product",
    "reverse",
    "rot90",
    "rot180",
    "rotation_matrix",
    "vflip",
]
