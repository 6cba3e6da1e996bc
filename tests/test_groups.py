"""Group axioms for every registered group, and the per-element conventions of the image groups."""

from __future__ import annotations

import pytest
import torch

import symwrap
from symwrap.groups import FiniteGroup, Group, MatrixGroup, product, rot90
from symwrap.groups.matrix import flip
from tests.conftest import smooth_disk_image

# Finite groups with the input that sizes them (shift and perm take their size from the data).
FINITE = {
    "rot90": (1, 3, 5, 5),
    "rot180": (1, 3, 5, 5),
    "flip": (1, 3, 5, 5),
    "vflip": (1, 3, 5, 5),
    "d4": (1, 3, 5, 5),
    "c3": (1, 3, 5, 5),
    "c8": (1, 3, 5, 5),
    "d6": (1, 3, 5, 5),
    "shift": (1, 2, 4, 6),
    "perm": (1, 4, 2),
    "flip3d": (1, 2, 2, 3, 4),
    "cube": (1, 2, 3, 3, 3),
    "cube_full": (1, 2, 3, 3, 3),
    "reverse": (1, 2, 5),
    "shift1d": (1, 2, 6),
}
CONTINUOUS = ["so2", "o2", "o3", "so3", "e3", "se3", "o4", "so5", "e2", "se4"]


def sized(name: str) -> tuple[Group, torch.Tensor]:
    group = symwrap.get_group(name)
    x = torch.randn(FINITE.get(name, (1, 7, 3)))
    return group.for_input(tuple(x.shape), group.default_action()), x


def test_every_registered_builtin_group_is_covered() -> None:
    concrete = [n for n in symwrap.list_groups() if "{" not in n]
    builtin = [n for n in concrete if symwrap.get_registry("group").lookup(n)[0].plugin.startswith("symwrap.")]
    missing = set(builtin) - set(FINITE) - set(CONTINUOUS)
    assert not missing, f"add axiom tests for {missing}"


@pytest.mark.parametrize("name", list(FINITE))
def test_finite_group_axioms(name: str) -> None:
    group, _ = sized(name)
    assert isinstance(group, FiniteGroup)
    g = group.elements()
    n = group.order()
    assert g.shape == (n, *group.code_shape)
    identity = group.identity()
    assert bool(group.equal(g[0], identity)), "elements()[0] must be the identity"
    # identity
    assert bool(group.equal(group.compose(identity[None], g), g).all())
    assert bool(group.equal(group.compose(g, identity[None]), g).all())
    # closure: every product is an element, and each row of the Cayley table is a permutation
    products = group.compose(g[:, None], g[None, :])
    table = group.index_of(products)
    assert table.shape == (n, n)
    for row in table:
        assert sorted(row.tolist()) == list(range(n))
    # inverse
    assert bool(group.equal(group.compose(g, group.inverse(g)), identity[None].expand_as(g)).all())
    assert bool(group.equal(group.compose(group.inverse(g), g), identity[None].expand_as(g)).all())
    # associativity
    a, b, c = g[:, None, None], g[None, :, None], g[None, None, :]
    left = group.compose(group.compose(a, b), c)
    right = group.compose(a, group.compose(b, c))
    assert bool(group.equal(left, right).all())
    # distinct elements
    assert len(set(group.index_of(g).tolist())) == n


@pytest.mark.parametrize("name", list(FINITE))
def test_finite_group_elements_act_distinctly_and_compose_like_the_algebra(name: str) -> None:
    group, x = sized(name)
    action = group.default_action()
    g = group.elements()
    n = g.shape[0]
    src = torch.zeros(n, dtype=torch.long)
    moved = action.apply(x, src, g, group)
    flat = moved.reshape(n, -1)
    distance = torch.cdist(flat, flat)
    assert bool((distance + torch.eye(n) > 1e-4).all()), "two elements act identically on a generic input"
    # the action is a homomorphism: (a·b)·x == a·(b·x) for all pairs
    a = g.repeat_interleave(n, 0)
    b = g.repeat(n, *([1] * len(group.code_shape)))
    pairs = torch.zeros(n * n, dtype=torch.long)
    ab_x = action.apply(x, pairs, group.compose(a, b), group)
    b_x = action.apply(x, pairs, b, group)
    a_b_x = action.apply(b_x, torch.arange(n * n), a, group)
    if group.exact:
        assert (ab_x - a_b_x).abs().max() <= 1e-6 * x.abs().max()


@pytest.mark.parametrize("name", [n for n in FINITE if not symwrap.get_group(n).exact])
def test_interpolated_rotations_compose_within_stated_tolerance(name: str) -> None:
    # Stated tolerance (README): on smooth images masked to the inscribed disk, rotating twice (two
    # bilinear resamplings) differs from rotating once by <= 6% of the image's max inside radius 0.8.
    group = symwrap.get_group(name)
    action = group.default_action()
    x, radius = smooth_disk_image(33)
    g = group.elements()
    n = g.shape[0]
    a, b = g.repeat_interleave(n, 0), g.repeat(n, 1, 1)
    pairs = torch.zeros(n * n, dtype=torch.long)
    ab_x = action.apply(x, pairs, group.compose(a, b), group)
    a_b_x = action.apply(action.apply(x, pairs, b, group), torch.arange(n * n), a, group)
    inside = radius <= 0.8
    assert ((ab_x - a_b_x).abs() * inside).max() <= 0.06 * x.abs().max()


@pytest.mark.parametrize("name", CONTINUOUS)
def test_continuous_group_axioms_on_samples(name: str) -> None:
    group = symwrap.get_group(name)
    assert not group.is_finite and group.order() is None
    gen = torch.Generator().manual_seed(0)
    a, b, c = (group.sample(64, generator=gen).double() for _ in range(3))
    identity = group.identity().double()
    assert torch.allclose(group.compose(identity, a), a, atol=1e-12)
    assert torch.allclose(group.compose(a, group.inverse(a)), identity.expand_as(a), atol=1e-6)
    assert torch.allclose(group.compose(group.compose(a, b), c), group.compose(a, group.compose(b, c)), atol=1e-6)
    d = group.code_shape[-1] - (1 if name.startswith(("e", "se")) else 0)
    rot = group.compose(a, b)[:, :d, :d]
    assert torch.allclose(rot @ rot.transpose(-1, -2), torch.eye(d, dtype=rot.dtype).expand_as(rot), atol=1e-6)
    det = torch.linalg.det(rot)
    if name.startswith(("so", "se")):
        assert torch.allclose(det, torch.ones_like(det), atol=1e-6)
    else:
        assert bool((det < 0).any()) and bool((det > 0).any()), "O(d)/E(d) samples must include reflections"


@pytest.mark.parametrize("name", ["so3", "o3"])
def test_haar_sampling_is_uniform(name: str) -> None:
    # For Haar-random R, R e1 is uniform on the sphere: its mean is 0 and E[x_i^2] = 1/3; det ±1 equally in O(3).
    group = symwrap.get_group(name)
    rot = group.sample(20000, generator=torch.Generator().manual_seed(1)).double()
    v = rot[:, :, 0]
    assert v.mean(0).abs().max() < 0.03
    assert (v.pow(2).mean(0) - 1 / 3).abs().max() < 0.02
    trace = torch.diagonal(rot, dim1=-2, dim2=-1).sum(-1)
    if name == "so3":
        assert trace.mean().abs() < 0.05  # E[tr R] = 0 under Haar on SO(3)
    else:
        assert (torch.linalg.det(rot) > 0).double().mean().sub(0.5).abs() < 0.02


def test_flip_is_a_real_mirror_of_the_width_axis(images: torch.Tensor) -> None:
    group = symwrap.get_group("flip")
    action = group.default_action()
    out = action.apply(images, torch.arange(3), group.elements()[1].expand(3, 2, 2), group)
    assert torch.equal(out, torch.flip(images, dims=[-1]))
    assert not torch.equal(out, torch.rot90(images, 2, dims=(-2, -1)))


def test_vflip_and_rot180(images: torch.Tensor) -> None:
    for name, expected in [("vflip", torch.flip(images, dims=[-2])), ("rot180", torch.rot90(images, 2, (-2, -1)))]:
        group = symwrap.get_group(name)
        out = group.default_action().apply(images, torch.arange(3), group.elements()[1].expand(3, 2, 2), group)
        assert torch.equal(out, expected)


def test_rot90_elements_are_torch_rot90(images: torch.Tensor) -> None:
    group = symwrap.get_group("rot90")
    action = group.default_action()
    for k in range(4):
        out = action.apply(images, torch.arange(3), group.elements()[k].expand(3, 2, 2), group)
        assert torch.equal(out, torch.rot90(images, k, dims=(-2, -1)))


def test_d4_is_rot90_times_flip_in_documented_order(images: torch.Tensor) -> None:
    group = symwrap.get_group("d4")
    assert group.order() == 8 and group.exact
    action = group.default_action()
    for i, (k, f) in enumerate((k, f) for k in range(4) for f in range(2)):
        out = action.apply(images, torch.arange(3), group.elements()[i].expand(3, 2, 2), group)
        expected = torch.flip(images, dims=[-1]) if f else images
        assert torch.equal(out, torch.rot90(expected, k, dims=(-2, -1)))


def test_product_builds_the_generated_group() -> None:
    d4 = product(rot90(), flip())
    assert d4.order() == 8
    klein = product(symwrap.get_group("rot180"), flip())
    assert klein.order() == 4
    assert symwrap.get_group("d8").order() == 16 and not symwrap.get_group("d8").exact


def test_product_rejects_factors_that_do_not_form_a_group() -> None:
    # Two mirrors whose axes meet at 30°: their product is a 60° rotation whose square is missing.
    c, s = 0.5, 3**0.5 / 2  # cos 60°, sin 60°
    tilted = MatrixGroup(torch.stack([torch.eye(2), torch.tensor([[c, s], [s, -c]])]), "tilted_mirror")
    with pytest.raises(ValueError, match="do not form a group"):
        product(flip(), tilted)


def test_interpolated_groups_say_so() -> None:
    assert not symwrap.get_group("c8").exact
    assert not symwrap.get_group("so2").exact
    assert symwrap.get_group("c4").exact and symwrap.get_group("d4").exact
    assert symwrap.get_group("o3").exact  # rotating coordinates is exact up to round-off


def test_shift_group_sized_by_input_and_stride() -> None:
    group = symwrap.get_group("shift", stride=2)
    sized_group = group.for_input((2, 3, 8, 6), group.default_action())
    assert sized_group.order() == 4 * 3
    x = torch.randn(1, 3, 8, 6)
    codes = sized_group.elements()
    out = sized_group.default_action().apply(x, torch.zeros(len(codes), dtype=torch.long), codes, sized_group)
    for i, (dy, dx) in enumerate(codes.tolist()):
        assert torch.equal(out[i], torch.roll(x[0], shifts=(dy, dx), dims=(-2, -1)))


def test_permutation_action_and_lehmer_index() -> None:
    group = symwrap.get_group("perm").for_input((2, 4, 3), symwrap.get_action("set", symwrap.get_group("perm")))
    codes = group.elements()
    assert torch.equal(group.index_of(codes), torch.arange(24))
    x = torch.randn(1, 4, 3)
    out = group.default_action().apply(x, torch.zeros(24, dtype=torch.long), codes, group)
    for i, p in enumerate(codes):
        assert torch.equal(out[i], x[0, p])


def test_image_action_reuses_no_stale_pixel_index(images: torch.Tensor) -> None:
    """The action remembers recent element codes; other codes of the same shape must not reuse their index."""
    from symwrap.actions import ImageAction

    group = symwrap.get_group("d4")
    action = ImageAction()
    elements = group.elements()
    src = torch.zeros(4, dtype=torch.long)
    x = images[:1]
    for chosen in ([0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3], [7, 6, 5, 4]):
        moved = action.apply(x, src, elements[chosen], group)
        for row, k in enumerate(chosen):
            rotations, mirrored = divmod(k, 2)
            expected = torch.rot90(x[0].flip(-1) if mirrored else x[0], rotations, dims=(-2, -1))
            torch.testing.assert_close(moved[row], expected, rtol=0, atol=0)


def _expected_d4(x: torch.Tensor, k: int) -> torch.Tensor:
    rotations, mirrored = divmod(k, 2)
    return torch.rot90(x.flip(-1) if mirrored else x, rotations, dims=(-2, -1))


def test_image_action_recognises_reused_rows_and_their_slices_without_rebuilding(
    images: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reused plan's rows, and every chunk's slice of them, find their pixel index by address (no value
    comparison, which on a GPU makes the host wait); rows written in place are rebuilt."""
    from symwrap.actions import ImageAction

    group = symwrap.get_group("d4")
    action = ImageAction()
    rows = group.elements().repeat(3, 1, 1)  # (24, 2, 2): three inputs' orbits, as a plan's flat elements
    src = torch.arange(3).repeat_interleave(8)
    built: list[int] = []
    tables = action._permutation_tables
    monkeypatch.setattr(action, "_permutation_tables", lambda m, h, w: (built.append(len(m)), tables(m, h, w))[1])

    def run(chunk: int) -> None:
        for start in range(0, 24, chunk):
            moved = action.apply(images, src[start : start + chunk], rows[start : start + chunk], group)
            for i, row in enumerate(range(start, start + chunk)):
                torch.testing.assert_close(moved[i], _expected_d4(images[src[row]], row % 8), rtol=0, atol=0)

    run(2)  # twelve chunks: each slice is built once ...
    assert built == [2] * 12
    run(2)  # ... and found again by address on the next call
    run(24)
    run(24)
    assert built == [2] * 12 + [24]
    rows[:] = rows.flip(0)  # written in place: the version moves, so the index is rebuilt from the new values
    moved = action.apply(images, src[:2], rows[:2], group)
    torch.testing.assert_close(moved[0], _expected_d4(images[0], 7), rtol=0, atol=0)
    assert built == [2] * 12 + [24, 2]
