"""Reproduce the zero-shot CLIP rot90 robustness numbers of λ-equitune (Basu et al., NeurIPS 2023, arXiv 2305.09900).

OpenAI CLIP (open_clip ``RN50``, ``ViT-B-32``, ``ViT-B-16`` with the ``openai`` weights) classifies CIFAR-100
and ImageNet-V2 zero-shot, with every test image rotated by a seeded random multiple of 90°, as the plain model,
with group averaging and with equizero — through ``symwrap eval`` (one run per architecture and dataset).

NEEDS NETWORK ACCESS (weights and data are downloaded on the first run) and the plugins::

    pip install -e ".[digits]" -e plugins/symwrap-open-clip datasets huggingface_hub
    python examples/reproduce_clip_rot90.py --data-dir ~/data/symwrap --device cuda
    python examples/reproduce_clip_rot90.py --archs ViT-B-32 --datasets cifar100 --limit 1000   # a quick look

Data preparation (skipped when already there): CIFAR-100's test split from the Hugging Face hub
(``uoft-cs/cifar100``), saved with ``save_to_disk``; ImageNet-V2 matched-frequency from the hub
(``vaishaal/ImageNetV2``), unpacked as an image folder. ImageNet-V2's class folders are named ``0`` … ``999``;
an image folder orders classes by folder *name* (``0, 1, 10, 100, …``), so the class-name file this script writes
follows that order. Prompts: open_clip's ``OPENAI_IMAGENET_TEMPLATES`` for ImageNet-V2, ``"a photo of a {}."``
for CIFAR-100. The table compares the ``random`` column (one random rotation per image, seed 0) with the numbers
the paper reports where this script knows them (only CIFAR-100 ViT-B/32 is filled in; add the others from the
paper's tables rather than trusting a number that was not checked).

Not run in symwrap's CI (no network there); the code path it drives — ``symwrap eval`` with a zero-shot loader,
class names and templates, on a saved Hugging Face dataset and on an image folder — is tested offline in
``tests/test_eval.py``.
"""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path

from symwrap.evaluation.runner import EvalConfig, run_eval

#: accuracy (%) under random rot90, (plain, group averaging, equizero), from the λ-equitune paper.
PAPER = {("cifar100", "ViT-B-32"): (43.91, 54.88, 63.03)}
METHODS = ("plain", "group_averaging", "equizero")


def prepare_cifar100(root: Path) -> tuple[Path, Path, Path]:
    """CIFAR-100 test split as a saved dataset, its class names and one template."""
    import datasets

    target = root / "cifar100-test"
    if not target.exists():
        datasets.load_dataset("uoft-cs/cifar100", split="test").save_to_disk(str(target))
    names = datasets.load_from_disk(str(target)).features["fine_label"].names
    classes = root / "cifar100-classes.txt"
    classes.write_text("\n".join(n.replace("_", " ") for n in names) + "\n")
    templates = root / "cifar100-templates.txt"
    templates.write_text("a photo of a {}.\n")
    return target, classes, templates


def prepare_imagenet_v2(root: Path) -> tuple[Path, Path, Path]:
    """ImageNet-V2 matched-frequency as an image folder, class names in folder-name order, OpenAI's templates."""
    import open_clip
    from huggingface_hub import hf_hub_download

    target = root / "imagenetv2-matched-frequency-format-val"
    if not target.exists():
        archive = hf_hub_download(
            "vaishaal/ImageNetV2", "imagenetv2-matched-frequency.tar.gz", repo_type="dataset", cache_dir=str(root)
        )
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
    folders = sorted(d.name for d in target.iterdir() if d.is_dir())  # the order symwrap's image folder uses
    classes = root / "imagenetv2-classes.txt"
    classes.write_text("\n".join(open_clip.IMAGENET_CLASSNAMES[int(f)] for f in folders) + "\n")
    templates = root / "imagenet-templates.txt"
    templates.write_text("\n".join(t("{}") for t in open_clip.OPENAI_IMAGENET_TEMPLATES) + "\n")
    return target, classes, templates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--output-dir", type=Path, default=Path("runs/clip-rot90"))
    parser.add_argument("--archs", nargs="+", default=["RN50", "ViT-B-32", "ViT-B-16"])
    parser.add_argument("--datasets", nargs="+", default=["cifar100", "imagenet_v2"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    prepare = {"cifar100": prepare_cifar100, "imagenet_v2": prepare_imagenet_v2}
    rows = []
    for dataset in args.datasets:
        data, classes, templates = prepare[dataset](args.data_dir)
        for arch in args.archs:
            out = args.output_dir / f"{dataset}-{arch}"
            results = run_eval(
                EvalConfig(
                    model=f"open_clip:{arch}@openai",
                    data=str(data),
                    group="rot90",
                    methods=",".join(METHODS),
                    class_names=f"@{classes}",
                    templates=f"@{templates}",
                    device=args.device,
                    precision=args.precision,
                    batch_size=args.batch_size,
                    workers=args.workers,
                    limit=args.limit,
                    output_dir=str(out),
                    resume=True,  # a long run that was interrupted goes on where it stopped
                )
            )
            assert results is not None
            ours = tuple(100 * results["accuracy"][m]["random"] for m in METHODS)
            rows.append((dataset, arch, ours, PAPER.get((dataset, arch))))
    print(f"{'dataset':<12} {'arch':<9} " + " ".join(f"{m:>16}" for m in METHODS) + "   paper (plain/GA/equizero)")
    for dataset, arch, ours, paper in rows:
        reference = " / ".join(f"{v:.2f}" for v in paper) if paper else "-"
        print(f"{dataset:<12} {arch:<9} " + " ".join(f"{v:16.2f}" for v in ours) + f"   {reference}")
    (args.output_dir / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
