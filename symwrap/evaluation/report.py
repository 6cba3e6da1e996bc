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
    return "\n".join(lines)


def write_plot(path: Path, results: dict[str, Any]) -> None:
    """Accuracy per group element for each method, as a PNG (atomic).

    For rotation groups (every element a rotation) a polar plot in the spirit of NERO's orbit plots
    (Cheng et al., arXiv 2305.19889): angle = the rotation applied, radius = accuracy; an invariant method
    draws a circle. Other groups get one line per method over the element index.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    elements = [c for c in results["corruptions"] if c != "random"]
    angles = results.get("angles", {})
    polar = bool(elements) and all(angles.get(c) is not None for c in elements)
    fig = plt.figure(figsize=(6.4, 5.2), dpi=100)
    ax = fig.add_subplot(projection="polar" if polar else None)
    for method, row in results["accuracy"].items():
        values = [100 * row[c] for c in elements]
        if polar:
            theta = [math.radians(angles[c]) for c in elements]
            order = sorted(range(len(theta)), key=theta.__getitem__)
            theta = [theta[i] for i in order] + [theta[order[0]] + 2 * math.pi]
            values = [values[i] for i in order] + [values[order[0]]]
            ax.plot(theta, values, marker="o", label=method)
        else:
            ax.plot(range(len(elements)), values, marker="o", label=method)
    if polar:
        ax.set_ylim(0, 100)
        ax.set_title(f"accuracy (%) per rotation, {results['config']['model']} on {results['data']}", fontsize=9)
    else:
        ax.set_xticks(range(len(elements)), elements, rotation=45)
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)")
        ax.set_xlabel(f"element of {results['config']['group']}")
        ax.set_title(f"accuracy per element, {results['config']['model']} on {results['data']}", fontsize=9)
    if polar:  # outside the circle
        ax.legend(loc="lower left", bbox_to_anchor=(-0.1, -0.15), fontsize=8)
    else:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
