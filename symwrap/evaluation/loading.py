"""What a model-spec loader returns (``timm:NAME``, ``hf:PATH``, ``open_clip:ARCH@TAG``, ``pkg.module:factory``).

Loaders are registered by plugins through the ``symwrap_register_model_loaders`` hook:
``register("timm", loader)``; the spec ``timm:resnet50`` then calls
``loader("resnet50", pretrained=False, device="cpu")``. Heavy imports stay inside the plugin that registers
the loader, so the core never imports timm, transformers or open_clip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor, nn

__all__ = ["LoadedModel", "ModelLoader"]


@dataclass
class LoadedModel:
    """A model ready for evaluation, with what is needed to feed it.

    Attributes:
        model: The model, in eval mode, on the requested device.
        preprocess: Turns one PIL image into the model's ``(C, H, W)`` input tensor (the model's own
            transform: timm data config, HF image processor, open_clip preprocess); ``None`` when the data
            is already tensors in the model's format.
        input_size: ``(H, W)`` the model expects, when fixed.
        class_names: Class names in output order, when the model carries them (zero-shot heads, HF id2label).
        wrap_options: Keyword arguments for :func:`symwrap.wrap` that this model needs (``input=``, ``select=``).
    """

    model: nn.Module
    preprocess: Callable[[Any], Tensor] | None = None
    input_size: tuple[int, int] | None = None
    class_names: list[str] | None = None
    wrap_options: dict[str, Any] = field(default_factory=dict)


class ModelLoader(Protocol):
    """``loader(name, pretrained=..., device=..., **options) -> LoadedModel``.

    ``pretrained``: ``False``/``None`` for random init (tests, offline), ``True`` or a tag (``"openai"``) for
    published weights (needs a network the first time), or a local checkpoint path.
    """

    def __call__(
        self, name: str, *, pretrained: bool | str | None = False, device: str = "cpu", **options: Any
    ) -> LoadedModel: ...
