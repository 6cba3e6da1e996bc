"""The performance suite: every symwrap method against the |G|-forward limit, on CPU or CUDA.

For each model, precision (float32, bfloat16 / float16 autocast), compile setting and batch size B, one cell
times side by side, in interleaved rounds (each round runs every strategy once, the order rotated from round to
round, so drift and background load hit all alike; each sample of a fast strategy follows a few untimed calls of
it, so that it does not pay for the strategy before it; medians are reported):

* ``limit_stack``  one plain forward on the |G|·B copies, made beforehand (no transform cost),
* ``limit_loop``   |G| plain forwards of B rows each, on copies made beforehand,
* ``loop``         the straightforward per-element loop: transform, forward, accumulate (as ttach does),
* ``stacked``      every copy concatenated into one forward, then the mean (as the papers' CLIP code does),
* ``floor``        (``d4`` image models) group averaging by hand with the fewest kernels: one precomputed-index
  ``index_select`` for all copies, the forward, one mean — what any implementation pays beyond the limit,
* ``floor_<method>`` the other methods by hand the same way, with their own work that the limit leaves out (the
  PCA frame or pose, equizero's proxy, the λ-net, the learned canonicalizer; ``suite_floors.py``). Each cell also
  prints symwrap ÷ its method's floor: what symwrap itself adds,
* ``plain``        one plain forward of B rows (the reference for canonicalization),
* symwrap ``group_averaging``, ``equizero``, ``lambda_equitune``, ``frame_averaging`` (|G| passes each; ``o3``
  frames for the point-cloud model) and ``canonicalization`` (one pass plus the canonicalizer).

The limit is min(limit_stack, limit_loop). Ratios: each |G|-pass method ÷ limit (CPU target ≤ 1.10, GPU ≤ 1.05 for
B ≥ 8) and canonicalization ÷ plain (target ≤ 1.3). symwrap runs with the default ``chunk_size="auto"``, tuned by
the real calls its tuner explores with before a final choice, none of them timed (the first one is reported as
``first call``).

    python benchmarks/bench_suite.py --quick                               # smoke run, small models
    python benchmarks/bench_suite.py --models resnet50,vit_b16 --batches 1,8 --json bench-results/suite.json
    python benchmarks/bench_suite.py --device cuda --precisions fp32,bf16,fp16 --compile off,on

``--compile on`` runs the baselines through ``torch.compile(model)`` and symwrap through ``torch.compile(wrapped)``
(default inductor backend), each after its compiling first calls.
Models: ``digits_cnn`` (symwrap's shipped digits CNN, 8×8),
``point_mlp`` (a PointNet-like MLP on 1024 points, ``o3``), ``resnet50`` and ``vit_b16`` (timm, random init, 224²),
``clip_b32`` (open_clip ViT-B-32 image tower, random init, 224²). Image models use ``d4`` (|G| = 8).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import symwrap
from symwrap.evaluation.precision import autocast  # the --precision autocast of symwrap eval

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite_floors
from bench_chunking import _sync, d4_copies, keep_freed_memory, machine_info  # the same D4 copies, allocator, machine
from bench_frames import PointNetLike

PASS_METHODS = ("group_averaging", "equizero", "lambda_equitune", "frame_averaging")
TARGET_CPU = 1.10
TARGET_GPU = 1.05
CANON_TARGET = 1.3


# ---------------------------------------------------------------------------------------------- models
@dataclass
class Subject:
    """A benchmark model: how to build it, its inputs, its group, how to make the orbit copies naively."""

    name: str
    build: Callable[[], nn.Module]
    make_input: Callable[[int, torch.device], Tensor]
    group: str
    methods: dict[str, dict[str, Any]]  # method name -> wrap() options
    copies: Callable[[Tensor], list[Tensor]]  # the |G| (or frame) copies of a batch, each (B, ...)


def _timm(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False)

    return build


def _clip_image_tower() -> nn.Module:
    import open_clip

    return open_clip.create_model("ViT-B-32", pretrained=None).visual


def _digits_cnn() -> nn.Module:
    from symwrap.evaluation.digits import DigitsCNN

    return DigitsCNN()


def _images(channels: int, size: int) -> Callable[[int, torch.device], Tensor]:
    return lambda batch, device: torch.randn(batch, channels, size, size, device=device)


def _clouds(batch: int, device: torch.device) -> Tensor:
    # Anisotropic, skewed clouds: distinct principal axes (the PCA frame has exactly 8 elements) and a clear third
    # moment along each (a well-defined canonical pose). Symmetric clouds would make canonicalization warn about an
    # ambiguous pose on every call, and the suite would time the warning.
    return torch.randn(batch, 1024, 3, device=device).exp() * torch.tensor([3.0, 2.0, 1.0], device=device)


def pca_sign_copies(x: Tensor) -> list[Tensor]:
    """The 8 O(3) frame copies of clouds ``x`` ``(B, N, 3)`` the naive way: centre, PCA, every sign pattern."""
    centred = x - x.mean(dim=1, keepdim=True)
    covariance = (centred.transpose(1, 2) @ centred).float()  # eigh has no bfloat16/float16 kernels (autocast)
    _, vectors = torch.linalg.eigh(covariance)  # (B, 3, 3), batched
    vectors = vectors.to(centred.dtype)
    copies = []
    for signs in torch.cartesian_prod(*[torch.tensor([1.0, -1.0], device=x.device)] * 3):
        copies.append(centred @ (vectors * signs))
    return copies


def _image_methods(features: str | None, channels: int) -> dict[str, dict[str, Any]]:
    lam: dict[str, Any] = {"features": features} if features else {}
    return {
        "group_averaging": {},
        "equizero": {},
        "lambda_equitune": lam,
        "frame_averaging": {},  # on a finite group the frame is the whole group
        "canonicalization": {"in_channels": channels},
    }


def subjects() -> dict[str, Subject]:
    """The suite's models by name."""
    return {
        "digits_cnn": Subject("digits_cnn", _digits_cnn, _images(1, 8), "d4", _image_methods("features", 1), d4_copies),
        "point_mlp": Subject(
            "point_mlp",
            PointNetLike,
            _clouds,
            "o3",
            {"frame_averaging": {}, "canonicalization": {}},
            pca_sign_copies,
        ),
        "resnet50": Subject("resnet50", _timm("resnet50"), _images(3, 224), "d4", _image_methods(None, 3), d4_copies),
        "vit_b16": Subject(
            "vit_b16", _timm("vit_base_patch16_224"), _images(3, 224), "d4", _image_methods(None, 3), d4_copies
        ),
        "clip_b32": Subject(
            "clip_b32", _clip_image_tower, _images(3, 224), "d4", _image_methods("ln_post", 3), d4_copies
        ),
    }


# ---------------------------------------------------------------------------------------------- strategies
def mean_of(outputs: list[Tensor]) -> Tensor:
    return torch.stack([o.float() for o in outputs]).mean(0)


#: Keyword arguments of every ``torch.compile`` call (``--compile-mode``).
COMPILE_OPTIONS: dict[str, Any] = {}


def strategies(
    subject: Subject, base: nn.Module, x: Tensor, compiled: bool = False
) -> tuple[dict[str, Callable[[], Any]], dict[str, Any]]:
    """Every strategy of one cell as a zero-argument callable, and the symwrap models (for their chunk choice).

    With ``compiled``, the baselines call ``torch.compile(base)`` and each symwrap model is ``torch.compile(wrapped)``
    (the engine, the group action and the base model in one graph; the chunk tuner runs eagerly on the first call).
    """
    model = torch.compile(base, **COMPILE_OPTIONS) if compiled else base
    copies = [c.contiguous() for c in subject.copies(x)]
    stack = torch.cat(copies)
    fns: dict[str, Callable[[], Any]] = {
        "plain": lambda: model(x),
        "limit_stack": lambda: model(stack),
        "limit_loop": lambda: [model(c) for c in copies],
        "loop": lambda: mean_of([model(c) for c in subject.copies(x)]),
        "stacked": lambda: model(torch.cat(subject.copies(x))).reshape(len(copies), x.shape[0], -1).float().mean(0),
    }
    wrapped: dict[str, Any] = {}
    for method, options in subject.methods.items():
        torch.manual_seed(0)
        w = symwrap.wrap(base, subject.group, method, **options).eval()
        wrapped[method] = w
        run = torch.compile(w, **COMPILE_OPTIONS) if compiled else w
        fns[method] = lambda run=run: run(x)
    fns.update(floors(subject, base, model, x, wrapped, compiled))
    return fns, wrapped


def floors(
    subject: Subject, base: nn.Module, model: nn.Module, x: Tensor, wrapped: dict[str, Any], compiled: bool
) -> dict[str, Callable[[], Any]]:
    """The hand-written floor of each method (:mod:`suite_floors`): ``floor`` for group averaging (and finite frame
    averaging, the same computation), ``floor_<method>`` for the others; ``@loop`` marks a floor's per-element
    variant (the faster of the two counts, as for the limit)."""
    found: dict[str, Callable[[], Any]] = {}
    if subject.group == "d4" and x.ndim == 4:
        found["floor"] = suite_floors.d4_floor(model, x)
        found["floor_equizero"] = suite_floors.equizero_floor(model, x)
        lam = wrapped.get("lambda_equitune")
        if lam is not None and subject.name == "digits_cnn" and not compiled:  # its features/head split to call
            net = lambda lam=lam: lam.method.lambda_net  # noqa: E731 (built on the wrapped model's first call)
            found["floor_lambda_equitune"] = suite_floors.lambda_floor(
                base.get_submodule(lam.method.options.features), base.head, x, net
            )
        canon = wrapped.get("canonicalization")
        if canon is not None:
            found["floor_canonicalization"] = suite_floors.learned_canonicalization_floor(
                model, x, canon.method.canonicalizer
            )
    if subject.group == "o3":
        found["floor_frame_averaging"] = suite_floors.pca_frame_floor(model, x, loop=False)
        found["floor_frame_averaging@loop"] = suite_floors.pca_frame_floor(model, x, loop=True)
        found["floor_canonicalization"] = suite_floors.pca_pose_floor(model, x)
    return found


def floor_of(method: str, median_s: dict[str, float]) -> float | None:
    """The floor's seconds per call for ``method`` (the faster of its variants), or ``None`` when it has none."""
    names = ["floor"] if method in ("group_averaging", "frame_averaging") and "floor" in median_s else []
    names += [n for n in median_s if n == f"floor_{method}" or n.startswith(f"floor_{method}@")]
    return min((median_s[n] for n in names), default=None)


def _settled(w: Any) -> bool:
    """Whether a wrapped model has a final chunk choice for its shape (or its chunk size is not "auto")."""
    engine = getattr(w, "engine", None)
    if engine is None or engine.chunk_size != "auto":
        return True
    return bool(engine.tuner.cache)


def _chunk_choice(w: Any) -> int | None:
    cache = getattr(w.engine.tuner, "cache", {})
    return next(iter(cache.values())) if len(cache) == 1 else None


def timed(fn: Callable[[], Any], device: torch.device, calls: int = 1) -> float:
    """Seconds per call of ``calls`` back-to-back calls of ``fn``."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / calls


@dataclass
class Cell:
    """One (model, precision, compile, B) measurement: median seconds per strategy and the ratios."""

    model: str
    precision: str
    compiled: bool
    batch: int
    group: str
    copies: int
    rounds: int = 0
    calls_per_sample: int = 1
    median_s: dict[str, float] = field(default_factory=dict)
    spread_s: dict[str, tuple[float, float]] = field(default_factory=dict)
    first_call_s: dict[str, float] = field(default_factory=dict)
    chunk: dict[str, int | None] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    over_floor: dict[str, float] = field(default_factory=dict)  # symwrap ÷ its method's hand-written floor
    errors: dict[str, str] = field(default_factory=dict)


def run_cell(
    subject: Subject,
    model: nn.Module,
    batch: int,
    precision: str,
    compiled: bool,
    device: torch.device,
    max_rounds: int,
    min_rounds: int,
    budget_s: float,
    only: set[str] | None = None,
    sample_s: float = 0.02,
) -> Cell:
    """Time one cell; ``only`` keeps just these strategies (the limit's two are always kept)."""
    torch.manual_seed(1)
    x = subject.make_input(batch, device)
    cell = Cell(subject.name, precision, compiled, batch, subject.group, len(subject.copies(x[:1])))
    fns, wrapped = strategies(subject, model, x, compiled)
    if only is not None:  # the limit's two strategies and the floors of the kept methods stay
        keep = only | {"limit_stack", "limit_loop"}
        keep |= {n for n in fns if n.startswith("floor") and any(floor_of(m, {n: 0.0}) is not None for m in only)}
        fns = {n: f for n, f in fns.items() if n in keep}
        wrapped = {n: w for n, w in wrapped.items() if n in keep}
    with torch.no_grad(), autocast(precision, device):
        for name in list(fns):  # first calls: compile, the chunk tuner's measurement, allocator warm-up
            try:
                cell.first_call_s[name] = timed(fns[name], device)
                if name in wrapped:  # the calls chunk_size="auto" explores with, up to a final choice (≤ 30)
                    for _ in range(30):
                        timed(fns[name], device)
                        if _settled(wrapped[name]):
                            break
                    timed(fns[name], device)  # one more warm call: the chosen chunk's own first run
            except Exception as exc:
                cell.errors[name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
                traceback.print_exc(limit=2, file=sys.stderr)
                del fns[name]
        for name, w in wrapped.items():
            cell.chunk[name] = _chunk_choice(w)
        warm = {name: timed(fn, device) for name, fn in fns.items()}  # one round, also a warm-up
        # A sample of a sub-millisecond cell is several back-to-back calls (the same number for every strategy of
        # the cell), so that it lasts about `sample_s`: one call alone, between other strategies' calls, measures
        # timer and cold-cache noise more than the strategy.
        calls = max(1, int(sample_s / max(min(warm.values()), 1e-9)))
        per_round = sum(warm.values()) * calls
        rounds = int(max(min_rounds, min(max_rounds, budget_s // max(per_round, 1e-9))))
        samples: dict[str, list[float]] = {n: [] for n in fns}
        names = list(fns)
        # Before each sample, a sub-millisecond strategy runs untimed for about a quarter of a sample: a strategy
        # timed right after a heavy one (the |G|·B stack) runs slower for a few milliseconds (point MLP, B = 1:
        # ~8% over 22 calls, ~0% after 6 untimed calls), and the rotation keeps each strategy's neighbour.
        settle = {name: int(sample_s / 4 / max(seconds, 1e-9)) for name, seconds in warm.items()}
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                for _ in range(settle[name]):
                    fns[name]()
                samples[name].append(timed(fns[name], device, calls))
    cell.rounds, cell.calls_per_sample = rounds, calls
    cell.median_s = {n: statistics.median(s) for n, s in samples.items()}
    cell.spread_s = {n: (min(s), max(s)) for n, s in samples.items()}
    med = cell.median_s
    if "limit_stack" in med and "limit_loop" in med:
        limit = min(med["limit_stack"], med["limit_loop"])
        for name in (*PASS_METHODS, "loop", "stacked", "floor"):
            if name in med:
                cell.ratios[name] = med[name] / limit
    if "canonicalization" in med and "plain" in med:
        cell.ratios["canonicalization"] = med["canonicalization"] / med["plain"]
    for method in (*PASS_METHODS, "canonicalization"):
        floor = floor_of(method, med)
        if floor is not None and method in med:
            cell.over_floor[method] = med[method] / floor
    return cell


# ---------------------------------------------------------------------------------------------- output
COLUMNS = ("limit", "loop", "stacked", "floor", *PASS_METHODS, "canonicalization")
SHORT = {
    "group_averaging": "GA",
    "equizero": "equizero",
    "lambda_equitune": "λ-equitune",
    "frame_averaging": "FA",
    "canonicalization": "canon",
}


def print_cell(cell: Cell, target: float) -> None:
    med = cell.median_s
    limit = min(med.get("limit_stack", float("inf")), med.get("limit_loop", float("inf")))
    which = "stack" if med.get("limit_stack", float("inf")) <= med.get("limit_loop", float("inf")) else "loop"
    parts = [
        f"{cell.model:<10} {cell.precision:<4} {'yes' if cell.compiled else 'no':<4} {cell.batch:>3} {cell.rounds:>3}"
    ]
    parts.append(f"{limit * 1e3:>9.1f} ({which:<5})")
    for name in COLUMNS[1:]:
        if name in cell.ratios:
            mark = ""
            if name in PASS_METHODS and cell.ratios[name] > target:
                mark = "!"
            if name == "canonicalization" and cell.ratios[name] > CANON_TARGET:
                mark = "!"
            chunk = cell.chunk.get(name)
            parts.append(f"{cell.ratios[name]:>6.2f}{mark:<1}{'' if chunk is None else f'/{chunk}':<5}")
        elif name in cell.errors:
            parts.append(f"{'error':>12}")
        else:
            parts.append(f"{'-':>12}")
    print(" ".join(parts), flush=True)
    if cell.over_floor:
        shown = "  ".join(f"{SHORT[m]} {r:.2f}" for m, r in cell.over_floor.items())
        print(f"{'':<24}symwrap ÷ hand-written floor: {shown}", flush=True)


def print_header() -> None:
    head = f"{'model':<10} {'prec':<4} {'comp':<4} {'B':>3} {'n':>3} {'limit ms':>17}"
    names = ["loop", "stacked", "floor", "GA", "equizero", "λ-equi", "FA", "canon"]
    print(head + " " + " ".join(f"{n:>12}" for n in names))
    print(
        "(limit = min(one forward of |G|·B rows, |G| forwards of B rows) in ms, and which; other columns: ratio to the "
        "limit [canon: to one plain forward] / rows per chunk chosen by chunk_size='auto'; ! = over target)"
    )


def markdown(paths: list[Path], hide: frozenset[str] = frozenset()) -> str:
    """The README table of the cells stored in JSON files written by ``--json`` (``hide``: strategies shown as
    "–", e.g. a column superseded by a later run)."""
    head = ["model", "precision", "compiled", "B", "rounds", "limit ms (which)", "loop", "stacked", "floor"]
    head += [SHORT[m] for m in PASS_METHODS] + ["canon ÷ plain"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for path in paths:
        payload = json.loads(path.read_text())
        mode = payload["machine"].get("compile_mode", "default")
        compiled = "yes" if mode == "default" else f"yes ({mode})"
        for c in payload["cells"]:
            med, ratios = c["median_s"], c["ratios"]
            stack, loop = med.get("limit_stack", math.inf), med.get("limit_loop", math.inf)
            row = [c["model"], c["precision"], compiled if c["compiled"] else "no", str(c["batch"]), str(c["rounds"])]
            limit_ms = min(stack, loop) * 1e3
            shown = f"{limit_ms:.0f}" if limit_ms >= 100 else f"{limit_ms:.3g}"
            row.append(f"{shown} ({'stack' if stack <= loop else 'loop'})")
            for name in ("loop", "stacked", "floor", *PASS_METHODS, "canonicalization"):
                if name in ratios and name not in hide:
                    chunk = c["chunk"].get(name)
                    row.append(f"{ratios[name]:.2f}" + ("" if chunk is None else f" /{chunk}"))
                else:
                    row.append("error" if name in c["errors"] else "–")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + floor_markdown(paths)


def floor_markdown(paths: list[Path]) -> str:
    """The table of symwrap ÷ its method's hand-written floor, for the cells that measured floors (else "")."""
    methods = (*PASS_METHODS, "canonicalization")
    head = ["model", "precision", "compiled", "B"] + [SHORT[m] for m in methods]
    lines = ["", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for path in paths:
        for c in json.loads(path.read_text())["cells"]:
            over = c.get("over_floor") or {}
            if over:
                row = [c["model"], c["precision"], "yes" if c["compiled"] else "no", str(c["batch"])]
                lines.append("| " + " | ".join(row + [f"{over[m]:.2f}" if m in over else "–" for m in methods]) + " |")
    return "\n".join(lines) if len(lines) > 4 else ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", default="digits_cnn,point_mlp,resnet50,vit_b16,clip_b32")
    p.add_argument("--batches", default="1,8,64")
    p.add_argument("--precisions", default="fp32,bf16,fp16")
    p.add_argument(
        "--compile",
        default="off",
        help="comma list of off,on (on: torch.compile of the model and of each wrapped model)",
    )
    p.add_argument(
        "--strategies",
        default=None,
        help="comma list of strategies to time besides the limit (default: all), e.g. group_averaging,plain",
    )
    p.add_argument("--rounds", type=int, default=7, help="at most this many timed rounds per cell")
    p.add_argument("--min-rounds", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=60.0, help="timed seconds per cell (rounds shrink to fit)")
    p.add_argument(
        "--sample-ms",
        type=float,
        default=20.0,
        help="a timed sample repeats the call back to back until it lasts about this long (fast cells)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: digits_cnn and point_mlp, B=1,8, fp32")
    p.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile mode for --compile on, e.g. reduce-overhead (CUDA graphs) or max-autotune",
    )
    p.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's allocator as is (by default it is told to keep freed memory, see bench_chunking.py)",
    )
    p.add_argument("--json", type=Path, default=None, help="write the cells and machine info to this JSON file")
    p.add_argument(
        "--markdown", type=Path, nargs="+", default=None, help="print the table of these JSON files, run nothing"
    )
    p.add_argument("--hide", default=None, help="with --markdown: strategies to show as '–' (comma list)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.markdown:
        print(markdown(args.markdown, frozenset(args.hide.split(",")) if args.hide else frozenset()))
        return 0
    if args.quick:
        args.models, args.batches, args.precisions, args.rounds, args.budget_s = (
            "digits_cnn,point_mlp",
            "1,8",
            "fp32",
            3,
            5,
        )
    device = torch.device(args.device)
    if args.compile_mode:
        COMPILE_OPTIONS["mode"] = args.compile_mode
    target = TARGET_GPU if device.type == "cuda" else TARGET_CPU
    info = machine_info(device)
    info["compile_mode"] = args.compile_mode or "default"
    info["malloc_keep"] = False if args.default_malloc or device.type != "cpu" else keep_freed_memory()
    print(
        f"symwrap {info['symwrap']}, torch {info['torch']}, {info['device_name']} ({device}), "
        f"{info['cpu_count']} CPUs, {info['torch_threads']} torch threads, "
        f"glibc keeps freed memory: {info['malloc_keep']}; "
        f"target ratio ≤ {target:.2f} (|G|-pass methods), canon ≤ {CANON_TARGET}"
    )
    print_header()
    table = subjects()
    cells: list[Cell] = []
    started = time.perf_counter()
    for name in args.models.split(","):
        subject = table[name]
        for compiled in [c == "on" for c in args.compile.split(",")]:
            torch.manual_seed(0)
            model = subject.build().eval().to(device)
            torch._dynamo.reset()
            # Every wrapped model (one per method) and every batch size is a separate compiled entry of the same
            # `forward` code objects; dynamo's default of 8 entries per code object would send later cells to eager.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            for precision in args.precisions.split(","):
                for batch in (int(b) for b in args.batches.split(",")):
                    cell = run_cell(
                        subject,
                        model,
                        batch,
                        precision,
                        compiled,
                        device,
                        args.rounds,
                        args.min_rounds,
                        args.budget_s,
                        set(args.strategies.split(",")) if args.strategies else None,
                        args.sample_ms / 1000,
                    )
                    cells.append(cell)
                    print_cell(cell, target)
                    if args.json:
                        _write(args.json, info, cells, time.perf_counter() - started)
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


def _write(path: Path, info: dict[str, Any], cells: list[Cell], seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": info, "seconds": seconds, "cells": [asdict(c) for c in cells]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)


if __name__ == "__main__":
    raise SystemExit(main())
