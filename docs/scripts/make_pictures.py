"""Draw the documentation's pictures with symwrap's own code.

    python docs/scripts/make_pictures.py          # writes docs/images/*.png

* ``group-<name>.png``: a test image (an arrow with a marked corner, so every rotation and mirror looks
  different) moved by each element of the group, in the order of ``group.elements()``, by the same image action
  that ``symwrap.wrap`` uses.
* ``eval-digits-rot90.png``: the plot of the default ``symwrap eval`` run (the shipped digits CNN, rot90).

Deterministic; offline; a few seconds (the eval run about 15 s on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
from pathlib import Path

import torch

import symwrap

IMAGES = Path(__file__).resolve().parents[1] / "images"

#: (file name, group name, group options)
GROUPS = (
    ("rot90", "rot90", {}),
    ("flip", "flip", {}),
    ("d4", "d4", {}),
    ("c8", "c8", {}),
    ("shift", "shift", {"stride": 16}),
)


def arrow_image(size: int = 32) -> torch.Tensor:
    """``(1, 3, size, size)``: a red arrow pointing up, a blue square in the top-left corner, on a disk."""
    y, x = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    c = size / 2
    image = torch.zeros(3, size, size)
    disk = ((y - c) ** 2 + (x - c) ** 2) <= (0.48 * size) ** 2
    image[:, disk] = 0.92
    shaft = (abs(x - c) <= size * 0.06) & (y >= size * 0.3) & (y <= size * 0.8)
    head = (y >= size * 0.12) & (y <= size * 0.36) & (abs(x - c) <= (y - size * 0.12) * 0.8)
    arrow = shaft | head
    image[0, arrow], image[1, arrow], image[2, arrow] = 0.85, 0.1, 0.1
    corner = (y >= size * 0.2) & (y <= size * 0.36) & (x >= size * 0.2) & (x <= size * 0.36)
    image[0, corner], image[1, corner], image[2, corner] = 0.1, 0.3, 0.9
    return image[None]


def element_label(code: torch.Tensor, index: int) -> str:
    """A short caption: the angle and mirror of a 2×2 matrix, the offset of a shift, else the index."""
    if code.shape == (2, 2):
        det = float(torch.linalg.det(code.double()))
        rotation = code.double() @ torch.diag(torch.tensor([1.0, det], dtype=torch.float64))
        angle = round(math.degrees(math.atan2(float(rotation[1, 0]), float(rotation[0, 0])))) % 360
        return f"mirror, then {angle}°" if det < 0 else f"{angle}°"
    if code.shape == (2,):
        return f"shift {tuple(int(v) for v in code)}"
    return f"element {index}"


def draw_group(group_name: str, options: dict, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = arrow_image()
    group = symwrap.get_group(group_name, **options)
    action = symwrap.get_action(None, group)
    group = group.for_input(tuple(image.shape), action)
    elements = group.elements()
    moved = action.apply(image, torch.zeros(len(elements), dtype=torch.int64), elements, group)
    columns = min(len(elements), 8)
    rows = math.ceil(len(elements) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.55 * rows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index < len(elements):
            ax.imshow(moved[index].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_title(element_label(elements[index], index), fontsize=7)
    exact = "" if group.exact else " (interpolated: approximate)"
    fig.suptitle(f"{group.name}: {len(elements)} elements{exact}", fontsize=9)
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)


def draw_eval(output: Path) -> None:
    from symwrap.evaluation.runner import EvalConfig, run_eval

    with tempfile.TemporaryDirectory() as folder:
        run_eval(EvalConfig(output_dir=folder, progress=False))
        shutil.copyfile(Path(folder) / "accuracy.png", output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=IMAGES)
    parser.add_argument("--no-eval", action="store_true", help="skip the symwrap eval plot")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    for name, group_name, options in GROUPS:
        path = args.output / f"group-{name}.png"
        draw_group(group_name, options, path)
        print(f"wrote {path}")
    if not args.no_eval:
        path = args.output / "eval-digits-rot90.png"
        draw_eval(path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
