"""The ``symwrap`` command line: ``symwrap plugins``, ``symwrap demo``, ``symwrap eval``, ``symwrap check``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from symwrap.registry import Registry

__all__ = ["main"]


def _cmd_plugins(args: argparse.Namespace) -> int:
    from symwrap.plugins import REGISTRY_KINDS, get_registry, plugin_errors

    for kind, label in REGISTRY_KINDS.items():
        entries = get_registry(kind).entries()
        print(f"{label} ({len(entries)}):")
        width = max((len(e.name) for e in entries), default=0)
        pwidth = max((len(e.plugin) for e in entries), default=0)
        for entry in entries:
            print(f"  {entry.name:<{width}}  {entry.plugin:<{pwidth}}  {entry.description}")
    errors = plugin_errors()
    if errors:
        print(f"plugins that failed to load ({len(errors)}):")
        for error in errors:
            print(f"  {error}")
    broken = _check_all_group_laws(get_registry("group")) if args.strict else []
    if broken:
        print(f"groups that break a group law or cannot be built ({len(broken)}):")
        for line in broken:
            print(f"  {line}")
    elif args.strict:
        print("group laws: every registered group checked (families at n = 2, 3, 4), all hold")
        needing = [e.name for e in get_registry("group").entries() if _required_options(e.factory)]
        if needing:
            print(f"  (checked at first use, as they need options: {', '.join(needing)})")
    return 1 if (errors or broken) and args.strict else 0


def _required_options(factory: object) -> list[str]:
    """Options a group factory cannot be called without (other than a family's ``n``)."""
    import inspect

    try:
        parameters = inspect.signature(factory).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []
    return [
        name
        for name, p in parameters.items()
        if name != "n"
        and p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]


def _check_all_group_laws(registry: Registry) -> list[str]:
    """Build every registered group (family members at n = 2, 3, 4; groups sized by their input on a small
    ``(2, 3, 4, 4)`` input) and check its group laws; one line per failure. Groups that need options to be built
    are checked when they are first used instead."""
    from symwrap.errors import SymwrapError
    from symwrap.groups.base import FiniteGroup
    from symwrap.groups.laws import check_group_laws

    failures = []
    for entry in registry.entries():
        if _required_options(entry.factory):
            continue  # built only with the user's options (word_swap needs words=...): checked at first use
        names = [entry.name[:-3] + str(n) for n in (2, 3, 4)] if entry.is_family else [entry.name]
        for name in names:
            try:
                group = entry.factory(**entry.match(name))  # type: ignore[arg-type]
                if isinstance(group, FiniteGroup):
                    try:
                        group.order()
                    except RuntimeError:  # sized by its input
                        group = group.for_input((2, 3, 4, 4), group.default_action())
                check_group_laws(group)
            except SymwrapError as exc:
                failures.append(f"{name} ({entry.plugin}): {exc}")
            except Exception as exc:  # a plugin's factory may fail in any way; report it, do not crash the listing
                failures.append(f"{name} ({entry.plugin}): cannot be built: {type(exc).__name__}: {exc}")
    return failures


def _cmd_demo(args: argparse.Namespace) -> int:
    from symwrap.demo import run_demo

    run_demo(seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="symwrap", description="Symmetrize any model to a group.")
    sub = parser.add_subparsers(dest="command", required=True)
    plugins = sub.add_parser(
        "plugins", help="list every registered group, method, adapter, proxy and model loader with its plugin"
    )
    plugins.add_argument(
        "--strict",
        action="store_true",
        help="also check the group laws of every registered group; exit 1 if a plugin failed to load, two plugins "
        "claim the same name, or a group breaks a law",
    )
    plugins.set_defaults(func=_cmd_plugins)
    demo = sub.add_parser("demo", help="wrap a small random CNN and print its invariance error before and after")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)
    from symwrap.evaluation.commands import add_check_parser, add_eval_parser

    add_eval_parser(sub)
    add_check_parser(sub)
    for name in ("eval", "check"):
        _add_safety_options(sub.choices[name])
    parser.epilog = CODE_EXECUTION_NOTE
    return parser


#: Shown by ``symwrap --help``, ``symwrap eval --help`` and ``symwrap check --help``.
CODE_EXECUTION_NOTE = (
    "Model specs run code: 'pkg.module:factory' and 'python:pkg.module:factory' import that module and call that "
    "attribute with this process's rights, like `python -c 'import pkg.module; pkg.module.factory()'` would. Give "
    "only specs you would run yourself. The working directory is not on the import path (not even with python -m "
    "symwrap) unless you pass --import-cwd."
)


def _add_safety_options(parser: argparse.ArgumentParser) -> None:
    parser.epilog = CODE_EXECUTION_NOTE
    group = parser.add_argument_group("safety and bounds (see docs/safety-and-limits.md)")
    group.add_argument(
        "--import-cwd",
        action="store_true",
        help="put the working directory first on the import path, so a model spec can name a module that lies there",
    )
    group.add_argument(
        "--max-group-order",
        type=int,
        default=None,
        metavar="N",
        help="largest finite group (or frame) to list, default 40320; raise it to use a larger group",
    )
    group.add_argument(
        "--max-samples",
        type=int,
        default=None,
        metavar="N",
        help="largest number of sampled elements (--samples, monte_carlo), default 4096",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``symwrap`` console script and ``python -m symwrap``."""
    args = build_parser().parse_args(argv)
    if getattr(args, "import_cwd", False) and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    bounds = {
        "max_group_order": getattr(args, "max_group_order", None),
        "max_samples": getattr(args, "max_samples", None),
    }
    if all(value is None for value in bounds.values()):
        return int(args.func(args))
    from symwrap.errors import SymwrapError
    from symwrap.limits import limits_raised

    try:
        with limits_raised(**bounds):
            return int(args.func(args))
    except SymwrapError as exc:  # a bound that is not a positive int
        print(f"symwrap {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
