"""1-D signal groups (reverse, shift1d with strides): conventions, exactness of every method that applies on a 1-D net
that is not invariant by itself, and bad inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import symwrap
from symwrap.errors import ConfigError, InputLayoutError
from symwrap.groups import CircularShift1d, reverse

T = 8
GROUPS = [("reverse", {}), ("shift1d", {}), ("shift1d", {"stride": 2})]
IDS = ["reverse", "shift1d", "shift1d-stride2"]
METHODS = [
    ("group_averaging", {}),
    ("frame_averaging", {}),
    ("equizero", {}),
    ("lambda_equitune", {"features": "conv1"}),
    ("canonicalization", {}),  # centroid (reverse) and top-energy block (shift1d) canonicalizers
]


class Dense1d(nn.Module):
    """(B, 2, T) -> (B, 3, T) with a learned per-step bias: neither shift nor reversal equivariant."""

    def __init__(self, steps: int = T) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv1d(4, 3, 3, padding=1)
        self.pos = nn.Parameter(torch.randn(1, 3, steps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x))) + self.pos


class Classifier1d(nn.Module):
    def __init__(self, steps: int = T) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(2, 4, 3, padding=1)
        self.head = nn.Linear(4 * steps, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv1(x)).flatten(1))


def _orbit(name: str, options: dict, x: torch.Tensor) -> torch.Tensor:
    """``x`` ``(1, ...)`` moved by every element: ``(|G|, ...)``."""
    group = symwrap.get_group(name, **options)
    group = group.for_input(tuple(x.shape), group.default_action())
    g = group.elements()
    return group.default_action().apply(x, torch.zeros(g.shape[0], dtype=torch.long), g, group)


def test_conventions_are_torch_flip_and_torch_roll() -> None:
    x = torch.randn(1, 2, T)
    assert torch.equal(_orbit("reverse", {}, x), torch.cat([x, x.flip(-1)]))
    assert torch.equal(_orbit("shift1d", {}, x), torch.cat([torch.roll(x, k, dims=-1) for k in range(T)]))
    assert torch.equal(_orbit("shift1d", {"stride": 2}, x), torch.cat([torch.roll(x, k, -1) for k in (0, 2, 4, 6)]))
    group = CircularShift1d(T, stride=2)
    assert group.order() == 4 and group.name == "shift1d(stride=2)"
    assert reverse().order() == 2


@pytest.mark.parametrize(("method", "method_options"), METHODS, ids=[m for m, _ in METHODS])
@pytest.mark.parametrize(("name", "options"), GROUPS, ids=IDS)
def test_exactly_invariant(name: str, options: dict, method: str, method_options: dict) -> None:
    model = Classifier1d().eval()
    moved = _orbit(name, options, torch.randn(1, 2, T))
    if method == "lambda_equitune":
        method_options = {"features": "conv1"}
    with torch.no_grad():
        raw = model(moved)
        assert (raw - raw[:1]).abs().max() > 1e-3, "the base model must not be invariant already"
        wrapped = symwrap.wrap(model, name, method, chunk_size=None, group_options=options, **method_options).eval()
        out = wrapped(moved)
    assert_close(out, out[:1].expand_as(out), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("method", "method_options"), METHODS, ids=[m for m, _ in METHODS])
@pytest.mark.parametrize(("name", "options"), GROUPS, ids=IDS)
def test_exactly_equivariant(name: str, options: dict, method: str, method_options: dict) -> None:
    model = Dense1d().eval()
    x = torch.randn(1, 2, T)
    moved = _orbit(name, options, x)
    with torch.no_grad():
        assert (model(moved) - _orbit(name, options, model(x))).abs().max() > 1e-3
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
        expected = _orbit(name, options, wrapped(x))
    assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_shift_pull_back_scales_to_a_strided_output() -> None:
    # a stride-2 network: output length T/2; shifts by 2 input steps are shifts by 1 output step
    model = nn.Sequential(
        nn.Conv1d(2, 3, 3, stride=2, padding=1), nn.Flatten(1), nn.Linear(12, 12), nn.Unflatten(1, (3, 4))
    )
    x = torch.randn(1, 2, T)
    with torch.no_grad():
        wrapped = symwrap.wrap(model, "shift1d", output="equivariant", chunk_size=None, group_options={"stride": 2})
        out = wrapped(torch.roll(x, 2, dims=-1))
        assert_close(out, torch.roll(wrapped(x), 1, dims=-1), rtol=1e-5, atol=1e-5)
        odd = symwrap.wrap(model, "shift1d", output="equivariant", chunk_size=None)
        with pytest.raises(InputLayoutError, match=r"output of length 4 cannot move by shifts of 1 step"):
            odd(x)


def test_a_2d_tensor_for_a_signal_group_is_refused() -> None:
    with pytest.raises(InputLayoutError, match=r"group 'shift1d' acts on signals \(B, C, T\).*x\[:, None\]"):
        symwrap.wrap(Classifier1d(), "shift1d")(torch.randn(2, T))
    with pytest.raises(InputLayoutError, match=r"group 'reverse' acts on signals \(B, C, T\).*x\[:, None\]"):
        symwrap.wrap(Classifier1d(), "reverse")(torch.randn(2, T))


def test_a_stride_that_does_not_divide_the_length_is_refused() -> None:
    wrapped = symwrap.wrap(Classifier1d(), "shift1d", group_options={"stride": 3})
    with pytest.raises(InputLayoutError, match=r"stride=3 needs T divisible by 3, but T=8"):
        wrapped(torch.randn(1, 2, T))


@pytest.mark.parametrize("stride", [0, -2, 1.5, True])
def test_a_bad_stride_option_is_refused(stride: object) -> None:
    with pytest.raises(ConfigError, match=r"invalid option 'stride' of group 'shift1d': must be a positive int"):
        symwrap.get_group("shift1d", stride=stride)


def test_a_volume_group_element_cannot_move_a_signal() -> None:
    with pytest.raises(InputLayoutError, match=r"signal action moves by reversals"):
        symwrap.wrap(Classifier1d(), "flip3d", action=symwrap.actions.SignalAction())(torch.randn(1, 2, T))
