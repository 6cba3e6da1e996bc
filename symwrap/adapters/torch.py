"""The generic adapter: any ``torch.nn.Module``, with ``input=`` / ``select=`` selectors."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from symwrap.adapters.base import Adapter, BoundCall, Selector
from symwrap.errors import ConfigError, IncompatibleModelError

__all__ = ["SubmoduleCapture", "TorchAdapter", "pool_features", "submodule_features"]


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
        self._captures: dict[str, SubmoduleCapture] = {}

    @classmethod
    def matches(cls, model: Any) -> bool:
        return isinstance(model, nn.Module)

    def features_and_output(self, call: BoundCall, acted_rows: list[Tensor], src: Tensor) -> tuple[Tensor, Any]:
        """Features from the submodule named by ``features`` (hooked), and the model's output for the rows."""
        if self.features is None:
            return super().features_and_output(call, acted_rows, src)
        return submodule_features(
            self.model, self.features, lambda: call.call(acted_rows, src), src.shape[0], self._captures
        )


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


class SubmoduleCapture:
    """A forward hook on one submodule that hands its outputs to the call in progress, registered once.

    Registering a hook around every forward would break ``torch.compile`` graphs (creating a hook handle is not
    traceable); this one stays registered for the wrapper's lifetime and does nothing outside :meth:`run`, so a
    compiled forward traces straight through it.

    Each :meth:`run` collects into its own list, found through a thread-local slot: forwards of the same model in
    other threads (a threaded server calling one wrapped model) never write into it. A compiled forward (which
    dynamo traces as one graph, its hook included) uses a plain attribute instead of the thread-local slot.

    Args:
        model: The model.
        path: Dotted path of the submodule whose output are the features.
    """

    def __init__(self, model: nn.Module, path: str) -> None:
        try:
            module = model.get_submodule(path)
        except AttributeError as exc:
            names = [n for n, _ in model.named_children()]
            raise ConfigError(
                f"invalid option 'features': {type(model).__name__} has no submodule {path!r} ({exc}). "
                f"Its top-level submodules are: {', '.join(names) or 'none'}; use a dotted path such as "
                "'backbone.pool'."
            ) from None
        self.model, self.path = model, path
        self._local = threading.local()  # .sink: the list of the run in progress in this thread
        self._compiled_sink: list[Any] | None = None  # the same for a compiled run
        self.handle = module.register_forward_hook(self._record)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_local"], state["_compiled_sink"] = None, None  # per-call state: a copy starts with none
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _record(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        if torch.compiler.is_compiling():
            sink = self._compiled_sink
        else:
            sink = getattr(self._local, "sink", None)
        if sink is not None:
            sink.append(output)

    def run(self, run: Callable[[], Any], rows: int) -> tuple[Tensor, Any]:
        """Run ``run()`` (one forward of the model on ``rows`` rows); return the features ``(R, D)`` and its result."""
        outputs: list[Any] = []
        if torch.compiler.is_compiling():
            self._compiled_sink = outputs
            try:
                out = run()
            finally:
                self._compiled_sink = None
        else:
            previous = getattr(self._local, "sink", None)  # a run inside a run (a model that calls itself)
            self._local.sink = outputs
            try:
                out = run()
            finally:
                self._local.sink = previous
        if not outputs:
            raise IncompatibleModelError(
                f"features={self.path!r}: the submodule was not called during the forward of "
                f"{type(self.model).__name__}; name a submodule that the forward pass uses."
            )
        # A submodule called several times (shared weights): its last output is the one closest to the head.
        return pool_features(outputs[-1], rows, f"submodule {self.path!r}"), out


def release_captures(captures: dict[str, SubmoduleCapture]) -> None:
    """Remove the forward hooks of ``captures`` from the user's submodules and forget them."""
    for capture in captures.values():
        capture.handle.remove()
    captures.clear()


def submodule_features(
    model: nn.Module,
    path: str,
    run: Callable[[], Any],
    rows: int,
    captures: dict[str, SubmoduleCapture] | None = None,
) -> tuple[Tensor, Any]:
    """Run ``run()`` (one forward of ``model`` on ``rows`` rows) and capture submodule ``path``'s output as features.

    Args:
        model: The model ``run`` calls.
        path: Dotted path of the feature submodule.
        run: One forward of the model.
        rows: ``R``, the rows of that forward.
        captures: Where the caller keeps its :class:`SubmoduleCapture` per path (registered on first use and kept,
            so later forwards, compiled ones included, register nothing). ``None``: a hook for this call only.

    Returns:
        ``features`` ``(R, D)`` (pooled by :func:`pool_features`) and what ``run()`` returned.
    """
    if captures is None:
        capture = SubmoduleCapture(model, path)
        try:
            return capture.run(run, rows)
        finally:
            capture.handle.remove()
    capture = captures.get(path)
    if capture is None or capture.model is not model:
        capture = captures[path] = SubmoduleCapture(model, path)
    return capture.run(run, rows)
