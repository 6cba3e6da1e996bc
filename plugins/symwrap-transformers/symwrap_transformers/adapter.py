"""The adapter for Hugging Face transformers models and this plugin's text / zero-shot modules."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from torch import Tensor, nn

from symwrap.adapters.base import Adapter, BoundCall, Selector

__all__ = ["TransformersAdapter", "is_transformers_model"]

#: Submodules that are the classification head of HF ``*For*Classification`` models (first found is used).
_HEAD_NAMES = ("classifier", "score", "head", "fc")
#: Arguments of a ``CLIPModel`` call that belong to the text side and are never split by image rows.
_CLIP_TEXT_ARGS = ("input_ids", "attention_mask", "position_ids")
#: The image-side outputs of ``CLIPModel`` combined by default; ``logits_per_text`` and ``text_embeds`` are
#: not batched by image and become ``None`` (``logits_per_text`` is ``logits_per_image.T``).
_CLIP_OUTPUTS = ("logits_per_image", "image_embeds")


def is_transformers_model(model: Any) -> bool:
    """Whether ``model`` comes from transformers (by its class's module, without importing transformers)."""
    module = type(model).__module__ or ""
    return isinstance(model, nn.Module) and module.startswith("transformers.")


def _is_clip_like(model: Any) -> bool:
    return hasattr(model, "get_image_features") and hasattr(model, "get_text_features") and is_transformers_model(model)


class TransformersAdapter(Adapter):
    """Calls Hugging Face models (and :class:`TextEncoder` / :class:`CLIPZeroShotClassifier`).

    * Image models: the group acts on ``pixel_values`` (keyword or first positional argument); the
      output keeps its type (``ImageClassifierOutput`` with ``.logits`` combined; a tuple with
      ``return_dict=False``). Outputs that are not floating tensors with a batch dimension become ``None``.
    * ``CLIPModel``: ``pixel_values`` is acted on, ``input_ids``/``attention_mask`` go unchanged to every
      chunk; ``logits_per_image`` and ``image_embeds`` are combined.
    * Text: models that take raw text (:class:`symwrap_transformers.TextEncoder`) receive the swapped text.
    * λ-nets: :meth:`features_and_output` returns what the classification head sees (captured with a hook on
      ``classifier``/``score``/``head``), CLIP's ``image_embeds``, or the module's own ``features_and_output``.
    """

    name: ClassVar[str] = "transformers"
    priority: ClassVar[int] = 100

    @classmethod
    def matches(cls, model: Any) -> bool:
        own = (type(model).__module__ or "").startswith("symwrap_transformers.")
        return is_transformers_model(model) or (own and isinstance(model, nn.Module))

    def default_input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Selector, ...]:
        if "pixel_values" in kwargs:
            return ("pixel_values",)
        if "pixel_values" in self._params and self._params.index("pixel_values") < len(args):
            return ("pixel_values",)
        return super().default_input(args, kwargs)

    def unbatched_arguments(self) -> tuple[str, ...]:
        # CLIPModel: the text side goes unchanged to every chunk, never gathered by image row
        return _CLIP_TEXT_ARGS if _is_clip_like(self.model) else ()

    def default_outputs(self) -> tuple[str, ...]:
        return _CLIP_OUTPUTS if _is_clip_like(self.model) else ()

    def features_and_output(self, call: BoundCall, acted_rows: list[Tensor], src: Tensor) -> tuple[Tensor, Any]:
        args, kwargs = call.arguments(acted_rows, src)
        own = getattr(self.model, "features_and_output", None)
        if callable(own):
            return own(*args, **kwargs)
        if _is_clip_like(self.model):
            output = self.model(*args, **kwargs)
            return output["image_embeds"], output
        head = next(
            (getattr(self.model, n) for n in _HEAD_NAMES if isinstance(getattr(self.model, n, None), nn.Module)), None
        )
        if head is None:
            return super().features_and_output(call, acted_rows, src)
        captured: list[Tensor] = []
        # The hook sees every forward of the head while registered, other threads' included: keep this thread's.
        thread = threading.get_ident()

        def capture(_module: nn.Module, inputs: tuple[Any, ...]) -> None:
            if threading.get_ident() == thread:
                captured.append(inputs[0])

        handle = head.register_forward_pre_hook(capture)
        try:
            output = self.model(*args, **kwargs)
        finally:
            handle.remove()
        return captured[-1].flatten(1), output
