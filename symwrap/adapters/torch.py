"""The generic adapter: any ``torch.nn.Module``, with ``input=`` / ``select=`` selectors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from torch import Tensor, nn

from symwrap.adapters.base import Adapter, BoundCall, Selector
from symwrap.errors import ConfigError, IncompatibleModelError

__all__ = ["TorchAdapter", "pool_features", "submodule_features"]


class TorchAdapter(Adapter):
    """Calls any ``nn.Module``: the group acts on the first tensor argument (or ``input=``), and every
    floating-point output with a batch dimension is combined (or those named by ``select=``).

    For λ-nets, ``features="module.path"`` names the submodule whose output are the features (captured with
    a forward hook during the normal forward, so the model runs once); ``lambda_equitune``'s own
    ``features=`` option does the same for any adapter.

    Example:
        ``symwrap.wrap(model, "rot90", adapter="torch", input="pixel_values", select="logits")``
    """

    name: ClassVar[str] = "torch"
    priority: ClassVar[int] = -1000

    def __init__(
        self,
        model: nn.Module,
        *,
        input: Selector | Sequence[Selector] | None = None,
        select: Selector | Sequence[Selector] | None = None,
        features: str | None = None,
    ) -> None:
        super().__init__(model, input=input, select=select)
        self.features = features

    @classmethod
    def matches(cls, model: Any) -> bool:
        return isinstance(model, nn.Module)

    def features_and_output(self, call: BoundCall, acted_rows: list[Tensor], src: Tensor) -> tuple[Tensor, Any]:
        """Features from the submodule named by ``features`` (hooked), and the model's output for the rows."""
        if self.features is None:
            return super().features_and_output(call, acted_rows, src)
        return submodule_features(self.model, self.features, lambda: call.call(acted_rows, src), src.shape[0])


def pool_features(value: Any, rows: int, where: str) -> Tensor:
    """``(R, D)`` features from a module output: ``(R, D)`` as is, ``(R, C, *spatial)`` mean-pooled over spatial dims.

    Args:
        value: The captured output (a tensor, or a tuple/list whose first item is one).
        rows: The expected number of rows ``R``.
        where: What produced it, for error messages.
    """
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        value = value[0]
    if not isinstance(value, Tensor) or value.ndim < 2 or value.shape[0] != rows:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise IncompatibleModelError(
            f"{where} gave {shape}, not a batched feature tensor (R, D) or (R, C, ...) with R={rows} rows. "
            "Name a submodule whose output is one tensor of per-input features (e.g. the pooling layer or the "
            "backbone), or pass feature_model=<a module returning (B, D)>."
        )
    if value.ndim > 2:  # (R, C, H, W) feature maps: mean over the spatial dims
        value = value.flatten(2).mean(dim=2)
    return value


def submodule_features(model: nn.Module, path: str, run: Callable[[], Any], rows: int) -> tuple[Tensor, Any]:
    """Run ``run()`` (one forward of ``model`` on ``rows`` rows) and capture submodule ``path``'s output as features.

    Returns:
        ``features`` ``(R, D)`` (pooled by :func:`pool_features`) and what ``run()`` returned.
    """
    try:
        module = model.get_submodule(path)
    except AttributeError as exc:
        names = [n for n, _ in model.named_children()]
        raise ConfigError(
            f"invalid option 'features': {type(model).__name__} has no submodule {path!r} ({exc}). "
            f"Its top-level submodules are: {', '.join(names) or 'none'}; use a dotted path such as 'backbone.pool'."
        ) from None
    captured: list[Any] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        captured.append(output)

    handle = module.register_forward_hook(hook)
    try:
        out = run()
    finally:
        handle.remove()
    if not captured:
        raise IncompatibleModelError(
            f"features={path!r}: the submodule was not called during the forward of {type(model).__name__}; "
            "name a submodule that the forward pass uses."
        )
    # A submodule called several times (shared weights): its last output is the one closest to the head.
    return pool_features(captured[-1], rows, f"submodule {path!r}"), out
