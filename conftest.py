"""Shared by every test folder (the core's and the plugins'): no test reads the wall clock.

``chunk_size="auto"`` times real calls to choose its chunks; in tests its tuners get no clock, so they choose by the
memory budget alone and their choice is final at once (the same on an idle and on a busy machine). Tests of the
timing policy give a tuner a fake clock of their own.
"""

from __future__ import annotations

import pytest

import symwrap.chunking


@pytest.fixture(autouse=True)
def _tuners_without_a_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(symwrap.chunking, "default_clock", None)
