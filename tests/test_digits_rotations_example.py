"""The rotated-digits example: λ-equitune reaches ≥ 85 % on rotated held-out digits while exactly invariant."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _example():
    path = Path(__file__).resolve().parents[1] / "examples" / "digits_rotations.py"
    spec = importlib.util.spec_from_file_location("digits_rotations", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_lambda_equitune_learns_rotated_digits_and_stays_invariant() -> None:
    pytest.importorskip("sklearn")
    results = _example().run(steps=100, lr=1e-2, seed=0)  # fewer steps than the example, to keep CI fast
    assert results["plain (upright test digits)"] > 0.9
    assert results["plain"] < 0.6, "the plain CNN is not rotation invariant"
    assert results["lambda_equitune"] >= 0.85
    assert results["lambda_equitune invariance error"] < 1e-5
    assert results["lambda_equitune"] > results["group_averaging"] + 0.3
