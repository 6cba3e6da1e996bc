"""Built-in groups.

The factories name their options (no ``**kwargs``), so a misspelt ``group_options`` key is reported with the
close matches.
"""

from __future__ import annotations

from functools import partial

from symwrap import groups as g
from symwrap.groups import signals, volumes
from symwrap.hookspecs import Register, hookimpl


def _orthogonal(n: int, *, name: str | None = None, action: str | None = None) -> g.OrthogonalGroup:
    """O(d) on (B, N, d) point clouds"""
    return g.OrthogonalGroup(n, special=False, name=name, action=action)


def _special_orthogonal(n: int, *, name: str | None = None, action: str | None = None) -> g.OrthogonalGroup:
    """SO(d) on (B, N, d) point clouds"""
    return g.OrthogonalGroup(n, special=True, name=name, action=action)


def _euclidean(n: int, *, translation_scale: float = 1.0, name: str | None = None) -> g.EuclideanGroup:
    """E(d) on (B, N, d) point clouds"""
    return g.EuclideanGroup(n, special=False, translation_scale=translation_scale, name=name)


def _special_euclidean(n: int, *, translation_scale: float = 1.0, name: str | None = None) -> g.EuclideanGroup:
    """SE(d) on (B, N, d) point clouds"""
    return g.EuclideanGroup(n, special=True, translation_scale=translation_scale, name=name)


@hookimpl
def symwrap_register_groups(register: Register) -> None:
    register("rot90", g.rot90, "C4: rotations by multiples of 90° (exact)")
    register("rot180", g.rot180, "C2: rotation by 180° (exact)")
    register("flip", g.flip, "horizontal mirror, reverses the width axis (exact)")
    register("vflip", g.vflip, "vertical mirror, reverses the height axis (exact)")
    register("d4", g.d4, "D4 = rot90 × flip, the 8 symmetries of the square (exact)")
    register("c{n}", g.cyclic, "C_N: rotations by 360°/N (interpolated unless N divides 4)")
    register("d{n}", g.dihedral, "D_N = C_N × flip (interpolated unless N divides 4)")
    register("so2", partial(_special_orthogonal, 2), "SO(2): all planar rotations (sampled)")
    register("o2", partial(_orthogonal, 2), "O(2): rotations and mirrors (sampled)")
    register("shift", g.ShiftGroup, "circular translations of images, Z_H × Z_W (or a stride subgroup)")
    register("perm", g.PermutationGroup, "S_n permuting a set axis (axis=1 by default)")
    register("o3", partial(_orthogonal, 3), "O(3): rotations and reflections of 3-D clouds")
    register("so3", partial(_special_orthogonal, 3), "SO(3): rotations of 3-D point clouds")
    register("e3", partial(_euclidean, 3), "E(3): O(3) and translations of 3-D clouds")
    register("se3", partial(_special_euclidean, 3), "SE(3): rigid motions of 3-D point clouds")
    register("o{n}", _orthogonal, "O(d) on (B, N, d) point clouds")
    register("so{n}", _special_orthogonal, "SO(d) on (B, N, d) point clouds")
    register("e{n}", _euclidean, "E(d) on (B, N, d) point clouds")
    register("se{n}", _special_euclidean, "SE(d) on (B, N, d) point clouds")
    register("flip3d", volumes.flip3d, "the 8 mirrors of a volume's D, H, W axes (nnU-Net mirroring, exact)")
    register("cube", volumes.cube, "the 24 rotations of the cube on (B, C, D, H, W) volumes; plane= for D != H = W")
    register("cube_full", volumes.cube_full, "the 48 rotations and reflections of the cube on volumes; plane= option")
    register("reverse", signals.reverse, "time reversal of (B, C, T) signals (exact)")
    register("shift1d", signals.CircularShift1d, "circular shifts of (B, C, T) signals, Z_T (or a stride subgroup)")
