"""Graph breaks of wrapped plugin backbones under ``torch.compile``, split into symwrap's and the backbone's.

For each model (random init, nothing downloaded) this traces the plain model and ``symwrap.wrap(model, "d4")``
(``group_averaging``, chunk size already known) with ``torch._dynamo.explain`` and prints the number of graphs
and breaks, then every break with where it happened: ``symwrap`` (``symwrap/`` or ``plugins/``) or ``backbone``
(the model's library, torch). Usage::

    python benchmarks/compile_breaks.py [--models timm hf open_clip] [--group d4] [--core]

``--core`` adds a table of every built-in method on a small CNN / point MLP.
"""

from __future__ import annotations

import argparse
import logging
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import symwrap

_REPO = Path(__file__).resolve().parents[1]
_SYMWRAP_DIRS = (str(_REPO / "symwrap"), str(_REPO / "plugins"))
_WHERE = re.compile(
    r"Graph break (?:\(user stack suppressed due to duplicate graph break\) )?in user code at (\S+):(\d+)"
)


@dataclass
class Break:
    """One graph break: the source location, its owner and the first line of the reason."""

    location: str
    owner: str
    reason: str


class _BreakLog(logging.Handler):
    """Collects dynamo's ``graph_breaks`` log records (the location and the reason of each break)."""

    def __init__(self) -> None:
        super().__init__()
        self.breaks: list[Break] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        where = _WHERE.search(message)
        if where is None:
            return
        path, line = where.group(1), where.group(2)
        owner = "symwrap" if path.startswith(_SYMWRAP_DIRS) else "backbone"
        reason = ""
        lines = message.splitlines()
        for i, text in enumerate(lines):
            if text.startswith("Graph Break Reason:"):
                # the reason's title is on the next non-empty line (the first line says what dynamo was doing)
                following = [t.strip() for t in lines[i + 1 : i + 4] if t.strip()]
                reason = following[0] if following else text
                break
        shown = path.replace(str(_REPO) + "/", "").split("site-packages/")[-1]
        self.breaks.append(Break(f"{shown}:{line}", owner, reason))


def explain(model: nn.Module, *args: torch.Tensor) -> tuple[int, int, list[Break]]:
    """``(graphs, breaks, details)`` of tracing ``model(*args)`` from a fresh dynamo state."""
    torch._dynamo.reset()
    handler = _BreakLog()
    torch._logging.set_logs(graph_breaks=True)
    # dynamo's artifact loggers ("<module>.__graph_breaks"): collected here instead of printed to stderr
    names = [n for n in list(logging.root.manager.loggerDict) if n.endswith(".__graph_breaks")]
    loggers = [logging.getLogger(n) for n in names]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    try:
        with torch.no_grad():
            result = torch._dynamo.explain(model)(*args)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
            logger.propagate = True
        torch._logging.set_logs()
    unique = list({(b.location, b.reason): b for b in handler.breaks}.values())
    return result.graph_count, result.graph_break_count, unique


def timm_resnet18() -> tuple[nn.Module, torch.Tensor]:
    import timm

    return timm.create_model("resnet18", pretrained=False, num_classes=10).eval(), torch.randn(2, 3, 64, 64)


def hf_vit() -> tuple[nn.Module, torch.Tensor]:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    model = ViTForImageClassification(config).eval()
    return model, torch.randn(2, 3, 32, 32)


def open_clip_image_tower() -> tuple[nn.Module, torch.Tensor]:
    import open_clip
    from symwrap_open_clip import ZeroShotClassifier

    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    classifier = ZeroShotClassifier(model, tokenizer, ["cat", "dog", "bird"], ["a photo of a {}."]).eval()
    return classifier, torch.randn(1, 3, 224, 224)


MODELS: dict[str, tuple[str, Callable[[], tuple[nn.Module, torch.Tensor]]]] = {
    "timm": ("timm resnet18, 64×64, B=2", timm_resnet18),
    "hf": ("HF ViTForImageClassification (2 layers), 32×32, B=2", hf_vit),
    "open_clip": ("open_clip ViT-B-32 ZeroShotClassifier (image tower), 224×224, B=1", open_clip_image_tower),
}


class _SmallCNN(nn.Module):
    """A small non-invariant classifier for ``(B, 3, 16, 16)`` images (the core methods' table)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1))
        self.head = nn.Linear(8 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.features(x)).flatten(1))


def core_cases() -> list[tuple[str, nn.Module, torch.Tensor]]:
    """Every built-in method on a small CNN (images) or point MLP (clouds), wrapped."""
    images, clouds = torch.randn(2, 3, 16, 16), torch.randn(2, 6, 3)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(18, 32), nn.Tanh(), nn.Linear(32, 4)).eval()
    cnn = _SmallCNN().eval()
    return [
        ("group_averaging, d4", symwrap.wrap(cnn, "d4"), images),
        ("group_averaging, c8 (interpolated)", symwrap.wrap(cnn, "c8"), images),
        ("group_averaging, shift stride 8", symwrap.wrap(cnn, "shift", group_options={"stride": 8}), images),
        ("monte_carlo, so2, seeded", symwrap.wrap(cnn, "so2", "monte_carlo", samples=4, seed=0), images),
        ("monte_carlo, d4, unseeded", symwrap.wrap(cnn, "d4", "monte_carlo", samples=4), images),
        ("equizero, d4", symwrap.wrap(cnn, "d4", "equizero"), images),
        ("lambda_equitune, d4, features=", symwrap.wrap(cnn, "d4", "lambda_equitune", features="features"), images),
        ("canonicalization, rot90, learned", symwrap.wrap(cnn, "rot90", "canonicalization"), images),
        ("frame_averaging, o3 (PCA frames)", symwrap.wrap(mlp, "o3", "frame_averaging"), clouds),
        ("canonicalization, o3 (PCA)", symwrap.wrap(mlp, "o3", "canonicalization"), clouds),
    ]


def core_table() -> None:
    """Graph breaks of every built-in method (chunk size tuned first), with where each break happens."""
    print("\n| core method, group | graphs | breaks | where |")
    print("|---|---|---|---|")
    for title, wrapped, x in core_cases():
        with torch.no_grad():
            wrapped(x)  # tunes the chunk size
        graphs, breaks, found = explain(wrapped, x)
        where = "; ".join(f"{b.location} ({b.reason})" for b in found) or "-"
        print(f"| {title} | {graphs} | {breaks} | {where} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--group", default="d4")
    parser.add_argument("--core", action="store_true", help="also list every built-in method on small models")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, group {args.group!r}, method group_averaging, chunk size tuned before tracing")
    print("| model | plain graphs / breaks | wrapped graphs / breaks | breaks in symwrap | breaks in backbone |")
    print("|---|---|---|---|---|")
    details: list[tuple[str, list[Break]]] = []
    for name in args.models:
        title, build = MODELS[name]
        model, x = build()
        plain = explain(model, x)
        wrapped = symwrap.wrap(model, args.group)
        with torch.no_grad():
            wrapped(x)  # measures the chunk size (runs eagerly, outside any graph)
        graphs, breaks, found = explain(wrapped, x)
        ours = sum(b.owner == "symwrap" for b in found)
        print(f"| {title} | {plain[0]} / {plain[1]} | {graphs} / {breaks} | {ours} | {len(found) - ours} |")
        details.append((f"{title} (wrapped)", found))
        details.append((f"{title} (plain)", plain[2]))
    for title, found in details:
        if found:
            print(f"\n{title}:")
            for b in found:
                print(f"  [{b.owner}] {b.location}: {b.reason}")
    if args.core:
        core_table()


if __name__ == "__main__":
    main()
