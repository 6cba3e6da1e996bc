"""The ``symwrap eval`` and ``symwrap check`` subcommands (argument parsing; the work is in the modules beside)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from symwrap.errors import SymwrapError

__all__ = ["add_check_parser", "add_eval_parser"]


def _report_errors(command: str, function: object) -> object:
    """Turn symwrap's own errors into one clear line on stderr and exit status 2 (no traceback)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(function(args))  # type: ignore[operator]
        except SymwrapError as exc:
            print(f"symwrap {command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(_interrupted(command, args), file=sys.stderr)
            return 130  # the shell's status for a run ended by SIGINT

    return run


def _interrupted(command: str, args: argparse.Namespace) -> str:
    """The one line printed on Ctrl-C (no traceback)."""
    if command == "eval":
        from symwrap.evaluation.state import PROGRESS_FILE

        return (
            f"symwrap eval: interrupted; the batches counted so far are saved in "
            f"{args.output_dir}/{PROGRESS_FILE}: run the same command with --resume to go on from there"
        )
    return f"symwrap {command}: interrupted"


def _common_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        default="digits",
        help="model spec: digits (default), timm:NAME, hf:NAME_OR_PATH, open_clip:ARCH[@PRETRAINED], "
        "pkg.module:factory or python:pkg.module:factory (see `symwrap plugins` for the registered prefixes)",
    )
    parser.add_argument(
        "--pretrained",
        default=None,
        help="weights for the loader: true/false, a tag (openai), or a local checkpoint (.safetensors)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the random corruption and sampled elements")
    parser.add_argument(
        "--samples", type=int, default=8, help="elements listed for a continuous group (finite groups: all)"
    )


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    from symwrap.evaluation.runner import EvalConfig

    defaults = EvalConfig()
    parser = sub.add_parser(
        "eval",
        help="accuracy of a model and each symmetrization method under every group element (the main job)",
        description="Evaluate a model and every applicable symmetrization method under each group element and a "
        "seeded random element per image. With no arguments: the shipped DigitsCNN on held-out digits under rot90.",
    )
    _common_model_options(parser)
    add = parser.add_argument
    add("--data", default=defaults.data, help="digits (default), an image folder, or a saved Hugging Face dataset")
    add("--split", default=None, help="dataset split (digits: test by default; a dataset dict: its split name)")
    add("--group", default=defaults.group, help="group of corruptions and methods (default rot90)")
    add(
        "--methods",
        default=None,
        help="comma-separated: plain, group_averaging, equizero, ..., NAME=DIR for a save_pretrained folder "
        "(default: plain, every registered zero-shot method that applies, and the trained methods shipped for "
        "the model and group: lambda_equitune and canonicalization for digits with rot90)",
    )
    add("--limit", type=int, default=None, help="evaluate only the first N images")
    add("--batch-size", type=int, default=defaults.batch_size)
    add("--chunk-size", default=defaults.chunk_size, help="rows per forward of wrapped models: auto, an int or none")
    add(
        "--max-memory",
        default=None,
        help="with --chunk-size auto: cap on the memory one chunk's forward may use (e.g. 512MB, 2GiB)",
    )
    add("--precision", choices=["fp32", "bf16", "fp16"], default=defaults.precision)
    add("--output-dir", default=defaults.output_dir, help="where results.json, accuracy.png, progress.json go")
    add("--resume", action="store_true", help="continue an interrupted run from its progress.json")
    add("--workers", type=int, default=defaults.workers, help="data-loading worker processes")
    add("--class-names", default=None, help="class names in label order: a,b,c or @file (one per line)")
    add("--templates", default=None, help="zero-shot prompt templates: 'a photo of a {}.|a {}.' or @file")
    add("--image-mode", choices=["RGB", "L"], default=defaults.image_mode, help="PIL mode without a model preprocess")
    add("--image-column", default=None, help="image column of a Hugging Face dataset (default: found by type)")
    add("--label-column", default=None, help="label column of a Hugging Face dataset (default: found by type)")
    add("--probe-size", type=int, default=defaults.probe_size, help="images for the invariance error column")
    add("--checkpoint-every", type=int, default=defaults.checkpoint_every, help="batches between checkpoints")
    add("--no-plot", dest="plot", action="store_false", help="skip the PNG")
    add("--no-progress", dest="progress", action="store_false", help="no tqdm bar")
    parser.set_defaults(func=_report_errors("eval", _cmd_eval))


def _cmd_eval(args: argparse.Namespace) -> int:
    from symwrap.evaluation.runner import EvalConfig, run_eval

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("symwrap.evaluation").setLevel(logging.INFO)  # resume and skipped-method notes
    fields = {f.name for f in dataclasses.fields(EvalConfig)}
    config = EvalConfig(**{k: v for k, v in vars(args).items() if k in fields})
    run_eval(config)
    return 0


def add_check_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "check",
        help="per-element invariance/equivariance error of a model (the CLI face of symwrap.check)",
        description="Measure how far a model is from invariance (or equivariance) to a group, element by element.",
    )
    _common_model_options(parser)
    add = parser.add_argument
    add("--group", required=True, help="group name (rot90, d4, flip, c8, ...)")
    add("--output", choices=["invariant", "equivariant"], default="invariant")
    add("--method", default=None, help="check the model wrapped with this method (e.g. group_averaging)")
    add("--data", default=None, help="images to check on: digits, an image folder or a saved dataset")
    add("--input-shape", default=None, help="without --data: random inputs of shape C,H,W")
    add("--images", type=int, default=16, help="number of inputs")
    add("--output-dir", default="symwrap-check", help="where check.json and errors.png go")
    add("--no-plot", dest="plot", action="store_false")
    parser.set_defaults(func=_report_errors("check", _cmd_check))


def _cmd_check(args: argparse.Namespace) -> int:
    from symwrap.evaluation.check_command import CheckOptions, run_check

    fields = {f.name for f in dataclasses.fields(CheckOptions)}
    run_check(CheckOptions(**{k: v for k, v in vars(args).items() if k in fields}))
    return 0
