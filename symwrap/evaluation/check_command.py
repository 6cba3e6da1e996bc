"""``symwrap check MODEL_SPEC --group G``: the per-element invariance/equivariance error table and plot."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from symwrap.errors import ConfigError
from symwrap.evaluation.corruptions import element_label
from symwrap.evaluation.state import atomic_write_bytes, atomic_write_json

__all__ = ["CheckOptions", "run_check"]


@dataclass
class CheckOptions:
    """The options of ``symwrap check`` (same names as the flags)."""

    model: str = "digits"
    group: str = "rot90"
    pretrained: str | None = None
    device: str = "cpu"
    seed: int = 0
    samples: int = 8
    output: str = "invariant"
    method: str | None = None
    data: str | None = None
    input_shape: str | None = None
    images: int = 16
    output_dir: str = "symwrap-check"
    plot: bool = True


def _inputs(options: CheckOptions, loaded: Any) -> tuple[Tensor, str]:
    from symwrap.evaluation.data import collate, open_data

    if options.images < 1:
        raise ConfigError(f"--images must be ≥ 1, got {options.images}")
    data_name = options.data
    if data_name is None and options.input_shape is None and options.model.split(":")[0] == "digits":
        data_name = "digits"
    if data_name is not None:
        data = open_data(data_name, preprocess=loaded.preprocess, input_size=loaded.input_size)
        batch = collate([data.dataset[i] for i in range(min(options.images, len(data)))])
        if not len(batch.labels):
            raise ConfigError(f"--data {data_name!r}: none of the first {options.images} images could be read")
        return batch.images, data.description
    shape_text = options.input_shape
    if shape_text is None:
        if loaded.input_size is None:
            raise ConfigError(
                "--input-shape: the model does not say its input size; give --data or --input-shape C,H,W"
            )
        shape = (3, *loaded.input_size)
    else:
        try:
            shape = tuple(int(s) for s in shape_text.split(","))
        except ValueError:
            shape = ()
        if not shape or min(shape) < 1:
            raise ConfigError(f"--input-shape {shape_text!r}: use positive ints like 3,224,224")
    generator = torch.Generator().manual_seed(options.seed)
    return torch.randn(options.images, *shape, generator=generator), f"random inputs {tuple(shape)}"


def run_check(options: CheckOptions) -> Any:
    """Print the per-element error table; write ``check.json`` and ``errors.png`` into ``output_dir``."""
    import symwrap
    from symwrap.evaluation.runner import parse_pretrained
    from symwrap.evaluation.specs import load_model

    loaded = load_model(options.model, pretrained=parse_pretrained(options.pretrained), device=options.device)
    inputs, description = _inputs(options, loaded)
    group = symwrap.get_group(options.group)
    model = loaded.model
    selectors = {k: v for k, v in loaded.wrap_options.items() if k in {"input", "select"}}
    if options.method is not None:
        model = symwrap.wrap(model, group, options.method, output=options.output, **loaded.wrap_options).eval()
    result = symwrap.check(
        model,
        group,
        inputs.to(options.device),
        options.output,
        samples=options.samples,
        seed=options.seed,
        **selectors,
    )
    labels = [element_label(e, i) for i, e in enumerate(result.elements)]
    what = f"{options.model}" + (f" wrapped with {options.method}" if options.method else "")
    print(f"symwrap check: {what}, group {result.group}, {description}, {len(inputs)} inputs")
    print(f"{result.output} error of {', '.join(p or 'output' for p in result.paths)}")
    width = max(7, *(len(label) for label in labels))
    print(f"{'element':<{width}}  rel. error  abs. error")
    for label, rel, ab in zip(labels, result.errors.tolist(), result.abs_errors.tolist()):
        print(f"{label:<{width}}  {rel:10.3e}  {ab:10.3e}")
    print(f"{'max':<{width}}  {result.max_error:10.3e}  {result.max_abs_error:10.3e}")
    output_dir = Path(options.output_dir)
    atomic_write_json(
        output_dir / "check.json",
        {
            "options": asdict(options),
            "inputs": description,
            "group": result.group,
            "elements": labels,
            "relative_error": result.errors.tolist(),
            "absolute_error": result.abs_errors.tolist(),
            "max_error": result.max_error,
        },
    )
    if options.plot:
        _plot(output_dir / "errors.png", labels, result.errors.tolist(), what, result.group)
    print(f"wrote {output_dir / 'check.json'}" + (f", {output_dir / 'errors.png'}" if options.plot else ""))
    return result


def _plot(path: Path, labels: list[str], errors: list[float], what: str, group: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    # the identity's error is 0 by definition; a floor keeps it visible on the log axis
    ax.bar(range(len(labels)), [max(e, 1e-12) for e in errors])
    ax.set_yscale("log")
    ax.set_xticks(range(len(labels)), labels, rotation=45)
    ax.set_ylabel("relative error")
    ax.set_title(f"{what}: error per element of {group}", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
