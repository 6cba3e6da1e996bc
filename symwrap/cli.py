"""The ``symwrap`` command line: ``symwrap plugins``, ``symwrap demo``, ``symwrap eval``, ``symwrap check``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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
    return 1 if errors and args.strict else 0


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
    plugins.add_argument("--strict", action="store_true", help="exit 1 if a plugin failed to load")
    plugins.set_defaults(func=_cmd_plugins)
    demo = sub.add_parser("demo", help="wrap a small random CNN and print its invariance error before and after")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)
    from symwrap.evaluation.commands import add_check_parser, add_eval_parser

    add_eval_parser(sub)
    add_check_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``symwrap`` console script and ``python -m symwrap``."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
