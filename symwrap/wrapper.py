"""``symwrap.wrap()`` and :class:`SymmetrizedModel`, the peft-like face of the library."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import itertools
import os
import types
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from symwrap.actions import Action, AxisPermutationAction, ImageAction, PointCloudAction, VectorAction
from symwrap.adapters.base import Adapter, BoundCall, Selector
from symwrap.adapters.torch import release_captures
from symwrap.caches import keep_newest
from symwrap.chunking import ChunkTuner
from symwrap.dense_pull_back import slot_reducers
from symwrap.engine import ChunkSize, OrbitEngine
from symwrap.errors import ConfigError, IncompatibleModelError, InputLayoutError, UnsymmetrizedCallError
from symwrap.export import recorded_call
from symwrap.fast_path import UNFINISHED, FastPath, FastPathKey, Replanned, fast_path_key
from symwrap.groups.base import Group
from symwrap.groups.laws import ensure_group_laws
from symwrap.memory import MemoryBudget, is_out_of_memory, parse_memory
from symwrap.methods.base import Method, Plan
from symwrap.plugins import get_registry
from symwrap.reduce import REDUCE_SPACES
from symwrap.tracing import is_placeholder

__all__ = ["SymmetrizedModel", "WrapConfig", "get_action", "get_adapter", "get_group", "get_method", "wrap"]

_ACTIONS: dict[str, type[Action]] = {
    "image": ImageAction,
    "points": PointCloudAction,
    "vectors": VectorAction,
    "set": AxisPermutationAction,
}


#: Attributes a fast path was built from (:mod:`symwrap.fast_path`): setting one forgets them.
_PLANNED_BY = frozenset({"base_model", "method", "group", "adapter", "input_action", "output_action", "symwrap_config"})


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


class _SignedForward:
    """``SymmetrizedModel.forward`` as a descriptor: ``wrapped.forward`` is a bound method whose signature is the
    base model's (as the adapter gives it), so code that inspects it (HF ``Trainer``'s column filter and loss
    keywords, ``torch.export``) sees the arguments the wrapper really takes. ``SymmetrizedModel.forward`` (on the
    class) is the plain function, with ``labels=`` in its signature (HF ``Trainer`` finds its label names there).

    The signed copy of the function (same code, its own ``__signature__``) is made once per wrapper and kept in a
    weak map, not on the wrapper: the wrapper's own state stays what ``nn.Module`` pickles and copies.
    """

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        functools.update_wrapper(self, function)
        params = list(inspect.signature(function).parameters.values())
        labels = inspect.Parameter("labels", inspect.Parameter.KEYWORD_ONLY, default=None)
        function.__signature__ = inspect.Signature([*params[:-1], labels, params[-1]])  # type: ignore[attr-defined]
        self._signed: weakref.WeakKeyDictionary[nn.Module, Callable[..., Any]] = weakref.WeakKeyDictionary()

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self.function
        if torch.compiler.is_compiling():
            # dynamo may trace this lookup (torch.compile of the wrapper); it cannot call types.MethodType, and a
            # traced call needs no signature: a partial binds the same function without a graph break
            return functools.partial(self.function, instance)
        signed = self._signed.get(instance)
        if signed is None:
            signed = self._signed[instance] = self._sign(instance)
        return types.MethodType(signed, instance)

    def _sign(self, instance: Any) -> Callable[..., Any]:
        f = self.function
        signed = types.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__, f.__closure__)
        functools.update_wrapper(signed, f)
        self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        try:
            base = instance.adapter.forward_signature()
        except (TypeError, ValueError):  # a model whose signature inspect cannot read: the generic one
            base = None
        if base is not None:
            signed.__signature__ = base.replace(parameters=[self_param, *base.parameters.values()])
        return signed


class SymmetrizedModel(nn.Module):
    """A model made invariant or equivariant by a method over a group. Built by :func:`wrap`.

    Attributes:
        base_model: The wrapped model (unchanged).
        group: The :class:`Group`.
        method: The :class:`Method` (an ``nn.Module``; holds any learned parts).
        adapter: The :class:`Adapter` that calls the base model.
        input_action: How elements move the inputs.
        output_action: How outputs are pulled back (``None`` for invariant outputs).
        symwrap_config: The :class:`WrapConfig`: what :func:`wrap` was asked for (peft's ``peft_config``).
        config: The base model's own config (``wrapped.config.id2label``), where it has one.
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
        self.symwrap_config = config
        device = _weights_device(base_model)
        if device is not None:  # symwrap's learned parts (canonicalizer, λ-net) start where the base's weights are
            method.to(device)
        memory = MemoryBudget(max_memory=parse_memory(config.max_memory))
        self.engine = OrbitEngine(config.chunk_size, ChunkTuner(memory=memory))
        self._symmetrize = True
        self._sized_groups: dict[tuple[int, ...], Group] = {}

    @_SignedForward
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Call the base model on the planned copies of the input and combine the outputs.

        ``wrapped.forward``'s signature (``inspect.signature``) is the base model's, so HF ``Trainer`` keeps the
        dataset columns the base model takes (``remove_unused_columns=True``) and sees its ``labels``. With the
        targets an adapter knows (HF ``labels=``), the loss is computed from the *combined* output, with the base
        model's loss semantics (:meth:`Adapter.loss`), never as a mean of per-copy losses.

        Takes exactly the base model's arguments; returns its output type (``SymmetrizedOutput`` when
        the method reports standard errors). Under ``torch.autocast`` the base model's forwards run in the
        autocast dtype and the combined outputs are float32 (see :mod:`symwrap.autocast`). Under
        ``torch.inference_mode`` the call runs under ``torch.no_grad`` instead (the same values): symwrap keeps
        plans, indices, weights and lazily built λ-nets from call to call, and a tensor made in inference mode could
        never take part in a later backward.
        """
        if not self._symmetrize:
            return self.base_model(*args, **kwargs)
        targets = self.adapter.split_targets(args, kwargs)
        if targets is not None:
            args, kwargs, labels = targets
        if torch.is_inference_mode_enabled():
            with torch.inference_mode(False), torch.no_grad():
                result = self._symmetrized(args, kwargs)
        else:
            result = self._symmetrized(args, kwargs)
        if targets is None:
            return result
        return self.adapter.with_loss(result, labels, self.symwrap_config.reduce)

    def _symmetrized(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """:meth:`forward` of a symmetrizing call: the fast path when it applies, else the general one."""
        adapter = self.adapter
        if type(adapter).run_symmetrized is not Adapter.run_symmetrized:  # ragged graph batches run their own orbit
            result = adapter.run_symmetrized(self, args, kwargs)
            if result is not NotImplemented:
                return result
        if torch.compiler.is_compiling():
            if torch.compiler.is_exporting():  # recorded: no cache, static plans only (symwrap.export)
                return recorded_call(self, args, kwargs)
            # A traced call keeps the general path (and guards on no cache), outside the try below: dynamo cannot
            # resume after a graph break (the chunk tuner's eager measurement) inside a try block.
            return self._general_call(args, kwargs)
        if torch.jit.is_tracing():
            return recorded_call(self, args, kwargs)
        fast_paths = self.engine.fast_paths
        if fast_paths and len(args) == 1 and not kwargs and type(args[0]) is Tensor:  # a plain tensor: no placeholder
            x = args[0]
            # an empty batch keeps the general path, which answers it like the plain model
            fast = fast_paths.get((x.shape, x.dtype, x.device)) if x.shape[0] else None
            result = self._fast_call(fast_paths, fast, x) if fast is not None else UNFINISHED
            if type(result) is Replanned:  # a plan with another number of copies: the general path, with that plan
                return self._general_call(args, kwargs, result.plan)
            if result is not UNFINISHED:
                return result
        elif any(map(is_placeholder, args)) or any(map(is_placeholder, kwargs.values())):
            return recorded_call(self, args, kwargs)
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
                reduce=self.symwrap_config.reduce,
                class_dim=self.symwrap_config.class_dim,
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

    def _fast_call(self, fast_paths: dict[FastPathKey, FastPath | None], fast: FastPath, x: Tensor) -> Any:
        """The steady-state call for ``x`` by ``fast``, its layout's fast path (:mod:`symwrap.fast_path`), or
        ``UNFINISHED`` (take the general path)."""
        try:
            result = fast(x)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            fast_paths.clear()  # the general path backs off to smaller chunks
            return UNFINISHED
        if result is UNFINISHED:  # the model's output changed type: this layout keeps the general path
            fast_paths[(x.shape, x.dtype, x.device)] = None
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
        chunk = self.engine.settled_chunk(call, group, plan)
        batch, copies = plan.elements.shape[:2]
        config = self.symwrap_config
        dense = None  # an equivariant dense output of an exact image group: pulled back slot by slot, as in general
        if self.output_action is not None and static and not method.reweighs and type(result) is Tensor:
            reducers = slot_reducers(
                self.output_action, group, plan.elements, plan.weights, [result], config.reduce, config.class_dim
            )
            dense = (reducers[0], result.shape[1:]) if reducers else None
        if chunk is not None and chunk < batch * copies:
            # several forwards: the fast path moves every row at once and sums the outputs once (or adds each chunk's
            # dense outputs slot by slot), as the general path does for small inputs and outputs (within a memory
            # cap); a method that needs each copy's features runs them whole only
            kept = type(result) is Tensor and self.engine.keeps_outputs(result.numel() * copies * result.element_size())
            if (
                method.needs_features
                or not (kept or dense)
                or not self.engine.moves_at_once(call.acted, batch * copies)
            ):
                chunk = None
        eligible = (
            type(call) is BoundCall
            and call.locations == [("arg", 0)]
            and not call.unbatched
            and type(result) is Tensor  # one output tensor (a structured output keeps the general path)
            and (self.output_action is None or dense is not None)
            and (static or planned)
            and not method.wants_second_moment
            and chunk is not None
        )
        fast = None
        if eligible:
            assert chunk is not None
            per_forward = chunk if chunk < batch * copies else None
            src = self.engine.row_map(batch, copies, key[2])[0]
            action = self.input_action
            if planned:

                def planner(x: Tensor) -> Plan:
                    return method.plan(x, group)

                def move(x: Tensor, flat: Tensor) -> Tensor:
                    return action.apply_orbit(x, flat, group)  # src is the engine's row order

                lean = method.lean_copies(call.acted[0], group, action) if batch > 0 else None
                fast = FastPath(
                    call.model,
                    None,
                    plan,
                    None,
                    config.reduce,
                    config.class_dim,
                    result.dtype,
                    None,
                    planner,
                    move,
                    lean,
                    chunk=per_forward,
                )
            else:
                gather = action.row_gather(call.acted[0], src, plan.flat_elements(), group)
                reweighing = method if method.reweighs else None
                features, lean_forward = None, None
                if method.needs_features:  # the call's acted argument is always replaced: drop the input it holds
                    call.args, call.acted = [None], []
                    call.forget_autocast()  # later calls run their forwards in their own precision
                    features = (call, self.adapter, src)
                    lean_forward = method.lean_forward(call, self.adapter, src, plan, config.reduce)
                fast = FastPath(
                    call.model,
                    gather,
                    plan,
                    reweighing,
                    config.reduce,
                    config.class_dim,
                    result.dtype,
                    features,
                    lean_forward=lean_forward,
                    chunk=per_forward,
                    dense=dense,
                )
        if fast is None and not self.engine.settled(call, group, plan):
            return  # chunk_size="auto" is still choosing for this shape: decide after a later call
        keep_newest(fast_paths, key, fast, 16)

    def __getstate__(self) -> dict[str, Any]:
        """The state pickle, ``copy.deepcopy`` and ``torch.save`` keep: everything but the per-call caches.

        The remembered fast paths hold closures and the engine's tuned chunk sizes were measured for this process;
        the copy starts with an empty engine of the same options and rebuilds them on its first calls.
        """
        state = super().__getstate__()
        state["engine"] = self.engine.fresh()
        state["_sized_groups"] = {}
        return state

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

    def save_pretrained(
        self,
        directory: str | os.PathLike[str],
        *,
        state_dict: dict[str, Tensor] | None = None,
        safe_serialization: bool = True,
        is_main_process: bool = True,
        **unsupported: Any,
    ) -> None:
        """Write ``symwrap_config.json`` and symwrap's own learned weights (safetensors), never the base model.

        Takes the keyword arguments Hugging Face's ``Trainer`` and ``PreTrainedModel.save_pretrained`` callers pass.
        See :func:`symwrap.saving.save_pretrained`.

        Args:
            directory: Where to write (created if needed).
            state_dict: The wrapper's state to save instead of its current one (keys as in ``self.state_dict()``;
                symwrap's learned weights are its ``method.*`` entries).
            safe_serialization: Must be ``True``: symwrap writes safetensors only, never a pickle.
            is_main_process: ``False`` writes nothing (the other ranks of a distributed run).
            **unsupported: Any other keyword raises :class:`~symwrap.errors.ConfigError` naming it.
        """
        from symwrap.saving import save_pretrained

        if unsupported:
            raise ConfigError(
                f"save_pretrained got unsupported keyword argument(s) {', '.join(sorted(unsupported))}; it takes "
                "directory, state_dict=, safe_serialization=True and is_main_process=. To push the base model "
                "alone, call wrapped.base_model.save_pretrained(...) or wrapped.base_model.push_to_hub(...)."
            )
        if safe_serialization is not True:
            raise ConfigError(
                f"save_pretrained(safe_serialization={safe_serialization!r}): symwrap writes safetensors only, never "
                "a pickle; pass safe_serialization=True or leave it out."
            )
        if not is_main_process:
            return
        save_pretrained(self, directory, state_dict=state_dict)

    @classmethod
    def from_pretrained(cls, *where: Any, base_model: nn.Module | None = None, **options: Any) -> SymmetrizedModel:
        """Rebuild a saved wrapper: ``from_pretrained(directory, base_model=...)`` or ``from_pretrained(base_model,
        directory)``.

        A ``save_pretrained`` folder holds symwrap's weights only: pass the base model it was saved with. A folder
        written by HF ``Trainer.save_model`` holds the whole wrapper: ``from_pretrained(directory)`` rebuilds an HF
        base model from the saved class and config; any other base model is passed for its architecture.
        See :func:`symwrap.saving.from_pretrained` (``group=``/``method=`` check what the directory holds; other
        options, such as ``feature_model=``, go to :func:`wrap`).
        """
        from symwrap.saving import from_pretrained

        if len(where) == 2 and isinstance(where[0], nn.Module) and base_model is None:
            base_model, directory = where
        elif len(where) == 1 and not isinstance(where[0], nn.Module):
            directory = where[0]
        else:
            raise ConfigError(
                "from_pretrained takes the directory, SymmetrizedModel.from_pretrained(directory, base_model=...), "
                f"or the base model and the directory; got {len(where)} positional argument(s)"
            )
        return from_pretrained(base_model, directory, **options)

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:
        """``nn.Module.state_dict``, plus the wrapper's config as a ``uint8`` tensor ``symwrap_config`` (JSON bytes),
        so a folder written from the state dict alone (HF ``Trainer.save_model``) is rebuilt by
        :meth:`from_pretrained` in one call. Left out with ``keep_vars=True`` (tracers and sharding want
        parameters and buffers only); loading ignores it."""
        from symwrap.saving import STATE_CONFIG_KEY, state_config_tensor

        state = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        if not keep_vars:
            state[prefix + STATE_CONFIG_KEY] = state_config_tensor(self)
        return state

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        from symwrap.saving import STATE_CONFIG_KEY

        state_dict.pop(prefix + STATE_CONFIG_KEY, None)  # a description, not a weight
        super()._load_from_state_dict(state_dict, prefix, *args)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """Symmetrized generation where the adapter provides it (HF causal LMs: ``symwrap_transformers.generation``);
        otherwise :class:`~symwrap.errors.UnsymmetrizedCallError` naming ``wrapped.base_model.generate``."""
        door = self.adapter.door("generate")
        if door.kind == "symmetrized":
            assert door.implementation is not None
            return door.implementation(self, *args, **kwargs)
        if callable(getattr(self.base_model, "generate", None)):
            raise UnsymmetrizedCallError(
                f"wrapped.generate(...) is refused: {door.reason or 'the adapter has no symmetrized generation'}. "
                "Call wrapped.base_model.generate(...) for the base model's own (unsymmetrized) generation."
            )
        raise UnsymmetrizedCallError(
            f"wrapped.generate(...): the {type(self.base_model).__name__} has no generate method "
            "(wrapped.base_model.generate does not exist) and adapter "
            f"{self.adapter.name!r} generates nothing for it; call wrapped(...) for the symmetrized output."
        )

    def __getattr__(self, name: str) -> Any:
        """The base model's attributes through the wrapper: data (configs, ``num_classes``, ``device``...) and
        submodules as they are; its methods through the adapter's door policy (:meth:`Adapter.door`): symmetrized,
        passed through (methods that compute nothing from inputs), or refused when called."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            # Never forward during construction/unpickling (no base model yet) or for dunder lookups.
            if name == "base_model" or name.startswith("__") or "_modules" not in self.__dict__:
                raise
            if name == "config" and not hasattr(self.base_model, "config"):
                raise AttributeError(
                    f"wrapped.config is the base model's config, and this {type(self.base_model).__name__} has none; "
                    "symwrap's own options are wrapped.symwrap_config"
                ) from None
            value = getattr(self.base_model, name)
            if not _is_method(value) or name.startswith("_"):  # doors govern the public methods
                return value
            door = self.adapter.door(name)
            if door.kind == "passthrough":
                return value
            if door.kind == "symmetrized":
                assert door.implementation is not None
                return functools.partial(door.implementation, self)
            return _RefusedMethod(name, door.reason)

    def extra_repr(self) -> str:
        return f"group={self.group.name!r}, method={self.method.name!r}, output={self.symwrap_config.output!r}"


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
    example_input: Any = None,
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
        reduce: Where outputs are combined: the mean of ``"logits"`` (raw), ``"probs"``, ``"log_probs"`` or
            ``"features"``, the element-wise ``"max"``, or ``"gmean"`` (normalised geometric mean of probabilities).
        class_dim: The class axis for ``"probs"``/``"log_probs"``/``"gmean"``.
        input: The argument(s) the group acts on (position or name); default the first tensor argument.
        select: The output leaves to combine (``"logits"``, ``"0"``...); default every floating tensor.
        group_options: Options for a group given by name (``{"stride": 4}`` for ``shift``).
        example_input: A few inputs (a tensor ``(b, ...)`` for the first argument, a tuple of positional arguments
            or a dict of keyword arguments) for the learned parts whose size only a forward tells (a λ-net on
            ``features="submodule"`` or a ``feature_model``): one forward without gradients, in eval mode, builds
            them here, so ``wrapped.parameters()`` holds them before any call. Not needed where the adapter knows
            the width (timm, transformers and open_clip models) or with ``feature_dim=``.
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
    the_method.build_learned(the_adapter, the_group, example_input)
    wrapped = SymmetrizedModel(model, the_group, the_method, the_adapter, input_action, output_action, config)
    if example_input is not None and the_method.unbuilt_parts():
        build_from_example(wrapped, example_input)
    return wrapped


def build_from_example(wrapped: SymmetrizedModel, example_input: Any) -> None:
    """One forward of ``example_input`` without gradients, in eval mode, to build the learned parts only a forward
    can size (the wrapper's train/eval mode is restored afterwards).

    Args:
        wrapped: The wrapper.
        example_input: A tensor (the first argument), a tuple of positional arguments or a dict of keyword
            arguments.
    """
    if isinstance(example_input, dict):
        args, kwargs = (), dict(example_input)
    elif isinstance(example_input, tuple):
        args, kwargs = example_input, {}
    else:
        args, kwargs = (example_input,), {}
    was_training = wrapped.training
    try:
        with torch.no_grad():
            wrapped.eval()(*args, **kwargs)
    finally:
        wrapped.train(was_training)


def _is_method(value: Any) -> bool:
    """A function or method (what a door governs), not data, a submodule or a class (those pass through)."""
    return inspect.ismethod(value) or inspect.isfunction(value) or inspect.isbuiltin(value)


class _RefusedMethod:
    """What ``wrapped.<name>`` gives for a refused base-model method: callable, and raising when called (so
    ``hasattr`` checks by training frameworks still see the attribute)."""

    def __init__(self, name: str, reason: str) -> None:
        self.name, self.reason = name, reason

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsymmetrizedCallError(
            f"wrapped.{self.name}(...) is refused: {self.reason}. Call wrapped.base_model.{self.name}(...) for the "
            "base model's raw, unsymmetrized result, or wrapped(...) for the symmetrized output."
        )

    def __repr__(self) -> str:
        return f"<refused wrapped.{self.name}: call wrapped.base_model.{self.name} for the raw method>"


def _weights_device(model: nn.Module) -> torch.device | None:
    """The one device holding all of ``model``'s parameters and buffers, or ``None`` (none, or several)."""
    devices = {t.device for t in itertools.chain(model.parameters(), model.buffers())}
    return devices.pop() if len(devices) == 1 else None
