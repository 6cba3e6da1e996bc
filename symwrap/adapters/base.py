"""Adapters: how to call one family of models (which argument the group acts on, which outputs to combine)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Union

import torch
from torch import Tensor, nn

from symwrap.actions.text import TextBatch, is_text
from symwrap.autocast import AutocastState
from symwrap.errors import ConfigError, IncompatibleModelError, InputLayoutError
from symwrap.nested import TreeSpec, tree_map

__all__ = ["DOOR_KINDS", "Adapter", "BoundCall", "Door", "Selector"]

#: An argument or output selector: a positional index, a keyword / field name, or a dotted path.
Selector = Union[int, str]


def _as_selectors(value: Selector | Sequence[Selector] | None) -> tuple[Selector, ...] | None:
    if value is None:
        return None
    if isinstance(value, (int, str)):
        return (value,)
    if isinstance(value, Sequence) and all(isinstance(v, (int, str)) for v in value):
        return tuple(value)
    raise ConfigError(f"invalid selector {value!r}: use an int (position), a str (name) or a tuple of them")


def _as_acted(value: Any) -> Any:
    return TextBatch(value) if is_text(value) and not isinstance(value, TextBatch) else value


class BoundCall:
    """One call of the model, with the tensors the group acts on located among its arguments.

    Attributes:
        acted: The tensors the group acts on, each ``(B, ...)``; the first defines ``B``.
        batch_size: ``B``.
        autocast: The caller's :class:`~symwrap.autocast.AutocastState` when the call was bound.
        unbatched: Names of keyword arguments passed unchanged to every chunk, never gathered by row even when
            their first dim happens to equal ``B`` (the text side of a CLIP call: as many prompts as images).
    """

    def __init__(
        self,
        model: nn.Module,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        locations: list[tuple],
        unbatched: tuple[str, ...] = (),
    ) -> None:
        self.model, self.args, self.kwargs, self.locations = model, list(args), dict(kwargs), locations
        self.unbatched = unbatched
        # raw text (a list of strings) is carried as a TextBatch, which has a tensor's shape[0] and device
        self.acted: list[Tensor] = [_as_acted(self._get(loc)) for loc in locations]
        self.batch_size = self.acted[0].shape[0]  # no int(): a symbolic size stays symbolic while recording
        # The caller's autocast: the model's forwards run under it, symwrap's own arithmetic in float32.
        self.autocast = AutocastState.capture(self.acted[0].device)
        # model(x) with one acted tensor and nothing else, no autocast: a forward is model(rows) (see call)
        self._plain = (
            locations == [("arg", 0)] and len(self.args) == 1 and not self.kwargs and self.autocast.dtype is None
        )

    def _get(self, loc: tuple) -> Any:
        return self.args[loc[1]] if loc[0] == "arg" else self.kwargs[loc[1]]

    def forget_autocast(self) -> None:
        """Run later forwards under whatever autocast is on when they run, not under the one of the bound call (the
        fast path keeps a call and reuses it for calls made with or without autocast)."""
        self.autocast = AutocastState(self.autocast.device_type)
        self._plain = self.locations == [("arg", 0)] and len(self.args) == 1 and not self.kwargs

    def call(self, acted_rows: list[Tensor], src: Tensor) -> Any:
        """Run the model on rows: acted tensors replaced by ``acted_rows``; other batched tensors indexed by ``src``.

        A tensor argument is batched when its first dim equals ``B``; with ``B == 1`` it is broadcast with
        ``expand`` (no copy), otherwise its rows are gathered with ``index_select``. The forward runs under the
        autocast the caller had on when the call was bound (:attr:`autocast`).
        """
        if self._plain and type(self) is BoundCall:  # what arguments() and model_precision() come to: ~10 µs less
            return self.model(acted_rows[0])
        args, kwargs = self.arguments(acted_rows, src)
        with self.autocast.model_precision():
            return self.model(*args, **kwargs)

    def arguments(self, acted_rows: list[Tensor], src: Tensor) -> tuple[list[Any], dict[str, Any]]:
        """The positional and keyword arguments of the call on rows ``src`` ``(R,)`` (see :meth:`call`).

        Adapters that call something other than ``model(...)`` (``forward_features``, ``encode_image``) use this.
        """
        rows = src.shape[0]
        batch = self.batch_size

        def take(value: Any) -> Any:
            if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == batch:
                if batch == 1:
                    return value.expand(rows, *value.shape[1:])
                return value.index_select(0, src.to(value.device))
            return value

        # The acted arguments are replaced by their rows: gathering them too would copy every input row for nothing.
        acted_args = {loc[1]: value for loc, value in zip(self.locations, acted_rows) if loc[0] == "arg"}
        acted_kwargs = {loc[1]: value for loc, value in zip(self.locations, acted_rows) if loc[0] != "arg"}
        args = [acted_args[i] if i in acted_args else tree_map(take, a) for i, a in enumerate(self.args)]
        kwargs = {
            k: acted_kwargs[k] if k in acted_kwargs else v if k in self.unbatched else tree_map(take, v)
            for k, v in self.kwargs.items()
        }
        return args, kwargs


#: What a door (a base-model method reached through the wrapper) does: "symmetrized" (the adapter's
#: implementation, called as ``implementation(wrapped, *args, **kwargs)``), "passthrough" (the base model's
#: method, for methods that do not compute from inputs: configuration, structure, checkpointing switches) or
#: "refused" (calling it raises :class:`~symwrap.errors.UnsymmetrizedCallError` with ``reason``).
DOOR_KINDS = ("symmetrized", "passthrough", "refused")


@dataclass(frozen=True)
class Door:
    """How the wrapper answers ``wrapped.<name>`` for a method of the base model (see :data:`DOOR_KINDS`)."""

    kind: str
    implementation: Callable[..., Any] | None = None
    reason: str = ""


class Adapter:
    """Knows how to call one family of models. The generic :class:`~symwrap.adapters.torch.TorchAdapter`
    serves any ``nn.Module``; plugins add adapters for timm, transformers, open_clip.

    Args:
        model: The model to call.
        input: Which argument(s) the group acts on: a position, a keyword name, or a tuple of them.
        select: Which output leaves to symmetrize (dotted paths such as ``"logits"`` or ``"0"``);
            ``None`` selects every floating-point tensor with a batch dimension.
    """

    name: ClassVar[str] = "adapter"
    #: Adapters are tried from the highest priority down; the generic torch adapter has the lowest.
    priority: ClassVar[int] = 0

    def __init__(
        self,
        model: nn.Module,
        *,
        input: Selector | Sequence[Selector] | None = None,
        select: Selector | Sequence[Selector] | None = None,
    ) -> None:
        self.model = model
        self.input = _as_selectors(input)
        self.select = _as_selectors(select)
        try:
            self._params = list(inspect.signature(model.forward).parameters)
        except (TypeError, ValueError):
            self._params = []

    @classmethod
    def matches(cls, model: Any) -> bool:
        """Whether this adapter knows how to call ``model``."""
        return False

    # ------------------------------------------------------------------ inputs
    def default_input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Selector, ...]:
        """The argument the group acts on when the user names none: the first tensor (or raw-text) argument."""
        for i, value in enumerate(args):
            if isinstance(value, Tensor) or is_text(value):
                return (i,)
        for name, value in kwargs.items():
            if isinstance(value, Tensor) or is_text(value):
                return (name,)
        raise InputLayoutError(
            "the model was called without a tensor argument for the group to act on; "
            "call it with a tensor or name the argument with symwrap.wrap(..., input='name')."
        )

    def unbatched_arguments(self) -> tuple[str, ...]:
        """Names of arguments passed unchanged to every chunk, never gathered by row (default: none).

        Adapters of models that take a second, independent batch (the prompts of a CLIP call) name it here.
        """
        return ()

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> BoundCall:
        """Locate the acted tensors of one call."""
        unbatched = self.unbatched_arguments()
        if unbatched:  # name the positional arguments, so the unbatched ones can be told apart
            kwargs = {**dict(zip(self._params, args)), **kwargs}
            args = ()
        selectors = self.input or self.default_input(args, kwargs)
        locations = [self._locate(s, args, kwargs) for s in selectors]
        call = BoundCall(self.model, args, kwargs, locations, unbatched=unbatched)
        for selector, value in zip(selectors, call.acted):
            if not isinstance(value, (Tensor, TextBatch)) or value.ndim == 0:
                raise InputLayoutError(
                    f"the input {selector!r} the group acts on must be a batched tensor, got {type(value).__name__}"
                )
            if value.shape[0] != call.batch_size:
                raise InputLayoutError(
                    f"the acted inputs must share the batch size: {selectors[0]!r} has {call.batch_size}, "
                    f"{selector!r} has {value.shape[0]}"
                )
        return call

    def _locate(self, selector: Selector, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple:
        if isinstance(selector, int):
            if 0 <= selector < len(args):
                return ("arg", selector)
        else:
            if selector in kwargs:
                return ("kw", selector)
            if selector in self._params and self._params.index(selector) < len(args):
                return ("arg", self._params.index(selector))
        passed = [f"position {i}" for i in range(len(args))] + [repr(k) for k in kwargs]
        raise InputLayoutError(
            f"input={selector!r} does not name an argument of this call; "
            f"the call passed {', '.join(passed) or 'nothing'}. "
            "Pass that argument, or choose another with symwrap.wrap(..., input=...)."
        )

    def run_symmetrized(self, wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run one whole symmetrized call of ``wrapped`` (a :class:`~symwrap.wrapper.SymmetrizedModel`) itself, or
        return ``NotImplemented`` (the default) to let the orbit engine run it.

        For data that is not a batch of rows the engine can stack: a plugin adapter of ragged graph batches
        (``symwrap-pyg``) plans, moves, evaluates and combines the copies of each graph here, with the wrapper's group,
        method, output action and config.
        """
        return NotImplemented

    def check_group(self, group: Any, input_action: Any) -> None:
        """Raise when the model cannot take the inputs ``group`` produces (called once by ``symwrap.wrap``).

        The default accepts every group; backbone adapters override it, e.g. a timm ViT with a fixed
        non-square input size cannot take 90°-rotated copies.
        """

    # ------------------------------------------------------------------ doors (the base model's own methods)
    def symmetrized_methods(self) -> dict[str, Callable[..., Any]]:
        """Base-model method names with a symmetrized implementation ``f(wrapped, *args, **kwargs)``."""
        return {}

    def refused_methods(self) -> dict[str, str]:
        """Base-model method names refused with a specific reason (what it would do, what to call instead)."""
        return {}

    def passthrough_methods(self) -> frozenset[str]:
        """Base-model method names that do not compute from inputs (configuration, structure, switches): the
        wrapper hands out the base model's own method."""
        return frozenset()

    def door(self, name: str) -> Door:
        """The door for the base model's method ``name``: symmetrized, passed through, or refused. Names no list
        holds are refused: a method a new version of the base model adds never reaches it unsymmetrized."""
        symmetrized = self.symmetrized_methods().get(name)
        if symmetrized is not None:
            return Door("symmetrized", symmetrized)
        reason = self.refused_methods().get(name)
        if reason is not None:
            return Door("refused", reason=reason)
        if name in self.passthrough_methods():
            return Door("passthrough")
        return Door(
            "refused",
            reason=f"it would run the base model's {name} on the inputs as given, unsymmetrized, and adapter "
            f"{self.name!r} has no symmetrized version of it",
        )

    # ------------------------------------------------------------------ signature and targets (training doors)
    def forward_signature(self) -> inspect.Signature | None:
        """The signature the wrapper's ``forward`` shows (default: the model's ``forward``'s), for code that
        inspects it: HF ``Trainer`` keeps the dataset columns it names."""
        return inspect.signature(self.model.forward)

    def split_targets(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]] | None:
        """Take the training targets out of a call (``labels=`` of an HF model), so the copies run without them and
        :meth:`with_loss` computes the loss from the combined output. ``None``: the call has none (default: no
        adapter-level targets; every argument goes to the model).

        Returns:
            ``(args, kwargs, targets)``: the call without the targets, and the targets by name.
        """
        return None

    def with_loss(self, output: Any, targets: dict[str, Any], reduce: str) -> Any:
        """``output`` (the combined output) with the loss of the symmetrized prediction against ``targets``
        (only called when :meth:`split_targets` found targets)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ widths of learned parts (built at wrap time)
    def feature_width(self) -> int | None:
        """``D``, the width of the features :meth:`features_and_output` returns, when the model says it without a
        forward (timm ``num_features``, an HF head's input size); ``None`` when only a forward can tell.

        :func:`symwrap.wrap` builds a λ-net of this width at once, so it is among ``wrapped.parameters()`` before the
        first call (an optimizer made right after ``wrap`` trains it).
        """
        return None

    def input_channels(self) -> int | None:
        """``C`` of the images ``(B, C, H, W)`` the model takes, when it says so (for a learned canonicalizer)."""
        return None

    # ------------------------------------------------------------------ features (λ-equitune)
    def features_and_output(self, call: BoundCall, acted_rows: list[Tensor], src: Tensor) -> tuple[Tensor, Any]:
        """One forward of the orbit rows that also returns per-row features, for λ-nets.

        Args:
            call: The bound call (use ``call.arguments(acted_rows, src)`` for the row-wise arguments).
            acted_rows: The transformed inputs, each ``(R, ...)``.
            src: ``(R,)`` the input row of each orbit row.

        Returns:
            ``features`` ``(R, D)`` (pooled backbone features of each row, before the head) and the model's usual
            output for the rows (what ``call.call(acted_rows, src)`` returns).

        Raises:
            IncompatibleModelError: This adapter cannot split the model into features and head.
        """
        raise IncompatibleModelError(
            f"adapter {self.name!r} cannot find the features of a {type(self.model).__name__} for a λ-net. "
            "Name the submodule whose output are the features, e.g. symwrap.wrap(model, 'rot90', "
            "'lambda_equitune', features='backbone'), or give a separate feature model with feature_model=..."
        )

    # ------------------------------------------------------------------ outputs
    def default_outputs(self) -> tuple[str, ...]:
        """Output paths combined when the user gives no ``select=`` (default: none named, so every floating tensor
        with a batch dimension). Adapters of two-tower models name the image-side outputs here (CLIP)."""
        return ()

    def selected_leaves(self, spec: TreeSpec, leaves: list[Any], rows: int) -> list[int]:
        """Indices of the output leaves to symmetrize for a chunk of ``rows`` rows."""
        named = self.default_outputs() if self.select is None else ()
        if named:
            return [i for i, path in enumerate(spec.paths) if path in named]
        batched = [
            i for i, leaf in enumerate(leaves) if isinstance(leaf, Tensor) and leaf.ndim > 0 and leaf.shape[0] == rows
        ]
        if self.select is None:
            chosen = [i for i in batched if leaves[i].dtype.is_floating_point or leaves[i].dtype.is_complex]
            if not chosen:
                raise ConfigError(_no_batched_output(spec, leaves, rows))
            return chosen
        chosen = []
        for selector in self.select:
            key = str(selector)
            hits = [i for i, p in enumerate(spec.paths) if p == key or p.startswith(key + ".")]
            if not hits:
                raise ConfigError(
                    f"select={selector!r} matches no output of the model; its outputs are {', '.join(spec.paths)}"
                )
            bad = [spec.paths[i] for i in hits if i not in batched or not torch.is_floating_point(leaves[i])]
            if bad:
                raise ConfigError(
                    f"select={selector!r} includes {', '.join(bad)}, which is not a floating-point tensor with a "
                    "batch dimension; select only such outputs"
                )
            chosen.extend(hits)
        return sorted(set(chosen))


def _no_batched_output(spec: TreeSpec, leaves: list[Any], rows: int) -> str:
    """Why no output leaf can be combined: the leaves, their shapes, and a row count that does not fit."""
    shown = [
        f"{path or 'output'} {tuple(leaf.shape) if isinstance(leaf, Tensor) else type(leaf).__name__}"
        for path, leaf in zip(spec.paths, leaves)
    ]
    wrong_rows = [
        leaf.shape[0]
        for leaf in leaves
        if isinstance(leaf, Tensor) and leaf.ndim > 0 and leaf.shape[0] != rows and leaf.is_floating_point()
    ]
    if wrong_rows:
        return (
            f"the model returned {wrong_rows[0]} rows for a forward of {rows} rows (the orbit copies of the "
            f"batch; output leaves: {', '.join(shown)}): "
            "each output must have one row per input row (dimension 0 is the batch). Fix the model's output, or "
            "choose the batched outputs with select=..."
        )
    return (
        "the model returned no floating-point tensor with a batch dimension to combine "
        f"(output leaves: {', '.join(shown) or 'none'}); choose one with select=..."
    )
