"""Group laws checked before use, names never shadowed, bounded group orders and sample counts."""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import symwrap
from symwrap.cli import main
from symwrap.errors import ConfigError, DuplicateNameError, GroupLawError, LimitError, PluginLoadWarning
from symwrap.groups import FiniteGroup, MatrixGroup, OrthogonalGroup, ShiftGroup, rot90
from symwrap.groups.laws import check_group_laws


@pytest.fixture
def add_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """Register plugins for one test, with autoload off (built-ins and these only)."""
    monkeypatch.setenv("SYMWRAP_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("SYMWRAP_LOAD_PLUGINS", raising=False)
    symwrap.reload_plugins()
    added: list[Any] = []

    def add(name: str, groups: list[tuple[str, Any]]) -> Any:
        def impl(register: Any) -> None:
            for group_name, factory in groups:
                register(group_name, factory)

        plugin = types.SimpleNamespace(symwrap_register_groups=symwrap.hookimpl(impl))
        symwrap.register_plugin(plugin, name=name)
        added.append(plugin)
        return plugin

    yield add
    for plugin in added:
        symwrap.unregister_plugin(plugin)
    symwrap.reload_plugins()


class WrongInverse(MatrixGroup):
    """rot90's elements with ``inverse`` the identity map (wrong for the quarter turns)."""

    def inverse(self, a: Tensor) -> Tensor:
        return a


class NotAssociative(FiniteGroup):
    """The smallest loop that is not a group (order 5): a Latin-square table with an identity and inverses
    (every element is its own inverse), where (1·2)·4 = 1 but 1·(2·4) = 4."""

    name = "loop5"
    code_dtype = torch.int64
    table = torch.tensor([[0, 1, 2, 3, 4], [1, 0, 3, 4, 2], [2, 4, 0, 1, 3], [3, 2, 4, 0, 1], [4, 3, 1, 2, 0]])

    def elements(self) -> Tensor:
        return torch.arange(5)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return self.table[a, b]

    def inverse(self, a: Tensor) -> Tensor:
        return a.clone()


class WrongContinuousInverse(OrthogonalGroup):
    def inverse(self, a: Tensor) -> Tensor:
        return a


def _wrong_inverse() -> MatrixGroup:
    return WrongInverse(rot90()._elements, "badrot")


def _flat_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


# ---------------------------------------------------------------------------------------------- group laws
def test_builtin_groups_hold_every_law() -> None:
    for name in ["rot90", "rot180", "flip", "vflip", "d4", "c3", "c8", "d6", "so2", "o3", "se3"]:
        check_group_laws(symwrap.get_group(name))
    check_group_laws(ShiftGroup(4, 6, stride=2))
    check_group_laws(symwrap.groups.PermutationGroup(4))


def test_wrong_inverse_is_refused_by_wrap_and_check_instead_of_a_false_pass() -> None:
    x = torch.randn(2, 1, 4, 4)
    message = r"group 'badrot' \(WrongInverse\) breaks the inverse law: g·inverse\(g\) = inverse\(g\)·g = e fails.*#1"
    with pytest.raises(GroupLawError, match=message):
        symwrap.check(_flat_model(), _wrong_inverse(), x)
    with pytest.raises(GroupLawError, match=message):
        symwrap.wrap(_flat_model(), _wrong_inverse())


def test_sets_that_are_not_closed_or_repeat_elements_are_refused() -> None:
    quarter = rot90()._elements[:3]  # 0°, 90°, 180°: 90°·180° = 270° is missing
    with pytest.raises(GroupLawError, match=r"breaks the (inverse|closure) law.*not an element"):
        symwrap.get_group(MatrixGroup(quarter, "three"))
    repeated = torch.cat([rot90()._elements, rot90()._elements[1:2]])
    with pytest.raises(GroupLawError, match=r"breaks the distinct elements law: elements #1 = .*#4 = .* are equal"):
        symwrap.get_group(MatrixGroup(repeated, "repeats"))


def test_non_associative_compose_and_wrong_identity_are_refused() -> None:
    with pytest.raises(GroupLawError, match=r"breaks the associativity law: \(a·b\)·c ≠ a·\(b·c\)"):
        check_group_laws(NotAssociative())
    shuffled = rot90()._elements[[1, 0, 2, 3]]
    with pytest.raises(ValueError, match="identity first"):
        MatrixGroup(shuffled, "shuffled")


def test_continuous_groups_are_checked_on_samples() -> None:
    with pytest.raises(GroupLawError, match=r"group 'o3' \(WrongContinuousInverse\) breaks the inverse law.*sampled"):
        symwrap.get_group(WrongContinuousInverse(3, special=False))


def test_a_plugin_group_breaking_a_law_is_refused_on_first_use(add_plugin: Callable[..., Any]) -> None:
    add_plugin("bad_groups", [("badrot", _wrong_inverse)])
    with pytest.raises(GroupLawError, match=r"group 'badrot'.*breaks the inverse law"):
        symwrap.wrap(_flat_model(), "badrot")


def test_strict_listing_checks_every_group_law(add_plugin: Callable[..., Any], capsys: Any) -> None:
    assert main(["plugins", "--strict"]) == 0
    assert "all hold" in capsys.readouterr().out
    add_plugin("bad_groups", [("badrot", _wrong_inverse)])
    assert main(["plugins", "--strict"]) == 1
    out = capsys.readouterr().out
    assert "groups that break a group law or cannot be built (1):" in out
    assert "badrot (bad_groups): group 'badrot' (WrongInverse) breaks the inverse law" in out
    assert main(["plugins"]) == 0  # without --strict the laws are not run


# ---------------------------------------------------------------------------------------------- shadowing
@pytest.mark.parametrize(("name", "family"), [("c8", "c{n}"), ("d12", "d{n}"), ("o5", "o{n}")])
def test_a_plugin_name_served_by_a_builtin_family_is_a_clash(
    add_plugin: Callable[..., Any], name: str, family: str
) -> None:
    add_plugin("shadow", [(name, rot90)])
    with pytest.warns(PluginLoadWarning, match="symwrap plugin 'shadow' failed to load: DuplicateNameError"):
        (error,) = symwrap.plugin_errors()
    cause = error.__cause__
    assert isinstance(cause, DuplicateNameError)
    assert str(cause).startswith(
        f"group {name!r} clashes with {family!r}, registered first by plugin 'symwrap.builtins.groups': both would "
        f"serve the same names and one would silently hide the other; {name!r} comes from plugin 'shadow'."
    )
    assert symwrap.get_registry("group").lookup(name)[0].plugin == "symwrap.builtins.groups"
    assert symwrap.get_group(name).order() != 4 or name == "c4"  # the builtin, not the plugin's rot90


def test_a_plugin_family_covering_a_builtin_name_is_a_clash(add_plugin: Callable[..., Any], capsys: Any) -> None:
    add_plugin("rotations", [("rot{n}", lambda n: rot90())])
    with pytest.warns(PluginLoadWarning, match="symwrap plugin 'rotations' failed to load"):
        (error,) = symwrap.plugin_errors()
    assert isinstance(error.__cause__, DuplicateNameError)
    assert "'rot{n}' clashes with 'rot90', registered first by plugin 'symwrap.builtins.groups'" in str(error.__cause__)
    assert main(["plugins", "--strict"]) == 1
    assert "plugins that failed to load (1):" in capsys.readouterr().out


def test_one_plugin_may_name_a_member_of_its_own_family(add_plugin: Callable[..., Any]) -> None:
    add_plugin("mine", [("myc{n}", symwrap.groups.cyclic), ("myc4", rot90)])
    assert symwrap.plugin_errors() == []
    assert symwrap.get_registry("group").lookup("myc4")[0].factory is rot90


# ---------------------------------------------------------------------------------------------- options and bounds
def test_group_option_typos_get_suggestions() -> None:
    with pytest.raises(ConfigError, match=r"group 'shift' has no option 'strid'\. Did you mean 'stride'\?"):
        symwrap.wrap(_flat_model(), "shift", group_options={"strid": 2})
    with pytest.raises(ConfigError, match=r"group 'o3' has no option 'actoin'\. Did you mean 'action'\?"):
        symwrap.get_group("o3", actoin="points")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("c0", r"the cyclic group order N of c\{N\} must be a positive integer \(c1, c2, \.\.\.\), got 0"),
        ("d0", r"the dihedral group parameter N of d\{N\} must be a positive integer"),
        ("o0", r"the dimension d of o\{d\} must be a positive integer, got 0"),
        ("se0", r"the dimension d of se\{d\} must be a positive integer, got 0"),
    ],
)
def test_zero_sized_families_are_named_errors(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        symwrap.get_group(name)


@pytest.mark.parametrize(
    ("name", "shown"),
    [("c999999999999", "999999999999"), ("d30000", "60000"), ("o1000", "1000")],
)
def test_huge_groups_are_refused_before_any_work(name: str, shown: str) -> None:
    with pytest.raises(LimitError, match=rf"of {name} is {shown}, above the bound max_(group_order|dimension)=.*raise"):
        symwrap.wrap(_flat_model(), name)


def test_bounds_are_raised_or_lowered_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    with symwrap.limits_raised(max_group_order=8):
        assert symwrap.get_group("d4").order() == 8
        with pytest.raises(LimitError, match=r"the order of c9 is 9, above the bound max_group_order=8"):
            symwrap.get_group("c9")
    assert symwrap.get_group("c9").order() == 9
    monkeypatch.setenv("SYMWRAP_MAX_GROUP_ORDER", "4")
    with pytest.raises(LimitError, match="SYMWRAP_MAX_GROUP_ORDER=N"):
        symwrap.get_group("c8")
    monkeypatch.setenv("SYMWRAP_MAX_GROUP_ORDER", "lots")
    with pytest.raises(ConfigError, match=r"SYMWRAP_MAX_GROUP_ORDER='lots' must be a positive int"):
        symwrap.get_group("c8")
    monkeypatch.delenv("SYMWRAP_MAX_GROUP_ORDER")
    old = symwrap.set_limits(max_samples=2)
    try:
        with pytest.raises(LimitError, match=r"monte_carlo samples \(forwards per input\) is 3, above the bound"):
            symwrap.wrap(_flat_model(), "so2", "monte_carlo", samples=3)
    finally:
        symwrap.set_limits(**vars(old))
    assert symwrap.current_limits() == symwrap.limits.DEFAULT_LIMITS


def test_huge_sample_counts_and_shift_groups_are_refused() -> None:
    with pytest.raises(LimitError, match=r"monte_carlo samples \(forwards per input\) is 100000000, above"):
        symwrap.wrap(_flat_model(), "so2", "monte_carlo", samples=100_000_000)
    with pytest.raises(LimitError, match=r"samples \(the sampled elements symwrap.check compares\) is 100000000"):
        symwrap.check(_flat_model(), "so2", torch.randn(1, 1, 4, 4), samples=100_000_000)
    wrapped = symwrap.wrap(nn.Sequential(nn.Flatten(), nn.LazyLinear(2)), "shift")
    with pytest.raises(LimitError, match=r"group 'shift' on 256×256 images is 65536.*group_options=\{'stride': s\}"):
        wrapped(torch.randn(1, 1, 256, 256))


def test_high_dimensional_frames_are_refused() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(40 * 20, 2))
    with pytest.raises(LimitError, match=r"the PCA frame of 20-d clouds \(2\^d sign choices\) is 1048576.*monte_carlo"):
        symwrap.wrap(model, "o20", "frame_averaging")(torch.randn(1, 40, 20))


def test_options_named_like_a_family_parameter() -> None:
    assert symwrap.get_group("perm", n=4).order() == 24  # perm's own option n
    with pytest.raises(ConfigError, match=r"group 'c8' has no option 'n'"):
        symwrap.get_group("c8", n=3)  # c{n} takes n from the name
