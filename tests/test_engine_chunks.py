"""The chunked engine path: small inputs moved in one action call, small outputs reduced once after the last chunk."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import symwrap
import symwrap.engine as engine
from symwrap.actions.image import ImageAction
from symwrap.memory import MemoryBudget
from symwrap.reduce import OrbitReducer
from tests.conftest import DenseCNN, SmallCNN


class _Counts:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.applies: list[int] = []  # rows per ImageAction.apply call
        self.updates = 0
        apply, update = ImageAction.apply, OrbitReducer.update

        def counted_apply(action, x, src, elements, group):  # type: ignore[no-untyped-def]
            self.applies.append(int(src.shape[0]))
            return apply(action, x, src, elements, group)

        def counted_update(reducer, *args):  # type: ignore[no-untyped-def]
            self.updates += 1
            return update(reducer, *args)

        monkeypatch.setattr(ImageAction, "apply", counted_apply)
        monkeypatch.setattr(OrbitReducer, "update", counted_update)


def test_small_inputs_are_moved_once_and_small_outputs_reduced_once(
    monkeypatch: pytest.MonkeyPatch, cnn: SmallCNN, images: torch.Tensor
) -> None:
    wrapped = symwrap.wrap(cnn, "d4", chunk_size=5)  # 24 rows in 5 chunks; 24 × 3 KB copies, 24 × 5 logits
    wrapped.engine.use_fast_path = False  # the general path's chunk loop (the fast path keeps its own)
    wrapped(images)
    counts = _Counts(monkeypatch)
    wrapped(images)
    assert counts.applies == [24]
    assert counts.updates == 0


def test_inputs_and_outputs_over_the_thresholds_stream_chunk_by_chunk(
    monkeypatch: pytest.MonkeyPatch, cnn: SmallCNN, images: torch.Tensor
) -> None:
    monkeypatch.setattr(engine, "MOVE_AT_ONCE_BYTES", 24 * images[0].numel() * 4 - 1)  # one byte short
    monkeypatch.setattr(engine, "KEEP_BYTES", 24 * 5 * 4 - 1)
    wrapped = symwrap.wrap(cnn, "d4", chunk_size=5)
    counts = _Counts(monkeypatch)
    out = wrapped(images)
    assert counts.applies == [5, 5, 5, 5, 4]
    assert counts.updates == 5
    assert_close(out, symwrap.wrap(cnn, "d4", chunk_size=None)(images), rtol=1e-6, atol=1e-6)


def test_a_memory_cap_keeps_the_per_chunk_moves(
    monkeypatch: pytest.MonkeyPatch, cnn: SmallCNN, images: torch.Tensor
) -> None:
    # the copies of all 24 rows are one byte more than a sixteenth of the cap (max_memory itself needs "auto"
    # chunking, whose choice the test does not control: the cap is set on the tuner's budget directly)
    wrapped = symwrap.wrap(cnn, "d4", chunk_size=5)
    wrapped.engine.tuner.memory = MemoryBudget(max_memory=16 * (24 * images[0].numel() * 4 - 1))
    counts = _Counts(monkeypatch)
    wrapped(images)
    assert counts.applies == [5, 5, 5, 5, 4]


def test_second_moments_still_stream(monkeypatch: pytest.MonkeyPatch, cnn: SmallCNN, images: torch.Tensor) -> None:
    wrapped = symwrap.wrap(cnn, "d4", "monte_carlo", samples=6, seed=0, return_stderr=True, chunk_size=4)
    counts = _Counts(monkeypatch)
    result = wrapped(images)
    assert counts.updates == 5  # 18 rows in chunks of 4
    assert isinstance(result, symwrap.SymmetrizedOutput)


@pytest.mark.parametrize("move", [True, False], ids=["moved-at-once", "moved-per-chunk"])
@pytest.mark.parametrize("keep", [True, False], ids=["kept", "streamed"])
@pytest.mark.parametrize("reduce", ["logits", "probs", "log_probs", "features"])
def test_every_chunked_path_gives_the_whole_orbit_result(
    monkeypatch: pytest.MonkeyPatch, move: bool, keep: bool, reduce: str, cnn: SmallCNN, images: torch.Tensor
) -> None:
    if not move:
        monkeypatch.setattr(engine, "MOVE_AT_ONCE_BYTES", 0)
    if not keep:
        monkeypatch.setattr(engine, "KEEP_BYTES", 0)
    reference = symwrap.wrap(cnn, "d4", reduce=reduce, chunk_size=None)(images)
    wrapped = symwrap.wrap(cnn, "d4", reduce=reduce, chunk_size=3)
    assert_close(wrapped(images), reference, rtol=1e-5, atol=1e-6)
    assert_close(wrapped(torch.rot90(images, 1, (-2, -1)).flip(-1)), reference, rtol=1e-5, atol=1e-6)


def test_equivariant_outputs_are_pulled_back_on_the_kept_path(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = DenseCNN().eval(), torch.randn(2, 3, 16, 16)
    wrapped = symwrap.wrap(model, "rot90", output="equivariant", chunk_size=3)
    counts = _Counts(monkeypatch)
    out = wrapped(x)
    assert counts.updates == 0
    assert_close(wrapped(torch.rot90(x, 1, (-2, -1))), torch.rot90(out, 1, (-2, -1)), rtol=1e-5, atol=1e-6)


def test_gradients_flow_through_the_kept_reduction(cnn: SmallCNN, images: torch.Tensor) -> None:
    x = images.clone().requires_grad_(True)
    symwrap.wrap(cnn, "d4", chunk_size=5)(x).square().sum().backward()
    x2 = images.clone().requires_grad_(True)
    symwrap.wrap(cnn, "d4", chunk_size=None)(x2).square().sum().backward()
    assert x.grad is not None and x2.grad is not None
    assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-7)
