"""The adapter for timm models (``timm.create_model``): image in, logits out, features/head split."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from symwrap.adapters.base import Adapter, BoundCall
from symwrap.errors import IncompatibleModelError, InputLayoutError

__all__ = ["TimmAdapter", "fixed_input_size", "is_timm_model"]


def is_timm_model(model: Any) -> bool:
    """Whether ``model`` is a timm model, judged by its class's module (so timm need not be imported)."""
    module = type(model).__module__ or ""
    return isinstance(model, nn.Module) and (module == "timm" or module.startswith("timm."))


def fixed_input_size(model: nn.Module) -> tuple[int, int] | None:
    """``(H, W)`` when the model only accepts that image size (a ViT whose patch embedding is strict), else None."""
    patch_embed = getattr(model, "patch_embed", None)
    size = getattr(patch_embed, "img_size", None)
    if size is None or not getattr(patch_embed, "strict_img_size", False):
        return None
    return int(size[0]), int(size[1])


def _swaps_image_axes(group: Any) -> bool:
    """Whether some element of a planar (2×2 matrix) group turns an H×W image into W×H."""
    if getattr(group, "code_shape", None) != (2, 2):
        return False
    if not group.is_finite:
        return True
    return bool((group.elements()[:, 0, 1].abs() > 1e-6).any())


#: timm methods that compute nothing from inputs (head and structure, optimizer groups, checkpointing switches).
_PASSTHROUGH = frozenset(
    {
        "get_classifier",
        "group_matcher",
        "init_weights",
        "no_weight_decay",
        "prune_intermediate_layers",
        "reset_classifier",
        "set_grad_checkpointing",
        "set_input_size",
    }
)
_FEATURES = (
    "the base model's feature maps of the input as given move with the input (they are not symmetrized); the "
    "symmetrized pooled features are wrapped(x) of a model made with num_classes=0"
)
_REFUSED = {
    "forward_features": _FEATURES,
    "forward_intermediates": _FEATURES,
    "forward_head": "it maps features the wrapper never combined to logits; wrapped(x) gives the symmetrized logits",
}


class TimmAdapter(Adapter):
    """Calls any timm model: the group acts on the image ``x`` ``(B, C, H, W)``; the logits ``(B, classes)``
    (or the pooled features of a ``num_classes=0`` model) are combined.

    Attributes of the timm model (``pretrained_cfg``, ``default_cfg``, ``num_classes``) stay reachable through
    the wrapper, so ``timm.data.resolve_data_config(model=wrapped)`` gives the base model's preprocessing.
    """

    name: ClassVar[str] = "timm"
    priority: ClassVar[int] = 100

    @classmethod
    def matches(cls, model: Any) -> bool:
        return is_timm_model(model) and hasattr(model, "forward_features") and hasattr(model, "forward_head")

    def passthrough_methods(self) -> frozenset[str]:
        return _PASSTHROUGH

    def refused_methods(self) -> dict[str, str]:
        return _REFUSED

    def feature_width(self) -> int | None:
        """The width of ``forward_head(pre_logits=True)``: ``head_hidden_size`` (a head with its own hidden layer)
        or ``num_features``."""
        width = getattr(self.model, "head_hidden_size", None) or getattr(self.model, "num_features", None)
        return int(width) if isinstance(width, int) else None

    def input_channels(self) -> int | None:
        """The input channels of the first convolution (the stem or the patch embedding)."""
        conv = next((m for m in self.model.modules() if isinstance(m, nn.Conv2d)), None)
        return None if conv is None else int(conv.in_channels)

    def check_group(self, group: Any, input_action: Any) -> None:
        size = fixed_input_size(self.model)
        if size is None or size[0] == size[1] or not _swaps_image_axes(group):
            return
        h, w = size
        raise InputLayoutError(
            f"group {group.name!r} rotates images by 90°, turning the {h}×{w} inputs of this "
            f"{type(self.model).__name__} into {w}×{h} copies, but the model only takes {h}×{w} images "
            "(its patch embedding has a fixed img_size). Create the model with a square img_size "
            f"(timm.create_model(..., img_size={max(h, w)})) or with dynamic_img_size=True, or use a group "
            "that keeps the shape (flip, vflip, rot180)."
        )

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> BoundCall:
        call = super().bind(args, kwargs)
        size = fixed_input_size(self.model)
        x = call.acted[0]
        if size is not None and tuple(x.shape[-2:]) != size:
            raise InputLayoutError(
                f"this {type(self.model).__name__} takes {size[0]}×{size[1]} images (fixed img_size) but the input "
                f"x has shape {tuple(x.shape)}. Preprocess with the model's own transform: "
                "timm.data.create_transform(**timm.data.resolve_data_config(model=model))."
            )
        return call

    def features_and_output(self, call: BoundCall, acted_rows: list[Tensor], src: Tensor) -> tuple[Tensor, Any]:
        """``forward_features``, then ``forward_head(pre_logits=True)`` for the features ``(R, D)`` and
        ``forward_head`` for the logits: together exactly ``model(x)`` for timm models."""
        args, kwargs = call.arguments(acted_rows, src)
        if len(args) + len(kwargs) != 1:
            raise IncompatibleModelError(
                f"the timm adapter splits calls model(x) with one image argument, but this call passed "
                f"{len(args)} positional and {len(kwargs)} keyword arguments; use adapter='torch' with "
                "features=... for this model."
            )
        x = args[0] if args else next(iter(kwargs.values()))
        feature_maps = self.model.forward_features(x)
        features = self.model.forward_head(feature_maps, pre_logits=True)
        output = self.model.forward_head(feature_maps)
        return torch.flatten(features, 1), output
