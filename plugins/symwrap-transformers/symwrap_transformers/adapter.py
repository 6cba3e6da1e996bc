"""The adapter for Hugging Face transformers models and this plugin's text / zero-shot modules."""

from __future__ import annotations

from collections.abc import Mapping
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

    # ------------------------------------------------------------------ training doors
    def split_targets(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]] | None:
        """``labels`` (keyword, or positional at its place in ``forward``) and HF Trainer's ``num_items_in_batch``
        come out of the call: the copies run without them and the loss is computed once, from the combined output.
        """
        position = self._params.index("labels") if "labels" in self._params else None
        positional = position is not None and position < len(args) and args[position] is not None
        if kwargs.get("labels") is None and not positional:
            kwargs.pop("labels", None)
            return None
        kwargs = dict(kwargs)
        if positional:
            assert position is not None
            labels = args[position]
            args = (*args[:position], None, *args[position + 1 :])
        else:
            labels = kwargs.pop("labels")
        return args, kwargs, {"labels": labels, "num_items_in_batch": kwargs.pop("num_items_in_batch", None)}

    def with_loss(self, output: Any, targets: dict[str, Any], reduce: str) -> Any:
        """The combined output with ``loss`` first: a ``ModelOutput`` rebuilt with it, a tuple prefixed by it."""
        from symwrap_transformers.loss import symmetrized_loss

        logits = output["logits"] if isinstance(output, Mapping) else output[0]
        loss = symmetrized_loss(self.model, logits, targets["labels"], reduce, targets["num_items_in_batch"])
        if isinstance(output, Mapping):
            return type(output)(loss=loss, **{k: v for k, v in output.items() if k != "loss"})
        return (loss, *output)

    def _head(self) -> nn.Module | None:
        """The classification head (``classifier``/``score``/``head``/``fc``) whose input are the λ features."""
        return next(
            (getattr(self.model, n) for n in _HEAD_NAMES if isinstance(getattr(self.model, n, None), nn.Module)), None
        )

    def feature_width(self) -> int | None:
        """``D`` of :meth:`features_and_output`: the head's input size (its first ``Linear``), CLIP's
        ``projection_dim``, the class embeddings' width of a zero-shot classifier, else ``config.hidden_size``."""
        model = self.model
        config = getattr(model, "config", None)
        if _is_clip_like(model):
            return _int(getattr(config, "projection_dim", None))
        embeddings = getattr(model, "class_embeddings", None)  # CLIPZeroShotClassifier: (classes, D)
        if isinstance(embeddings, Tensor) and embeddings.ndim == 2:
            return int(embeddings.shape[1])
        if callable(getattr(model, "features_and_output", None)):
            inner = getattr(getattr(model, "model", None), "config", None)  # TextEncoder: the encoder's hidden size
            return _int(getattr(inner, "hidden_size", None))
        head = self._head()
        if head is None:
            return None
        linear = next((m for m in head.modules() if isinstance(m, nn.Linear)), None)
        if linear is not None:
            return int(linear.in_features)
        return _int(getattr(config, "hidden_size", None))  # an nn.Identity head (num_labels=0)

    def input_channels(self) -> int | None:
        config = getattr(self.model, "config", None)
        config = getattr(config, "vision_config", config)
        return _int(getattr(config, "num_channels", None))

    def features_and_output(self, call: BoundCall, acted_rows: list[Tensor], src: Tensor) -> tuple[Tensor, Any]:
        args, kwargs = call.arguments(acted_rows, src)
        own = getattr(self.model, "features_and_output", None)
        if callable(own):
            return own(*args, **kwargs)
        if _is_clip_like(self.model):
            output = self.model(*args, **kwargs)
            return output["image_embeds"], output
        head = self._head()
        if head is None:
            return super().features_and_output(call, acted_rows, src)
        captured: list[Tensor] = []
        handle = head.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
        try:
            output = self.model(*args, **kwargs)
        finally:
            handle.remove()
        return captured[-1].flatten(1), output


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
