"""Built-in groups."""

from __future__ import annotations

from symwrap import groups as g
from symwrap.groups import signals, volumes
from symwrap.hookspecs import Register, hookimpl


@hookimpl
def symwrap_register_groups(register: Register) -> None:
    register("rot90", g.rot90, "C4: rotations by multiples of 90° (exact)")
    register("rot180", g.rot180, "C2: rotation by 180° (exact)")
    register("flip", g.flip, "horizontal mirror, reverses the width axis (exact)")
    register("vflip", g.vflip, "vertical mirror, reverses the height axis (exact)")
    register("d4", g.d4, "D4 = rot90 × flip, the 8 symmetries of the square (exact)")
    register("c{n}", g.cyclic, "C_N: rotations by 360°/N (interpolated unless N divides 4)")
    register("d{n}", g.dihedral, "D_N = C_N × flip (interpolated unless N divides 4)")
    register("so2", lambda **kw: g.OrthogonalGroup(2, special=True, **kw), "SO(2): all planar rotations (sampled)")
    register("o2", lambda **kw: g.OrthogonalGroup(2, special=False, **kw), "O(2): rotations and mirrors (sampled)")
    register("shift", g.ShiftGroup, "circular translations of images, Z_H × Z_W (or a stride subgroup)")
    register("perm", g.PermutationGroup, "S_n permuting a set axis (axis=1 by default)")
    register(
        "o3", lambda **kw: g.OrthogonalGroup(3, special=False, **kw), "O(3): rotations and reflections of 3-D clouds"
    )
    register("so3", lambda **kw: g.OrthogonalGroup(3, special=True, **kw), "SO(3): rotations of 3-D point clouds")
    register("e3", lambda **kw: g.EuclideanGroup(3, special=False, **kw), "E(3): O(3) and translations of 3-D clouds")
    register("se3", lambda **kw: g.EuclideanGroup(3, special=True, **kw), "SE(3): rigid motions of 3-D point clouds")
    register("o{n}", lambda n, **kw: g.OrthogonalGroup(n, special=False, **kw), "O(d) on (B, N, d) point clouds")
    register("so{n}", lambda n, **kw: g.OrthogonalGroup(n, special=True, **kw), "SO(d) on (B, N, d) point clouds")
    register("e{n}", lambda n, **kw: g.EuclideanGroup(n, special=False, **kw), "E(d) on (B, N, d) point clouds")
    register("se{n}", lambda n, **kw: g.EuclideanGroup(n, special=True, **kw), "SE(d) on (B, N, d) point clouds")
    register("flip3d", volumes.flip3d, "the 8 mirrors of a volume's D, H, W axes (nnU-Net mirroring, exact)")
    register("cube", volumes.cube, "the 24 rotations of the cube on (B, C, D, H, W) volumes; plane= for D != H = W")
    register("cube_full", volumes.cube_full, "the 48 rotations and reflections of the cube on volumes; plane= option")
    register("reverse", signals.reverse, "time reversal of (B, C, T) signals (exact)")
    register("shift1d", signals.CircularShift1d, "circular shifts of (B, C, T) signals, Z_T (or a stride subgroup)")
