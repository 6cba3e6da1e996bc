"""Regression: the streamed log-space reduction must not depend on how rows fall into chunks."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import symwrap
import symwrap.engine


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 4, 8])
def test_log_probs_of_extreme_logits_are_equal_for_every_chunk_size(
    chunk_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(symwrap.engine, "KEEP_BYTES", 0)  # the streamed reduction, even for these small outputs
    # Log-probabilities near -3000: an input absent from the first chunk used to keep a stale shift of 0,
    # so its terms under-flowed to exp(-3000) = 0 and the result became -inf.
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4))
    with torch.no_grad():
        net[1].weight.mul_(1e4)
    x = torch.randn(2, 3, 16, 16)
    reference = symwrap.wrap(net, "rot90", reduce="log_probs", chunk_size=None)(x)
    out = symwrap.wrap(net, "rot90", reduce="log_probs", chunk_size=chunk_size)(x)
    assert torch.isfinite(reference).all() and torch.isfinite(out).all()
    assert_close(out, reference, rtol=1e-6, atol=1e-6 * float(reference.detach().abs().max()))
