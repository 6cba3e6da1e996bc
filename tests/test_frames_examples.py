"""The frame averaging and canonicalization examples run and show what they claim."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_point_cloud_frames_example() -> None:
    results = runpy.run_path(str(EXAMPLES / "point_cloud_frames.py"))["main"](points=64, batch=4)
    for name in ["o3", "e3"]:
        row = results[name]
        assert row["plain"] > 1e-1
        assert row["frame_averaging"] < 1e-5
        assert row["frame_averaging_passes"] == 8
        assert row["monte_carlo"] > 1e3 * row["frame_averaging"]


@pytest.mark.slow
def test_digits_canonicalization_example() -> None:
    result = runpy.run_path(str(EXAMPLES / "digits_canonicalization.py"))["main"](epochs=10)
    accs = result["accuracy"]
    first, last = result["prior_loss_first_last"]
    assert last < first / 2
    assert result["identity_rate_test_after"] > 0.8 > result["identity_rate_test_before"]
    canon = accs["canonicalization"]
    assert max(canon) - min(canon) < 1e-9  # the same predictions for every rotation
    assert canon[0] > 0.85 and min(accs["plain"][1:]) < 0.5
