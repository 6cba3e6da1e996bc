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
from pathlib import Path
from typing import Any

from symwrap.errors import ConfigError

__all__ = ["PROGRESS_FILE", "atomic_write_bytes", "atomic_write_json", "load_progress", "save_progress"]

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


def load_progress(output_dir: Path, fingerprint: dict[str, Any]) -> tuple[int, list[int]] | None:
    """The ``(step, counts)`` of a checkpoint made with the same configuration, ``None`` if there is none.

    Raises:
        ConfigError: The checkpoint comes from another configuration; the message names each differing field.
    """
    path = output_dir / PROGRESS_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        saved_fingerprint, step, counts = saved["fingerprint"], int(saved["step"]), list(saved["counts"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"--resume: {str(path)!r} is not a symwrap eval checkpoint ({exc}). Delete it or drop --resume."
        ) from exc
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
    return step, counts
