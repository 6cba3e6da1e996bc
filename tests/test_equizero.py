"""Equizero: exact invariance on tie-free inputs, the right copy for each proxy, ties, straight-through."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import symwrap
from symwrap.errors import ConfigError, UnknownNameError
from symwrap.methods.equizero import select_lowest
from tests.conftest import DenseCNN, SmallCNN

EXACT_IMAGE_GROUPS = ["rot90", "rot180", "flip", "vflip", "d4", "c2", "c4", "d2"]
PROXIES = ["entropy", "max_prob", "max_logit"]


def _moved(group: symwrap.groups.Group, x: torch.Tensor) -> list[torch.Tensor]:
    action = group.default_action()
    batch = x.shape[0]
    return [action.apply(x, torch.arange(batch), g.expand(batch, *g.shape), group) for g in group.elements()]


def _gap(model: nn.Module, group: symwrap.groups.Group, x: torch.Tensor, proxy: str) -> float:
    """Smallest gap between the best and second-best proxy loss over the orbit (0 means a tie)."""
    outputs = torch.stack([model(m) for m in _moved(group, x)], dim=1)  # (B, k, C)
    losses = symwrap.get_registry("proxy").lookup(proxy)[0].factory(outputs).sort(dim=1).values
    return float((losses[:, 1] - losses[:, 0]).min().detach())


@pytest.mark.parametrize("proxy", PROXIES)
@pytest.mark.parametrize("name", EXACT_IMAGE_GROUPS)
def test_equizero_is_exactly_invariant(name: str, proxy: str, cnn: SmallCNN, images: torch.Tensor) -> None:
    group = symwrap.get_group(name)
    images = 4 * images  # a random CNN is nearly uniform on unit noise; larger inputs give clear (tie-free) winners
    with torch.no_grad():
        assert symwrap.check(cnn, group, images).max_error > 1e-2
        assert _gap(cnn, group, images, proxy) > 1e-3, "the test needs inputs without ties"
        wrapped = symwrap.wrap(cnn, name, "equizero", proxy=proxy)
        reference = wrapped(images)
        for moved in _moved(group, images):
            assert_close(wrapped(moved), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["rot90", "d4", "flip"])
def test_equizero_is_exactly_equivariant_for_dense_outputs(
    name: str, dense_cnn: DenseCNN, images: torch.Tensor
) -> None:
    group = symwrap.get_group(name)
    with torch.no_grad():
        wrapped = symwrap.wrap(dense_cnn, name, "equizero", output="equivariant", class_dim=1)
        reference = wrapped(images)
        for moved_x, moved_y in zip(_moved(group, images), _moved(group, reference)):
            assert_close(wrapped(moved_x), moved_y, rtol=1e-5, atol=1e-5)


def test_output_is_one_copy_not_an_average(cnn: SmallCNN, images: torch.Tensor) -> None:
    group = symwrap.get_group("d4")
    with torch.no_grad():
        out = symwrap.wrap(cnn, group, "equizero", proxy="max_prob")(images)
        copies = torch.stack([cnn(m) for m in _moved(group, images)], dim=1)  # (B, 8, C)
        distance = (copies - out[:, None]).abs().amax(-1)  # (B, 8)
    assert (distance.amin(1) < 1e-5).all()


class CornerModel(nn.Module):
    """Toy model on 2×2 images: the logits are a fixed table row chosen by the position of the hottest pixel.

    So every rotated copy of an image with one hot pixel gets a known output, with a known confidence.
    """

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x.flatten(1).argmax(1)]


# Rows (by hot-pixel position): max_prob prefers row 1, entropy row 0, max_logit row 2.
TABLE = torch.stack(
    [
        torch.tensor([0.55, 0.45, 1e-6]).log(),  # top-1 0.55, entropy 0.69 (lowest)
        torch.tensor([0.6, 0.2, 0.2]).log(),  # top-1 0.60 (highest), entropy 0.95
        torch.tensor([9.0, 9.0, 9.0]),  # largest logit, top-1 1/3, entropy ln 3
        torch.tensor([0.4, 0.3, 0.3]).log(),  # the least confident by every measure but one
    ]
)


def _entropy(logits: torch.Tensor) -> float:
    p = torch.softmax(logits, -1)
    return float(-(p * p.log()).sum())


@pytest.mark.parametrize(("proxy", "row"), [("max_prob", 1), ("entropy", 0), ("max_logit", 2)])
def test_proxies_select_the_known_best_copy(proxy: str, row: int) -> None:
    # Independent check of the table's design, computed by hand here:
    assert max(range(4), key=lambda r: float(torch.softmax(TABLE[r], -1).max())) == 1
    assert min(range(4), key=lambda r: _entropy(TABLE[r])) == 0
    assert max(range(4), key=lambda r: float(TABLE[r].max())) == 2
    model = CornerModel(TABLE)
    wrapped = symwrap.wrap(model, "rot90", "equizero", proxy=proxy)
    for hot in range(4):  # whichever corner is hot, the rotated copies visit all four rows
        x = torch.zeros(1, 1, 2, 2)
        x.view(-1)[hot] = 1.0
        assert_close(wrapped(x), TABLE[row][None])


def test_ties_go_to_the_lowest_element_index() -> None:
    class Pixels(nn.Module):  # every rotation permutes the same logits: every proxy ties across the orbit
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)

    x = torch.tensor([[[[0.1, 0.7], [0.3, 0.2]]]])
    # max_logit ties exactly (the same maximum in every copy); a constant proxy ties everything.
    for proxy in ["max_logit", lambda outputs: torch.zeros(outputs.shape[:2])]:
        out = symwrap.wrap(Pixels(), "d4", "equizero", proxy=proxy)(x)
        assert_close(out, x.flatten(1), rtol=0, atol=0)  # element 0, the identity
    losses = torch.tensor([[2.0, 1.0, 1.0, 3.0], [float("nan"), 5.0, 4.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    expected = torch.tensor([[0.0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]])
    assert_close(select_lowest(losses), expected)


def test_user_callable_proxy(cnn: SmallCNN, images: torch.Tensor) -> None:
    group = symwrap.get_group("rot90")
    # pick the copy with the largest first logit
    wrapped = symwrap.wrap(cnn, group, "equizero", proxy=lambda outputs: -outputs[..., 0])
    with torch.no_grad():
        out = wrapped(images)
        copies = torch.stack([cnn(m) for m in _moved(group, images)], dim=1)
    best = copies[..., 0].argmax(1)
    assert_close(out, copies[torch.arange(3), best])


def test_proxies_are_registered_and_listed() -> None:
    registry = symwrap.get_registry("proxy")
    assert {"entropy", "max_prob", "max_logit"} <= set(registry.names())
    assert registry.lookup("entropy")[0].plugin == "symwrap.builtins.proxies"
    assert {"equizero", "lambda_equitune"} <= set(symwrap.list_methods())


def test_chunking_gives_equal_results(cnn: SmallCNN, images: torch.Tensor) -> None:
    with torch.no_grad():
        reference = symwrap.wrap(cnn, "d4", "equizero", chunk_size=None)(images)
        for chunk_size in (1, 3, 8, "auto"):
            assert_close(symwrap.wrap(cnn, "d4", "equizero", chunk_size=chunk_size)(images), reference)


def test_straight_through_forward_is_the_selection_and_gradient_is_group_averaging(images: torch.Tensor) -> None:
    cnn = SmallCNN()
    hard = symwrap.wrap(cnn, "rot90", "equizero")
    st = symwrap.wrap(cnn, "rot90", "equizero", straight_through=True)
    ga = symwrap.wrap(cnn, "rot90", "group_averaging")
    assert_close(st(images), hard(images))

    def grads(model: nn.Module) -> list[torch.Tensor]:
        cnn.zero_grad()
        model(images).sum().backward()  # a linear loss: dL/d(output) = 1 for every method
        return [p.grad.clone() for p in cnn.parameters()]

    st_grads, ga_grads, hard_grads = grads(st), grads(ga), grads(hard)
    assert all(g.abs().sum() > 0 for g in st_grads), "straight-through gives non-zero gradients"
    for a, b in zip(st_grads, ga_grads):
        assert_close(a, b)
    assert any((a - b).abs().max() > 1e-6 for a, b in zip(hard_grads, ga_grads)), "without it: only the selection"


# ------------------------------------------------------------------------------------------------ bad input
def test_unknown_proxy_lists_close_matches(cnn: SmallCNN) -> None:
    with pytest.raises(UnknownNameError) as info:
        symwrap.wrap(cnn, "rot90", "equizero", proxy="entrpy")
    message = str(info.value)
    assert "unknown proxy 'entrpy'" in message and "Did you mean 'entropy'" in message
    assert "Available proxies: entropy, max_logit, max_prob" in message


def test_proxy_returning_the_wrong_shape(cnn: SmallCNN, images: torch.Tensor) -> None:
    wrapped = symwrap.wrap(cnn, "rot90", "equizero", proxy=lambda outputs: outputs)  # (B, k, C), not (B, k)
    with pytest.raises(ConfigError) as info:
        wrapped(images)
    message = str(info.value)
    assert "invalid option 'proxy'" in message and "returned (3, 4, 5)" in message
    assert "shape (B, k) = (3, 4)" in message


def test_proxy_that_is_not_callable(cnn: SmallCNN) -> None:
    with pytest.raises(ConfigError, match=r"invalid option 'proxy': must be a proxy name or a callable, got 3"):
        symwrap.wrap(cnn, "rot90", "equizero", proxy=3)


def test_entropy_of_uniform_logits_is_log_k() -> None:
    losses = symwrap.get_registry("proxy").lookup("entropy")[0].factory(torch.zeros(2, 3, 7))
    assert_close(losses, torch.full((2, 3), math.log(7)))


class _InfUnlessTurned(torch.nn.Module):
    """Logits from two pixels; the upright copy (a bright top-left pixel) overflows to inf, so its entropy is NaN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([x[:, 0, 0, 1], x[:, 0, 1, 0], x[:, 0, 3, 3]], dim=-1)
        return torch.where(x[:, :1, 0, 0] > 5, torch.full_like(logits, torch.inf), logits)


@pytest.mark.parametrize("reduce", ["logits", "probs", "log_probs", "features"])
@pytest.mark.parametrize("straight_through", [False, True])
def test_a_copy_that_overflows_never_spoils_the_selected_output(reduce: str, straight_through: bool) -> None:
    x = torch.zeros(2, 1, 4, 4)
    x[:, 0, 0, 0] = 10.0  # upright: inf logits, entropy NaN, never selected
    x[:, 0, 0, 1], x[1, 0, 3, 3] = 1.0, 2.0
    wrapped = symwrap.wrap(_InfUnlessTurned(), "rot90", "equizero", reduce=reduce, straight_through=straight_through)
    out = wrapped(x)
    assert torch.isfinite(out).all(), "0 × inf of an unselected copy must not reach the output"
    model = _InfUnlessTurned()
    copies = torch.stack([model(torch.rot90(x, k, (-2, -1))) for k in range(4)], dim=1)  # (B, 4, 3)
    best = symwrap.methods.equizero.entropy(copies).nan_to_num(nan=torch.inf).argmin(dim=1)
    chosen = copies[torch.arange(2), best]
    expected = {
        "logits": chosen,
        "probs": chosen.softmax(-1),
        "log_probs": chosen.log_softmax(-1),
        "features": torch.nn.functional.normalize(chosen, dim=-1),
    }[reduce]
    assert_close(out, expected, rtol=1e-6, atol=1e-6)
