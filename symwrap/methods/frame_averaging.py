"""Frame averaging: the average over a small input-dependent frame F(x) ⊂ G instead of the whole group.

    f_F(x) = (1/|F(x)|) Σ_{a ∈ F(x)} a⁻¹·f(a·x),   F(h·x) = F(x)·h⁻¹

(symwrap's plan convention: the planned elements ``a`` move the input, outputs are pulled back by ``a⁻¹``; in
Puny et al.'s notation ``a = g⁻¹`` for ``g`` in their frame.) Exactly invariant/equivariant whenever the frame
is equivariant, at the cost of |F(x)| forward passes — 8 for O(3) instead of a Monte-Carlo estimate over
the continuous group. Puny et al., "Frame Averaging for Invariant and Equivariant Network Design", ICLR 2022,
arXiv 2110.03336.

Frames: PCA frames for ``o{d}``/``so{d}``/``e{d}``/``se{d}`` on point clouds (see :mod:`symwrap.frames.pca`),
sorting frames for ``perm`` (see :mod:`symwrap.frames.sorting`); finite groups use the whole group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from symwrap.adapters.base import BoundCall
from symwrap.config import option, require
from symwrap.errors import ConfigError
from symwrap.frames.base import DEGENERATE_MODES, check_cloud, check_mask, mask_from_call, point_group_spec
from symwrap.frames.pca import DEFAULT_EIGEN_GAP, PCAFrame
from symwrap.frames.sorting import SortFrame, check_set_input
from symwrap.groups.base import FiniteGroup, Group, cached_per_group
from symwrap.groups.discrete import PermutationGroup
from symwrap.limits import check_samples
from symwrap.methods.base import LastPlan, Method, Plan, whole_group_plan

__all__ = ["FrameAveraging", "FrameAveragingOptions"]


def _check_common(options: object) -> None:
    """Checks shared by the frame-averaging and canonicalization options."""
    degenerate, gap = options.degenerate, options.gap  # type: ignore[attr-defined]
    sort_by, mask = options.sort_by, options.mask  # type: ignore[attr-defined]
    require(
        degenerate in DEGENERATE_MODES, "degenerate", f"use one of {', '.join(DEGENERATE_MODES)}, got {degenerate!r}"
    )
    require(
        gap is None or (isinstance(gap, (int, float)) and 0 <= gap < 1),
        "gap",
        f"must be None (the default of each frame) or a number in [0, 1), got {gap!r}",
    )
    require(
        sort_by is None or (isinstance(sort_by, (list, tuple)) and all(isinstance(i, int) for i in sort_by)),
        "sort_by",
        f"must be None or a list of feature indices, got {sort_by!r}",
    )
    require(
        mask is None or isinstance(mask, (int, str)),
        "mask",
        f"must be None or the model argument holding the padding mask (a position or a name), got {mask!r}",
    )


@dataclass
class FrameAveragingOptions:
    degenerate: str = option(
        "enlarge",
        "inputs with an ambiguous frame: 'enlarge' the frame, 'warn', or 'error' (see the README)",
    )
    gap: float | None = option(
        None, f"relative gap below which eigenvalues / sort keys count as tied (None: {DEFAULT_EIGEN_GAP} / exact ties)"
    )
    enlarge_samples: int = option(16, "rotations of a degenerate eigenspace added by degenerate='enlarge'")
    seed: int = option(0, "seed of those rotations (fixed, so the wrapped model is deterministic)")
    sort_by: tuple[int, ...] | None = option(None, "perm: feature indices to sort set entries on, in priority order")
    max_frame: int = option(720, "perm: largest frame degenerate='enlarge' may build from ties")
    mask: int | str | None = option(
        None, "the model argument (position or name) holding a (B, N) padding mask, True = real point"
    )

    def __post_init__(self) -> None:
        _check_common(self)
        require(
            isinstance(self.enlarge_samples, int) and self.enlarge_samples >= 1,
            "enlarge_samples",
            f"must be an int >= 1, got {self.enlarge_samples!r}",
        )
        check_samples(self.enlarge_samples, "frame_averaging enlarge_samples")
        require(isinstance(self.seed, int), "seed", f"must be an int, got {self.seed!r}")
        require(
            isinstance(self.max_frame, int) and self.max_frame >= 1,
            "max_frame",
            f"must be an int >= 1, got {self.max_frame!r}",
        )


class FrameAveraging(Method):
    """Average over an input-dependent frame (PCA frames for point clouds, sorting frames for sets)."""

    name: ClassVar[str] = "frame_averaging"
    Options: ClassVar[type] = FrameAveragingOptions

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        #: The PCA frame builder (or ``None``) of each group, by identity and the options it was made from.
        self._frames: dict[tuple, tuple[Group, PCAFrame | None]] = {}
        self._whole_group = LastPlan(whole_group_plan)

    def check_group(self, group: Group) -> None:
        if point_group_spec(group) is None and not isinstance(group, FiniteGroup):
            raise ConfigError(
                f"method {self.name!r} has frames for o{{d}}/so{{d}}/e{{d}}/se{{d}} on point clouds and for perm on "
                f"sets (finite groups use the whole group), not for group {group.name!r}. Use method='monte_carlo' "
                "for other continuous groups."
            )

    def static_plan(self, group: Group) -> bool:
        # Point-cloud and set frames are computed from the data; a finite group's frame is the whole group.
        point_or_set = point_group_spec(group) is not None or isinstance(group, PermutationGroup)
        return not point_or_set and isinstance(group, FiniteGroup) and self.options.mask is None

    def plans_from_input(self, group: Group) -> bool:
        return self.options.mask is None  # point and set frames; a finite group's frame is static_plan's

    def plan_for_call(self, call: BoundCall, group: Group) -> Plan:
        return self.plan(call.acted[0], group, mask=mask_from_call(call, self.options.mask))

    def _pca_frame(self, group: Group) -> PCAFrame | None:
        """The PCA frame builder of a point group (``None`` for other groups), made once per group and options."""
        opts = self.options
        gap = DEFAULT_EIGEN_GAP if opts.gap is None else opts.gap

        def build(group: Group) -> PCAFrame | None:
            spec = point_group_spec(group)
            if spec is None:
                return None
            d, special, translation = spec
            return PCAFrame(
                d,
                special=special,
                translation=translation,
                gap=gap,
                degenerate=opts.degenerate,
                enlarge_samples=opts.enlarge_samples,
                seed=opts.seed,
            )

        return cached_per_group(
            self._frames, group, build, extra=(gap, opts.degenerate, opts.enlarge_samples, opts.seed)
        )

    def plan(self, x: Tensor, group: Group, mask: Tensor | None = None) -> Plan:
        """The frame of each input.

        Args:
            x: ``(B, N, d)`` point clouds, or ``(B, n, ...)`` sets for ``perm``.
            group: The (sized) group.
            mask: Optional ``(B, N)`` padding mask (True = real entry).
        """
        opts = self.options
        frame = self._pca_frame(group)
        if frame is not None:
            mask = check_mask(mask, x.shape[0], x.shape[1], f"point clouds (B, N, d) = {tuple(x.shape)}")
            check_cloud(x, frame.d, group.name, self.name, mask)
            elements, weights = frame.frame(x, mask)
            return Plan(elements, weights)
        if isinstance(group, PermutationGroup):
            axis = group.axis
            mask = check_mask(mask, x.shape[0], x.shape[axis], f"sets of shape {tuple(x.shape)} (axis {axis})")
            check_set_input(x, axis, self.name)
            frame = SortFrame(opts.sort_by, gap=opts.gap or 0.0, degenerate=opts.degenerate, max_frame=opts.max_frame)
            elements, weights = frame.frame(x, axis, mask)
            return Plan(elements, weights)
        assert isinstance(group, FiniteGroup)
        if mask is not None:
            raise ConfigError(f"option 'mask' is only used by point-cloud and perm frames, not group {group.name!r}")
        # For a finite group the whole group is a frame (the smallest equivariant one for generic inputs).
        return self._whole_group(group, x)
