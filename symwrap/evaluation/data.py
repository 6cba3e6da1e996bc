"""Datasets for ``symwrap eval``: the built-in digits, an image folder, a Hugging Face dataset saved on disk.

Every dataset yields ``(index, image, label)`` with ``image`` a ``(C, H, W)`` float tensor in the model's format
(the model's own ``preprocess`` for PIL images) — or ``None`` for a file that cannot be read. Unreadable and
corrupt images, and images whose shape differs from the run's (the first readable image's), are **skipped and
counted** (``collate`` drops them; the count is reported in the table and in
``results.json``), so one bad file never stops a long run. A folder with no images at all is an error up front.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from symwrap.errors import ConfigError

__all__ = ["IMAGE_EXTENSIONS", "Batch", "DefaultPreprocess", "EvalData", "collate", "open_data", "to_tensor"]

logger = logging.getLogger(__name__)

#: The extensions torchvision's ImageFolder accepts.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

Item = tuple[int, Tensor | None, int]


@dataclass
class EvalData:
    """A dataset ready for evaluation.

    Attributes:
        dataset: Items ``(index, image (C, H, W) or None, label)``.
        class_names: Names of the label ids, when known (folder names, ClassLabel names, digits 0-9).
        description: One line for the report (``"digits test split"``, ``"imagefolder /data/x"``).
    """

    dataset: Dataset
    class_names: list[str] | None
    description: str

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def use_preprocess(self, preprocess: Callable[[Any], Tensor]) -> None:
        """Set the PIL -> ``(C, H, W)`` transform once the model is known (tensor datasets need none)."""
        if isinstance(self.dataset, _ImageItems):
            self.dataset.preprocess = preprocess


@dataclass
class Batch:
    """A collated batch: ``indices`` ``(B,)``, ``images`` ``(B, C, H, W)``, ``labels`` ``(B,)``, ``skipped``."""

    indices: Tensor
    images: Tensor
    labels: Tensor
    skipped: int


def collate(items: Sequence[Item], shape: tuple[int, ...] | None = None) -> Batch:
    """Stack the readable items of a batch; unreadable ones (``image is None``) are counted in ``skipped``.

    Args:
        items: ``(index, image (C, H, W) or None, label)``.
        shape: The run's image shape ``(C, H, W)``: an image of another shape (a folder image of another size, for
            a model without its own resizing preprocessing) is skipped and counted the same way, never stacked.
            ``None``: the first readable item's shape.
    """
    readable = [item for item in items if item[1] is not None]
    if shape is None and readable:
        shape = tuple(readable[0][1].shape)  # type: ignore[union-attr]
    good = [item for item in readable if tuple(item[1].shape) == shape]  # type: ignore[union-attr]
    for index, image, _ in readable:
        if tuple(image.shape) != shape:  # type: ignore[union-attr]
            logger.warning(
                "skipping image %d: shape %s, the run's images are %s (give a model whose preprocessing resizes, "
                "or resize the data)",
                index,
                tuple(image.shape),  # type: ignore[union-attr]
                shape,
            )
    skipped = len(items) - len(good)
    if not good:
        return Batch(torch.zeros(0, dtype=torch.int64), torch.zeros(0), torch.zeros(0, dtype=torch.int64), skipped)
    indices = torch.tensor([i for i, _, _ in good], dtype=torch.int64)
    images = torch.stack([x for _, x, _ in good])  # type: ignore[misc]
    labels = torch.tensor([y for _, _, y in good], dtype=torch.int64)
    return Batch(indices, images, labels, skipped)


class _TensorItems(Dataset):
    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Item:
        return index, self.images[index], int(self.labels[index])


class DefaultPreprocess:
    """:func:`to_tensor` with a fixed mode and size (a class, so DataLoader workers can pickle it)."""

    def __init__(self, mode: str = "RGB", size: tuple[int, int] | None = None) -> None:
        self.mode, self.size = mode, size

    def __call__(self, image: Any) -> Tensor:
        return to_tensor(image, mode=self.mode, size=self.size)


def to_tensor(image: Any, *, mode: str = "RGB", size: tuple[int, int] | None = None) -> Tensor:
    """The default preprocessing: a PIL image -> ``(C, H, W)`` float32 in ``[0, 1]`` (resized to ``size``)."""
    image = image.convert(mode)
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]))
    array = np.asarray(image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)


class _ImageItems(Dataset):
    """Images read with PIL (files, or images/arrays held by a Hugging Face dataset)."""

    def __init__(self, read: Callable[[int], tuple[Any, int]], size: int, preprocess: Callable[[Any], Tensor]) -> None:
        self.read, self.size, self.preprocess = read, size, preprocess

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Item:
        label = -1
        try:
            image, label = self.read(index)
            return index, self.preprocess(image), label
        except Exception as exc:  # a corrupt file is skipped and counted, never a crash mid-run
            logger.warning("skipping unreadable image %d: %s: %s", index, type(exc).__name__, exc)
            return index, None, label


def _folder_files(root: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ConfigError(
            f"--data {str(root)!r}: no class folders found. An image folder has one subfolder per class "
            "(torchvision ImageFolder layout: DIR/cat/1.png, DIR/dog/2.jpg, ...)."
        )
    files = [
        (path, label)
        for label, name in enumerate(classes)
        for path in sorted((root / name).rglob("*"))
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
    ]
    if not files:
        raise ConfigError(
            f"--data {str(root)!r}: no images found in its {len(classes)} class folder(s) "
            f"(looked for {', '.join(IMAGE_EXTENSIONS)})."
        )
    return files, classes


def _open_image_folder(root: Path, preprocess: Callable[[Any], Tensor]) -> EvalData:
    from PIL import Image

    files, classes = _folder_files(root)

    def read(index: int) -> tuple[Any, int]:
        path, label = files[index]
        with Image.open(path) as image:
            image.load()
            return image.copy(), label

    return EvalData(_ImageItems(read, len(files), preprocess), classes, f"imagefolder {root} ({len(files)} files)")


def _is_hf_dataset(root: Path) -> bool:
    return any((root / name).is_file() for name in ("dataset_dict.json", "state.json", "dataset_info.json"))


def _open_hf(
    root: Path,
    preprocess: Callable[[Any], Tensor],
    *,
    split: str | None,
    image_column: str | None,
    label_column: str | None,
) -> EvalData:
    try:
        import datasets
    except ImportError as exc:
        raise ConfigError(
            f"--data {str(root)!r} is a Hugging Face dataset saved on disk, but the 'datasets' package is not "
            "installed: pip install datasets"
        ) from exc
    loaded = datasets.load_from_disk(str(root))
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        chosen = split or ("test" if "test" in loaded else names[0] if len(names) == 1 else None)
        if chosen not in loaded:
            raise ConfigError(
                f"--split {split!r}: the dataset at {str(root)!r} has splits {', '.join(names)}; pick one"
            )
        dataset = loaded[chosen]
        description = f"hf dataset {root} [{chosen}]"
    else:
        dataset = loaded
        description = f"hf dataset {root}"
    features = dataset.features
    image_column = image_column or next(
        (n for n, f in features.items() if isinstance(f, datasets.Image)),
        next((n for n in ("image", "img", "pixel_values") if n in features), None),
    )
    label_column = label_column or next(
        (n for n, f in features.items() if isinstance(f, datasets.ClassLabel)),
        next((n for n in ("label", "labels", "fine_label") if n in features), None),
    )
    for option, column in (("--image-column", image_column), ("--label-column", label_column)):
        if column is None or column not in features:
            raise ConfigError(
                f"{option}: column {column!r} not found in the dataset at {str(root)!r}; columns: {', '.join(features)}"
            )
    label_feature = features[label_column]
    class_names = list(label_feature.names) if isinstance(label_feature, datasets.ClassLabel) else None

    def read(index: int) -> tuple[Any, int]:
        row = dataset[index]
        image = row[image_column]
        if not hasattr(image, "convert"):
            from PIL import Image

            image = Image.fromarray(np.asarray(image))
        return image, int(row[label_column])

    return EvalData(_ImageItems(read, len(dataset), preprocess), class_names, f"{description} ({len(dataset)} rows)")


def open_data(
    data: str,
    *,
    preprocess: Callable[[Any], Tensor] | None = None,
    input_size: tuple[int, int] | None = None,
    image_mode: str = "RGB",
    split: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
) -> EvalData:
    """Open ``data``: ``"digits"`` (built in), an image folder, or a Hugging Face dataset saved on disk.

    Args:
        data: ``"digits"`` or a directory.
        preprocess: The model's own PIL -> ``(C, H, W)`` transform; default :func:`to_tensor` (``[0, 1]``,
            resized to ``input_size``, ``image_mode`` ``"RGB"`` or ``"L"``).
        split: Digits: ``"train"``, ``"val"``, ``"test"`` (default); a dataset dict: its split name.
        image_column, label_column: Columns of a Hugging Face dataset (found automatically by feature type).
    """
    if data == "digits":
        from symwrap.evaluation.digits import SPLITS, load_digits

        chosen = split or "test"
        if chosen not in SPLITS:
            raise ConfigError(f"--split {chosen!r}: the digits have splits {', '.join(SPLITS)}")
        images, labels = load_digits(chosen)
        return EvalData(_TensorItems(images, labels), [str(d) for d in range(10)], f"digits {chosen} split")
    root = Path(data)
    if not root.exists():
        raise ConfigError(
            f"--data {data!r} does not exist. Give 'digits', an image folder (one subfolder per class) or a "
            "Hugging Face dataset saved with save_to_disk."
        )
    if not root.is_dir():
        raise ConfigError(f"--data {data!r} is a file; give a folder (image folder or a saved Hugging Face dataset)")
    if preprocess is None:
        preprocess = DefaultPreprocess(image_mode, input_size)
    if _is_hf_dataset(root):
        return _open_hf(root, preprocess, split=split, image_column=image_column, label_column=label_column)
    return _open_image_folder(root, preprocess)
