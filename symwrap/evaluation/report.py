"""What ``symwrap eval`` prints and writes: the table, ``results.json`` and the accuracy plot."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from symwrap.evaluation.state import atomic_write_bytes

__all__ = ["format_table", "write_plot"]


def format_table(results: dict[str, Any]) -> str:
    """Accuracy (%) per method × corruption, the mean over the corruptions and the invariance error."""
    corruptions = results["corruptions"]
    methods = list(results["accuracy"])
    width = max([len("accuracy (%)"), *(len(m) for m in methods)])
    columns = [*corruptions, "mean"]
    cwidth = max(7, *(len(c) for c in columns))
    header = f"{'accuracy (%)':<{width}}" + "".join(f" {c:>{cwidth}}" for c in columns) + f" {'inv. error':>10}"
    lines = [header]
    for method in methods:
        row = results["accuracy"][method]
        values = [row[c] for c in corruptions]
        cells = [*values, sum(values) / len(values)]
        error = results["invariance_error"].get(method)
        error_text = f"{error:10.1e}" if error is not None else f"{'-':>10}"
        lines.append(f"{method:<{width}}" + "".join(f" {100 * v:{cwidth}.2f}" for v in cells) + f" {error_text}")
    trained = results.get("trained", {})
    zero_shot = [m for m in methods if m != "plain" and m not in trained]
    if zero_shot:
        lines.append(f"zero-shot (no training): {', '.join(zero_shot)}")
    if trained:
        lines.append(f"trained (weights from a save_pretrained folder): {', '.join(trained)}")
    if not results.get("group_exact", True):
        lines.append(
            f"group {results['config']['group']} is approximate (rotations by other angles interpolate pixels): "
            "its methods are invariant only up to interpolation error, and the inv. error column shows how far"
        )
    return "\n".join(lines)


#: Line styles and markers cycled over the methods, so methods with equal accuracies stay visible: each line
#: is drawn thinner and with smaller markers than the one before it, on top of it.
_STYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def write_plot(path: Path, results: dict[str, Any]) -> None:
    """Accuracy per group element for each method, and each method's random-element and mean accuracy (PNG).

    Left: for rotation groups (every element a rotation) a polar plot in the spirit of NERO's orbit plots
    (Cheng et al., arXiv 2305.19889): angle = the rotation applied, radius = accuracy, so an invariant method
    draws a circle; other groups get one line per method over the element index. Methods with the same
    accuracies (``group_averaging`` and ``frame_averaging`` of a finite group) are told apart by line style,
    marker and width. Right: a bar per method for the ``random`` column (a seeded random element per image)
    and the mean over the columns. Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    elements = [c for c in results["corruptions"] if c != "random"]
    angles = results.get("angles", {})
    polar = bool(elements) and all(angles.get(c) is not None for c in elements)
    methods = list(results["accuracy"])
    fig = plt.figure(figsize=(10.5, 5.0), dpi=100)
    ax = fig.add_subplot(1, 2, 1, projection="polar" if polar else None)
    for i, method in enumerate(methods):
        row = results["accuracy"][method]
        values = [100 * row[c] for c in elements]
        style = {
            "linestyle": _STYLES[i % len(_STYLES)],
            "marker": _MARKERS[i % len(_MARKERS)],
            "linewidth": max(1.2, 3.2 - 0.4 * i),
            "markersize": max(4.0, 10.0 - 1.2 * i),
            "label": _label(method, results),
            "zorder": 2 + i,
        }
        if polar:
            theta = [math.radians(angles[c]) for c in elements]
            order = sorted(range(len(theta)), key=theta.__getitem__)
            theta = [theta[j] for j in order] + [theta[order[0]] + 2 * math.pi]
            values = [values[j] for j in order] + [values[order[0]]]
            ax.plot(theta, values, **style)
        else:
            ax.plot(range(len(elements)), values, **style)
    ax.set_ylim(0, 100)
    if polar:
        ax.set_title("accuracy (%) per rotation of the input", fontsize=9)
    else:
        ax.set_xticks(range(len(elements)), elements, rotation=45)
        ax.set_ylabel("accuracy (%)")
        ax.set_xlabel(f"element of {results['config']['group']}")
        ax.set_title("accuracy per group element", fontsize=9)
    bars = fig.add_subplot(1, 2, 2)
    columns = [c for c in ("random",) if c in results["corruptions"]]
    positions = range(len(methods))
    height = 0.8 / (len(columns) + 1)
    for j, column in enumerate([*columns, "mean"]):
        values = [
            100 * (row[column] if column != "mean" else sum(row.values()) / len(row))
            for row in (results["accuracy"][m] for m in methods)
        ]
        offsets = [p + (j - len(columns) / 2) * height for p in positions]
        drawn = bars.barh(
            offsets,
            values,
            height=height,
            label="a seeded random element per image" if column == "random" else "mean of all columns",
        )
        bars.bar_label(drawn, fmt="%.1f", fontsize=7, padding=2)
    bars.set_yticks(list(positions), [_label(m, results) for m in methods], fontsize=8)
    bars.invert_yaxis()
    bars.set_xlim(0, 110)
    bars.set_xlabel("accuracy (%)")
    bars.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    exact = results.get("group_exact", True)
    fig.suptitle(
        f"symwrap eval: {results['config']['model']} on {results['data']}, group {results['config']['group']}"
        + ("" if exact else " (approximate: interpolated rotations)"),
        fontsize=10,
    )
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", fontsize=8, ncol=3, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0.0, 0.12, 1.0, 0.95))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _label(method: str, results: dict[str, Any]) -> str:
    return f"{method} (trained)" if method in results.get("trained", {}) else method
