"""Volume groups (flip3d, cube, cube_full and their anisotropic plane= subgroups): conventions, exactness of every
method that applies on a 3-D net that is not equivariant by itself, memory-capped chunks, and bad inputs."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import symwrap
from symwrap.errors import ConfigError, InputLayoutError
from symwrap.frames.base import DegenerateInputError
from symwrap.groups import VolumeGroup, cube, cube_full, flip3d
from symwrap.memory import measure_peak

MIB = 2**20

# (registry name, group options, volume (D, H, W)); each group on a volume whose shape it keeps.
GROUPS = [
    ("flip3d", {}, (2, 3, 4)),
    ("cube", {}, (3, 3, 3)),
    ("cube_full", {}, (3, 3, 3)),
    ("cube", {"plane": "hw"}, (2, 3, 3)),
    ("cube_full", {"plane": "hw"}, (2, 3, 3)),
    ("cube_full", {"plane": "dh"}, (3, 3, 2)),
    ("cube_full", {"plane": "dw"}, (3, 2, 3)),
]
IDS = [f"{name}-{opts.get('plane', 'cubic')}" for name, opts, _ in GROUPS]
# The method matrix: every group once (the dh/dw planes are the hw code path with other axes: axioms and errors).
METHOD_GROUPS, METHOD_IDS = GROUPS[:5], IDS[:5]


class Dense3d(nn.Module):
    """Segmentation-shaped 3-D net (B, 2, D, H, W) -> (B, 3, D, H, W) with a learned per-voxel bias: not equivariant."""

    def __init__(self, size: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv3d(4, 3, 3, padding=1)
        self.pos = nn.Parameter(torch.randn(1, 3, *size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x))) + self.pos


class Classifier3d(nn.Module):
    """3-D classifier with a position-dependent linear head: not invariant."""

    def __init__(self, size: tuple[int, int, int]) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4 * size[0] * size[1] * size[2], 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def _group(name: str, options: dict) -> VolumeGroup:
    return symwrap.get_group(name, **options)


def _orbit(group: VolumeGroup, x: torch.Tensor) -> torch.Tensor:
    """Every element applied to every volume of ``x`` ``(B, ...)``: ``(|G|·B, ...)``, element-major."""
    g = group.elements()
    src = torch.arange(x.shape[0]).repeat(g.shape[0])
    return group.default_action().apply(x, src, g.repeat_interleave(x.shape[0], 0), group)


def _generators(group: VolumeGroup) -> torch.Tensor:
    """The identity and a few elements that generate ``group`` (greedy: each adds the most new elements): invariance
    under generators is invariance under the whole group, at the cost of a few copies instead of |G|."""
    g = group.elements()
    table = group.index_of(group.compose(g[:, None], g[None, :])).tolist()

    def closure(gens: list[int]) -> set[int]:
        reached = {0}
        while True:
            grown = reached | {table[a][b] for a in reached for b in gens}
            if grown == reached:
                return reached
            reached = grown

    chosen: list[int] = []
    while len(closure(chosen)) < g.shape[0]:
        chosen.append(max(range(1, g.shape[0]), key=lambda k: len(closure([*chosen, k]))))
    return g[[0, *chosen]]


def _moved_by_generators(group: VolumeGroup, x: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, ...)`` moved by the identity and the generators: ``(k·B, ...)``, element-major."""
    g = _generators(group)
    src = torch.arange(x.shape[0]).repeat(g.shape[0])
    return group.default_action().apply(x, src, g.repeat_interleave(x.shape[0], 0), group), g


# ---------------------------------------------------------------------------------------- conventions
def test_flip3d_is_nnunet_mirroring_in_documented_order() -> None:
    x = torch.randn(1, 2, 3, 4, 5)
    group = flip3d()
    moved = _orbit(group, x)
    for k in range(8):
        dims = [d for d, bit in zip((-3, -2, -1), (4, 2, 1)) if k & bit]
        assert torch.equal(moved[k : k + 1], x.flip(dims) if dims else x)


def test_rotation_sense_is_torch_rot90_in_every_plane() -> None:
    x = torch.randn(1, 2, 4, 4, 4)
    group = cube()
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        a = torch.eye(3)
        a[i, i] = a[j, j] = 0
        a[i, j], a[j, i] = -1, 1
        index = int(group.index_of(a[None])[0])
        moved = group.default_action().apply(
            x, torch.zeros(1, dtype=torch.long), group.elements()[index : index + 1], group
        )
        assert torch.equal(moved, torch.rot90(x, 1, dims=(2 + i, 2 + j)))


def test_element_counts_orders_and_subgroups() -> None:
    full = cube_full().elements()
    assert cube().order() == 24 and cube_full().order() == 48 and flip3d().order() == 8
    assert torch.equal(flip3d().elements(), full[:8]), "flip3d is the first 8 elements of cube_full"
    assert bool((torch.linalg.det(cube().elements()) > 0).all())
    assert torch.equal(cube().elements(), full[torch.linalg.det(full) > 0]), "cube keeps cube_full's order"
    assert cube(plane="hw").order() == 8 and cube_full(plane="hw").order() == 16
    assert bool((cube_full(plane="hw").elements()[:, 0, 0].abs() == 1).all()), "the D axis stays on its own"
    assert cube_full(plane="hw").name == "cube_full(plane=hw)"


@pytest.mark.parametrize(("name", "options", "size"), GROUPS, ids=IDS)
def test_volume_group_axioms_and_distinct_elements(name: str, options: dict, size: tuple[int, int, int]) -> None:
    group = _group(name, options)
    g = group.elements()
    n = group.order()
    assert bool(group.equal(g[0], torch.eye(3)))
    table = group.index_of(group.compose(g[:, None], g[None, :]))
    assert all(sorted(row.tolist()) == list(range(n)) for row in table), "closure: Cayley rows are permutations"
    assert bool(group.equal(group.compose(g, group.inverse(g)), torch.eye(3).expand_as(g)).all())
    x = torch.randn(1, 2, *size)
    moved = _orbit(group, x)
    assert moved.shape == (n, 2, *size), "every element keeps the volume's shape"
    flat = moved.reshape(n, -1)
    assert bool((torch.cdist(flat, flat) + torch.eye(n) > 1e-4).all()), "two elements act alike on a generic volume"
    # the action is a homomorphism: (a·b)·x == a·(b·x)
    a, b = g.repeat_interleave(n, 0), g.repeat(n, 1, 1)
    action, zeros = group.default_action(), torch.zeros(n * n, dtype=torch.long)
    assert torch.equal(
        action.apply(x, zeros, group.compose(a, b), group),
        action.apply(action.apply(x, zeros, b, group), torch.arange(n * n), a, group),
    )


# ---------------------------------------------------------------------------------------- exactness
METHODS = [
    ("group_averaging", {}),
    ("frame_averaging", {}),
    ("equizero", {}),
    ("lambda_equitune", {"features": "features"}),
    ("canonicalization", {}),  # the energy-centroid canonicalizer: one forward per input
]


@pytest.mark.parametrize(("method", "method_options"), METHODS, ids=[m for m, _ in METHODS])
@pytest.mark.parametrize(("name", "options", "size"), METHOD_GROUPS, ids=METHOD_IDS)
def test_exactly_invariant(name: str, options: dict, size: tuple, method: str, method_options: dict) -> None:
    model = Classifier3d(size).eval()
    x = torch.randn(1, 2, *size)
    group = _group(name, options)
    moved, generators = _moved_by_generators(group, x)
    with torch.no_grad():
        raw = model(moved)
        assert (raw - raw[:1]).abs().max() > 1e-3, "the base model must not be invariant already"
        wrapped = symwrap.wrap(model, name, method, chunk_size=None, group_options=options, **method_options).eval()
        out = wrapped(moved)
    assert generators.shape[0] >= 2
    assert_close(out, out[:1].expand_as(out), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("method", "method_options"), METHODS, ids=[m for m, _ in METHODS])
@pytest.mark.parametrize(("name", "options", "size"), METHOD_GROUPS, ids=METHOD_IDS)
def test_exactly_equivariant_dense(name: str, options: dict, size: tuple, method: str, method_options: dict) -> None:
    model = Dense3d(size).eval()
    x = torch.randn(1, 2, *size)
    group = _group(name, options)
    moved, generators = _moved_by_generators(group, x)
    if method == "lambda_equitune":
        method_options = {"features": "conv1"}
    if method == "equizero":
        method_options = {"proxy": "entropy"}
    with torch.no_grad():
        action = group.default_action()
        src = torch.zeros(generators.shape[0], dtype=torch.long)
        expected_raw = action.apply(model(x), src, generators, group)
        assert (model(moved) - expected_raw).abs().max() > 1e-3, "the base model must not be equivariant already"
        wrapped = symwrap.wrap(
            model,
            name,
            method,
            output="equivariant",
            class_dim=1,
            chunk_size=None,
            group_options=options,
            **method_options,
        ).eval()
        out = wrapped(moved)
        expected = action.apply(wrapped(x), src, generators, group)
    assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_pull_back_handles_outputs_of_another_size() -> None:
    # a strided segmentation head: output (B, 3, D/2, H/2, W/2), pulled back by the same signed permutations
    model = nn.Sequential(
        nn.Conv3d(2, 3, 3, stride=2, padding=1), nn.Flatten(2), nn.Linear(8, 8), nn.Unflatten(2, (2, 2, 2))
    )
    x = torch.randn(1, 2, 4, 4, 4)
    group = cube()
    with torch.no_grad():
        wrapped = symwrap.wrap(model, "cube", output="equivariant", chunk_size=None)
        assert_close(wrapped(_orbit(group, x)), _orbit(group, wrapped(x)), rtol=1e-5, atol=1e-5)


def test_auto_chunk_with_a_small_memory_cap_equals_the_unchunked_result() -> None:
    size = (12, 12, 12)
    model = Dense3d(size).eval()
    x = torch.randn(2, 2, *size)
    cap = MIB // 2
    with torch.no_grad(), measure_peak(torch.device("cpu")) as stacked:
        model(_orbit(cube(), x))
    assert stacked.peak > 4 * cap, "the full stack of 48 copies must not fit the cap, or the test shows nothing"
    row = 2 * 12 * 12 * 12
    with torch.no_grad():
        wrapped = symwrap.wrap(model, "cube", output="equivariant", max_memory=cap)
        first = wrapped(x)  # measures the memory of a real first chunk, then chunks the other rows under the cap
        tuner = wrapped.engine.tuner
        (key,) = tuner.cache
        (known,) = tuner.layouts.values()
        chosen = tuner.cache[key]
        out = wrapped(x)
        reference = symwrap.wrap(model, "cube", output="equivariant", chunk_size=None)(x)
    assert (
        known.budget == cap
        and known.peaks
        and all(peak <= cap for (_, size), peak in known.peaks.items() if size == row)
    )
    assert 1 <= chosen <= known.max_rows(row) < 96, "the larger chunks were dropped for memory"
    assert_close(first, reference, rtol=1e-5, atol=1e-5)
    assert_close(out, reference, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------- bad input
def test_a_4d_tensor_for_a_volume_group_is_refused() -> None:
    model = Classifier3d((4, 4, 4))
    wrapped = symwrap.wrap(model, "flip3d")
    with pytest.raises(
        InputLayoutError, match=r"group 'flip3d' acts on volumes \(B, C, D, H, W\).*5-dim.*x\[:, None\]"
    ):
        wrapped(torch.randn(2, 4, 4, 4))


@pytest.mark.parametrize(
    ("name", "shape", "fix"),
    [
        ("cube", (3, 4, 4), r"plane': 'hw'"),
        ("cube_full", (4, 4, 3), r"plane': 'dh'"),
        ("cube", (4, 3, 4), r"plane': 'dw'"),
        ("cube_full", (2, 3, 4), r"only mirrors keep its shape"),
    ],
)
def test_an_anisotropic_volume_with_a_cubic_group_names_the_plane_option(name: str, shape: tuple, fix: str) -> None:
    wrapped = symwrap.wrap(Dense3d(shape), name, output="equivariant")
    with pytest.raises(InputLayoutError, match=rf"group {name!r} swaps the axes .* change the volume's shape.*{fix}"):
        wrapped(torch.randn(1, 2, *shape))


def test_a_plane_group_on_a_volume_without_that_square_plane_is_refused() -> None:
    wrapped = symwrap.wrap(Dense3d((4, 4, 3)), "cube", group_options={"plane": "hw"})
    with pytest.raises(InputLayoutError, match=r"'cube\(plane=hw\)' swaps the axes H/W.*'plane': 'dh'"):
        wrapped(torch.randn(1, 2, 4, 4, 3))


@pytest.mark.parametrize("plane", ["xy", "HW", 2])
def test_a_wrong_plane_option_is_refused(plane: object) -> None:
    with pytest.raises(ConfigError, match=r"invalid option 'plane' of group 'cube_full'.*'hw' \(D ≠ H = W"):
        symwrap.wrap(Dense3d((4, 4, 4)), "cube_full", group_options={"plane": plane})


def test_flip3d_takes_no_plane() -> None:
    with pytest.raises(ConfigError, match=r"'plane' of group 'flip3d'.*applies to 'cube' and 'cube_full'"):
        symwrap.get_group("flip3d", plane="hw")


def test_an_invariant_output_cannot_be_pulled_back_as_a_volume() -> None:
    wrapped = symwrap.wrap(Classifier3d((4, 4, 4)), "flip3d", output="equivariant")
    with pytest.raises(InputLayoutError, match=r"output='equivariant'.*5-dim output"):
        wrapped(torch.randn(1, 2, 4, 4, 4))


def test_canonicalization_uses_the_centroid_and_names_ties() -> None:
    wrapped = symwrap.wrap(Dense3d((3, 3, 3)), "cube", "canonicalization", degenerate="error", chunk_size=None)
    assert wrapped.method._kind(wrapped.group) == "centroid"
    symmetric = torch.ones(1, 2, 3, 3, 3)  # its energy centroid is the centre: every element aligns it alike
    with pytest.raises(DegenerateInputError, match=r"align their energy centroid equally.*canonical element is ambig"):
        wrapped(symmetric)
    with pytest.raises(ConfigError, match=r"canonicalizer': 'learned' does not apply to group 'cube'.*'centroid'"):
        symwrap.wrap(Dense3d((3, 3, 3)), "cube", "canonicalization", canonicalizer="learned")


def test_new_names_are_not_taken_by_family_patterns() -> None:
    registry = symwrap.get_registry("group")
    for name in ["flip3d", "cube", "cube_full", "reverse", "shift1d"]:
        entry, params = registry.lookup(name)
        assert entry.name == name and params == {}
    assert not any(
        itertools.chain.from_iterable(
            [e.match(n) is not None for n in ["cube", "flip3d", "shift1d"]] for e in registry.entries() if e.is_family
        )
    )
