"""``reduce="max"`` and ``reduce="gmean"``: exact invariance and equivariance, every chunked path equal to the whole
orbit, and the slot-by-slot pull-back of dense outputs equal to the general gather."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

import symwrap
import symwrap.dense_pull_back as dense_pull_back
import symwrap.engine as engine
from symwrap.errors import ConfigError
from tests.conftest import DenseCNN, SmallCNN


def _d4_images(x: Tensor) -> list[Tensor]:
    rotations = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    return rotations + [torch.flip(r, dims=(-1,)) for r in rotations]


def _by_hand(model: torch.nn.Module, x: Tensor, reduce: str, class_dim: int, dense: bool) -> Tensor:
    """The reduction written out over the 8 d4 copies (pulled back by the inverse moves for dense outputs)."""
    outs = []
    for k in range(8):
        turns, flipped = k % 4, k >= 4
        moved = torch.rot90(x, turns, (-2, -1))
        moved = moved.flip(-1) if flipped else moved
        y = model(moved)
        if dense:  # undo: flip first, then turn back
            y = y.flip(-1) if flipped else y
            y = torch.rot90(y, -turns, (-2, -1))
        outs.append(y)
    stacked = torch.stack(outs)
    if reduce == "max":
        return stacked.amax(0)
    return torch.softmax(
        torch.log_softmax(stacked, dim=class_dim + 1 if class_dim >= 0 else class_dim).mean(0), class_dim
    )


@pytest.mark.parametrize("reduce", ["max", "gmean"])
@pytest.mark.parametrize("chunk_size", [None, 3, 8], ids=["whole", "ragged-chunks", "orbit-chunks"])
def test_invariant_outputs_are_exactly_invariant(reduce: str, chunk_size: int | None) -> None:
    model, x = SmallCNN(8).eval(), torch.randn(3, 3, 8, 8)
    wrapped = symwrap.wrap(model, "d4", reduce=reduce, chunk_size=chunk_size)
    with torch.no_grad():
        out = wrapped(x)
        assert_close(out, _by_hand(model, x, reduce, -1, dense=False), rtol=1e-5, atol=1e-6)
        for moved in _d4_images(x)[1:]:
            assert_close(wrapped(moved), out, rtol=1e-5, atol=1e-6)
    if reduce == "gmean":
        assert_close(out.sum(-1), torch.ones(3), rtol=1e-6, atol=1e-6)  # normalised probabilities


@pytest.mark.parametrize("reduce", ["max", "gmean", "logits"])
@pytest.mark.parametrize("chunk_size", [None, 3, 8], ids=["whole", "ragged-chunks", "orbit-chunks"])
@pytest.mark.parametrize("fused", [True, False], ids=["slot-by-slot", "gather"])
def test_dense_outputs_are_exactly_equivariant(
    monkeypatch: pytest.MonkeyPatch, reduce: str, chunk_size: int | None, fused: bool
) -> None:
    monkeypatch.setattr(engine, "KEEP_BYTES", 0)  # the gather path streams chunk by chunk (a scatter-add each)
    if not fused:
        monkeypatch.setattr(dense_pull_back, "FUSED_SPACES", ())
    model, x = DenseCNN(8).eval(), torch.randn(2, 3, 8, 8)
    wrapped = symwrap.wrap(model, "d4", output="equivariant", reduce=reduce, class_dim=1, chunk_size=chunk_size)
    with torch.no_grad():
        out = wrapped(x)
        if reduce in ("max", "gmean"):
            assert_close(out, _by_hand(model, x, reduce, 1, dense=True), rtol=1e-5, atol=1e-6)
        for moved, expected in zip(_d4_images(x)[1:], _d4_images(out)[1:]):
            assert_close(wrapped(moved), expected, rtol=1e-5, atol=1e-6)


def test_the_slot_by_slot_pull_back_runs_for_d4_and_equals_the_gather(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = dense_pull_back.SlotReducer.add

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(dense_pull_back.SlotReducer, "add", counted)
    model, x = DenseCNN(8).eval(), torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        fused = symwrap.wrap(model, "d4", output="equivariant", chunk_size=None)(x)
        assert calls, "the fused pull-back ran"
        monkeypatch.setattr(dense_pull_back, "FUSED_SPACES", ())
        gathered = symwrap.wrap(model, "d4", output="equivariant", chunk_size=None)(x)
    assert_close(fused, gathered, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("space", ["logits", "probs", "gmean"])
def test_a_slot_reducer_with_uniform_weights_adds_what_it_adds_with_each_row_s_weight(space: str) -> None:
    group = symwrap.get_group("d4")
    elements = group.elements()[None].expand(3, -1, -1, -1)  # (B, 8, 2, 2)
    rows = torch.randn(24, 4, 8, 8)  # 3 inputs × 8 copies, in 3 chunks of 8 rows
    results = {}
    for name, weights in {"uniform": torch.full((3, 8), 1 / 8), "per-row": torch.full((3, 8), 1 / 8)}.items():
        cache: dict = {}
        (reducer,) = dense_pull_back.slot_reducers(
            symwrap.actions.ImageAction(), group, elements, weights, [rows], space, 1, cache
        )
        if name == "per-row":
            reducer.uniform = None  # the general form: each row's weight read from the (B, k) weights
        else:
            assert reducer.uniform is not None and reducer.uniform.ndim == 0
        for start in (0, 8, 16):
            reducer.add(start, rows[start : start + 8])
        results[name] = reducer.result()
    assert torch.equal(results["uniform"], results["per-row"])
    weights = torch.full((3, 8), 1 / 8)
    weights[1] = torch.arange(1.0, 9.0) / 36  # not all equal: every row reads its own weight
    (reducer,) = dense_pull_back.slot_reducers(
        symwrap.actions.ImageAction(), group, elements, weights, [rows], space, 1, {}
    )
    assert reducer.uniform is None


def test_the_uniform_weight_is_kept_per_weights_tensor_until_it_changes_in_place() -> None:
    group, action = symwrap.get_group("d4"), symwrap.actions.ImageAction()
    elements, rows, cache = group.elements()[None].expand(2, -1, -1, -1), [torch.randn(16, 4, 8, 8)], {}
    weights = torch.full((2, 8), 1 / 8)
    first = dense_pull_back.slot_reducers(action, group, elements, weights, rows, "logits", 1, cache)[0].uniform
    again = dense_pull_back.slot_reducers(action, group, elements, weights, rows, "logits", 1, cache)[0].uniform
    assert first is not None and again is first, "kept: no comparison on the next call"
    weights[1, 3] = 0.25  # the same tensor, other values
    assert dense_pull_back.slot_reducers(action, group, elements, weights, rows, "logits", 1, cache)[0].uniform is None


def test_gradients_flow_through_max_and_gmean() -> None:
    for reduce in ("max", "gmean"):
        x = torch.randn(2, 3, 8, 8, requires_grad=True)
        symwrap.wrap(DenseCNN(8), "d4", output="equivariant", reduce=reduce, class_dim=1)(x).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_max_and_gmean_refuse_a_standard_error() -> None:
    wrapped = symwrap.wrap(SmallCNN(8), "d4", "monte_carlo", samples=4, seed=0, return_stderr=True, reduce="max")
    with pytest.raises(ConfigError, match=r"reduce='max' has no standard error.*return_stderr"):
        wrapped(torch.randn(1, 3, 8, 8))


def test_an_unknown_reduction_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"'reduce'.*'tsharpen'.*max, gmean"):
        symwrap.wrap(SmallCNN(8), "d4", reduce="tsharpen")
