"""``symwrap eval``: accuracy of the plain model and each method under every corruption, side by side.

One pass over the data: each batch is corrupted by every group element (and a seeded random element per
image) and every method's model classifies every corrupted copy; the integer counts of correct predictions
are summed (over the ranks of a ``torchrun`` run too) and checkpointed atomically, so ``--resume`` goes on
after the last finished batch. Rank 0 prints the table and writes ``results.json`` and the plot.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from symwrap.errors import ConfigError, InputLayoutError
from symwrap.evaluation.corruptions import Corruption, build_corruptions
from symwrap.evaluation.data import DefaultPreprocess, EvalData, collate, open_data
from symwrap.evaluation.distributed import DistributedContext, ShardSampler, init_distributed, steps_per_rank
from symwrap.evaluation.loading import LoadedModel
from symwrap.evaluation.methods import build_methods, parse_methods
from symwrap.evaluation.precision import autocast, check_precision
from symwrap.evaluation.report import format_table, write_plot
from symwrap.evaluation.specs import load_model
from symwrap.evaluation.state import atomic_write_json, check_output_dir, load_progress, save_progress
from symwrap.limits import check_samples
from symwrap.memory import parse_memory

__all__ = ["RESULT_FIELDS", "EvalConfig", "logits_of", "parse_pretrained", "run_eval"]

logger = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """Every option of ``symwrap eval`` (the CLI flags, same names)."""

    model: str = "digits"
    pretrained: str | None = None
    data: str = "digits"
    split: str | None = None
    group: str = "rot90"
    methods: str | None = None
    limit: int | None = None
    batch_size: int = 64
    chunk_size: str = "auto"
    max_memory: str | None = None
    device: str = "cpu"
    precision: str = "fp32"
    seed: int = 0
    output_dir: str = "symwrap-eval"
    resume: bool = False
    workers: int = 0
    class_names: str | None = None
    templates: str | None = None
    image_mode: str = "RGB"
    image_column: str | None = None
    label_column: str | None = None
    samples: int = 8
    probe_size: int = 16
    checkpoint_every: int = 1
    plot: bool = True
    progress: bool = True


#: The options that decide the numbers: a ``--resume`` checkpoint must match all of them (plus the world size).
#: ``device``, ``chunk_size``, ``max_memory``, ``workers``, ``output_dir`` and ``checkpoint_every`` may change between
#: runs.
RESULT_FIELDS = (
    "model",
    "pretrained",
    "data",
    "split",
    "group",
    "methods",
    "limit",
    "batch_size",
    "precision",
    "seed",
    "class_names",
    "templates",
    "image_mode",
    "image_column",
    "label_column",
    "samples",
)


def parse_pretrained(text: str | None) -> bool | str | None:
    """``--pretrained``: ``None`` (the loader's default), ``true``/``false``/``none``, a tag or a local path."""
    if text is None:
        return None
    lowered = text.strip().lower()
    if lowered in {"true", "yes", "1"}:
        return True
    if lowered in {"false", "no", "0", "none", "random"}:
        return False
    return text


def _parse_list(text: str | None, option: str) -> list[str] | None:
    """``"a,b,c"`` or ``"@file.txt"`` (one entry a line) -> a list."""
    if text is None:
        return None
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise ConfigError(f"{option} {text!r}: file {str(path)!r} does not exist")
        items = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        items = [item.strip() for item in text.split("|" if option == "--templates" else ",") if item.strip()]
    if not items:
        raise ConfigError(f"{option} is empty")
    return items


def logits_of(output: Any) -> Tensor:
    """The class scores ``(B, K)`` in a model output (a tensor, ``.logits``, ``["logits"]``, or the first item)."""
    output = getattr(output, "output", output) if type(output).__name__ == "SymmetrizedOutput" else output
    if isinstance(output, Tensor):
        return output
    if hasattr(output, "logits") and isinstance(output.logits, Tensor):
        return output.logits
    if isinstance(output, dict) and isinstance(output.get("logits"), Tensor):
        return output["logits"]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise ConfigError(f"cannot find class scores in a model output of type {type(output).__name__}")


def _call(model: nn.Module, images: Tensor, loaded: LoadedModel) -> Tensor:
    name = loaded.wrap_options.get("input")
    if isinstance(name, str) and not name.isdigit():
        return logits_of(model(**{name: images}))
    return logits_of(model(images))


def _device(config: EvalConfig, ctx: DistributedContext) -> torch.device:
    try:
        device = torch.device(config.device)
    except RuntimeError:
        raise ConfigError(
            f"--device {config.device!r} is not a device torch knows; use cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {config.device}: CUDA is not available here; use --device cpu")
        if ctx.world_size > 1 and device.index is None:
            device = torch.device("cuda", ctx.local_rank)
    return device


def _check_options(config: EvalConfig) -> None:
    for name in ("batch_size", "samples", "probe_size", "checkpoint_every"):
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(config, name)}")
    if config.limit is not None and config.limit < 1:
        raise ConfigError(f"--limit must be ≥ 1, got {config.limit}")
    if config.workers < 0:
        raise ConfigError(f"--workers must be ≥ 0, got {config.workers}")
    check_samples(config.samples, "--samples")


def _chunk_size(text: str) -> int | str | None:
    if text in {"auto", "none"}:
        return None if text == "none" else "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"--chunk-size {text!r}: use a positive int, 'auto' or 'none'")
    return value


def _max_memory(text: str | None, chunk_size: int | str | None) -> int | None:
    size = parse_memory(text, "--max-memory")
    if size is not None and chunk_size != "auto":
        raise ConfigError(
            f"--max-memory {text!r} caps the chunks that --chunk-size auto measures, but --chunk-size is "
            f"{'none' if chunk_size is None else chunk_size}; use --chunk-size auto with --max-memory, or drop it"
        )
    return size


def _check_class_names(given: list[str] | None, loaded: LoadedModel, data: EvalData) -> None:
    expected = data.class_names
    for source, names in (("--class-names", given), ("the model's class names", loaded.class_names)):
        if names is not None and expected is not None and len(names) != len(expected):
            raise ConfigError(
                f"{source}: {len(names)} names, but the dataset {data.description} has {len(expected)} classes "
                f"({', '.join(expected[:5])}{', ...' if len(expected) > 5 else ''}). Give one name per class, "
                "in the dataset's label order."
            )


def _versions() -> dict[str, str]:
    import numpy

    import symwrap

    versions = {
        "symwrap": symwrap.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for name in ("timm", "transformers", "open_clip", "datasets", "PIL"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = str(getattr(module, "__version__", "?"))
    return versions


def _probe(data: EvalData, size: int) -> Tensor | None:
    """The first ``size`` readable images of the first readable image's shape (for the invariance check).

    That shape is the run's image shape: images of another shape are skipped and counted (see :func:`collate`).
    """
    images: list[Tensor] = []
    for index in range(len(data)):
        _, image, _ = data.dataset[index]
        if image is not None and (not images or image.shape == images[0].shape):
            images.append(image)
        if len(images) == size:
            break
    return torch.stack(images) if images else None


def _covered(step: int, size: int, world_size: int, batch_size: int) -> int:
    """Images held by the first ``step`` batches of every rank (shards ``rank, rank + world_size, ...``)."""
    return sum(min(step * batch_size, len(range(rank, size, world_size))) for rank in range(world_size))


def _invariance_errors(
    models: dict[str, nn.Module], loaded: LoadedModel, group: Any, probe: Tensor | None, config: EvalConfig, device
) -> dict[str, float | None]:
    import symwrap

    if probe is None:
        return dict.fromkeys(models)
    options = {k: v for k, v in loaded.wrap_options.items() if k in {"input", "select"}}
    errors: dict[str, float | None] = {}
    with autocast(config.precision, device):
        for label, model in models.items():
            result = symwrap.check(model, group, probe.to(device), samples=config.samples, seed=config.seed, **options)
            errors[label] = result.max_error
    return errors


def run_eval(config: EvalConfig) -> dict[str, Any] | None:
    """Run the evaluation; returns the results (rank 0) or ``None`` (other ranks). Prints the table on rank 0."""
    import symwrap

    _check_options(config)
    output_files = ("results.json", "progress.json") + (("accuracy.png",) if config.plot else ())
    check_output_dir(Path(config.output_dir), output_files)  # before any work: a run never ends unable to write
    ctx = init_distributed(config.device)
    try:
        return _run(config, ctx, symwrap)
    finally:
        ctx.close()


def _run(config: EvalConfig, ctx: DistributedContext, symwrap: Any) -> dict[str, Any] | None:
    started = time.perf_counter()
    device = _device(config, ctx)
    check_precision(config.precision, device)
    chunk_size = _chunk_size(config.chunk_size)
    max_memory = _max_memory(config.max_memory, chunk_size)
    class_names = _parse_list(config.class_names, "--class-names")
    templates = _parse_list(config.templates, "--templates")
    methods, defaults = parse_methods(
        config.methods, model=config.model, group=config.group, pretrained=config.pretrained
    )
    data = open_data(
        config.data,
        split=config.split,
        image_column=config.image_column,
        label_column=config.label_column,
    )
    loaded = load_model(
        config.model,
        pretrained=parse_pretrained(config.pretrained),
        device=str(device),
        implicit={"class_names": data.class_names},  # zero-shot loaders that name class_names get the dataset's
        class_names=class_names,
        templates=templates,
    )
    data.use_preprocess(loaded.preprocess or DefaultPreprocess(config.image_mode, loaded.input_size))
    _check_class_names(class_names, loaded, data)
    group = symwrap.get_group(config.group)
    action = symwrap.get_action(None, group)
    probe = _probe(data, config.probe_size)
    if probe is not None:  # groups sized by the data (shift, perm) are resolved for the input shape
        group = group.for_input(tuple(probe.shape), action)
    _check_fits(loaded, probe, config, data, device)
    size = min(len(data), config.limit) if config.limit else len(data)
    corruptions = build_corruptions(group, size, seed=config.seed, samples=config.samples)
    models, skipped_methods = build_methods(
        methods, defaults, loaded, group, chunk_size=chunk_size, max_memory=max_memory
    )
    labels = list(models)
    for reason in skipped_methods.items():
        logger.info("method %s skipped: %s", *reason)

    fingerprint = {name: getattr(config, name) for name in RESULT_FIELDS}
    fingerprint.update(world_size=ctx.world_size, size=size, compared=labels, corruptions=[c.name for c in corruptions])
    output_dir = Path(config.output_dir)
    counts = torch.zeros(len(labels) * len(corruptions) + 2, dtype=torch.int64)
    start_step = 0
    total_steps = steps_per_rank(size, ctx.world_size, config.batch_size)
    if config.resume:
        saved = (
            load_progress(
                output_dir,
                fingerprint,
                total_steps=total_steps,
                count_slots=len(counts),
                covered=lambda step: _covered(step, size, ctx.world_size, config.batch_size),
            )
            if ctx.is_main
            else None
        )
        step_tensor = torch.tensor([saved[0] if saved else 0], dtype=torch.int64)
        start_step = int(ctx.all_reduce_sum(step_tensor)[0])  # rank 0 holds the step, the others add 0
        if saved and ctx.is_main:
            counts = torch.tensor(saved[1], dtype=torch.int64)
        if ctx.is_main:
            _say_resume(output_dir, start_step, total_steps)

    errors = _invariance_errors(models, loaded, group, probe, config, device)
    seconds = dict.fromkeys(labels, 0.0)
    sampler = ShardSampler(size, ctx.rank, ctx.world_size, start=start_step * config.batch_size)
    subset = Subset(data.dataset, range(size)) if size < len(data) else data.dataset
    shape = None if probe is None else tuple(probe.shape[1:])
    loader = DataLoader(
        subset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.workers,
        collate_fn=functools.partial(collate, shape=shape),  # other shapes are skipped and counted, never stacked
    )
    batches = iter(loader)
    progress = _progress(total_steps, start_step, ctx.is_main and config.progress)
    classes = len(data.class_names) if data.class_names else None
    with torch.no_grad():
        for step in range(start_step, total_steps):
            batch = next(batches, None)
            if batch is not None and len(batch.labels):
                _count_batch(
                    batch, models, corruptions, group, action, loaded, config, device, counts, seconds, classes
                )
            if batch is not None:
                counts[-1] += batch.skipped
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == total_steps:
                totals = ctx.all_reduce_sum(counts)
                if ctx.is_main:
                    save_progress(output_dir, fingerprint, step + 1, totals.tolist())
            progress.update(1)
    progress.close()
    totals = ctx.all_reduce_sum(counts)
    timing = ctx.all_reduce_sum(torch.tensor([seconds[m] for m in labels], dtype=torch.float64))
    if not ctx.is_main:
        return None
    results = _results(config, ctx, data, size, labels, corruptions, totals, errors, skipped_methods)
    results["trained"] = {m.label: m.directory for m in methods if m.directory and m.label in labels}
    results["group_exact"] = bool(group.exact)
    results["seconds"] = {
        "total": time.perf_counter() - started,
        "per_method": dict(zip(labels, timing.tolist())),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output_dir / "results.json", results)
    if config.plot:
        write_plot(output_dir / "accuracy.png", results)
    _print_report(results, output_dir, config)
    return results


def _check_fits(loaded: LoadedModel, probe: Tensor | None, config: EvalConfig, data: EvalData, device) -> None:
    """Run the plain model on one image before the run, so data the model cannot take fails in a second."""
    if probe is None:
        return
    image = probe[:1].to(device)
    try:
        with torch.no_grad(), autocast(config.precision, device):
            _call(loaded.model, image, loaded)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        channels, height, width = (*image.shape[1:], None, None, None)[:3]
        raise InputLayoutError(
            f"model {config.model!r} does not take the images of {data.description}: one image of shape "
            f"{tuple(image.shape)} (channels {channels}, size {height}×{width}) failed with: {reason}. Give data "
            f"that fits the model (--data; --image-mode is {config.image_mode}: pass --image-mode L for a model of "
            "1-channel images, like the default digits model, or RGB for 3 channels), a model made for this data, "
            "or a model spec whose loader brings its own preprocessing."
        ) from exc


def _say_resume(output_dir: Path, start_step: int, total_steps: int) -> None:
    """``--resume``: one line saying what is resumed, or that nothing is."""
    from symwrap.evaluation.state import PROGRESS_FILE

    checkpoint = output_dir / PROGRESS_FILE
    if start_step:
        done = "all batches already counted" if start_step >= total_steps else f"going on with batch {start_step + 1}"
        print(
            f"symwrap eval: resuming after batch {start_step} of {total_steps} from {checkpoint} ({done})",
            file=sys.stderr,
        )
    else:
        print(f"symwrap eval: --resume: no checkpoint at {checkpoint}; starting from the first batch", file=sys.stderr)


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="symwrap eval", unit="batch", file=sys.stderr)


def _count_batch(
    batch: Any,
    models: dict[str, nn.Module],
    corruptions: list[Corruption],
    group: Any,
    action: Any,
    loaded: LoadedModel,
    config: EvalConfig,
    device: torch.device,
    counts: Tensor,
    seconds: dict[str, float],
    classes: int | None,
) -> None:
    images, labels = batch.images.to(device), batch.labels.to(device)
    columns = len(corruptions)
    for c, corruption in enumerate(corruptions):
        moved = corruption.apply(images, batch.indices, group, action)
        for m, (label, model) in enumerate(models.items()):
            start = time.perf_counter()
            with autocast(config.precision, device):
                logits = _call(model, moved, loaded)
            if classes is not None and logits.shape[-1] < classes:
                raise ConfigError(
                    f"model {config.model!r} outputs {logits.shape[-1]} class scores, but the data has {classes} "
                    "classes. Pick a model trained on these classes, or give --class-names for a zero-shot model."
                )
            correct = int((logits.argmax(dim=-1) == labels).sum())
            seconds[label] += time.perf_counter() - start
            counts[m * columns + c] += correct
    counts[-2] += len(labels)


def _results(
    config: EvalConfig,
    ctx: DistributedContext,
    data: EvalData,
    size: int,
    labels: list[str],
    corruptions: list[Corruption],
    totals: Tensor,
    errors: dict[str, float | None],
    skipped_methods: dict[str, str],
) -> dict[str, Any]:
    columns = len(corruptions)
    evaluated, unreadable = int(totals[-2]), int(totals[-1])
    correct = {
        label: {c.name: int(totals[m * columns + i]) for i, c in enumerate(corruptions)}
        for m, label in enumerate(labels)
    }
    accuracy = {
        label: {name: (value / evaluated if evaluated else 0.0) for name, value in row.items()}
        for label, row in correct.items()
    }
    return {
        "config": dataclasses.asdict(config),
        "versions": _versions(),
        "seed": config.seed,
        "world_size": ctx.world_size,
        "data": data.description,
        "images": size,
        "evaluated": evaluated,
        "skipped_unreadable": unreadable,
        "corruptions": [c.name for c in corruptions],
        "angles": {c.name: c.angle for c in corruptions},
        "methods": labels,
        "methods_skipped": skipped_methods,
        "correct": correct,
        "accuracy": accuracy,
        "invariance_error": errors,
        "invariance_probe_images": config.probe_size,
    }


def _print_report(results: dict[str, Any], output_dir: Path, config: EvalConfig) -> None:
    print(
        f"symwrap eval: model {config.model}, {results['data']}, group {config.group}"
        + ("" if results.get("group_exact", True) else " (approximate)")
        + f", seed {config.seed}, "
        f"{results['evaluated']} images"
        + (f" ({results['skipped_unreadable']} unreadable files skipped)" if results["skipped_unreadable"] else "")
    )
    print(format_table(results))
    for name, reason in results["methods_skipped"].items():
        print(f"  ({name} {reason.splitlines()[0]})")
    print(f"inv. error: max |f(g·x) - f(x)| / max |f(x)| over the group on {config.probe_size} images (symwrap.check)")
    plot = f", {output_dir / 'accuracy.png'}" if config.plot else ""
    print(f"wrote {output_dir / 'results.json'}{plot}")
