"""Canonicalization: one element per input moves it to a canonical pose, so the model runs once per input.

    f_h(x) = a(x)⁻¹·f(a(x)·x),   a(h·x) = a(x)·h⁻¹

(``a = h⁻¹`` for the canonicalizer ``h`` of Kaba et al.; outputs are pulled back by the *same* planned element,
passed explicitly through the plan — nothing is kept from one call to the next.) Exactly invariant/equivariant
whenever ``a`` is equivariant and unambiguous. Kaba et al., "Equivariance with Learned Canonicalization
Functions", ICML 2023, arXiv 2211.06489; prior regularization: Mondal et al., "Adaptation of Pretrained
Models through Canonicalization" (equiadapt), NeurIPS 2023, arXiv 2310.01647.

Canonicalizers (``canonicalizer=``):

* ``"learned"`` (finite image groups, and ``so2``/``o2`` with ``discretization=N``): a small CNN scores the
  |G| copies of a downscaled input, argmax (:class:`~symwrap.canonicalizers.LearnedCanonicalizer`). In
  training mode the plan holds all |G| copies with straight-through (or hard Gumbel-softmax) weights — the
  forward value is the argmax copy's, the gradient reaches the scores — so training costs |G| passes,
  inference one. :meth:`Canonicalization.prior_loss` and :meth:`Canonicalization.identity_rate` implement
  the prior of Mondal et al.
* ``"pca"`` (``o{d}``/``so{d}``/``e{d}``/``se{d}``): principal axes, signs by positive skewness.
* ``"sort"`` (``perm``): lexicographic order.
* ``"shift"`` (``shift``, ``shift1d``): the highest-energy block moved to the origin.
* ``"centroid"`` (``flip3d``, ``cube``, ``cube_full``, ``reverse``): the signed permutation that best aligns the
  energy centroid (:func:`~symwrap.canonicalizers.centroid.centroid_canonical`).
* ``"auto"`` picks the one that fits the group (``"learned"`` for finite image groups).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from symwrap.actions.image import ImageAction
from symwrap.actions.points import PointCloudAction
from symwrap.adapters.base import BoundCall
from symwrap.canonicalizers.analytic import shift_canonical
from symwrap.canonicalizers.centroid import centroid_canonical, is_signed_permutation_group, shift1d_canonical
from symwrap.canonicalizers.learned import LearnedCanonicalizer
from symwrap.config import option, require
from symwrap.errors import ConfigError
from symwrap.frames.base import check_cloud, check_mask, frame_weights, mask_from_call, point_group_spec
from symwrap.frames.pca import DEFAULT_EIGEN_GAP, PCAFrame
from symwrap.frames.sorting import SortFrame, check_set_input
from symwrap.groups.base import Group, cached_per_group
from symwrap.groups.discrete import PermutationGroup, ShiftGroup
from symwrap.groups.matrix import MatrixGroup, OrthogonalGroup, cyclic, dihedral
from symwrap.groups.signals import CircularShift1d
from symwrap.methods.base import Method, Plan
from symwrap.methods.frame_averaging import _check_common
from symwrap.tracing import caches_off

__all__ = ["Canonicalization", "CanonicalizationOptions"]

CANONICALIZERS = ("auto", "learned", "pca", "sort", "shift", "centroid")
ESTIMATORS = ("straight_through", "gumbel")


@dataclass
class CanonicalizationOptions:
    canonicalizer: str = option("auto", f"one of {', '.join(CANONICALIZERS)}")
    in_channels: int | None = option(
        None, "learned: channels of the input images (None: the adapter's, else wrap's example_input's, else 3)"
    )
    size: int = option(32, "learned: images are average-pooled to at most size×size before scoring")
    hidden: int = option(16, "learned: channels of the scoring CNN")
    estimator: str = option(
        "straight_through", "learned: gradient estimator in training, 'straight_through' or 'gumbel'"
    )
    temperature: float = option(1.0, "learned: softmax / Gumbel-softmax temperature of the training weights")
    discretization: int | None = option(
        None, "learned on so2/o2: score the N rotations of C_N (or D_N for o2), interpolated"
    )
    degenerate: str = option("warn", "ambiguous canonical elements (ties): 'warn' or 'error'")
    gap: float | None = option(None, f"relative tie threshold (None: {DEFAULT_EIGEN_GAP} for PCA, exact ties else)")
    sort_by: tuple[int, ...] | None = option(None, "sort: feature indices to sort set entries on, in priority order")
    mask: int | str | None = option(None, "the model argument holding a (B, N) padding mask, True = real entry")

    def __post_init__(self) -> None:
        _check_common(self)
        require(
            self.canonicalizer in CANONICALIZERS,
            "canonicalizer",
            f"use one of {', '.join(CANONICALIZERS)}, got {self.canonicalizer!r}",
        )
        require(
            self.estimator in ESTIMATORS, "estimator", f"use one of {', '.join(ESTIMATORS)}, got {self.estimator!r}"
        )
        for name in ("in_channels", "size", "hidden"):
            value = getattr(self, name)
            if name == "in_channels" and value is None:
                continue
            require(isinstance(value, int) and value >= 1, name, f"must be an int >= 1, got {value!r}")
        require(
            isinstance(self.temperature, (int, float)) and self.temperature > 0,
            "temperature",
            f"must be a positive number, got {self.temperature!r}",
        )
        require(
            self.discretization is None or (isinstance(self.discretization, int) and self.discretization >= 1),
            "discretization",
            f"must be None or an int N >= 1 (the rotations of C_N), got {self.discretization!r}",
        )


class Canonicalization(Method):
    """One planned element per input (a canonical pose): the base model runs once per input at inference.

    Attributes:
        canonicalizer: The :class:`~symwrap.canonicalizers.LearnedCanonicalizer` (an ``nn.Module``, saved with the
            method's state) for ``canonicalizer="learned"``; ``None`` for analytic canonicalizers.
    """

    name: ClassVar[str] = "canonicalization"
    Options: ClassVar[type] = CanonicalizationOptions

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.canonicalizer: LearnedCanonicalizer | None = None
        self._group: Group | None = None
        # Per group (by identity): its canonicalizer kind and, for "learned", the finite group scored. Both depend
        # only on the group and the options, and finding them costs a few µs of isinstance checks a call.
        self._kinds: dict[tuple, tuple[Group, str]] = {}
        self._scoring: dict[tuple, tuple[Group, MatrixGroup]] = {}
        self._frames: dict[tuple, tuple[Group, PCAFrame]] = {}
        if self.options.canonicalizer == "learned" and self.options.in_channels is not None:
            self._build_learned()

    def _build_learned(self) -> None:
        o = self.options
        if o.in_channels is None:
            o.in_channels = 3
        self.canonicalizer = LearnedCanonicalizer(o.in_channels, o.size, o.hidden)

    def build_learned(self, adapter: Any, group: Group, example_input: Any = None) -> None:
        """Build the learned canonicalizer for the images' channels: ``in_channels=`` when given, else the
        adapter's (timm, HF ``num_channels``, open_clip), else ``example_input``'s ``C`` of ``(B, C, H, W)``, else 3."""
        if self._kind(group) != "learned" or self.canonicalizer is not None:
            return
        if self.options.in_channels is None:
            channels = adapter.input_channels()
            if channels is None and isinstance(example_input, Tensor) and example_input.ndim == 4:
                channels = int(example_input.shape[1])
            self.options.in_channels = channels
        self._build_learned()

    # ------------------------------------------------------------------ group checks
    def _kind(self, group: Group) -> str:
        return cached_per_group(self._kinds, group, self._find_kind)

    def _find_kind(self, group: Group) -> str:
        wanted = self.options.canonicalizer
        if point_group_spec(group) is not None:
            fits = "pca"
        elif isinstance(group, PermutationGroup):
            fits = "sort"
        elif isinstance(group, (ShiftGroup, CircularShift1d)):
            fits = "shift"
        elif is_signed_permutation_group(group):
            fits = "centroid"
        elif isinstance(group, (MatrixGroup, OrthogonalGroup)) and group.code_shape == (2, 2):
            fits = "learned"
        else:
            raise ConfigError(
                f"method {self.name!r} has no canonicalizer for group {group.name!r}; it handles finite image groups "
                "(learned), so2/o2 with discretization=N, shift, shift1d, perm, the volume groups, reverse and "
                "o{d}/so{d}/e{d}/se{d} point clouds."
            )
        if wanted not in ("auto", fits):
            raise ConfigError(
                f"invalid option 'canonicalizer': {wanted!r} does not apply to group {group.name!r}; "
                f"use canonicalizer={fits!r} (or 'auto')."
            )
        return fits

    def _scoring_group(self, group: Group) -> MatrixGroup:
        """The finite group whose elements the learned canonicalizer scores (cached: ``cyclic(N)`` is built once)."""
        return cached_per_group(self._scoring, group, self._find_scoring_group)

    def _find_scoring_group(self, group: Group) -> MatrixGroup:
        if isinstance(group, MatrixGroup):
            return group
        n = self.options.discretization
        if n is None:
            raise ConfigError(
                f"method {self.name!r} with a learned canonicalizer scores the |G| transformed copies of each input, "
                f"but group {group.name!r} is continuous. Pass discretization=N to score the N rotations of C_N "
                "(interpolated, approximate), or use a finite group such as 'rot90' or 'c8'."
            )
        assert isinstance(group, OrthogonalGroup)
        return cyclic(n) if group.special else dihedral(n)

    def check_group(self, group: Group) -> None:
        kind = self._kind(group)
        if kind == "learned":
            self._scoring_group(group)
        self._group = group

    # ------------------------------------------------------------------ plans
    def plans_from_input(self, group: Group) -> bool:
        return self.options.mask is None

    def plan_for_call(self, call: BoundCall, group: Group) -> Plan:
        return self.plan(call.acted[0], group, mask=mask_from_call(call, self.options.mask))

    def plan(self, x: Tensor, group: Group, mask: Tensor | None = None) -> Plan:
        """One canonical element per input ``(B, 1, *code)``, weight 1 (learned, in training: all |G|, STE weights)."""
        kind = self._kind(group)
        opts = self.options
        batch = x.shape[0]
        if mask is not None and kind not in ("pca", "sort"):
            raise ConfigError(f"option 'mask' is only used by the pca and sort canonicalizers, not {kind!r}")
        if kind == "learned":
            return self._learned_plan(x, group)
        if kind == "shift" and isinstance(group, CircularShift1d):
            elements = shift1d_canonical(x, group, degenerate=opts.degenerate, gap=opts.gap or 0.0)
        elif kind == "shift":
            assert isinstance(group, ShiftGroup)
            elements = shift_canonical(x, group, degenerate=opts.degenerate, gap=opts.gap or 0.0)
        elif kind == "centroid":
            elements = centroid_canonical(x, group, degenerate=opts.degenerate, gap=opts.gap or 0.0)
        elif kind == "pca":
            frame = self._pca_frame(group)
            mask = check_mask(mask, batch, x.shape[1], f"point clouds (B, N, d) = {tuple(x.shape)}")
            check_cloud(x, frame.d, group.name, self.name, mask)
            elements = frame.canonical(x, mask)
        else:
            assert isinstance(group, PermutationGroup)
            mask = check_mask(mask, batch, x.shape[group.axis], f"sets of shape {tuple(x.shape)} (axis {group.axis})")
            check_set_input(x, group.axis, self.name)
            elements = SortFrame(opts.sort_by, gap=opts.gap or 0.0, degenerate=opts.degenerate).canonical(
                x, group.axis, mask
            )
        return Plan(elements, frame_weights(batch, 1, torch.float32, x.device))

    def _pca_frame(self, group: Group) -> PCAFrame:
        """The PCA frame builder of a point group, made once per group and options (it holds no data)."""
        opts = self.options
        gap = DEFAULT_EIGEN_GAP if opts.gap is None else opts.gap

        def build(group: Group) -> PCAFrame:
            d, special, translation = point_group_spec(group)  # type: ignore[misc]
            return PCAFrame(d, special=special, translation=translation, gap=gap, degenerate=opts.degenerate)

        return cached_per_group(self._frames, group, build, extra=(gap, opts.degenerate))

    def _learned_plan(self, x: Tensor, group: Group) -> Plan:
        scoring = self._scoring_group(group)
        elements = scoring.elements_on(x.device)  # cached per device: the canonicalizer caches its gather on it
        if self.canonicalizer is None:  # a method used on its own, outside symwrap.wrap
            self._build_learned()
        assert self.canonicalizer is not None
        scores = self.canonicalizer(x, scoring, elements)  # (B, |G|)
        batch = x.shape[0]
        if self.training:
            # All |G| copies, weights one-hot in value but with the gradient of a softmax (STE or hard Gumbel).
            tau = self.options.temperature
            if self.options.estimator == "gumbel":
                weights = F.gumbel_softmax(scores, tau=tau, hard=True, dim=1)
            else:
                soft = torch.softmax(scores / tau, dim=1)
                hard = F.one_hot(scores.argmax(dim=1), scores.shape[1]).to(soft.dtype)
                weights = hard + soft - soft.detach()
            return Plan(elements.expand(batch, *elements.shape), weights)
        best = scores.argmax(dim=1)
        return Plan(elements.index_select(0, best)[:, None], frame_weights(batch, 1, torch.float32, x.device))

    def lean_copies(self, x: Tensor, group: Group, action: Any) -> Callable[[Tensor], Tensor | None] | None:
        """The learned canonicalizer's move at inference as a table lookup: the flat source index of every value of
        an image moved by each scored element is made once per input layout, so a call is the scores, their argmax
        and one ``index_select`` of the input (the general path moves the input by the chosen elements, whose values
        it must first recognise). Exact image groups and :class:`~symwrap.actions.image.ImageAction` only.

        The PCA pose of point clouds without a padding mask: :meth:`PCAFrame.clear_canonical`'s pose and the move,
        with the batch's value checks (finite, not degenerate) in its one sync; a cloud near a test, or not finite,
        takes the general plan (``None``), which warns or raises."""
        kind = self._kind(group)
        if kind == "pca":
            return self._lean_pose(x, group, action)
        if kind != "learned" or self.canonicalizer is None or self.training or caches_off():
            return None
        scoring = self._scoring_group(group)
        if type(action) is not ImageAction or not (scoring.exact and scoring.is_finite) or x.ndim != 4:
            return None
        elements = scoring.elements_on(x.device)
        orbit = _orbit_source_index(x, scoring, elements, action)  # (|G|, C·H·W)
        if orbit is None:
            return None
        batch, shape = x.shape[0], x.shape
        offsets = torch.arange(batch, device=x.device)[:, None] * x[0].numel()
        built = self.canonicalizer
        lean_scores = built.lean_scores(x, scoring, elements)

        def copies(x: Tensor) -> Tensor | None:
            canonicalizer = self.canonicalizer
            if self.training or canonicalizer is None:
                return None
            if canonicalizer is built and lean_scores is not None:
                scores = lean_scores(x)
            else:
                scores = canonicalizer(x, scoring, elements)
            best = scores.argmax(dim=1)  # (B,): the plan's canonical elements
            index = (orbit.index_select(0, best) + offsets).view(-1)
            return x.reshape(-1).index_select(0, index).view(shape)

        return copies

    def _lean_pose(self, x: Tensor, group: Group, action: Any) -> Callable[[Tensor], Tensor | None] | None:
        """:meth:`lean_copies` for the PCA pose: ``x (B, N, d) -> posed clouds (B, N, d)`` or ``None``."""
        options = self.options
        frame = self._pca_frame(group)
        # the layout's checks (check_cloud's shape, dtype and N >= d), made once; values are checked on every call
        if options.mask is not None or not isinstance(action, PointCloudAction):
            return None
        if x.ndim != 3 or x.shape[-1] != frame.d or x.shape[1] < frame.d or not x.dtype.is_floating_point:
            return None
        built = (options.gap, options.degenerate)

        def copies(x: Tensor) -> Tensor | None:
            opts = self.options
            if opts.mask is not None or (opts.gap, opts.degenerate) != built:
                return None  # options changed since the layout was learned: the general plan reads them
            elements = frame.clear_canonical(x)
            return None if elements is None else action.apply_orbit(x, elements.flatten(0, 1), group)

        return copies

    # ------------------------------------------------------------------ prior (Mondal et al. 2023)
    def scores(self, x: Tensor, group: Group | None = None) -> Tensor:
        """The learned canonicalizer's scores ``(B, |G|)`` of images ``x``; column 0 is the identity."""
        group = group or self._group
        if group is None or self.canonicalizer is None:
            raise ConfigError(
                "scores / prior_loss / identity_rate need a learned canonicalizer bound to a group: use it through "
                "symwrap.wrap(model, 'rot90', 'canonicalization') (or pass group=...)."
            )
        scoring = self._scoring_group(group)
        return self.canonicalizer(x, scoring, scoring.elements_on(x.device))

    def prior_loss(self, x: Tensor, group: Group | None = None) -> Tensor:
        """The canonicalization prior: cross-entropy pushing upright training images to the identity element.

        Mondal et al. (arXiv 2310.01647): the pretrained model saw upright data, so the canonical element of
        upright data should be the identity; add ``λ · prior_loss(upright_images)`` to the task loss.
        """
        scores = self.scores(x, group)
        return F.cross_entropy(scores, torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device))

    @torch.no_grad()
    def identity_rate(self, x: Tensor, group: Group | None = None) -> float:
        """Fraction of ``x`` whose canonical element is the identity (1.0 on upright data after training)."""
        return float((self.scores(x, group).argmax(dim=1) == 0).float().mean())


def _orbit_source_index(x: Tensor, group: Group, elements: Tensor, action: ImageAction) -> Tensor | None:
    """``(|G|, C·H·W)``: row ``j`` is the flat source index (within one image of ``x``'s shape) of every value of the
    image moved by ``elements[j]``, found by moving an image of its own indices with ``action``; ``None`` unless each
    row is a permutation (an exact gather, which moves any data the same way)."""
    per_image = x[0].numel()
    probe = torch.arange(per_image, dtype=torch.float64, device=x.device).reshape(1, *x.shape[1:])
    src = torch.zeros(elements.shape[0], dtype=torch.long, device=x.device)
    moved = action.apply(probe, src, elements, group).reshape(elements.shape[0], -1)
    index = moved.round().long()
    if not torch.equal(index.to(moved.dtype), moved):
        return None
    if not torch.equal(index.sort(dim=1).values, torch.arange(per_image, device=x.device).expand_as(index)):
        return None
    return index
