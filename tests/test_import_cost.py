"""``import symwrap`` loads only what every use needs: the heavy modules are imported where they are used.

Checked on the modules a fresh interpreter holds after the import (no timing; ``benchmarks/bench_import.py`` measures
the time next to ``import torch``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Loaded by the first torch.compile / export / eval / save, never by the import. ``torch._dynamo`` alone is a third
#: of ``import torch``'s time.
HEAVY = (
    "torch._dynamo",
    "torch._inductor",
    "torch.onnx",
    "sympy",
    "matplotlib",
    "safetensors",
    "sklearn",
    "timm",
    "transformers",
    "open_clip",
    "symwrap.evaluation",
    "symwrap.saving",
    "symwrap.train",
)


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300)
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.integration
def test_import_symwrap_loads_no_heavy_module() -> None:
    loaded = _loaded_after("import symwrap")
    assert "symwrap.wrapper" in loaded  # the probe sees symwrap's own modules
    assert sorted(m for m in HEAVY if m in loaded) == []


@pytest.mark.integration
def test_help_parser_loads_no_heavy_module() -> None:
    loaded = _loaded_after("from symwrap.cli import build_parser\nbuild_parser().format_help()")
    assert "symwrap.evaluation.commands" in loaded  # the subcommands' parsers are built
    heavy = [m for m in HEAVY if m in loaded and m != "symwrap.evaluation"]
    assert heavy == []
