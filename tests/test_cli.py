"""The ``symwrap`` command line: ``symwrap plugins`` and ``symwrap demo``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import symwrap
from symwrap import cli
from symwrap.errors import PluginLoadWarning

REPO = Path(__file__).resolve().parents[1]
KINDS = ("group", "method", "adapter", "proxy", "model_loader")
_KIND_OF_LABEL = {
    "groups": "group",
    "methods": "method",
    "adapters": "adapter",
    "proxies": "proxy",
    "model_loaders": "model_loader",
}
_HEADER = re.compile(r"^(groups|methods|adapters|proxies|model_loaders) \((\d+)\):$")
_ROW = re.compile(r"^  (\S+)\s+(\S+)(?:  (.*))?$")


def _console_script() -> str | None:
    return shutil.which("symwrap", path=str(Path(sys.executable).parent))


def _commands() -> list[object]:
    script = _console_script()
    return [
        pytest.param([sys.executable, "-m", "symwrap"], id="python -m symwrap"),
        pytest.param(
            [script] if script else [],
            id="symwrap",
            marks=pytest.mark.skipif(script is None, reason="the symwrap console script is not installed"),
        ),
    ]


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYMWRAP_")}
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(overrides)
    return env


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        env=_env(**env),
        cwd=REPO,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=600,
        check=False,
    )


def parse_listing(text: str) -> dict[str, dict[str, tuple[str, str]]]:
    """``symwrap plugins`` output -> ``{kind: {name: (plugin, description)}}``; checks each section's count."""
    listing: dict[str, dict[str, tuple[str, str]]] = {}
    section: dict[str, tuple[str, str]] | None = None
    counts: dict[str, int] = {}
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            kind = _KIND_OF_LABEL[header.group(1)]
            section = listing.setdefault(kind, {})
            counts[kind] = int(header.group(2))
            continue
        if not line.startswith("  ") or section is None:
            section = None  # a different block ("plugins that failed to load")
            continue
        row = _ROW.match(line)
        assert row, f"unparsable line {line!r}"
        section[row.group(1)] = (row.group(2), (row.group(3) or "").strip())
    for kind, count in counts.items():
        assert len(listing[kind]) == count, f"{kind}s: header says {count}, listed {len(listing[kind])}"
    return listing


def _expected() -> dict[str, dict[str, tuple[str, str]]]:
    return {kind: {e.name: (e.plugin, e.description) for e in symwrap.get_registry(kind).entries()} for kind in KINDS}


@pytest.mark.integration
@pytest.mark.parametrize("command", _commands())
def test_plugins_lists_every_name_with_its_plugin(builtins_only: None, command: list[str]) -> None:
    proc = _run([*command, "plugins"], SYMWRAP_DISABLE_PLUGIN_AUTOLOAD="1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    listing = parse_listing(proc.stdout)
    assert listing == _expected()
    assert listing["group"]["rot90"][0] == "symwrap.builtins.groups"
    assert listing["group"]["c{n}"][0] == "symwrap.builtins.groups"
    assert listing["method"]["group_averaging"][0] == "symwrap.builtins.methods"
    assert listing["adapter"]["torch"][0] == "symwrap.builtins.adapters"
    assert "failed to load" not in proc.stdout


@pytest.mark.integration
def test_plugins_with_autoload_matches_the_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the environment's own plugins (whatever is installed), the listing is the registries' content."""
    monkeypatch.delenv("SYMWRAP_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("SYMWRAP_LOAD_PLUGINS", raising=False)
    proc = _run([sys.executable, "-m", "symwrap", "plugins", "--strict"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    symwrap.reload_plugins()
    try:
        assert parse_listing(proc.stdout) == _expected()
    finally:
        symwrap.reload_plugins()


def test_plugins_in_process(builtins_only: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plugins"]) == 0
    assert parse_listing(capsys.readouterr().out) == _expected()
    assert cli.main(["plugins", "--strict"]) == 0  # nothing failed
    assert parse_listing(capsys.readouterr().out) == _expected()


class _Dupe:
    @symwrap.hookimpl
    def symwrap_register_groups(self, register: symwrap.hookspecs.Register) -> None:
        register("rot90", symwrap.groups.rot90)


def test_plugins_reports_failures_and_strict_exits_1(builtins_only: None, capsys: pytest.CaptureFixture[str]) -> None:
    plugin = _Dupe()
    symwrap.register_plugin(plugin, name="dupe")
    try:
        with pytest.warns(PluginLoadWarning):
            assert cli.main(["plugins"]) == 0
        assert cli.main(["plugins", "--strict"]) == 1
    finally:
        symwrap.unregister_plugin(plugin)
    out = capsys.readouterr().out
    assert out.count("plugins that failed to load (1):") == 2
    assert "symwrap plugin 'dupe' failed to load: DuplicateNameError: group 'rot90' is registered twice" in out


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
    assert "plugins" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "plugins" in out
    assert "demo" in out


@pytest.mark.slow
@pytest.mark.integration
def test_demo_prints_the_table() -> None:
    script = _console_script()
    command = [script] if script else [sys.executable, "-m", "symwrap"]
    proc = _run([*command, "demo"], SYMWRAP_DISABLE_PLUGIN_AUTOLOAD="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"symwrap {symwrap.__version__} demo")
    assert lines[1].split() == ["model", "group", "output", "method", "before", "after", "time"]
    rows = [line for line in lines[2:] if re.search(r"\d\.\d\ds$", line)]
    assert len(rows) >= 5
    seen = set()
    for row in rows:
        fields = row.split()
        before, after = float(fields[-3]), float(fields[-2])
        group = next(f for f in fields if f in {"rot90", "flip", "d4", "o3"} or f.startswith("shift"))
        seen.add(group.split("(")[0])
        assert before > 1e-2, row  # the random models are not invariant by themselves
        if "monte_carlo" not in row:
            assert after < 1e-5, row  # exact groups: float32 round-off after wrapping
        else:
            assert after < before, row
    assert seen >= {"rot90", "flip", "d4", "shift", "o3"}
    assert "monte_carlo" in proc.stdout
