"""symwrap plugin for Hugging Face transformers: the ``transformers`` adapter, word-swap groups, CLIP
zero-shot, raw-text encoders, and the ``hf`` model loader.

Found through the entry point ``transformers`` of the group ``symwrap`` (see ``pyproject.toml``). Importing
this module does not import transformers; the loader imports it when called.
"""

from __future__ import annotations

from symwrap import hookimpl
from symwrap.hookspecs import Register
from symwrap_transformers.adapter import TransformersAdapter
from symwrap_transformers.causal_lm import NextTokenModel, VocabularySwapAction
from symwrap_transformers.loader import load_hf
from symwrap_transformers.text import TextEncoder
from symwrap_transformers.word_swap import GENDER_PAIRS, WordSwapAction, WordSwapGroup, gender_swap
from symwrap_transformers.zero_shot import CLIPZeroShotClassifier

__all__ = [
    "GENDER_PAIRS",
    "CLIPZeroShotClassifier",
    "NextTokenModel",
    "TextEncoder",
    "TransformersAdapter",
    "VocabularySwapAction",
    "WordSwapAction",
    "WordSwapGroup",
    "gender_swap",
    "load_hf",
]
__version__ = "0.1.0"


@hookimpl
def symwrap_register_adapters(register: Register) -> None:
    register("transformers", TransformersAdapter, "Hugging Face models: pixel_values / raw text in, ModelOutput out")


@hookimpl
def symwrap_register_groups(register: Register) -> None:
    register("word_swap", WordSwapGroup, "Z_L swapping words within cycles, on raw text (words=[['he', 'she']])")
    register("gender_swap", gender_swap, "word_swap over gendered pairs (he/she, man/woman, ...), on raw text")


@hookimpl
def symwrap_register_model_loaders(register: Register) -> None:
    register("hf", load_hf, "hf:NAME_OR_FOLDER -> AutoModelForImageClassification + AutoImageProcessor")
