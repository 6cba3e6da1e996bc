"""Frame averaging: exact O(3)/SO(3)/E(3)/SE(3) invariance and equivariance from |F(x)| passes, perm frames,
degenerate inputs and padding masks. Stated tolerance: float32 <= 1e-5 (the issue allows 1e-4), float64 <= 1e-9,
for clouds whose relative eigen-gaps are above ``gap`` (1e-3)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import symwrap
from symwrap.actions import AxisPermutationAction, PointCloudAction, VectorAction
from symwrap.frames import DegenerateFrameWarning, DegenerateInputError
from symwrap.groups.matrix import haar_orthogonal
from tests.conftest import PointMLP

POINT_GROUPS = ["o3", "so3", "e3", "se3"]
FRAME_SIZE = {"o3": 8, "so3": 4, "e3": 8, "se3": 4}


def random_elements(name: str, batch: int, dtype: torch.dtype = torch.float32, seed: int = 1) -> torch.Tensor:
    """Random elements of a point group, built in float64 (exactly orthogonal there), then cast."""
    generator = torch.Generator().manual_seed(seed)
    rot = haar_orthogonal(batch, 3, special=name.startswith("s"), generator=generator)
    if name in ("o3", "so3"):
        return rot.to(dtype)
    out = torch.zeros(batch, 4, 4, dtype=torch.float64)
    out[:, :3, :3] = rot
    out[:, :3, 3] = torch.randn(batch, 3, generator=generator, dtype=torch.float64) * 3
    out[:, 3, 3] = 1
    return out.to(dtype)


def moved(name: str, x: torch.Tensor, elements: torch.Tensor, action=None) -> torch.Tensor:
    group = symwrap.get_group(name)
    return (action or PointCloudAction()).apply(x, torch.arange(x.shape[0]), elements, group)


class PositionNet(nn.Module):
    """Per-point positions ``(B, N, 3)`` from an MLP on the flattened cloud: not equivariant by itself."""

    def __init__(self, points: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(points * 3, 32), nn.Tanh(), nn.Linear(32, points * 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x).reshape(x.shape)


class PointNet(nn.Module):
    """Shared per-point MLP, max-pool, head: permutation invariant, not rotation invariant.

    With ``mask`` (``(B, N)`` bool), padded points are left out of the pool.
    """

    def __init__(self, out: int = 4) -> None:
        super().__init__()
        self.point = nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 32))
        self.head = nn.Linear(32, out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.point(x)
        if mask is not None:
            h = h.masked_fill(~mask[..., None], -torch.inf)
        return self.head(h.amax(dim=1))


@pytest.mark.parametrize("name", POINT_GROUPS)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-9)])
def test_frame_averaging_is_invariant_under_random_elements(name: str, dtype: torch.dtype, tol: float) -> None:
    model = PointMLP(points=10).to(dtype).eval()
    x = torch.randn(6, 10, 3, dtype=dtype)
    g = random_elements(name, 6, dtype)
    assert (model(moved(name, x, g)) - model(x)).abs().max() > 1e-2, "the base model must not be invariant"
    wrapped = symwrap.wrap(model, name, "frame_averaging")
    assert_close(wrapped(moved(name, x, g)), wrapped(x), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", POINT_GROUPS)
@pytest.mark.parametrize("kind", ["positions", "vectors"])
def test_frame_averaging_is_equivariant_for_positions_and_vectors(name: str, kind: str) -> None:
    model = PositionNet().eval()
    x = torch.randn(4, 10, 3)
    g = random_elements(name, 4)
    out_action = PointCloudAction() if kind == "positions" else VectorAction()
    expected_base = moved(name, model(x), g, out_action)
    assert (model(moved(name, x, g)) - expected_base).abs().max() > 1e-2
    wrapped = symwrap.wrap(model, name, "frame_averaging", output="equivariant" if kind == "positions" else out_action)
    assert_close(wrapped(moved(name, x, g)), moved(name, wrapped(x), g, out_action), rtol=1e-5, atol=1e-5)


def test_translation_is_put_back_for_position_outputs() -> None:
    # An E(3)-equivariant position output moves with the translation; the centroid of the output follows it.
    model = PositionNet().eval()
    x = torch.randn(2, 10, 3)
    wrapped = symwrap.wrap(model, "e3", "frame_averaging", output="equivariant")
    shift = torch.tensor([5.0, -2.0, 1.0])
    assert_close(wrapped(x + shift), wrapped(x) + shift, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", POINT_GROUPS)
def test_invariant_to_point_order_when_the_model_is(name: str) -> None:
    model = PointNet().eval()
    x = torch.randn(3, 12, 3)
    wrapped = symwrap.wrap(model, name, "frame_averaging")
    perm = torch.randperm(12)
    both = moved(name, x[:, perm], random_elements(name, 3))
    assert_close(wrapped(both), wrapped(x), rtol=1e-5, atol=1e-5)


class CountingModel(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls, self.rows = model, 0, 0

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        return self.model(x, *args, **kwargs)


@pytest.mark.parametrize("name", POINT_GROUPS)
def test_frame_averaging_runs_the_model_on_frame_size_copies_batched(name: str) -> None:
    counter = CountingModel(PointMLP(points=10).eval())
    wrapped = symwrap.wrap(counter, name, "frame_averaging", chunk_size=None)
    wrapped(torch.randn(5, 10, 3))
    assert (counter.calls, counter.rows) == (1, 5 * FRAME_SIZE[name])


def test_frame_elements_belong_to_the_group() -> None:
    method = symwrap.get_method("frame_averaging")
    x = torch.randn(4, 10, 3, dtype=torch.float64)
    for name, det in [("o3", None), ("so3", 1.0)]:
        plan = method.plan(x, symwrap.get_group(name))
        r = plan.elements
        assert_close(r @ r.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand_as(r))
        dets = torch.linalg.det(r)
        if det is None:
            assert set(dets.round().flatten().tolist()) == {-1.0, 1.0}
        else:
            assert_close(dets, torch.ones_like(dets))
        assert_close(plan.weights.sum(dim=1), torch.ones(4, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------- perm frames
class SetMLP(nn.Module):
    """An MLP on a flattened set (B, n, f): not permutation invariant; optional per-entry outputs."""

    def __init__(self, n: int = 6, f: int = 3, per_entry: bool = False) -> None:
        super().__init__()
        self.n, self.f, self.per_entry = n, f, per_entry
        out = n * 2 if per_entry else 4
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(n * f, 32), nn.Tanh(), nn.Linear(32, out))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.net(x)
        return y.reshape(x.shape[0], self.n, 2) if self.per_entry else y


def test_perm_frames_make_a_set_model_exactly_invariant() -> None:
    model = SetMLP().eval()
    x = torch.randn(4, 6, 3)
    perm = torch.randperm(6)
    assert (model(x[:, perm]) - model(x)).abs().max() > 1e-2
    wrapped = symwrap.wrap(model, "perm", "frame_averaging")
    assert_close(wrapped(x[:, perm]), wrapped(x), rtol=1e-6, atol=1e-6)


def test_perm_frames_are_equivariant_for_per_entry_outputs() -> None:
    wrapped = symwrap.wrap(SetMLP(per_entry=True).eval(), "perm", "frame_averaging", output="equivariant")
    x = torch.randn(4, 6, 3)
    perm = torch.randperm(6)
    assert_close(wrapped(x[:, perm]), wrapped(x)[:, perm], rtol=1e-6, atol=1e-6)


def _tied_sets() -> torch.Tensor:
    """Sets whose first feature has ties between entries that differ in the other features."""
    x = torch.randn(3, 6, 3)
    x[:, 1, 0] = x[:, 4, 0]  # one pair tied on feature 0
    x[2, 2, 0] = x[2, 4, 0]  # input 2: a group of three
    return x


def test_perm_ties_enlarge_the_frame_exactly() -> None:
    counter = CountingModel(SetMLP().eval())
    wrapped = symwrap.wrap(counter, "perm", "frame_averaging", sort_by=[0], chunk_size=None)
    x = _tied_sets()
    out = wrapped(x)
    assert counter.rows == 3 * 6  # the largest frame in the batch: 3! orders of input 2's tie group
    plan = wrapped.method.plan(x, wrapped._group_for(x.shape))
    assert (plan.weights > 0).sum(dim=1).tolist() == [2, 2, 6]
    for _ in range(3):
        perm = torch.randperm(6)
        assert_close(wrapped(x[:, perm]), out, rtol=1e-6, atol=1e-6)


def test_perm_ties_warn_or_error_when_asked() -> None:
    x = _tied_sets()
    with pytest.warns(DegenerateFrameWarning, match=r"3 input\(s\) \(index 0, 1, 2\) have ties in the sort key"):
        symwrap.wrap(SetMLP(), "perm", "frame_averaging", sort_by=[0], degenerate="warn")(x)
    with pytest.raises(DegenerateInputError, match=r"ties in the sort key.*degenerate='enlarge'"):
        symwrap.wrap(SetMLP(), "perm", "frame_averaging", sort_by=[0], degenerate="error")(x)


def test_identical_set_entries_are_harmless_ties() -> None:
    x = torch.randn(2, 6, 3)
    x[:, 3] = x[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = symwrap.get_method("frame_averaging", degenerate="error").plan(x, symwrap.get_group("perm", n=6))
    assert plan.copies == 1


def test_perm_frames_with_a_padding_mask_keep_padding_in_place() -> None:
    model = SetMLP().eval()
    wrapped = symwrap.wrap(model, "perm", "frame_averaging", mask="mask")
    x = torch.randn(2, 6, 3)
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    out = wrapped(x, mask=mask)
    perm = torch.cat([torch.randperm(4), torch.tensor([4, 5])])  # permute the real entries among themselves
    x2 = x.clone()
    x2[0] = x[0, perm]
    x2[0, 4:] = torch.randn(2, 3)  # padding content must not matter for the frame's ordering of real entries
    plan = wrapped.method.plan(x2, wrapped._group_for(x2.shape), mask=mask)
    assert plan.elements[0, 0, 4:].tolist() == [4, 5]
    assert_close(wrapped(x2, mask=mask)[1], out[1])
    group = wrapped._group_for(x.shape)

    def canonical(z: torch.Tensor) -> torch.Tensor:
        first = wrapped.method.plan(z, group, mask=mask).elements[:, 0]
        return AxisPermutationAction().apply(z, torch.arange(2), first, group)

    assert_close(canonical(x2)[0, :4], canonical(x)[0, :4])  # same sorted real entries, in the real slots


# ---------------------------------------------------------------------------------------------- degenerate clouds
def _octahedron(batch: int = 2) -> torch.Tensor:
    """The 6 vertices of a regular octahedron: isotropic covariance (all eigenvalues equal)."""
    v = torch.cat([torch.eye(3), -torch.eye(3)])
    return v.expand(batch, 6, 3).clone()


def _planar_generic(batch: int = 2) -> torch.Tensor:
    """A planar cloud with distinct in-plane eigenvalues (z = 0): not degenerate for a PCA frame."""
    x = torch.randn(batch, 10, 3) * torch.tensor([3.0, 1.0, 0.0])
    return x


def test_planar_clouds_with_distinct_axes_are_not_degenerate() -> None:
    model = PointMLP(points=10).eval()
    x = _planar_generic()
    g = random_elements("o3", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wrapped = symwrap.wrap(model, "o3", "frame_averaging", degenerate="error")
        assert_close(wrapped(moved("o3", x, g)), wrapped(x), rtol=1e-5, atol=1e-5)


def test_degenerate_cloud_errors_or_warns_when_asked() -> None:
    x = _octahedron()
    model = PointMLP(points=6)
    with pytest.raises(DegenerateInputError, match=r"2 input\(s\) \(index 0, 1\) have a degenerate frame"):
        symwrap.wrap(model, "o3", "frame_averaging", degenerate="error")(x)
    with pytest.warns(DegenerateFrameWarning, match="not exactly invariant"):
        symwrap.wrap(model, "o3", "frame_averaging", degenerate="warn")(x)


def test_enlarged_frame_of_a_symmetric_cloud_shrinks_the_invariance_error() -> None:
    # Documented behaviour: an exactly isotropic cloud has no finite PCA frame; 'enlarge' averages over
    # enlarge_samples rotations of the degenerate eigenspace (Monte Carlo), 'warn' keeps one arbitrary basis.
    torch.manual_seed(0)
    model = PointMLP(points=6).eval()
    x = _octahedron(1).expand(8, 6, 3) @ haar_orthogonal(1, 3, special=False)[0].float().T
    moved_x = moved("o3", x, random_elements("o3", 8))

    def error(**options) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateFrameWarning)
            wrapped = symwrap.wrap(model, "o3", "frame_averaging", **options)
            with torch.no_grad():
                return float((wrapped(moved_x) - wrapped(x)).abs().max())

    with pytest.warns(DegenerateFrameWarning, match="enlarged by 64 rotations"):
        symwrap.wrap(model, "o3", "frame_averaging", enlarge_samples=64)(x)
    plain, enlarged = error(degenerate="warn"), error(enlarge_samples=256)
    assert enlarged < plain / 3, (plain, enlarged)


# ---------------------------------------------------------------------------------------------- masks
def test_padding_mask_makes_padded_clouds_match_unpadded_ones() -> None:
    model = PointNet().eval()
    real = torch.randn(2, 9, 3)
    padded = torch.cat([real, torch.randn(2, 3, 3) * 10], dim=1)  # garbage padding
    mask = torch.cat([torch.ones(2, 9, dtype=torch.bool), torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    for name in POINT_GROUPS:
        wrapped = symwrap.wrap(model, name, "frame_averaging", mask="mask")
        reference = wrapped(real, mask=torch.ones(2, 9, dtype=torch.bool))
        assert_close(wrapped(padded, mask=mask), reference, rtol=1e-5, atol=1e-5)
        unmasked = symwrap.wrap(model, name, "frame_averaging")(padded)
        assert (unmasked - reference).abs().max() > 1e-3  # the mask matters
        g = random_elements(name, 2)
        assert_close(wrapped(moved(name, padded, g), mask=mask), reference, rtol=1e-5, atol=1e-5)


def test_cached_pca_frames_follow_the_group_and_dtype() -> None:
    # The method keeps one PCA frame builder per group and the sign vectors per dtype: alternating groups and
    # dtypes on one method must give exactly the plans of fresh methods.
    from symwrap.methods.frame_averaging import FrameAveraging

    torch.manual_seed(0)
    x = torch.randn(2, 32, 3) * torch.tensor([3.0, 2.0, 1.0])
    method = FrameAveraging()
    for name, dtype in [("o3", torch.float32), ("so3", torch.float32), ("o3", torch.float64), ("se3", torch.float32)]:
        group = symwrap.get_group(name)
        plan = method.plan(x.to(dtype), group)
        fresh = FrameAveraging().plan(x.to(dtype), group)
        assert plan.elements.dtype == dtype
        assert torch.equal(plan.elements, fresh.elements) and torch.equal(plan.weights, fresh.weights)
        assert plan.copies == (4 if name in ("so3", "se3") else 8)


@pytest.mark.parametrize("name", ["o3", "so3", "e3", "se3"])
@pytest.mark.parametrize("copies", [1, 4])
def test_moving_each_cloud_by_its_k_elements_at_once_is_apply_in_the_engine_s_row_order(name: str, copies: int) -> None:
    group = symwrap.get_group(name)
    x = torch.randn(3, 7, 3)
    elements = random_elements(name, 3 * copies)
    src = torch.arange(3).repeat_interleave(copies)
    action = PointCloudAction()
    expected = action.apply(x, src, elements, group)
    assert torch.equal(action.apply_orbit(x, elements, group), expected)
    assert torch.equal(super(PointCloudAction, action).apply_orbit(x, elements, group), expected)  # the default
