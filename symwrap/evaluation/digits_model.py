"""The ``digits`` model spec: the :class:`DigitsCNN` trained on upright digits, shipped as safetensors.

``examples/train_digits_cnn.py`` trains it on the ``"train"`` split (``train_digits_cnn``) and writes
``symwrap/evaluation/digits_cnn.safetensors`` (~40 KB), which ships in the package (package-data). Specs:
``digits`` (the shipped weights), ``digits:random`` (random init, seed 0), ``digits:PATH.safetensors``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from symwrap.evaluation.digits import DigitsCNN
from symwrap.evaluation.loading import LoadedModel

__all__ = ["DIGITS_WEIGHTS", "load_digits_model"]

#: The shipped weights (written by examples/train_digits_cnn.py).
DIGITS_WEIGHTS = Path(__file__).with_name("digits_cnn.safetensors")


def load_digits_model(name: str = "", *, pretrained: bool | str | None = True, device: str = "cpu") -> LoadedModel:
    """A :class:`DigitsCNN` for ``(B, 1, 8, 8)`` digits in ``[0, 1]``.

    Args:
        name: ``""`` (the shipped weights), ``"random"`` (random init, seed 0) or a ``.safetensors`` path.
        pretrained: ``False`` gives a random init whatever ``name`` is; a path string loads that checkpoint.
        device: Where the model goes.
    """
    from symwrap.evaluation.specs import load_checkpoint

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = DigitsCNN()
    checkpoint: Any = None
    if isinstance(pretrained, str):
        checkpoint = pretrained
    elif name and name != "random":
        checkpoint = name
    elif pretrained is not False and name != "random":
        checkpoint = DIGITS_WEIGHTS
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, argument="model spec digits")
    names = [str(d) for d in range(10)]
    return LoadedModel(model=model.to(device).eval(), input_size=(8, 8), class_names=names)
