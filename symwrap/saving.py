"""``save_pretrained`` / ``from_pretrained``: symwrap's own config and learned weights, never the base model.

A saved directory holds two files:

* ``symwrap_config.json``: what :func:`symwrap.wrap` was asked for (group, method and their options, output,
  reduce, adapter, selectors), plus a description of the base model it was saved with (class, parameter names
  and shapes, a checksum) so that loading onto another model fails clearly instead of silently.
* ``symwrap_weights.safetensors``: the method's learned state (a λ-net, a learned canonicalizer...), as
  returned by ``Method.state_to_save()``; empty for methods without parameters. Safetensors only: loading
  never unpickles anything.

The base model's weights are never written: save and load them with the base model's own tools (a
fine-tuned head belongs to the base model).

A folder written by HF ``Trainer.save_model`` (or ``safetensors.torch.save_file(wrapped.state_dict(), ...)``)
holds ``model.safetensors``: the wrapper's whole ``state_dict``, base model included, in which
:meth:`SymmetrizedModel.state_dict` puts the same JSON document as one ``uint8`` tensor, ``symwrap_config``.
:func:`from_pretrained` rebuilds such a folder in one call: an HF base model from its class and config (both in
the document) and the weights, any other base model from the ``base_model`` passed.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from symwrap.errors import CheckpointError, ConfigError, LimitError

if TYPE_CHECKING:
    from symwrap.groups.base import Group
    from symwrap.methods.base import Method
    from symwrap.wrapper import SymmetrizedModel

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "STATE_CONFIG_KEY",
    "STATE_NAME",
    "WEIGHTS_NAME",
    "from_pretrained",
    "save_pretrained",
]

CONFIG_NAME = "symwrap_config.json"
WEIGHTS_NAME = "symwrap_weights.safetensors"
#: The file HF ``Trainer.save_model`` writes for a model that is not a ``PreTrainedModel``: its ``state_dict()``.
STATE_NAME = "model.safetensors"
#: The ``state_dict`` entry holding the JSON document (``uint8`` bytes), for folders written from a state dict.
STATE_CONFIG_KEY = "symwrap_config"
FORMAT_VERSION = 2  # 2: the document may describe an HF base model (``base_model.hf_config``)


# ---------------------------------------------------------------------------------------------- saving
def save_pretrained(
    model: SymmetrizedModel, directory: str | os.PathLike[str], *, state_dict: dict[str, Tensor] | None = None
) -> None:
    """Write ``symwrap_config.json`` and ``symwrap_weights.safetensors`` into ``directory`` (created if needed).

    Args:
        model: The wrapper.
        directory: Where to write.
        state_dict: The wrapper's state to write instead of its current one (``model.state_dict()`` keys; the
            ``method.*`` entries are symwrap's learned weights).

    Raises:
        ConfigError: An option cannot be written as JSON (a function or an object given to ``wrap``); pass a
            registered name instead, or give that object again to :func:`from_pretrained`.
    """
    directory = Path(directory)
    config = model.symwrap_config.to_dict()
    config["method_options"] = model.method.options_dict()
    for key, value in config["method_options"].items():
        _require_json(value, f"method option {key!r}")
    for key in ("input", "select", "group_options", "chunk_size", "max_memory"):
        _require_json(config[key], f"option {key!r}")
    state = model.method.state_to_save()
    if state_dict is not None:
        given = {k[len("method.") :]: v for k, v in state_dict.items() if k.startswith("method.")}
        missing = sorted(set(state) - set(given))
        if missing:
            raise ConfigError(
                f"save_pretrained(state_dict=...) lacks symwrap's learned weights "
                f"{', '.join('method.' + k for k in missing)}; pass the wrapper's own state_dict() (keys as in "
                "wrapped.state_dict())"
            )
        state = {k: given[k] for k in state}
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in state.items()}
    document = config_document(model, config, _describe(model.base_model))
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"group": config["group"], "method": config["method"]})
    (directory / CONFIG_NAME).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def config_document(model: SymmetrizedModel, config: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The JSON document of a saved wrapper: its wrap options, the base model's description (``base``), and for an
    HF base model its config (``base["hf_config"]``), from which :func:`from_pretrained` rebuilds it."""
    feature_model = getattr(model.method, "feature_model", None)
    hf_config = getattr(model.base_model, "config", None)
    if callable(getattr(hf_config, "to_dict", None)) and type(model.base_model).__module__.startswith("transformers."):
        base = {**base, "hf_config": hf_config.to_dict()}
    return {
        "format": "symwrap",
        "format_version": FORMAT_VERSION,
        "wrap": config,
        "base_model": base,
        "feature_model": type(feature_model).__name__ if isinstance(feature_model, nn.Module) else None,
        "weights": WEIGHTS_NAME,
    }


def state_config_tensor(model: SymmetrizedModel) -> Tensor:
    """The document (without per-tensor shapes: the state dict has them) as a ``uint8`` tensor for ``state_dict``."""
    config = model.symwrap_config.to_dict()
    config["method_options"] = model.method.options_dict()
    base = {"class": f"{type(model.base_model).__module__}.{type(model.base_model).__qualname__}"}
    try:
        text = json.dumps(config_document(model, config, base), sort_keys=True, default=_not_json)
    except ValueError:  # an option JSON cannot hold: the state dict still saves, from_pretrained will say what
        text = json.dumps({"format": "symwrap", "format_version": FORMAT_VERSION, "unsaved": True})
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).clone()


def _not_json(value: Any) -> Any:
    raise ValueError(f"not JSON data: {value!r}")


def _require_json(value: Any, what: str) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"save_pretrained cannot write {what} = {value!r} to {CONFIG_NAME}: it is not JSON data. Use a "
            "registered name (register a proxy/method through a plugin hook) or plain values, or pass the object "
            "again to SymmetrizedModel.from_pretrained(..., option=value) after saving without it."
        ) from None


def _describe(model: nn.Module) -> dict[str, Any]:
    """Class, tensor names and shapes, and a checksum of a model's state (to recognise it when loading)."""
    state = model.state_dict()
    checksum = 0.0
    with torch.no_grad():
        for value in state.values():
            if value.is_floating_point():
                checksum += float(value.double().sum())
    return {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "tensors": {name: list(value.shape) for name, value in state.items()},
        "checksum": checksum,
    }


# ---------------------------------------------------------------------------------------------- loading
def from_pretrained(
    base_model: nn.Module | None,
    directory: str | os.PathLike[str],
    *,
    group: str | Group | None = None,
    method: str | Method | None = None,
    **options: Any,
) -> SymmetrizedModel:
    """Wrap ``base_model`` as described in ``directory`` and load the method's learned weights; eval mode.

    A folder written by HF ``Trainer.save_model`` (``model.safetensors``, the whole wrapper) is rebuilt with its
    base model's weights too: ``base_model=None`` builds an HF base model from the class and config saved with it;
    any other base model must be passed (its architecture; its weights are loaded from the folder).

    Args:
        base_model: The model the directory was saved with (checked: class, tensor names and shapes; a
            different checksum of its weights warns). ``None`` only for a ``Trainer`` folder of an HF model.
        directory: A directory written by :func:`save_pretrained` or by ``Trainer.save_model``.
        group: If given, the group the directory must hold (a name or a Group); another one raises.
        method: If given, the method the directory must hold (a name or a Method); another one raises.
        **options: Options for :func:`symwrap.wrap` that override or complete the saved ones (``chunk_size=``,
            ``feature_model=`` for a λ-equitune saved with one, ``output=<Action>``...).

    Raises:
        CheckpointError: A missing or corrupt file, a config for another group or method, or a base model that
            does not match; the message names the file and the mismatch.
    """

    directory = Path(directory)
    config_path = directory / CONFIG_NAME
    if not config_path.is_file() and (directory / STATE_NAME).is_file():
        return _from_state_folder(base_model, directory / STATE_NAME, group=group, method=method, **options)
    document = _read_config(config_path)
    saved = document["wrap"]
    _expect(config_path, "group", saved["group"], group)
    _expect(config_path, "method", saved["method"], method)
    if base_model is None:
        raise CheckpointError(
            f"{config_path} holds symwrap's own weights only, not the base model's: pass the base model, "
            "SymmetrizedModel.from_pretrained(directory, base_model=<the model it was saved with>)"
        )
    try:
        _check_base_model(config_path, document.get("base_model"), base_model)
    except (TypeError, AttributeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(
            f"{config_path} is corrupt: its 'base_model' description cannot be read ({type(exc).__name__}: {exc})"
        ) from None
    model = _rewrap(base_model, config_path, document, options)
    _load_weights(_weights_path(config_path, document.get("weights")), model.method, saved)
    return model.eval()


def _rewrap(base_model: nn.Module, config_path: Path, document: dict[str, Any], options: dict[str, Any]) -> Any:
    """``wrap(base_model, ...)`` with the saved options, completed or overridden by ``options``."""
    from symwrap.wrapper import wrap

    saved = document["wrap"]
    for key in ("method_options", "group_options"):
        if saved.get(key) is not None and not isinstance(saved.get(key), dict):
            raise CheckpointError(f"{config_path} is corrupt: 'wrap.{key}' is {saved[key]!r}, not an object")
    kwargs: dict[str, Any] = {
        "output": saved.get("output", "invariant"),
        "chunk_size": saved.get("chunk_size", "auto"),
        "max_memory": saved.get("max_memory"),
        "adapter": saved.get("adapter"),
        "action": saved.get("action"),
        "reduce": saved.get("reduce", "logits"),
        "class_dim": saved.get("class_dim", -1),
        "input": _tuple(saved.get("input")),
        "select": _tuple(saved.get("select")),
        "group_options": saved.get("group_options") or None,
        **(saved.get("method_options") or {}),
    }
    kwargs.update(options)
    if kwargs["chunk_size"] != "auto" and "max_memory" not in options:
        kwargs["max_memory"] = None  # a saved cap for chunk_size='auto' does not apply to a chunk size given now
    if isinstance(kwargs["output"], str) and kwargs["output"].startswith("equivariant:"):
        raise CheckpointError(
            f"{config_path} was saved with a custom output action ({kwargs['output'][12:]}), which JSON cannot "
            "hold: pass it again, SymmetrizedModel.from_pretrained(base_model, directory, output=<the Action>)"
        )
    if document.get("feature_model") and "feature_model" not in options:
        raise CheckpointError(
            f"{config_path} was saved with a separate feature model ({document['feature_model']}), which is not "
            "part of the saved files: pass it again with from_pretrained(..., feature_model=<that model>)"
        )
    try:
        model = wrap(base_model, saved["group"], saved["method"], **kwargs)
    except (CheckpointError, LimitError):  # a bound names its own fix (raising it), not a corrupt file
        raise
    except Exception as exc:
        raise CheckpointError(f"cannot rebuild the wrapper described by {config_path}: {exc}") from exc
    return model


def _from_state_folder(
    base_model: nn.Module | None,
    path: Path,
    *,
    group: str | Group | None,
    method: str | Method | None,
    **options: Any,
) -> SymmetrizedModel:
    """Rebuild a wrapper from a whole-``state_dict`` file (``Trainer.save_model``), base model included."""
    try:
        state: dict[str, Tensor] = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupt (not a readable safetensors file: {exc})") from None
    raw = state.pop(STATE_CONFIG_KEY, None)
    if raw is None or raw.dtype != torch.uint8 or raw.ndim != 1:
        raise CheckpointError(
            f"{path} has no {STATE_CONFIG_KEY!r} entry: it is not the state_dict of a symwrap wrapper (a folder "
            "written by Trainer.save_model of a wrapped model, or by safetensors.torch.save_file(wrapped.state_dict()))"
        )
    try:
        document = json.loads(bytes(raw.tolist()).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: its {STATE_CONFIG_KEY!r} entry is corrupt ({exc})") from None
    if document.get("unsaved"):
        raise CheckpointError(
            f"{path} was saved from a wrapper with an option JSON cannot hold; rebuild it with symwrap.wrap(...) "
            "and load the file with wrapped.load_state_dict(safetensors.torch.load_file(path))"
        )
    _check_document(path, document)
    saved = document["wrap"]
    _expect(path, "group", saved["group"], group)
    _expect(path, "method", saved["method"], method)
    base_info = document.get("base_model") or {}
    if base_model is None:
        base_model = _build_hf_base(path, base_info)
    elif base_info.get("class") != f"{type(base_model).__module__}.{type(base_model).__qualname__}":
        raise CheckpointError(
            f"base model mismatch: {path} was saved with a {base_info.get('class')}, but a "
            f"{type(base_model).__module__}.{type(base_model).__qualname__} was given. Pass the same architecture."
        )
    model = _rewrap(base_model, path, document, options)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        missing, unexpected = result.missing_keys[:5], result.unexpected_keys[:5]
        raise CheckpointError(
            f"{path} does not fit the rebuilt wrapper: missing {missing or 'nothing'}, unexpected "
            f"{unexpected or 'nothing'}. Pass the base model architecture it was saved with."
        )
    return model.eval()


def _build_hf_base(path: Path, base_info: dict[str, Any]) -> nn.Module:
    """An HF model of the saved class from the saved config (random init; the caller loads the weights)."""
    import importlib

    class_path, hf_config = base_info.get("class"), base_info.get("hf_config")
    if not isinstance(class_path, str) or not class_path.startswith("transformers.") or not isinstance(hf_config, dict):
        raise CheckpointError(
            f"{path} was saved with a {class_path} base model, which symwrap can rebuild only for Hugging Face "
            "transformers models: pass its architecture, SymmetrizedModel.from_pretrained(directory, "
            "base_model=<a model of that class>) (the weights come from the folder)"
        )
    module_name, _, class_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(f"{path}: cannot import the base model class {class_path} ({exc})") from None
    # by name, so the core never imports transformers itself (the saved class's own module did)
    pretrained = ("transformers.modeling_utils", "PreTrainedModel")
    if not (isinstance(cls, type) and any((c.__module__, c.__name__) == pretrained for c in cls.__mro__)):
        raise CheckpointError(f"{path}: {class_path} is not a transformers PreTrainedModel")
    return cls(cls.config_class.from_dict(hf_config))


def _weights_path(config_path: Path, name: Any) -> Path:
    """The weights file named in the config, which must be a file inside the checkpoint folder itself.

    A config may be edited by anyone who can write the folder; ``"../other/x.safetensors"`` or an absolute path
    would read a file from elsewhere, so only a plain file name (no folder part, no link out) is accepted.
    """
    directory = config_path.parent
    if name is None:
        return directory / WEIGHTS_NAME
    if (
        not isinstance(name, str)
        or not name
        or name != Path(name).name
        or name in {".", ".."}
        or any(c in name for c in "\\\0")
    ):
        raise CheckpointError(
            f"{config_path}: 'weights' is {name!r}; it must be the name of a file inside {directory} (such as "
            f"{WEIGHTS_NAME!r}), not a path. Checkpoint files are read from the checkpoint folder only."
        )
    path = directory / name
    if path.exists() and not path.resolve().is_relative_to(directory.resolve()):
        raise CheckpointError(
            f"{config_path}: the weights file {name!r} is a link to {path.resolve()}, outside {directory}. "
            "Checkpoint files are read from the checkpoint folder only; copy the file there."
        )
    return path


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(
            f"{path} not found: a directory written by save_pretrained holds {CONFIG_NAME} and {WEIGHTS_NAME} "
            f"(one written by Trainer.save_model holds {STATE_NAME})"
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is corrupt (not valid JSON: {exc}); save the model again") from None
    except RecursionError:
        raise CheckpointError(
            f"{path} is corrupt: its JSON is nested too deeply to read (save_pretrained writes a flat config); "
            "save the model again"
        ) from None
    _check_document(path, document)
    return document


def _check_document(path: Path, document: Any) -> None:
    if (
        not isinstance(document, dict)
        or document.get("format") != "symwrap"
        or not isinstance(document.get("wrap"), dict)
    ):
        raise CheckpointError(f"{path} is not a symwrap config (no 'format': 'symwrap' and 'wrap' section)")
    version = document.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise CheckpointError(
            f"{path} is corrupt: 'format_version' is {version!r}, not a whole number (this symwrap writes "
            f"{FORMAT_VERSION}); save the model again"
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {document['format_version']}; this symwrap reads up to {FORMAT_VERSION}. "
            "Upgrade symwrap."
        )
    missing = [key for key in ("group", "method") if not isinstance(document["wrap"].get(key), str)]
    if missing:
        raise CheckpointError(f"{path} is corrupt: its 'wrap' section has no {' or '.join(missing)} name")


def _expect(path: Path, what: str, saved: str, wanted: Any) -> None:
    if wanted is None:
        return
    name = wanted if isinstance(wanted, str) else getattr(wanted, "name", repr(wanted))
    if name != saved:
        raise CheckpointError(
            f"{path} holds a wrapper for {what} {saved!r}, not {what} {name!r}. Load it without {what}=..., or "
            f"point to a directory saved with {what} {name!r}."
        )


def _check_base_model(path: Path, saved: Any, model: nn.Module) -> None:
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path} is corrupt: it has no 'base_model' description")
    here = _describe(model)
    if saved.get("class") != here["class"]:
        raise CheckpointError(
            f"base model mismatch: {path} was saved with a {saved.get('class')}, but a {here['class']} was given. "
            "Pass the same base model the wrapper was saved with."
        )
    saved_tensors: dict[str, list[int]] = saved.get("tensors", {})
    problems = [f"{n} is missing" for n in saved_tensors if n not in here["tensors"]]
    problems += [f"{n} is unexpected" for n in here["tensors"] if n not in saved_tensors]
    problems += [
        f"{n} has shape {tuple(here['tensors'][n])}, saved {tuple(shape)}"
        for n, shape in saved_tensors.items()
        if n in here["tensors"] and list(here["tensors"][n]) != list(shape)
    ]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(
            f"base model mismatch: the {here['class']} given does not have the structure saved in {path}: "
            f"{'; '.join(problems[:5])}{more}. Pass the same base model (architecture and size)."
        )
    checksum = saved.get("checksum")
    if checksum is not None and (isinstance(checksum, bool) or not isinstance(checksum, (int, float))):
        raise CheckpointError(
            f"{path} is corrupt: the base model 'checksum' is {checksum!r}, not a number; save the model again"
        )
    if isinstance(checksum, (int, float)) and not _close(checksum, here["checksum"]):
        warnings.warn(
            f"the base model's weights differ from those saved with {path} (checksum {here['checksum']:.6g} vs "
            f"{checksum:.6g}): outputs will differ from the saved model's. If you fine-tuned the base model "
            "(or its head), load those weights into it first.",
            UserWarning,
            stacklevel=3,
        )


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _load_weights(path: Path, method: Method, saved: dict[str, Any]) -> None:
    if not path.is_file():
        raise CheckpointError(f"{path} not found: save_pretrained writes it next to {CONFIG_NAME}; save again")
    try:
        tensors: dict[str, Tensor] = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupt (not a readable safetensors file: {exc}); save again") from None
    for what in ("group", "method"):
        if what in metadata and metadata[what] != saved[what]:
            raise CheckpointError(
                f"{path} holds weights for {what} {metadata[what]!r}, but {path.parent / CONFIG_NAME} says "
                f"{saved[what]!r}: the two files come from different saves"
            )
    expected = method.state_to_save()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit method {method.name!r}: missing {missing or 'nothing'}, unexpected "
            f"{unexpected or 'nothing'}. The weights come from another method or configuration."
        )
    shapes = [
        f"{k}: saved {tuple(tensors[k].shape)}, expected {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(v.shape) != tuple(tensors[k].shape)
    ]
    if shapes:
        raise CheckpointError(f"{path} does not fit method {method.name!r}: {'; '.join(shapes)}")
    kinds = [
        f"{k}: saved as {tensors[k].dtype}, expected {v.dtype}"
        for k, v in expected.items()
        if v.is_floating_point() != tensors[k].is_floating_point()
        or (v.dtype == torch.bool) != (tensors[k].dtype == torch.bool)
    ]
    if kinds:  # load_state_dict would cast bool / int weights to float silently
        raise CheckpointError(
            f"{path} does not fit method {method.name!r}: {'; '.join(kinds)}. The file was not written by "
            "save_pretrained for this method; save again"
        )
    method.load_state_dict(tensors, strict=False)
