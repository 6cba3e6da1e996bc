"""Atomic result files and the resume checkpoint of ``symwrap eval``.

Every file is written to a temporary file in the same folder and moved into place with ``os.replace``, so a
run killed at any moment leaves either the previous complete file or the new one, never half a file.
The checkpoint ``progress.json`` holds the configuration fingerprint, the number of batches finished (per
rank) and the summed counts; ``--resume`` starts after those batches, so nothing is counted twice.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from symwrap.errors import ConfigError

__all__ = [
    "PROGRESS_FILE",
    "atomic_write_bytes",
    "atomic_write_json",
    "check_output_dir",
    "load_progress",
    "save_progress",
]

PROGRESS_FILE = "progress.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def save_progress(output_dir: Path, fingerprint: dict[str, Any], step: int, counts: list[int]) -> None:
    """Record that ``step`` batches per rank are counted in ``counts``."""
    atomic_write_json(output_dir / PROGRESS_FILE, {"fingerprint": fingerprint, "step": step, "counts": counts})


def check_output_dir(output_dir: Path, files: tuple[str, ...]) -> None:
    """Make sure ``output_dir`` is (or can be made) a writable folder where each of ``files`` can be written.

    Run before the first batch, so a long run never ends by failing to write its results.

    Raises:
        ConfigError: ``output_dir`` is a file, cannot be created, is not writable, or one of ``files`` is a folder.
    """
    where = f"--output-dir {str(output_dir)!r}"
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"{where} is a file, not a folder; give a folder for results.json and the checkpoint")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{where} cannot be created ({type(exc).__name__}: {exc}); give a writable folder") from None
    for name in files:
        if (output_dir / name).is_dir():
            raise ConfigError(
                f"{where}: {name} is a folder, so the run could not write it; move it away or use another --output-dir"
            )
    try:
        fd, tmp = tempfile.mkstemp(prefix=".symwrap-write-test.", dir=output_dir)
        os.close(fd)
        Path(tmp).unlink()
    except OSError as exc:
        raise ConfigError(f"{where} is not writable ({type(exc).__name__}: {exc}); give a writable folder") from None


def load_progress(
    output_dir: Path,
    fingerprint: dict[str, Any],
    *,
    total_steps: int | None = None,
    count_slots: int | None = None,
    covered: Callable[[int], int] | None = None,
) -> tuple[int, list[int]] | None:
    """The ``(step, counts)`` of a checkpoint made with the same configuration, ``None`` if there is none.

    ``counts`` holds one number of correct predictions per (method, corruption), then the number of images
    evaluated, then the number skipped. With the run's shape given, the checkpoint is also checked against it:
    ``0 ≤ step ≤ total_steps``, ``count_slots`` whole numbers ``≥ 0``, no correct count above the evaluated one, and
    evaluated + skipped equal to ``covered(step)``, the images the first ``step`` batches of every rank hold.

    Raises:
        ConfigError: The checkpoint comes from another configuration (the message names each differing field) or
            does not fit this run (the message names the inconsistent numbers).
    """
    path = output_dir / PROGRESS_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        saved_fingerprint, step, counts = saved["fingerprint"], saved["step"], list(saved["counts"])
        if not isinstance(saved_fingerprint, dict):
            raise TypeError("'fingerprint' is not an object")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ConfigError(
            f"--resume: {str(path)!r} is not a symwrap eval checkpoint ({type(exc).__name__}: {exc}). "
            "Delete it or drop --resume."
        ) from None
    differing = [
        f"{key} (checkpoint: {saved_fingerprint.get(key)!r}, now: {fingerprint.get(key)!r})"
        for key in sorted(set(saved_fingerprint) | set(fingerprint))
        if saved_fingerprint.get(key) != fingerprint.get(key)
    ]
    if differing:
        raise ConfigError(
            f"--resume: the checkpoint in {str(output_dir)!r} was made with another configuration; differing "
            f"fields: {'; '.join(differing)}. Rerun with the same options, or use another --output-dir "
            "(or drop --resume to start over)."
        )
    problem = _inconsistency(step, counts, total_steps, count_slots, covered)
    if problem:
        raise ConfigError(
            f"--resume: {str(path)!r} does not fit this run: {problem}. It was edited or comes from another run; "
            "delete it (or drop --resume) to start over."
        )
    return step, counts


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _inconsistency(
    step: Any, counts: list[Any], total_steps: int | None, slots: int | None, covered: Callable[[int], int] | None
) -> str:
    """What is wrong with a checkpoint's numbers for this run, or ``""``."""
    if not _whole(step):
        return f"step is {step!r}, not a whole number ≥ 0"
    if total_steps is not None and step > total_steps:
        return f"step {step} is past the {total_steps} batches of this run"
    if not all(_whole(c) for c in counts):
        return f"counts hold {next(c for c in counts if not _whole(c))!r}, not a whole number ≥ 0"
    if slots is not None and len(counts) != slots:
        return f"{len(counts)} counts, this run keeps {slots}"
    if len(counts) < 2:
        return "fewer than 2 counts"
    evaluated, skipped = counts[-2], counts[-1]
    if any(c > evaluated for c in counts[:-2]):
        return f"a correct count ({max(counts[:-2])}) is above the {evaluated} images evaluated"
    if covered is not None and evaluated + skipped != covered(step):
        return (
            f"{evaluated} evaluated + {skipped} skipped images after {step} batches, but those batches hold "
            f"{covered(step)}"
        )
    return ""
