"""Plugins: the example third-party package, broken plugins, and the run-time registration API.

The ``integration`` tests install ``examples/symwrap-example-plugin`` (or fake distributions) into a
temporary directory and check symwrap's behaviour in a fresh interpreter with it on ``PYTHONPATH``.
The in-process tests use ``symwrap.register_plugin`` with plugin autoload disabled, so they do not
depend on what else is installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pluggy
import pytest
import torch
from torch import nn

import symwrap
from symwrap import hookspecs
from symwrap.errors import DuplicateNameError, PluginLoadError, PluginLoadWarning, UnknownNameError
from symwrap.registry import Registry

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "symwrap-example-plugin"
SUBPROCESS_TIMEOUT = 300


# ---------------------------------------------------------------------------------------------- helpers
def _env(site: Path | None = None, **overrides: str) -> dict[str, str]:
    """The environment for a child interpreter: no inherited SYMWRAP_* settings, ``site`` on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYMWRAP_")}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(overrides)
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )


def _run_json(script: str, env: dict[str, str]) -> Any:
    """Run ``script`` in a fresh interpreter; it must print one JSON document as its last line."""
    proc = _run([sys.executable, "-c", textwrap.dedent(script)], env)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- the example plugin
@pytest.fixture(scope="module")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``examples/symwrap-example-plugin`` installed (once per module) into a temporary ``--target`` dir."""
    if importlib.util.find_spec("pip") is None:
        pytest.skip("pip is not available in this interpreter")
    root = tmp_path_factory.mktemp("example-plugin")
    source = root / "src"  # build from a copy so the repository gets no build/ or *.egg-info
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = root / "site"
    proc = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--quiet",
            "--target",
            str(site),
            str(source),
        ],
        _env(),
    )
    assert proc.returncode == 0, f"pip install failed:\n{proc.stdout}\n{proc.stderr}"
    assert (site / "symwrap_example_plugin" / "__init__.py").is_file()
    return site


ENV_SWITCHES = {
    "autoload": ({}, True),
    "disabled": ({"SYMWRAP_DISABLE_PLUGIN_AUTOLOAD": "1"}, False),
    "disabled+load-entry-point": ({"SYMWRAP_DISABLE_PLUGIN_AUTOLOAD": "1", "SYMWRAP_LOAD_PLUGINS": "example"}, True),
    "disabled+load-distribution": (
        {"SYMWRAP_DISABLE_PLUGIN_AUTOLOAD": "1", "SYMWRAP_LOAD_PLUGINS": "symwrap-example-plugin"},
        True,
    ),
    "load-other": ({"SYMWRAP_LOAD_PLUGINS": "some-other-plugin"}, False),
    "load-list": ({"SYMWRAP_LOAD_PLUGINS": " other , example "}, True),
    "disable-false": ({"SYMWRAP_DISABLE_PLUGIN_AUTOLOAD": "0"}, True),
}


EXAMPLE_REPORT = """
    import json, os, warnings
    from importlib.metadata import entry_points

    import torch
    from torch import nn

    import symwrap

    warnings.simplefilter("error", symwrap.PluginLoadWarning)  # plugins load lazily, after this line

    groups = symwrap.list_groups()
    report = {"groups": groups, "errors": [str(e) for e in symwrap.plugin_errors()]}
    if "sign" in groups:
        entry = symwrap.get_registry("group").lookup("sign")[0]
        (ep,) = [ep for ep in entry_points(group="symwrap") if ep.name == "example"]
        report.update(plugin=entry.plugin, description=entry.description, dist=ep.dist.name, value=ep.value)

        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).eval()
        x = torch.randn(4, 5)
        even = symwrap.wrap(model, "sign")
        odd = symwrap.wrap(model, "sign", output="equivariant")
        with torch.no_grad():
            report.update(
                base_gap=float((model(-x) - model(x)).abs().max()),
                even_exact=torch.equal(even(-x), even(x)),
                even_is_average=bool(torch.allclose(even(x), (model(x) + model(-x)) / 2, atol=1e-6)),
                odd_exact=torch.equal(odd(-x), -odd(x)),
                check_after=symwrap.check(even, "sign", x).max_error,
                group_repr=repr(symwrap.get_group("sign")),
            )

    # The switches are read at (re)load time, so one child can try them all through reload_plugins().
    switches = {}
    for case, overrides in json.loads(SWITCHES).items():
        for key in ("SYMWRAP_DISABLE_PLUGIN_AUTOLOAD", "SYMWRAP_LOAD_PLUGINS"):
            os.environ.pop(key, None)
        os.environ.update(overrides)
        symwrap.reload_plugins()
        switches[case] = "sign" in symwrap.list_groups()
    report["switches"] = switches
    print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def example_report(example_site: Path) -> dict[str, Any]:
    switches = {case: overrides for case, (overrides, _) in ENV_SWITCHES.items()}
    script = textwrap.dedent(EXAMPLE_REPORT).replace("SWITCHES", repr(json.dumps(switches)))
    return _run_json(script, _env(example_site))


@pytest.mark.integration
def test_example_plugin_registers_sign_under_its_entry_point_name(example_report: dict[str, Any]) -> None:
    assert "sign" in example_report["groups"]
    assert "rot90" in example_report["groups"]  # built-ins are still there
    assert example_report["errors"] == []
    assert example_report["plugin"] == "example"
    assert example_report["dist"] == "symwrap-example-plugin"
    assert example_report["value"] == "symwrap_example_plugin"
    assert "Z2" in example_report["description"]


@pytest.mark.integration
def test_example_plugin_makes_a_model_exactly_even(example_report: dict[str, Any]) -> None:
    assert example_report["base_gap"] > 1e-3  # the raw model is not even
    assert example_report["even_exact"]  # f(-x) == f(x) bit for bit
    assert example_report["even_is_average"]  # f_G(x) = (f(x) + f(-x)) / 2
    assert example_report["odd_exact"]  # output="equivariant": f(-x) == -f(x)
    assert example_report["check_after"] == 0.0
    assert example_report["group_repr"] == "SignGroup(name='sign', order=2)"


@pytest.mark.integration
@pytest.mark.parametrize("case", list(ENV_SWITCHES))
def test_example_plugin_environment_switches(example_report: dict[str, Any], case: str) -> None:
    overrides, visible = ENV_SWITCHES[case]
    assert example_report["switches"][case] is visible, f"with {overrides}"


@pytest.mark.integration
@pytest.mark.parametrize("case", ["disabled", "disabled+load-entry-point"])
def test_example_plugin_environment_switches_in_a_fresh_process(example_site: Path, case: str) -> None:
    overrides, visible = ENV_SWITCHES[case]
    script = "import json, symwrap; print(json.dumps('sign' in symwrap.list_groups()))"
    assert _run_json(script, _env(example_site, **overrides)) is visible


@pytest.mark.integration
def test_cli_lists_the_example_plugin(example_site: Path) -> None:
    proc = _run([sys.executable, "-m", "symwrap", "plugins", "--strict"], _env(example_site))
    assert proc.returncode == 0, proc.stderr
    (line,) = [line for line in proc.stdout.splitlines() if line.split()[:1] == ["sign"]]
    assert line.split()[1] == "example"
    assert "failed to load" not in proc.stdout


# ---------------------------------------------------------------------------------------------- broken plugins
_FAKE_DISTS = {
    # distribution name: (entry-point name, module name, module source)
    "broken-symwrap-plugin": (
        "broken",
        "broken_symwrap_plugin",
        "raise RuntimeError('boom: this plugin cannot be imported')\n",
    ),
    "raising-symwrap-plugin": (
        "raising",
        "raising_symwrap_plugin",
        textwrap.dedent(
            """
            import symwrap

            @symwrap.hookimpl
            def symwrap_register_groups(register):
                register("half-registered", symwrap.groups.rot180)
                raise ValueError("bad registration")
            """
        ),
    ),
    "dupe-symwrap-plugin": (
        "dupe",
        "dupe_symwrap_plugin",
        textwrap.dedent(
            """
            import symwrap

            @symwrap.hookimpl
            def symwrap_register_groups(register):
                register("rot90", symwrap.groups.rot90)
            """
        ),
    ),
    "healthy-symwrap-plugin": (
        "healthy",
        "healthy_symwrap_plugin",
        textwrap.dedent(
            """
            import symwrap

            @symwrap.hookimpl
            def symwrap_register_groups(register):
                register("healthy", symwrap.groups.rot180, "a plugin that works")
            """
        ),
    ),
}


def _fake_distribution(site: Path, dist: str, entry_point: str, module: str, source: str) -> None:
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[symwrap]\n{entry_point} = {module}\n", encoding="utf-8")
    (site / f"{module}.py").write_text(source, encoding="utf-8")


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four fake installed distributions: one fails on import, one in its hook, one duplicates a
    built-in name and one works."""
    site = tmp_path_factory.mktemp("broken-plugins")
    for dist, (entry_point, module, source) in _FAKE_DISTS.items():
        _fake_distribution(site, dist, entry_point, module, source)
    return site


BROKEN_REPORT = """
    import json, os, warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import symwrap

        imported = True
        groups = symwrap.list_groups()
        errors = symwrap.plugin_errors()
        registry = symwrap.get_registry("group")
        try:
            symwrap.get_group("half-registered")
            unknown = None
        except symwrap.UnknownNameError as exc:
            unknown = str(exc)
    reloads = {}
    for key, overrides in (("disabled", {"SYMWRAP_DISABLE_PLUGIN_AUTOLOAD": "1"}),
                           ("healthy_only", {"SYMWRAP_LOAD_PLUGINS": "healthy"})):
        os.environ.update(overrides)
        symwrap.reload_plugins()
        reloads[key] = {"groups": symwrap.list_groups(), "errors": len(symwrap.plugin_errors())}
        for name in overrides:
            del os.environ[name]
    print(json.dumps({
        **reloads,
        "imported": imported,
        "groups": groups,
        "rot90_plugin": registry.lookup("rot90")[0].plugin,
        "healthy_plugin": registry.lookup("healthy")[0].plugin if "healthy" in registry else None,
        "unknown": unknown,
        "warnings": [
            {"plugin_warning": issubclass(w.category, symwrap.PluginLoadWarning), "message": str(w.message)}
            for w in caught
        ],
        "errors": {
            e.entry_point: {
                "plugin_load_error": isinstance(e, symwrap.PluginLoadError),
                "import_error": isinstance(e, ImportError),
                "distribution": e.distribution,
                "cause_type": type(e.__cause__).__name__,
                "cause": str(e.__cause__),
                "cause_is_original": e.__cause__ is e.cause,
                "cause_names_plugins": [getattr(e.__cause__, "first_plugin", None),
                                        getattr(e.__cause__, "second_plugin", None)],
                "message": str(e),
            }
            for e in errors
        },
    }))
"""


@pytest.fixture(scope="module")
def broken_report(broken_site: Path) -> dict[str, Any]:
    return _run_json(BROKEN_REPORT, _env(broken_site))


@pytest.mark.integration
def test_broken_plugin_does_not_break_symwrap(broken_report: dict[str, Any]) -> None:
    assert broken_report["imported"]
    for name in ("rot90", "flip", "d4", "c{n}", "o3", "perm", "shift"):
        assert name in broken_report["groups"]
    assert broken_report["rot90_plugin"] == "symwrap.builtins.groups"  # the duplicate did not replace it
    assert broken_report["healthy_plugin"] == "healthy"  # other plugins still load
    assert set(broken_report["errors"]) == {"broken", "raising", "dupe"}


@pytest.mark.integration
def test_import_failure_is_a_chained_plugin_load_error(broken_report: dict[str, Any]) -> None:
    error = broken_report["errors"]["broken"]
    assert error["plugin_load_error"]
    assert error["import_error"]  # PluginLoadError is an ImportError
    assert error["distribution"] == "broken-symwrap-plugin"
    assert error["cause_type"] == "RuntimeError"
    assert error["cause"] == "boom: this plugin cannot be imported"
    assert error["cause_is_original"]
    message = error["message"]
    assert "'broken'" in message
    assert "'broken-symwrap-plugin'" in message
    assert "RuntimeError: boom" in message
    assert "SYMWRAP_DISABLE_PLUGIN_AUTOLOAD=1" in message  # says how to get around it


@pytest.mark.integration
def test_hook_failure_is_reported_not_raised_and_rolled_back(broken_report: dict[str, Any]) -> None:
    error = broken_report["errors"]["raising"]
    assert error["plugin_load_error"]
    assert error["distribution"] == "raising-symwrap-plugin"
    assert error["cause_type"] == "ValueError"
    assert error["cause"] == "bad registration"
    # all or nothing: the name registered before the hook raised is gone ...
    assert "half-registered" not in broken_report["groups"]
    # ... and looking it up says which plugins failed
    assert "Plugins that failed to load" in broken_report["unknown"]
    assert "raising" in broken_report["unknown"]


@pytest.mark.integration
def test_third_party_duplicate_is_a_plugin_load_error(broken_report: dict[str, Any]) -> None:
    error = broken_report["errors"]["dupe"]
    assert error["plugin_load_error"]
    assert error["distribution"] == "dupe-symwrap-plugin"
    assert error["cause_type"] == "DuplicateNameError"
    assert error["cause_names_plugins"] == ["symwrap.builtins.groups", "dupe"]
    assert "'symwrap.builtins.groups'" in error["message"]
    assert "'dupe'" in error["message"]
    assert ".. Fix" not in error["message"]  # no doubled period after the cause's own message


@pytest.mark.integration
def test_each_failure_warns_once(broken_report: dict[str, Any]) -> None:
    warned = [w["message"] for w in broken_report["warnings"] if w["plugin_warning"]]
    assert len(warned) == 3
    assert sorted(warned) == sorted(e["message"] for e in broken_report["errors"].values())


@pytest.mark.integration
def test_disabling_autoload_skips_broken_plugins(broken_report: dict[str, Any]) -> None:
    disabled, healthy_only = broken_report["disabled"], broken_report["healthy_only"]
    assert disabled["errors"] == 0
    assert "rot90" in disabled["groups"]
    assert "healthy" not in disabled["groups"]
    assert healthy_only["errors"] == 0
    assert "healthy" in healthy_only["groups"]


@pytest.mark.integration
def test_cli_strict_fails_on_broken_plugins(broken_site: Path) -> None:
    proc = _run([sys.executable, "-m", "symwrap", "plugins", "--strict"], _env(broken_site))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "plugins that failed to load (3):" in proc.stdout
    assert "symwrap plugin 'broken' from distribution 'broken-symwrap-plugin' failed to load" in proc.stdout
    assert "boom: this plugin cannot be imported" in proc.stdout
    assert "bad registration" in proc.stdout
    assert "rot90" in proc.stdout  # the listing is still printed
    assert "PluginLoadWarning" in proc.stderr


# ---------------------------------------------------------------------------------------------- in-process API
@pytest.fixture
def add_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """``add_plugin(obj, name)`` registers a plugin for one test; autoload is off, so only built-ins and these."""
    monkeypatch.setenv("SYMWRAP_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("SYMWRAP_LOAD_PLUGINS", raising=False)
    symwrap.reload_plugins()
    added: list[Any] = []

    def add(plugin: Any, name: str | None = None) -> Any:
        symwrap.register_plugin(plugin, name=name)
        added.append(plugin)
        return plugin

    yield add
    for plugin in added:
        symwrap.unregister_plugin(plugin)
    symwrap.reload_plugins()


def make_plugin(
    groups: Sequence[tuple[str, Any]] = (),
    methods: Sequence[tuple[str, Any]] = (),
    adapters: Sequence[tuple[str, Any]] = (),
) -> types.SimpleNamespace:
    """A plugin object whose hooks register the given ``(name, factory)`` pairs."""

    def hook(items: Sequence[tuple[str, Any]]) -> Callable[..., None]:
        def impl(register: hookspecs.Register) -> None:
            for name, factory in items:
                register(name, factory)

        return symwrap.hookimpl(impl)

    plugin = types.SimpleNamespace()
    for hook_name, items in (
        ("symwrap_register_groups", groups),
        ("symwrap_register_methods", methods),
        ("symwrap_register_adapters", adapters),
    ):
        if items:
            setattr(plugin, hook_name, hook(list(items)))
    return plugin


def test_hookimpl_is_reexported() -> None:
    assert symwrap.hookimpl is hookspecs.hookimpl
    assert isinstance(symwrap.hookimpl, pluggy.HookimplMarker)
    assert symwrap.hookimpl.project_name == "symwrap"
    assert "hookimpl" in symwrap.__all__


def test_builtins_are_recorded_with_their_plugin(add_plugin: Callable[..., Any]) -> None:
    assert symwrap.get_registry("group").lookup("rot90")[0].plugin == "symwrap.builtins.groups"
    assert symwrap.get_registry("method").lookup("group_averaging")[0].plugin == "symwrap.builtins.methods"
    assert symwrap.get_registry("adapter").lookup("torch")[0].plugin == "symwrap.builtins.adapters"
    assert symwrap.plugin_errors() == []


def test_register_plugin_adds_names_and_unregister_removes_them(add_plugin: Callable[..., Any]) -> None:
    from symwrap.adapters.torch import TorchAdapter
    from symwrap.methods.group_averaging import GroupAveraging

    plugin = add_plugin(
        make_plugin(
            groups=[("toy", symwrap.groups.rot180)],
            methods=[("toy_average", GroupAveraging)],
            adapters=[("toy-torch", TorchAdapter)],
        ),
        name="toy-plugin",
    )
    assert "toy" in symwrap.list_groups()
    assert "toy_average" in symwrap.list_methods()
    assert "toy-torch" in symwrap.list_adapters()
    for kind, name in (("group", "toy"), ("method", "toy_average"), ("adapter", "toy-torch")):
        assert symwrap.get_registry(kind).lookup(name)[0].plugin == "toy-plugin"
    assert symwrap.get_group("toy").order() == 2
    symwrap.reload_plugins()  # run-time plugins survive a reload
    assert "toy" in symwrap.list_groups()
    symwrap.unregister_plugin(plugin)
    assert "toy" not in symwrap.list_groups()
    assert "toy_average" not in symwrap.list_methods()


def test_only_marked_hooks_are_called(add_plugin: Callable[..., Any]) -> None:
    calls: list[str] = []

    class Plugin:
        def symwrap_register_groups(self, register: hookspecs.Register) -> None:  # not marked: ignored
            calls.append("unmarked")
            register("unmarked", symwrap.groups.rot180)

        @symwrap.hookimpl(specname="symwrap_register_groups")
        def my_groups(self, register: hookspecs.Register) -> None:
            calls.append("specname")
            register("via-specname", symwrap.groups.rot180)

    add_plugin(Plugin(), name="specname-plugin")
    groups = symwrap.list_groups()
    assert calls == ["specname"]
    assert "via-specname" in groups
    assert "unmarked" not in groups


def test_duplicate_of_a_builtin_is_reported_not_raised(add_plugin: Callable[..., Any]) -> None:
    add_plugin(make_plugin(groups=[("extra-ok", symwrap.groups.rot180), ("rot90", symwrap.groups.rot90)]), "dupe")
    with pytest.warns(PluginLoadWarning, match="registered twice"):
        groups = symwrap.list_groups()
    assert "rot90" in groups
    assert "extra-ok" not in groups  # the failing plugin is rolled back as a whole
    assert symwrap.get_registry("group").lookup("rot90")[0].plugin == "symwrap.builtins.groups"
    (error,) = symwrap.plugin_errors()
    assert isinstance(error, PluginLoadError)
    assert error.entry_point == "dupe"
    assert isinstance(error.__cause__, DuplicateNameError)
    message = str(error.__cause__)
    assert "group 'rot90' is registered twice" in message
    assert "first by plugin 'symwrap.builtins.groups'" in message
    assert "again by plugin 'dupe'" in message


def test_duplicate_between_plugins_names_both_in_order(add_plugin: Callable[..., Any]) -> None:
    add_plugin(make_plugin(groups=[("twin", symwrap.groups.rot90)]), "first-plugin")
    add_plugin(make_plugin(groups=[("twin", symwrap.groups.rot180)]), "second-plugin")
    with pytest.warns(PluginLoadWarning, match="'second-plugin' failed to load"):
        entry = symwrap.get_registry("group").lookup("twin")[0]
    assert entry.plugin == "first-plugin"  # registration order decides, deterministically
    (error,) = symwrap.plugin_errors()
    cause = error.__cause__
    assert isinstance(cause, DuplicateNameError)
    assert (cause.kind, cause.name, cause.first_plugin, cause.second_plugin) == (
        "group",
        "twin",
        "first-plugin",
        "second-plugin",
    )


def test_registry_duplicate_error_names_both_plugins() -> None:
    registry = Registry("method")
    registry.add("avg", lambda: None, "plugin-a")
    with pytest.raises(DuplicateNameError, match="first by plugin 'plugin-a', again by plugin 'plugin-b'") as info:
        registry.add("avg", lambda: None, "plugin-b")
    assert isinstance(info.value, ValueError)
    assert "SYMWRAP_LOAD_PLUGINS" in str(info.value)  # says how to fix it


@pytest.mark.parametrize(
    ("getter", "wrong", "close"),
    [
        (symwrap.get_group, "rot9", "rot90"),
        (symwrap.get_group, "dd4", "d4"),
        (symwrap.get_method, "group_averagin", "group_averaging"),
    ],
)
def test_unknown_name_lists_close_matches(
    add_plugin: Callable[..., Any], getter: Callable[[str], Any], wrong: str, close: str
) -> None:
    with pytest.raises(UnknownNameError) as info:
        getter(wrong)
    error = info.value
    assert isinstance(error, KeyError)
    assert str(error) == error.message  # the plain message, not KeyError's quoted repr
    assert not str(error).startswith(("'", '"'))
    assert f"unknown {error.kind} {wrong!r}" in str(error)
    assert "Did you mean" in str(error)
    assert repr(close) in str(error).split("Available")[0]
    assert f"Available {error.kind}s:" in str(error)
    assert error.name == wrong
    assert close in error.available


def test_unknown_name_is_a_key_error_for_callers(add_plugin: Callable[..., Any]) -> None:
    with pytest.raises(KeyError):
        symwrap.get_group("no-such-group")
    assert "no-such-group" not in symwrap.get_registry("group")
    assert 8 not in symwrap.get_registry("group")  # not a name at all


def test_unknown_adapter_lists_adapters(add_plugin: Callable[..., Any]) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'torch'"):
        symwrap.get_adapter(nn.Linear(2, 2), "torhc")


@pytest.mark.parametrize(
    "name", ["Rot90", "9lives", "has space", "", "x{n}y", "{n}", "with.dot", "trailing-newline\n", "é", 12]
)
def test_invalid_names_are_rejected(name: Any) -> None:
    with pytest.raises(ValueError, match="invalid group name") as info:
        Registry("group").add(name, lambda: None, "my-plugin")
    message = str(info.value)
    assert repr(name) in message
    assert "'my-plugin'" in message
    assert "lowercase letters, digits, '_' or '-'" in message
    assert "{n}" in message


@pytest.mark.parametrize("name", ["a", "rot-90", "so_3", "x1", "c{n}", "my-family_{n}"])
def test_valid_names_are_accepted(name: str) -> None:
    entry = Registry("group").add(name, lambda **kw: None, "my-plugin")
    assert entry.is_family is name.endswith("{n}")


def test_non_callable_factory_is_rejected() -> None:
    with pytest.raises(TypeError, match="factory must be callable"):
        Registry("group").add("thing", 42, "my-plugin")


def test_invalid_name_from_a_plugin_is_reported(add_plugin: Callable[..., Any]) -> None:
    add_plugin(make_plugin(groups=[("Bad Name", symwrap.groups.rot90)]), "sloppy")
    with pytest.warns(PluginLoadWarning, match="invalid group name 'Bad Name' from plugin 'sloppy'"):
        groups = symwrap.list_groups()
    assert "rot90" in groups
    (error,) = symwrap.plugin_errors()
    assert isinstance(error.__cause__, ValueError)


def test_invalid_hookimpl_is_reported(add_plugin: Callable[..., Any]) -> None:
    class WrongArgument:
        @symwrap.hookimpl
        def symwrap_register_groups(self, reg: Any) -> None:  # the hook's argument is "register"
            raise AssertionError("never called")

    add_plugin(WrongArgument(), "wrong-argument")
    with pytest.warns(PluginLoadWarning, match="'wrong-argument' failed to load"):
        assert "rot90" in symwrap.list_groups()
    (error,) = symwrap.plugin_errors()
    assert isinstance(error.__cause__, pluggy.PluginValidationError)


def test_plugin_name_clash_is_reported(add_plugin: Callable[..., Any]) -> None:
    add_plugin(make_plugin(groups=[("one", symwrap.groups.rot90)]), "same-name")
    add_plugin(make_plugin(groups=[("two", symwrap.groups.rot90)]), "same-name")
    with pytest.warns(PluginLoadWarning, match="'same-name' failed to load"):
        groups = symwrap.list_groups()
    assert "one" in groups
    assert "two" not in groups


def test_errors_are_cleared_when_the_plugin_is_removed(add_plugin: Callable[..., Any]) -> None:
    plugin = add_plugin(make_plugin(groups=[("rot90", symwrap.groups.rot90)]), "dupe")
    with pytest.warns(PluginLoadWarning):
        assert len(symwrap.plugin_errors()) == 1
    with pytest.raises(UnknownNameError, match=r"Plugins that failed to load .*: dupe"):
        symwrap.get_group("nothing-here")
    symwrap.unregister_plugin(plugin)
    assert symwrap.plugin_errors() == []


def test_plugin_load_error_message_and_chain() -> None:
    cause = RuntimeError("it broke.")
    error = PluginLoadError("my-ep", "my-dist", cause)
    assert isinstance(error, ImportError)
    assert isinstance(error, symwrap.SymwrapError)
    assert error.__cause__ is cause
    assert (error.entry_point, error.distribution) == ("my-ep", "my-dist")
    assert str(error).startswith(
        "symwrap plugin 'my-ep' from distribution 'my-dist' failed to load: RuntimeError: it broke. Fix"
    )
    assert "failed to load: KeyError. " in str(PluginLoadError("x", None, KeyError()))


def test_family_names_resolve(add_plugin: Callable[..., Any]) -> None:
    c8 = symwrap.get_group("c8")
    assert c8.order() == 8
    assert symwrap.get_group("d3").order() == 6
    entry, params = symwrap.get_registry("group").lookup("c12")
    assert (entry.name, params) == ("c{n}", {"n": 12})
    assert "c8" in symwrap.get_registry("group")
    assert "c" not in symwrap.get_registry("group")
    assert "cx" not in symwrap.get_registry("group")


def test_plugin_families_receive_n_and_exact_names_win(add_plugin: Callable[..., Any]) -> None:
    seen: list[Any] = []

    def family(n: int, **options: Any) -> symwrap.groups.Group:
        seen.append((n, options))
        return symwrap.groups.cyclic(n)

    add_plugin(make_plugin(groups=[("toy{n}", family), ("toy7", symwrap.groups.rot90)]), "families")
    assert symwrap.get_group("toy5").order() == 5
    assert seen == [(5, {})]
    assert symwrap.get_group("toy7").order() == 4  # the exact name, not the family
    assert "toy{n}" in symwrap.list_groups()
    with pytest.raises(UnknownNameError):
        symwrap.get_group("toy")


def test_list_groups_pattern(add_plugin: Callable[..., Any]) -> None:
    everything = symwrap.list_groups()
    assert everything == sorted(everything)
    assert symwrap.list_groups("*") == everything
    c_groups = symwrap.list_groups("c*")
    assert "c{n}" in c_groups
    assert all(name.startswith("c") for name in c_groups)
    assert c_groups == [name for name in everything if name.startswith("c")]
    assert symwrap.list_groups("rot*") == ["rot180", "rot90"]
    assert set(symwrap.list_groups("*{n}")) >= {"c{n}", "d{n}", "o{n}", "so{n}", "e{n}", "se{n}"}
    assert symwrap.list_groups("C*") == []  # case-sensitive
    assert symwrap.list_groups("no-such-*") == []
    assert symwrap.list_adapters("t*") == ["torch"]
    assert "monte_carlo" in symwrap.list_methods("m*")


def test_reload_plugins_builds_new_registries(add_plugin: Callable[..., Any]) -> None:
    before = symwrap.get_registry("group")
    assert symwrap.get_registry("group") is before  # loaded once
    symwrap.reload_plugins()
    after = symwrap.get_registry("group")
    assert after is not before
    assert after.names() == before.names()


# ---------------------------------------------------------------------------------------------- the sign group itself
@pytest.fixture
def sign_plugin(add_plugin: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The example plugin package imported from the source tree (no install) and registered at run time."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import symwrap_example_plugin

    return add_plugin(symwrap_example_plugin, "example")


def test_sign_group_algebra(sign_plugin: types.ModuleType) -> None:
    group = symwrap.get_group("sign")
    assert isinstance(group, sign_plugin.SignGroup)
    assert isinstance(group, symwrap.groups.FiniteGroup)
    elements = group.elements()
    assert elements.tolist() == [1.0, -1.0]
    assert torch.equal(group.identity(), elements[0])
    table = group.compose(elements[:, None], elements[None, :])
    assert table.tolist() == [[1.0, -1.0], [-1.0, 1.0]]
    assert torch.equal(group.inverse(elements), elements)
    assert group.index_of(torch.tensor([-1.0, 1.0, -1.0])).tolist() == [1, 0, 1]
    assert isinstance(group.default_action(), sign_plugin.SignAction)
    assert "Convention:" in (sign_plugin.SignAction.__doc__ or "")


@pytest.mark.parametrize("code_shape", [(), (1,)])
def test_sign_action_apply(sign_plugin: types.ModuleType, code_shape: tuple[int, ...]) -> None:
    group = symwrap.get_group("sign")
    x = torch.randn(2, 3, 4)
    src = torch.tensor([0, 0, 1, 1])
    elements = torch.tensor([1.0, -1.0, 1.0, -1.0]).reshape(4, *code_shape)
    out = sign_plugin.SignAction().apply(x, src, elements, group)
    assert out.shape == (4, 3, 4)
    for r in range(4):
        assert torch.equal(out[r], elements[r].reshape(()) * x[src[r]])


def test_sign_wrap_makes_a_model_even(sign_plugin: types.ModuleType) -> None:
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).eval()
    x = torch.randn(4, 5)
    with torch.no_grad():
        assert not torch.allclose(model(-x), model(x), atol=1e-3)
        even = symwrap.wrap(model, "sign")
        assert torch.equal(even(-x), even(x))
        assert torch.allclose(even(x), (model(x) + model(-x)) / 2, atol=1e-6)


def test_sign_action_rejects_unsigned_inputs(sign_plugin: types.ModuleType) -> None:
    group = symwrap.get_group("sign")
    with pytest.raises(symwrap.InputLayoutError, match="cannot negate"):
        sign_plugin.SignAction().check(torch.zeros(2, 3, dtype=torch.uint8), group)
