"""The adapter for open_clip models (``CLIP``, ``CustomTextCLIP``) and :class:`ZeroShotClassifier`."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from symwrap.adapters.base import Adapter, BoundCall, Selector

__all__ = ["OpenCLIPAdapter", "is_open_clip_model"]

#: The image-side output of an open_clip model call: ``image_features`` (index 0 of the tuple form).
_IMAGE_OUTPUTS = ("image_features", "0")


def is_open_clip_model(model: Any) -> bool:
    """Whether ``model`` comes from open_clip (by its class's module, without importing open_clip)."""
    module = type(model).__module__ or ""
    return isinstance(model, nn.Module) and module.startswith("open_clip.") and hasattr(model, "encode_image")


#: open_clip methods that compute nothing from images: tower locks, optimizer groups, switches, and the text
#: encoder (the group acts on images only, so text features are the same with or without the wrapper).
_PASSTHROUGH = frozenset(
    {"lock_image_tower", "lock_text_tower", "no_weight_decay", "set_grad_checkpointing", "smart_apply", "encode_text"}
)
_IMAGE_FEATURES = (
    "it encodes the images as given, unsymmetrized; the invariant image features are wrapped(image, text)"
    ".image_features (combined over the group), or wrap a symwrap_open_clip.ZeroShotClassifier for logits"
)
_REFUSED = {
    "encode_image": _IMAGE_FEATURES,
    "image_features": _IMAGE_FEATURES,
    "features_and_output": _IMAGE_FEATURES,
    "get_logits": _IMAGE_FEATURES,
    "forward_intermediates": _IMAGE_FEATURES,
}


class OpenCLIPAdapter(Adapter):
    """Calls open_clip models and :class:`symwrap_open_clip.ZeroShotClassifier`.

    * ``ZeroShotClassifier``: image in, logits out; λ-net features are the normalised ``encode_image`` output.
    * A bare open_clip model ``model(image, text)``: the group acts on ``image``; ``image_features`` are
      combined, ``text_features`` (not batched by image) and ``logit_scale`` become ``None``.
    """

    name: ClassVar[str] = "open_clip"
    priority: ClassVar[int] = 100

    @classmethod
    def matches(cls, model: Any) -> bool:
        own = (type(model).__module__ or "").startswith("symwrap_open_clip.") and isinstance(model, nn.Module)
        return is_open_clip_model(model) or own

    def default_input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Selector, ...]:
        if is_open_clip_model(self.model) and "image" in kwargs:
            return ("image",)
        return super().default_input(args, kwargs)

    def unbatched_arguments(self) -> tuple[str, ...]:
        # model(image, text): the prompts go unchanged to every chunk, never gathered by image row
        return ("text",) if is_open_clip_model(self.model) else ()

    def default_outputs(self) -> tuple[str, ...]:
        return _IMAGE_OUTPUTS if is_open_clip_model(self.model) else ()

    def passthrough_methods(self) -> frozenset[str]:
        return _PASSTHROUGH

    def refused_methods(self) -> dict[str, str]:
        return _REFUSED

    def _visual(self) -> nn.Module | None:
        model = self.model if is_open_clip_model(self.model) else getattr(self.model, "model", None)
        return getattr(model, "visual", None)

    def feature_width(self) -> int | None:
        """``D`` of the image embeddings: the visual tower's ``output_dim``."""
        width = getattr(self._visual(), "output_dim", None)
        return width if isinstance(width, int) else None

    def input_channels(self) -> int | None:
        visual = self._visual()
        conv = None if visual is None else next((m for m in visual.modules() if isinstance(m, nn.Conv2d)), None)
        return None if conv is None else int(conv.in_channels)

    def features_and_output(self, call: BoundCall, acted_rows: list[Tensor], src: Tensor) -> tuple[Tensor, Any]:
        args, kwargs = call.arguments(acted_rows, src)
        own = getattr(self.model, "features_and_output", None)
        if callable(own):
            return own(*args, **kwargs)
        output = self.model(*args, **kwargs)
        features = output["image_features"] if isinstance(output, dict) else output[0]
        return features, output
