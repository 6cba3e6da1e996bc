"""The adapter for Hugging Face transformers models and this plugin's text / zero-shot modules."""

from __future__ import annotations

import threading
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


#: ``PreTrainedModel`` methods that compute nothing from inputs: configuration, structure and embeddings access,
#: adapters (peft), checkpointing and attention-kernel switches, initialisation, and the loss function object.
_PASSTHROUGH = frozenset(
    [
        "activation_checkpointing_disable",
        "activation_checkpointing_enable",
        "active_adapters",
        "add_adapter",
        "add_model_tags",
        "barrier_after_gathered_checkpoint_save",
        "can_generate",
        "delete_adapter",
        "dequantize",
        "disable_adapters",
        "disable_input_require_grads",
        "enable_adapters",
        "enable_input_require_grads",
        "enable_peft_hotswap",
        "gather_sharded_state_dict_for_save",
        "get_adapter_state_dict",
        "get_correct_attn_implementation",
        "get_correct_experts_implementation",
        "get_decoder",
        "get_encoder",
        "get_expanded_tied_weights_keys",
        "get_experts_implementation",
        "get_init_context",
        "get_input_embeddings",
        "get_memory_footprint",
        "get_output_embeddings",
        "get_parameter_or_buffer",
        "get_position_embeddings",
        "gradient_checkpointing_disable",
        "gradient_checkpointing_enable",
        "init_parallel_plans",
        "init_weights",
        "initialize_weights",
        "is_backend_compatible",
        "is_custom_code",
        "is_remote_code",
        "load_adapter",
        "loss_function",
        "mark_tied_weights_as_initialized",
        "maybe_distribute_model",
        "named_non_persistent_buffers",
        "num_parameters",
        "floating_point_ops",
        "estimate_tokens",
        "post_init",
        "prepare_distribute_model",
        "register_for_auto_class",
        "reset_kernels",
        "resize_position_embeddings",
        "resize_token_embeddings",
        "retrieve_modules_from_names",
        "set_adapter",
        "set_attn_implementation",
        "set_decoder",
        "set_encoder",
        "set_experts_implementation",
        "set_input_embeddings",
        "set_output_embeddings",
        "set_use_kernels",
        "should_save_on_this_rank",
        "smart_apply",
        "tie_weights",
        "warn_if_padding_and_no_attention_mask",
        "get_text_features",
    ]
)
_GENERATION = (
    "generation helpers run the base model's unsymmetrized next-token distribution; wrapped.generate(...) "
    "generates from the symmetrized one where the adapter supports it"
)
_REFUSED = {
    "push_to_hub": "it would upload the base model alone, without the symmetrization; save the wrapper with "
    "wrapped.save_pretrained(dir) or Trainer.save_model(dir) and upload that folder",
    "save_distributed_checkpoint": "it would save the base model alone; save the wrapper with "
    "wrapped.save_pretrained(dir) or Trainer.save_model(dir)",
    "get_compiled_call": "it returns the base model's own (compiled) forward, unsymmetrized; compile the wrapper "
    "with torch.compile(wrapped)",
    "get_image_features": "it encodes the images as given, unsymmetrized; the combined image features are "
    "wrapped(pixel_values=..., input_ids=...).image_embeds",
    **dict.fromkeys(
        (
            "generate_batch",
            "compute_transition_scores",
            "heal_tokens",
            "prepare_inputs_for_generation",
            "init_continuous_batching",
            "continuous_batching_context_manager",
            "destroy_cached_continuous_batching_manager",
            "adjust_generation_fn",
            "load_custom_generate",
        ),
        _GENERATION,
    ),
}


def _can_generate(model: Any) -> bool:
    """Whether ``model`` is an HF model that generates text (``can_generate()``), or this plugin's
    ``NextTokenModel`` around one."""
    inner = getattr(model, "model", None) if type(model).__name__ == "NextTokenModel" else model
    can = getattr(inner, "can_generate", None)
    try:
        return bool(can()) if callable(can) else False
    except Exception:  # a model whose can_generate fails cannot be told to generate either
        return False


def _symmetrized_generate(wrapped: Any, *args: Any, **kwargs: Any) -> Any:
    """``wrapped.generate``: generation from the group-combined next-token distribution (imported on first use)."""
    from symwrap_transformers.generation import symmetrized_generate

    return symmetrized_generate(wrapped, *args, **kwargs)


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

    # ------------------------------------------------------------------ doors
    def symmetrized_methods(self) -> dict[str, Any]:
        return {"generate": _symmetrized_generate} if _can_generate(self.model) else {}

    def refused_methods(self) -> dict[str, str]:
        return _REFUSED

    def passthrough_methods(self) -> frozenset[str]:
        return _PASSTHROUGH

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


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
