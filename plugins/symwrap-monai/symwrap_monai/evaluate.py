"""Dice per group element: how a 3-D segmentation model and its symmetrized versions score on every moved volume.

For each element ``g`` of a volume group the volumes and their label maps are moved by ``g`` and each model
segments the moved volumes; its Dice against the moved labels is one column of the table. A model that is not
equivariant scores differently per element; a symmetrized one (``group_averaging``...) scores the same on every
element (exact equivariance), usually near the unwrapped model's mean. The data are made offline by
``monai.data.synthetic.create_test_image_3d`` (random spheres in noise).

Run ``symwrap-monai-eval --help`` (or ``python -m symwrap_monai.evaluate``).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import symwrap
from symwrap.errors import ConfigError
from symwrap.groups.base import FiniteGroup

__all__ = [
    "dice_per_class",
    "format_table",
    "main",
    "per_element_dice",
    "synthetic_volumes",
    "train_briefly",
    "write_plot",
]


def synthetic_volumes(
    count: int, size: Sequence[int] = (32, 32, 32), classes: int = 2, seed: int = 0, noise: float = 0.3
) -> tuple[Tensor, Tensor]:
    """``count`` noisy volumes of random spheres and their label maps (offline, deterministic per ``seed``).

    Args:
        count: Number of volumes.
        size: ``(D, H, W)``.
        classes: Label classes, background included (labels ``0 .. classes - 1``).
        seed: Seed of ``numpy.random.RandomState``.
        noise: Largest uniform noise added to the image.

    Returns:
        Images ``(count, 1, D, H, W)`` float32 and labels ``(count, D, H, W)`` int64.
    """
    from monai.data.synthetic import create_test_image_3d

    if classes < 2:
        raise ConfigError(f"invalid option 'classes': {classes!r}; segmentation needs at least 2 (background + one)")
    d, h, w = (int(s) for s in size)
    rad_max = max(2, (min(d, h, w) - 1) // 4)
    state = np.random.RandomState(seed)
    images, labels = [], []
    for _ in range(count):
        image, label = create_test_image_3d(
            d, h, w, num_objs=6, rad_max=rad_max, rad_min=1, noise_max=noise, num_seg_classes=classes - 1,
            random_state=state,
        )  # fmt: skip
        images.append(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)))
        labels.append(torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64)))
    return torch.stack(images)[:, None], torch.stack(labels)


def dice_per_class(prediction: Tensor, target: Tensor, classes: int) -> Tensor:
    """Dice ``2|P ∩ T| / (|P| + |T|)`` of each foreground class over the whole set ``(classes - 1,)``.

    Args:
        prediction: Predicted labels ``(N, D, H, W)`` int.
        target: True labels ``(N, D, H, W)`` int.
        classes: Number of classes, background (label 0) included and left out of the score.

    Returns:
        ``(classes - 1,)`` float64; a class absent from both prediction and target scores NaN.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
    scores = []
    for label in range(1, classes):
        p, t = prediction == label, target == label
        both = int((p & t).sum())
        total = int(p.sum()) + int(t.sum())
        scores.append(2 * both / total if total else math.nan)
    return torch.tensor(scores, dtype=torch.float64)


def train_briefly(
    model: nn.Module, steps: int, size: Sequence[int], classes: int, seed: int = 1, lr: float = 1e-2
) -> nn.Module:
    """``steps`` Adam steps of cross-entropy on fresh synthetic volumes (seed ``seed``, not the evaluation seed),
    so that the per-element table compares a model that segments something. Returns ``model`` in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        image, label = synthetic_volumes(2, size, classes, seed=seed * 100_003 + step)
        noise = 0.05 * torch.randn(image.shape, generator=generator)
        loss = nn.functional.cross_entropy(model(image + noise), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def per_element_dice(
    models: dict[str, nn.Module], group: FiniteGroup, images: Tensor, labels: Tensor, classes: int, batch_size: int = 1
) -> dict[str, list[float]]:
    """Mean foreground Dice of each model on the volumes moved by each element of ``group``.

    Args:
        models: Name -> model ``(B, 1, D, H, W) -> (B, classes, D, H, W)`` logits.
        group: A finite volume group (its default action moves the volumes and the labels).
        images: ``(N, 1, D, H, W)``.
        labels: ``(N, D, H, W)``.
        classes: Number of classes, background included.
        batch_size: Volumes per call.

    Returns:
        Name -> ``|G|`` Dice values, element order of ``group.elements()``.
    """
    action = group.default_action()
    elements = group.elements()
    count = images.shape[0]
    rows = torch.arange(count)
    results: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for element in elements:
            codes = element.expand(count, *element.shape)
            moved = action.apply(images, rows, codes, group)
            moved_labels = action.apply(labels[:, None], rows, codes, group)[:, 0]
            for name, model in models.items():
                predicted = torch.cat(
                    [model(moved[i : i + batch_size]).argmax(dim=1) for i in range(0, count, batch_size)]
                )
                results[name].append(float(np.nanmean(dice_per_class(predicted, moved_labels, classes).numpy())))
    return results


def format_table(results: dict[str, list[float]], group: FiniteGroup) -> str:
    """A Markdown table: one row per model, its Dice on each element, the spread (max - min) and the mean."""
    order = len(next(iter(results.values())))
    head = "| model | " + " | ".join(f"g{k}" for k in range(order)) + " | spread | mean |"
    rule = "|---" * (order + 3) + "|"
    lines = [f"Dice per element of {group.name} (element order of docs/volumes.md)", "", head, rule]
    for name, values in results.items():
        cells = " | ".join(f"{v:.4f}" for v in values)
        lines.append(f"| {name} | {cells} | {max(values) - min(values):.2e} | {float(np.mean(values)):.4f} |")
    return "\n".join(lines)


def write_plot(path: Path, results: dict[str, list[float]], group: FiniteGroup) -> None:
    """Dice per element, one line per model (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 0.25 * group.order() + 3), 3.2))
    for name, values in results.items():
        ax.plot(range(len(values)), values, marker="o", markersize=3, label=name)
    ax.set_xlabel(f"element of {group.name}")
    ax.set_ylabel("mean foreground Dice")
    ax.set_title("Dice per group element")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _parse_size(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split(",")]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or min(parts) < 6:
        raise ConfigError(f"invalid option '--size': {text!r}; use N (a cube) or D,H,W, each at least 6")
    return parts[0], parts[1], parts[2]


def _parse_chunk_size(text: str) -> int | str | None:
    if text in ("auto", "none"):
        return None if text == "none" else text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise ConfigError(f"invalid option '--chunk-size': {text!r}; use auto, none or a positive int")


def _parse_group_options(items: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"invalid option '--group-option': {item!r}; use key=value, e.g. plane=hw")
        options[key] = int(value) if value.isdigit() else value
    return options


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The command: build the model and the wrapped versions, score them per element, write the outputs."""
    from symwrap.evaluation.specs import load_model

    size = _parse_size(args.size)
    loaded = load_model(args.model, pretrained=args.pretrained, device="cpu")
    base = loaded.model
    torch.manual_seed(args.seed)
    if args.train_steps:
        base = train_briefly(base, args.train_steps, size, args.classes)
    group_options = _parse_group_options(args.group_option)
    group = symwrap.get_group(args.group, **group_options)
    if not isinstance(group, FiniteGroup):
        raise ConfigError(f"invalid option '--group': {args.group!r} is not a finite volume group; use flip3d or cube")
    images, labels = synthetic_volumes(args.volumes, size, args.classes, seed=args.seed)
    models: dict[str, nn.Module] = {}
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        if method == "none":
            models[method] = base
        else:
            models[method] = symwrap.wrap(
                base,
                args.group,
                method,
                output="equivariant",
                class_dim=1,
                chunk_size=_parse_chunk_size(args.chunk_size),
                group_options=group_options,
            ).eval()
    results = per_element_dice(models, group, images, labels, args.classes)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "model": args.model,
        "group": group.name,
        "size": list(size),
        "volumes": args.volumes,
        "classes": args.classes,
        "train_steps": args.train_steps,
        "seed": args.seed,
        "dice_per_element": results,
    }
    (output_dir / "results.json").write_text(json.dumps(summary, indent=2))
    table = format_table(results, group)
    (output_dir / "dice_per_element.md").write_text(table + "\n")
    if args.plot:
        write_plot(output_dir / "dice_per_element.png", results, group)
    print(table)
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symwrap-monai-eval",
        description="Dice of a 3-D segmentation model and its symmetrized versions on every element of a volume "
        "group, on synthetic volumes made offline (monai.data.synthetic.create_test_image_3d).",
    )
    parser.add_argument("--model", default="monai:UNet", help="model spec (monai:UNet?channels=8,16&strides=2...)")
    parser.add_argument("--pretrained", default=None, help="a local .safetensors state dict (default: random init)")
    parser.add_argument("--group", default="flip3d", help="flip3d, cube or cube_full")
    parser.add_argument("--group-option", action="append", default=[], help="group option key=value (plane=hw)")
    parser.add_argument("--methods", default="none,group_averaging", help="comma-separated; 'none' is the model as is")
    parser.add_argument("--volumes", type=int, default=4, help="number of synthetic volumes")
    parser.add_argument("--size", default="32", help="volume size N or D,H,W")
    parser.add_argument("--classes", type=int, default=2, help="classes, background included")
    parser.add_argument("--train-steps", type=int, default=0, help="Adam steps on other synthetic volumes first")
    parser.add_argument("--chunk-size", default="auto", help="rows per forward of the wrapped models: auto, none, N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="symwrap-monai-eval", help="results.json, the table and the plot")
    parser.add_argument("--no-plot", dest="plot", action="store_false", help="skip dice_per_element.png")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``symwrap-monai-eval``."""
    args = build_parser().parse_args(argv)
    if args.volumes < 1:
        raise SystemExit("symwrap-monai-eval: error: --volumes must be at least 1")
    try:
        run(args)
    except ConfigError as error:
        raise SystemExit(f"symwrap-monai-eval: error: {error}") from error
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
