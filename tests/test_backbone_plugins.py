"""The three backbone plugins (plugins/symwrap-timm, -transformers, -open-clip) as installed distributions:
found through their ``symwrap`` entry points in a fresh interpreter (never imported by the test itself),
listed by ``symwrap plugins``, absent with ``SYMWRAP_DISABLE_PLUGIN_AUTOLOAD=1`` (with an error that says how
to enable them), and the core never imports timm, transformers or open_clip.

They are installed by ``pip install -r requirements-dev.txt`` (the README's test command).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# distribution -> (entry point, adapters, groups, model loaders) it must register
PLUGINS = {
    "symwrap-timm": ("timm", ["timm"], [], ["timm"]),
    "symwrap-transformers": ("transformers", ["transformers"], ["gender_swap", "word_swap"], ["hf"]),
    "symwrap-open-clip": ("open_clip", ["open_clip"], [], ["open_clip"]),
    "symwrap-monai": ("monai", [], [], ["monai"]),
}
HEAVY = ("timm", "transformers", "open_clip", "monai")

pytestmark = pytest.mark.integration


def _child(script: str, **env_overrides: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYMWRAP_")}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


REPORT = """
    import json, sys
    from importlib.metadata import entry_points
    import symwrap
    report = {"errors": [str(e) for e in symwrap.plugin_errors()], "entries": {}, "dists": {}}
    for kind in ("adapter", "group", "model_loader"):
        for entry in symwrap.get_registry(kind).entries():
            report["entries"].setdefault(entry.plugin, {}).setdefault(kind, []).append(entry.name)
    for ep in entry_points(group="symwrap"):
        report["dists"][ep.name] = ep.dist.name if ep.dist is not None else None
    report["heavy_imported"] = sorted(m for m in ("timm", "transformers", "open_clip", "monai") if m in sys.modules)
    try:
        symwrap.get_adapter(None, "timm")
    except Exception as exc:
        report["timm_error"] = [type(exc).__name__, str(exc)]
    print(json.dumps(report))
"""


def _report(**env: str) -> dict:
    proc = _child(REPORT, **env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_plugins_are_found_through_their_installed_entry_points() -> None:
    report = _report()
    assert report["errors"] == []
    for dist, (entry_point, adapters, groups, loaders) in PLUGINS.items():
        assert report["dists"].get(entry_point) == dist, f"{dist} is not installed: pip install -r requirements-dev.txt"
        registered = report["entries"].get(entry_point, {})
        assert registered.get("adapter", []) == adapters
        assert registered.get("group", []) == groups
        assert registered.get("model_loader", []) == loaders
    # registering the plugins imports none of the heavy libraries
    assert report["heavy_imported"] == []


def test_disabled_autoload_leaves_the_backbone_adapters_out_and_says_how_to_enable_them() -> None:
    report = _report(SYMWRAP_DISABLE_PLUGIN_AUTOLOAD="1")
    assert report["entries"].get("timm") is None and report["entries"].get("transformers") is None
    kind, message = report["timm_error"]
    assert kind == "UnknownNameError"
    assert re.search(r"unknown adapter 'timm'.*not loaded because of SYMWRAP_DISABLE_PLUGIN_AUTOLOAD", message)
    assert re.search(r"unset SYMWRAP_DISABLE_PLUGIN_AUTOLOAD or set SYMWRAP_LOAD_PLUGINS=\S*timm", message)
    # and the named plugins come back one by one
    report = _report(SYMWRAP_DISABLE_PLUGIN_AUTOLOAD="1", SYMWRAP_LOAD_PLUGINS="timm")
    assert report["entries"]["timm"]["adapter"] == ["timm"] and "transformers" not in report["entries"]


def test_symwrap_plugins_lists_all_three() -> None:
    proc = _child("import sys; from symwrap.cli import main; sys.exit(main(['plugins', '--strict']))")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for entry_point, adapters, groups, loaders in PLUGINS.values():
        for name in [*adapters, *groups, *loaders]:
            assert re.search(rf"^  {re.escape(name)}\s+{re.escape(entry_point)}\s", proc.stdout, re.M), name


def test_the_core_never_imports_a_backbone_library() -> None:
    pattern = re.compile(rf"^\s*(import|from)\s+({'|'.join(HEAVY)})\b", re.M)
    offenders = [str(p) for p in (REPO / "symwrap").rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
