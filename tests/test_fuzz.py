"""Fuzz: group names, group options, input shapes and dtypes, point-cloud scales and saved config JSON.

Every input ends in a :class:`~symwrap.errors.SymwrapError` subclass or in a correct result, never another exception.
Hangs are ruled out by bounding the work (small group orders, dimensions and sample counts through
:func:`symwrap.limits_raised`, small tensors), not by timing. Examples are derandomized, so a run is repeatable.
"""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import symwrap
from symwrap.errors import SymwrapError
from symwrap.groups import haar_orthogonal
from symwrap.saving import CONFIG_NAME

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(autouse=True)
def _bounded() -> Iterator[None]:
    """Small bounds, so every name the fuzz makes up is cheap to build or refused before any work."""
    with symwrap.limits_raised(max_group_order=64, max_samples=16, max_dimension=6), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate-frame and checksum warnings are not what is fuzzed here
        yield


def _plain_takes(model: nn.Module, x: Tensor) -> bool:
    """Whether the unwrapped model runs on ``x`` (an input it rejects itself says nothing about symwrap)."""
    try:
        model(x)
    except Exception:
        return False
    return True


def _outcome(action: Callable[[], Any]) -> Any:
    """Run ``action``; a SymwrapError is a fine answer (returned), any other exception fails the test."""
    try:
        return action()
    except SymwrapError as exc:
        return exc


# ----------------------------------------------------------------------------- group names and options
_PREFIXES = ["c", "d", "o", "so", "e", "se", "rot", "shift", "perm", "flip", "d4", "x", ""]
_names = st.one_of(
    st.text(alphabet="abcdeopsrt0123456789{}_-. ", max_size=10),
    st.builds(lambda p, n: f"{p}{n}", st.sampled_from(_PREFIXES), st.integers(-5, 10**13)),
)
_values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 70), st.floats(allow_nan=True), st.text(max_size=4), st.just([1, 2])
)
_options = st.dictionaries(
    st.sampled_from(["stride", "height", "width", "n", "axis", "name", "action", "translation_scale", "strid", "x"]),
    _values,
    max_size=3,
)


@FUZZ
@given(name=_names)
def test_group_names(name: str) -> None:
    group = _outcome(lambda: symwrap.get_group(name))
    if not isinstance(group, SymwrapError):
        assert isinstance(group, symwrap.groups.Group)


@FUZZ
@given(name=st.sampled_from(["shift", "perm", "o3", "e3", "so2", "c4", "d{n}"]), options=_options)
def test_group_options(name: str, options: dict[str, Any]) -> None:
    group = _outcome(lambda: symwrap.get_group(name.replace("{n}", "3"), **options))
    if isinstance(group, symwrap.groups.FiniteGroup):
        sized = _outcome(lambda: group.for_input((1, 3, 4, 4), group.default_action()))
        if not isinstance(sized, SymwrapError):
            symwrap.groups.laws.check_group_laws(sized)


# ----------------------------------------------------------------------------- image shapes and dtypes
class RampModel(nn.Module):
    """Any image shape and dtype in, ``(B, 2)`` out; weights pixels by position, so it is not invariant."""

    def forward(self, x: Tensor) -> Tensor:
        y = x.float() if not x.is_floating_point() else x
        ramp = torch.linspace(0, 1, y.shape[-1] * y.shape[-2], dtype=y.dtype).reshape(y.shape[-2], y.shape[-1])
        ramp = ramp * ramp.T if ramp.shape[0] == ramp.shape[1] else ramp
        flat = (y * ramp).flatten(1)
        return torch.stack([flat.mean(dim=1), flat.pow(2).mean(dim=1)], dim=1)


_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.uint8, torch.bool]
_MOVES = {
    "rot90": lambda x: torch.rot90(x, 1, dims=(-2, -1)),
    "flip": lambda x: torch.flip(x, dims=[-1]),
    "d4": lambda x: torch.flip(torch.rot90(x, 1, dims=(-2, -1)), dims=[-2]),
    "shift": lambda x: torch.roll(x, shifts=(1, 2), dims=(-2, -1)),
}


@FUZZ
@given(
    group=st.sampled_from(sorted(_MOVES)),
    method=st.sampled_from(["group_averaging", "equizero", "frame_averaging", "canonicalization"]),
    shape=st.one_of(
        st.lists(st.integers(0, 5), min_size=1, max_size=5),
        st.builds(lambda b, c, s: [b, c, s, s], st.integers(1, 3), st.integers(1, 3), st.integers(1, 5)),
    ),
    dtype=st.one_of(st.sampled_from([torch.float32, torch.float64]), st.sampled_from(_DTYPES)),
    chunk=st.sampled_from([None, 1, 3]),
)
def test_image_shapes_and_dtypes(group: str, method: str, shape: list[int], dtype: torch.dtype, chunk: Any) -> None:
    x = (torch.rand(shape) * 3).to(dtype)
    if not _plain_takes(RampModel(), x):
        return
    wrapped = _outcome(lambda: symwrap.wrap(RampModel(), group, method, chunk_size=chunk))
    if isinstance(wrapped, SymwrapError):
        return
    out = _outcome(lambda: wrapped(x))
    if isinstance(out, SymwrapError):
        return
    assert out.shape == (shape[0], 2)
    if dtype in (torch.float32, torch.float64) and len(shape) >= 3 and shape[0] > 0:
        if group in ("rot90", "d4") and shape[-1] != shape[-2]:
            return
        moved = wrapped(_MOVES[group](x))
        torch.testing.assert_close(moved, out, rtol=1e-4, atol=1e-5, equal_nan=True)  # no channels: NaN means


# ----------------------------------------------------------------------------- point clouds
class ScaleFreePointModel(nn.Module):
    """Not rotation invariant, blind to the cloud's scale (outputs of order 1 at 1e-20 and 1e20 alike)."""

    def __init__(self, points: int, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(points * dim, 8), nn.Tanh(), nn.Linear(8, 2))

    def forward(self, x: Tensor) -> Tensor:
        scale = x.abs().amax(dim=(1, 2), keepdim=True)
        unit = x / torch.where(scale > 0, scale, torch.ones_like(scale))
        return self.net(unit.to(self.net[1].weight.dtype))


@FUZZ
@given(
    group=st.sampled_from(["o3", "so3", "e3", "se3", "o2", "o4"]),
    method=st.sampled_from(["frame_averaging", "canonicalization", "monte_carlo", "group_averaging"]),
    batch=st.integers(0, 3),
    points=st.integers(1, 7),
    dim=st.one_of(st.none(), st.integers(1, 5)),  # None: the group's own dimension
    exponent=st.integers(-20, 20),
    dtype=st.one_of(
        st.sampled_from([torch.float32, torch.float64]),
        st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64]),
    ),
)
def test_point_clouds(
    group: str, method: str, batch: int, points: int, dim: int | None, exponent: int, dtype: torch.dtype
) -> None:
    d = int(group.strip("seo"))
    dim = d if dim is None else dim
    generator = torch.Generator().manual_seed(points * 31 + dim)
    x = torch.randn(batch, points, dim, generator=generator) * torch.linspace(3, 0.5, dim) * 10.0**exponent
    x = x.to(dtype)
    model = ScaleFreePointModel(points, dim).to(dtype if dtype.is_floating_point else None)
    if not _plain_takes(model, x):
        return
    options = {"samples": 4, "seed": 0} if method == "monte_carlo" else {}
    wrapped = _outcome(lambda: symwrap.wrap(model, group, method, **options))
    if isinstance(wrapped, SymwrapError):
        return
    out = _outcome(lambda: wrapped(x))
    if isinstance(out, SymwrapError):
        return
    assert out.shape == (batch, 2)
    exact = method in ("frame_averaging", "canonicalization") and dtype in (torch.float32, torch.float64)
    if exact and dim == d and batch > 0 and points > d:
        rotation = haar_orthogonal(1, d, special=group.startswith("s"), generator=generator)[0].to(dtype)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = wrapped(x)
            moved = wrapped(x @ rotation.T)
        if not caught:  # a degenerate cloud is warned about and only approximately invariant
            # eigenvectors carry a rounding error of about eps / (relative eigen-gap), the gap being at least
            # DEFAULT_EIGEN_GAP = 1e-3 for a cloud that is not warned about: ~1e-4 in float32, ~1e-13 in float64
            tolerance = 1e-3 if dtype == torch.float32 else 1e-8
            torch.testing.assert_close(moved, out, rtol=tolerance, atol=tolerance)


# ----------------------------------------------------------------------------- saved config JSON
_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=8,
)
_FIELDS = [
    ("wrap", "group"),
    ("wrap", "method"),
    ("wrap", "method_options"),
    ("wrap", "group_options"),
    ("wrap", "chunk_size"),
    ("wrap", "output"),
    ("wrap", "class_dim"),
    ("wrap", "input"),
    ("base_model", "checksum"),
    ("base_model", "tensors"),
    ("format_version",),
    ("weights",),
    ("wrap",),
    (),
]


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten())
        self.head = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def saved_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TinyNet, dict[str, Any]]:
    torch.manual_seed(0)
    base = TinyNet().eval()
    folder = tmp_path_factory.mktemp("fuzz_saved")
    example = torch.randn(2, 1, 6, 6)
    wrapped = symwrap.wrap(base, "rot90", "lambda_equitune", features="features", hidden=(4,), example_input=example)
    wrapped.save_pretrained(folder)
    return folder, base, json.loads((folder / CONFIG_NAME).read_text())


@FUZZ
@given(field=st.sampled_from(_FIELDS), value=_json, as_text=st.booleans())
def test_saved_config_json(
    saved_template: tuple[Path, TinyNet, dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
    field: Any,
    value: Any,
    as_text: bool,
) -> None:
    source, base, document = saved_template
    folder = tmp_path_factory.mktemp("fuzz_case")
    shutil.copytree(source, folder, dirs_exist_ok=True)
    edited: Any = copy.deepcopy(document)
    if not field:
        edited = value
    else:
        target = edited
        for key in field[:-1]:
            target = target[key]
        target[field[-1]] = value
    text = json.dumps(edited) if not as_text or not isinstance(value, str) else value
    (folder / CONFIG_NAME).write_text(text)
    model = _outcome(lambda: symwrap.SymmetrizedModel.from_pretrained(copy.deepcopy(base), folder))
    if not isinstance(model, SymwrapError):
        x = torch.randn(2, 1, 6, 6)
        out = _outcome(lambda: model(x))
        if not isinstance(out, SymwrapError) and isinstance(out, Tensor) and model.group.is_finite:
            moved = model(torch.rot90(x, 1, dims=(-2, -1))) if model.group.name == "rot90" else out
            torch.testing.assert_close(moved, out, rtol=1e-4, atol=1e-5)
