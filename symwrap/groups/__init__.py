"""Group algebra: finite planar groups, shifts, permutations, O(d), SO(d), E(d), SE(d) and products."""

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

__all__ = [
    "ContinuousGroup",
    "EuclideanGroup",
    "FiniteGroup",
    "Group",
    "MatrixGroup",
    "OrthogonalGroup",
    "PermutationGroup",
    "ShiftGroup",
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
