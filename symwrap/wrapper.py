"""``symwrap.wrap()`` and :class:`SymmetrizedModel`, the peft-like face of the library."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from symwrap.actions import Action, AxisPermutationAction, ImageAction, PointCloudAction, VectorAction
from symwrap.adapters.base import Adapter, BoundCall, Selector
from symwrap.adapters.torch import release_captures
from symwrap.caches import keep_newest
from symwrap.chunking import ChunkTuner
from symwrap.engine import ChunkSize, OrbitEngine
from symwrap.errors import ConfigError, IncompatibleModelError, InputLayoutError
from symwrap.fast_path import UNFINISHED, FastPath, FastPathKey, Replanned, fast_path_key
from symwrap.groups.base import Group
from symwrap.groups.laws import ensure_group_laws
from symwrap.memory import MemoryBudget, is_out_of_memory, parse_memory
from symwrap.methods.base import Method, Plan
from symwrap.plugins import get_registry
from symwrap.reduce import REDUCE_SPACES

__all__ = ["SymmetrizedModel", "WrapConfig", "get_action", "get_adapter", "get_group", "get_method", "wrap"]

_ACTIONS: dict[str, type[Action]] = {
    "image": ImageAction,
    "points": PointCloudAction,
    "vectors": VectorAction,
    "set": AxisPermutationAction,
}


#: Attributes a fast path was built from (:mod:`symwrap.fast_path`): setting one forgets them.
_PLANNED_BY = frozenset({"base_model", "method", "group", "adapter", "input_action", "output_action", "config"})


@dataclass
class WrapConfig:
    """What :func:`wrap` was asked for (JSON-friendly; saved by ``save_pretrained``)."""

    group: str
    method: str
    output: str = "invariant"
    chunk_size: int | str | None = "auto"
    reduce: str = "logits"
    class_dim: int = -1
    adapter: str = "torch"
    input: Any = None
    select: Any = None
    method_options: dict[str, Any] = field(default_factory=dict)
    group_options: dict[str, Any] = field(default_factory=dict)
    action: str | None = None
    max_memory: int | str | None = None  # as given to wrap(): bytes or a string such as "2GiB"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def get_group(group: str | Group, **options: Any) -> Group:
    """A group from a registry name (``"rot90"``, ``"c8"``, ``"o3"``...) and options, or a :class:`Group` as is.

    Either way its group laws are checked once (:func:`symwrap.groups.laws.ensure_group_laws`).
    """
    if isinstance(group, Group):
        if options:
            raise ConfigError("group options are only accepted with a group name, not a Group object")
        return ensure_group_laws(group)
    if not isinstance(group, str):
        raise ConfigError(f"group must be a registry name or a symwrap Group, got {type(group).__name__}")
    return get_registry("group").create(group, **options)


def get_method(method: str | Method, **options: Any) -> Method:
    """A method from a registry name (``"group_averaging"``, ``"monte_carlo"``...) and options, or as is."""
    if isinstance(method, Method):
        if options:
            raise ConfigError("method options are only accepted with a method name, not a Method object")
        return method
    if not isinstance(method, str):
        raise ConfigError(f"method must be a registry name or a symwrap Method, got {type(method).__name__}")
    return get_registry("method").create(method, **options)


def get_action(action: str | Action | None, group: Group) -> Action:
    """The input action: ``None`` (the group's default), a name (``"image"``, ``"points"``...) or an object."""
    if action is None:
        return group.default_action()
    if isinstance(action, Action):
        return action
    if action not in _ACTIONS:
        raise ConfigError(f"unknown action {action!r}; use one of {', '.join(_ACTIONS)} or an Action object")
    return _ACTIONS[action]()


def get_adapter(
    model: Any,
    adapter: str | Adapter | None = None,
    *,
    input: Selector | Sequence[Selector] | None = None,
    select: Selector | Sequence[Selector] | None = None,
) -> Adapter:
    """The adapter that calls ``model``: the named one, or the highest-priority adapter that matches."""
    if isinstance(adapter, Adapter):
        return adapter
    registry = get_registry("adapter")
    if adapter is not None:
        cls = registry.lookup(adapter)[0].factory
        if not cls.matches(model):
            raise IncompatibleModelError(
                f"adapter {adapter!r} cannot call a {type(model).__name__}. Leave adapter=None to pick one "
                f"automatically, or use adapter='torch' with input=... and select=... for any nn.Module."
            )
        return cls(model, input=input, select=select)
    tried = []
    for entry in sorted(registry.entries(), key=lambda e: -getattr(e.factory, "priority", 0)):
        tried.append(entry.name)
        if entry.factory.matches(model):
            return entry.factory(model, input=input, select=select)
    raise IncompatibleModelError(
        f"no adapter can call a {type(model).__name__} (tried: {', '.join(tried)}). symwrap wraps torch.nn.Module "
        "models; wrap a plain function in an nn.Module, then use adapter='torch' with input='arg name' (the "
        "argument the group acts on) and select='output path' (the outputs to combine)."
    )


def _output_action(output: str | Action, group: Group) -> Action | None:
    if isinstance(output, Action):
        return output
    if output == "invariant":
        return None
    if output == "equivariant":
        return group.default_output_action()
    raise ConfigError(f"invalid option 'output': use 'invariant', 'equivariant' or an Action object, got {output!r}")


def _check_chunk_size(chunk_size: ChunkSize) -> None:
    ok = chunk_size is None or chunk_size == "auto"
    ok = ok or (isinstance(chunk_size, int) and not isinstance(chunk_size, bool) and chunk_size >= 1)
    if not ok:
        raise ConfigError(
            f"invalid option 'chunk_size': {chunk_size!r}. Use a positive int (rows per forward), "
            "'auto' (measured once per input shape) or None (all copies in one forward)."
        )


def _check_max_memory(max_memory: int | str | None, chunk_size: ChunkSize) -> int | None:
    """``max_memory`` in bytes (``None``: no cap); it only applies to ``chunk_size="auto"``."""
    size = parse_memory(max_memory, "max_memory")
    if size is not None and chunk_size != "auto":
        raise ConfigError(
            f"option 'max_memory' only applies to chunk_size='auto' (which measures the memory of a forward and "
            f"picks a chunk that fits), but chunk_size={chunk_size!r} was given. Use chunk_size='auto' with "
            "max_memory, or drop max_memory and choose the chunk size yourself."
        )
    return size


class SymmetrizedModel(nn.Module):
    """A model made invariant or equivariant by a method over a group. Built by :func:`wrap`.

    Attributes:
        base_model: The wrapped model (unchanged).
        group: The :class:`Group`.
        method: The :class:`Method` (an ``nn.Module``; holds any learned parts).
        adapter: The :class:`Adapter` that calls the base model.
        input_action: How elements move the inputs.
        output_action: How outputs are pulled back (``None`` for invariant outputs).
        config: The :class:`WrapConfig`.
        engine: The :class:`OrbitEngine` (its ``tuner`` holds the measured chunk sizes).
    """

    def __init__(
        self,
        base_model: nn.Module,
        group: Group,
        method: Method,
        adapter: Adapter,
        input_action: Action,
        output_action: Action | None,
        config: WrapConfig,
    ) -> None:
        super().__init__()
        self.base_model = base_model
        self.method = method
        self.group = group
        self.adapter = adapter
        self.input_action = input_action
        self.output_action = output_action
        self.config = config
        device = _weights_device(base_model)
        if device is not None:  # symwrap's learned parts (canonicalizer, λ-net) start where the base's weights are
            method.to(device)
        memory = MemoryBudget(max_memory=parse_memory(config.max_memory))
        self.engine = OrbitEngine(config.chunk_size, ChunkTuner(memory=memory))
        self._symmetrize = True
        self._sized_groups: dict[tuple[int, ...], Group] = {}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Call the base model on the planned copies of the input and combine the outputs.

        Takes exactly the base model's arguments; returns its output type (``SymmetrizedOutput`` when
        the method reports standard errors). Under ``torch.autocast`` the base model's forwards run in the
        autocast dtype and the combined outputs are float32 (see :mod:`symwrap.autocast`). Under
        ``torch.inference_mode`` the call runs under ``torch.no_grad`` instead (the same values): symwrap keeps
        plans, indices, weights and lazily built λ-nets from call to call, and a tensor made in inference mode could
        never take part in a later backward.
        """
        if not self._symmetrize:
            return self.base_model(*args, **kwargs)
        if torch.is_inference_mode_enabled():
            with torch.inference_mode(False), torch.no_grad():
                return self._symmetrized(args, kwargs)
        return self._symmetrized(args, kwargs)

    def _symmetrized(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """:meth:`forward` of a symmetrizing call: the fast path when it applies, else the general one."""
        if torch.compiler.is_compiling():
            # A traced call keeps the general path (and guards on no cache), outside the try below: dynamo cannot
            # resume after a graph break (the chunk tuner's eager measurement) inside a try block.
            return self._general_call(args, kwargs)
        fast_paths = self.engine.fast_paths
        key = fast_path_key(args, kwargs) if fast_paths else None
        if key is not None and args[0].shape[0] == 0:
            key = None  # an empty batch: the general path answers it like the plain model
        if key is not None:
            result = self._fast_call(fast_paths, key, args[0])
            if type(result) is Replanned:  # a plan with another number of copies: the general path, with that plan
                return self._general_call(args, kwargs, result.plan)
            if result is not UNFINISHED:
                return result
        try:
            return self._general_call(args, kwargs)
        except RuntimeError as error:  # torch's own message for a device mismatch comes from deep in the model
            mismatch = self._device_mismatch(args, kwargs)
            if mismatch is not None:
                raise InputLayoutError(mismatch) from error
            raise

    def _general_call(self, args: tuple[Any, ...], kwargs: dict[str, Any], plan: Plan | None = None) -> Any:
        """Plan (unless the fast path already did), run the engine and combine (every call the fast path does not
        finish)."""
        call = self.adapter.bind(args, kwargs)
        if call.batch_size == 0:  # no inputs, no orbit: the plain model's empty output (B = 0) is the answer
            return self.base_model(*args, **kwargs)
        # Under torch.autocast only the base model's forwards run in low precision (BoundCall restores the
        # caller's autocast around them); the plan, the actions, reweighing and the reduction run in float32.
        with call.autocast.full_precision():
            group = self._group_for(call.acted[0].shape)
            for x in call.acted:
                self.input_action.check(x, group)
            if plan is None:
                plan = self.method.plan_for_call(call, group)
            result = self.engine.run(
                call,
                self.adapter,
                group,
                self.input_action,
                self.output_action,
                plan,
                reduce=self.config.reduce,
                class_dim=self.config.class_dim,
                second_moment=self.method.wants_second_moment,
                method=self.method,
            )
        self._learn_fast_path(args, kwargs, call, group, plan, result)
        return result

    def _device_mismatch(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """After a failed call: why, when an acted input is on another device than the wrapped model's weights."""
        device = _weights_device(self)
        if device is None:
            return None  # no weights, or spread over devices on purpose: nothing to say
        try:
            call = self.adapter.bind(args, kwargs)
        except Exception:
            return None
        for x, location in zip(call.acted, call.locations):
            if x.device != device:
                where = f"argument {location[1]}" if location[0] == "arg" else f"keyword argument {location[1]!r}"
                return (
                    f"the input ({where}) is on {x.device} but the wrapped model's weights are on {device}; "
                    f"move the input with x.to({str(device)!r}), or the model with wrapped.to({str(x.device)!r})."
                )
        return None

    def _fast_call(self, fast_paths: dict[FastPathKey, FastPath | None], key: FastPathKey, x: Tensor) -> Any:
        """The steady-state call for ``x`` (:mod:`symwrap.fast_path`), or ``UNFINISHED`` (take the general path)."""
        fast = fast_paths.get(key)
        if fast is None:
            return UNFINISHED
        try:
            result = fast(x)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            fast_paths.clear()  # the general path backs off to smaller chunks
            return UNFINISHED
        if result is UNFINISHED:
            fast_paths[key] = None  # the model's output changed type: this layout keeps the general path
        return result

    def _learn_fast_path(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], call: BoundCall, group: Group, plan: Plan, result: Any
    ) -> None:
        """After a general call: remember its fast path when the next call of this layout can only repeat it."""
        key = fast_path_key(args, kwargs)
        fast_paths = self.engine.fast_paths
        if key is None or key in fast_paths or not self.engine.use_fast_path or torch.compiler.is_compiling():
            return
        method = self.method
        static = method.static_plan(group)
        # a plan made from the input alone (frames of clouds and sets, canonicalization) is made again every call
        planned = not static and method.plans_from_input(group) and not method.reweighs
        eligible = (
            type(call) is BoundCall
            and call.locations == [("arg", 0)]
            and not call.unbatched
            and type(result) is Tensor  # one output tensor (a structured output keeps the general path)
            and self.output_action is None
            and (static or planned)
            and not method.wants_second_moment
            and self.engine.whole_orbit_in_one_chunk(call, group, self.input_action, plan)
        )
        fast = None
        if eligible:
            batch, copies = plan.elements.shape[:2]
            src = self.engine.row_map(batch, copies, key[2])[0]
            action, config = self.input_action, self.config
            if planned:

                def planner(x: Tensor) -> Plan:
                    return method.plan(x, group)

                def move(x: Tensor, flat: Tensor) -> Tensor:
                    return action.apply(x, src, flat, group)

                fast = FastPath(
                    call.model, None, plan, None, config.reduce, config.class_dim, result.dtype, None, planner, move
                )
            else:
                gather = action.row_gather(call.acted[0], src, plan.flat_elements(), group)
                reweighing = method if method.reweighs else None
                features = None
                if method.needs_features:  # the call's acted argument is always replaced: drop the input it holds
                    call.args, call.acted = [None], []
                    features = (call, self.adapter, src)
                fast = FastPath(
                    call.model, gather, plan, reweighing, config.reduce, config.class_dim, result.dtype, features
                )
        keep_newest(fast_paths, key, fast, 16)

    def __setattr__(self, name: str, value: Any) -> None:
        engine = self.__dict__.get("engine")
        if engine is not None and name in _PLANNED_BY:  # the remembered fast paths were made from the old value
            engine.fast_paths.clear()
        super().__setattr__(name, value)

    def _group_for(self, shape: tuple[int, ...]) -> Group:
        key = tuple(shape[1:])
        if key not in self._sized_groups:
            self._sized_groups[key] = ensure_group_laws(self.group.for_input(tuple(shape), self.input_action))
        return self._sized_groups[key]

    @contextlib.contextmanager
    def disable_symmetrization(self) -> Iterator[nn.Module]:
        """Within the block, calls go straight to the base model."""
        previous, self._symmetrize = self._symmetrize, False
        try:
            yield self.base_model
        finally:
            self._symmetrize = previous

    def unwrap(self) -> nn.Module:
        """The base model, unchanged: the feature hooks ``features=`` registered on its submodules are removed.

        The wrapper still works afterwards (it registers them again on its next forward).
        """
        for owner in (self.adapter, self.method):
            captures = getattr(owner, "_captures", None)
            if captures:
                release_captures(captures)
        return self.base_model

    def train(self, mode: bool = True) -> SymmetrizedModel:
        """Set train/eval mode; a method with a frozen backbone (λ-equitune) keeps the base model in eval mode."""
        super().train(mode)
        self.engine.fast_paths.clear()  # a plan's number of copies may change with the mode (a canonicalizer's)
        if self.method.keeps_base_in_eval:
            self.base_model.eval()
        return self

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write ``symwrap_config.json`` and symwrap's own learned weights (safetensors), never the base model.

        See :func:`symwrap.saving.save_pretrained`.
        """
        from symwrap.saving import save_pretrained

        save_pretrained(self, directory)

    @classmethod
    def from_pretrained(
        cls, base_model: nn.Module, directory: str | os.PathLike[str], **options: Any
    ) -> SymmetrizedModel:
        """Wrap ``base_model`` as saved in ``directory`` and load the learned weights.

        See :func:`symwrap.saving.from_pretrained` (``group=``/``method=`` check what the directory holds;
        other options, such as ``feature_model=``, go to :func:`wrap`).
        """
        from symwrap.saving import from_pretrained

        return from_pretrained(base_model, directory, **options)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            # Never forward during construction/unpickling (no base model yet) or for dunder lookups.
            if name == "base_model" or name.startswith("__") or "_modules" not in self.__dict__:
                raise
            return getattr(self.base_model, name)

    def extra_repr(self) -> str:
        return f"group={self.group.name!r}, method={self.method.name!r}, output={self.config.output!r}"


def wrap(
    model: nn.Module,
    group: str | Group,
    method: str | Method = "group_averaging",
    *,
    output: str | Action = "invariant",
    chunk_size: ChunkSize = "auto",
    max_memory: int | str | None = None,
    adapter: str | Adapter | None = None,
    action: str | Action | None = None,
    reduce: str = "logits",
    class_dim: int = -1,
    input: Selector | Sequence[Selector] | None = None,
    select: Selector | Sequence[Selector] | None = None,
    group_options: dict[str, Any] | None = None,
    **method_options: Any,
) -> SymmetrizedModel:
    """Make ``model`` invariant or equivariant to ``group`` with ``method``.

    Args:
        model: Any ``torch.nn.Module`` (a plugin adapter may serve timm, transformers, open_clip models).
        group: A registry name (``"rot90"``, ``"d4"``, ``"c8"``, ``"o3"``, see :func:`list_groups`) or a Group.
        method: A registry name (``"group_averaging"``/``"equitune"``, ``"monte_carlo"``...) or a Method.
        output: ``"invariant"``, ``"equivariant"`` (outputs pulled back by the group's default output
            action: dense maps for image groups, positions for point groups) or an Action object.
        chunk_size: Rows per forward: ``"auto"`` (measured per input shape), an int, or ``None`` (all copies
            ``(B·k, ...)`` in one forward). ``"auto"`` never picks a chunk whose measured forward peak exceeds
            ``min(max_memory, 0.9 × free memory)`` and halves the chunk if a forward still runs out of memory.
        max_memory: Cap on the memory one chunk's forward may use above what is already allocated, for
            ``chunk_size="auto"`` only: bytes as an int or a string (``"512MB"``, ``"2GiB"``, ``"24GB"``).
        adapter: Adapter name or object; ``None`` picks the first that matches the model.
        action: How elements move the input: ``None`` (the group's default), ``"image"``, ``"points"``,
            ``"vectors"``, ``"set"``, or an Action object.
        reduce: Where outputs are averaged: ``"logits"`` (raw), ``"probs"``, ``"log_probs"`` or ``"features"``.
        class_dim: The class axis for ``"probs"``/``"log_probs"``.
        input: The argument(s) the group acts on (position or name); default the first tensor argument.
        select: The output leaves to combine (``"logits"``, ``"0"``...); default every floating tensor.
        group_options: Options for a group given by name (``{"stride": 4}`` for ``shift``).
        **method_options: Options of the method (``samples=32, seed=0`` for ``monte_carlo``).

    Returns:
        A :class:`SymmetrizedModel` (an ``nn.Module`` taking the base model's arguments).

    Example:
        >>> model = symwrap.wrap(torchvision_like_cnn, "rot90")          # doctest: +SKIP
        >>> model(images)  # the same logits for every rotation of images  # doctest: +SKIP
    """
    _check_chunk_size(chunk_size)
    _check_max_memory(max_memory, chunk_size)
    if reduce not in REDUCE_SPACES:
        raise ConfigError(f"invalid option 'reduce': {reduce!r}; use one of {', '.join(REDUCE_SPACES)}")
    if not isinstance(class_dim, int):
        raise ConfigError(f"invalid option 'class_dim': expected an int axis, got {class_dim!r}")
    the_adapter = get_adapter(model, adapter, input=input, select=select)
    the_group = get_group(group, **(group_options or {}))
    the_method = get_method(method, **method_options)
    the_method.check_group(the_group)
    the_method.attach(model, the_adapter)
    input_action = get_action(action, the_group)
    the_adapter.check_group(the_group, input_action)
    output_action = _output_action(output, the_group)
    config = WrapConfig(
        group=group if isinstance(group, str) else the_group.name,  # the registry name, rebuilt with group_options
        method=the_method.name,
        output=output if isinstance(output, str) else f"equivariant:{type(output).__name__}",
        chunk_size=chunk_size,
        reduce=reduce,
        class_dim=class_dim,
        adapter=the_adapter.name,
        input=input,
        select=select,
        method_options=the_method.options_dict(),
        group_options=dict(group_options or {}),
        action=action if isinstance(action, str) else None,
        max_memory=max_memory,
    )
    return SymmetrizedModel(model, the_group, the_method, the_adapter, input_action, output_action, config)


def _weights_device(model: nn.Module) -> torch.device | None:
    """The one device holding all of ``model``'s parameters and buffers, or ``None`` (none, or several)."""
    devices = {t.device for t in itertools.chain(model.parameters(), model.buffers())}
    return devices.pop() if len(devices) == 1 else None
