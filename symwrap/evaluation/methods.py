"""The methods ``symwrap eval`` compares side by side: the plain model and every registered method.

The list is open: a method registered in the method registry (by symwrap or a plugin) is selected with
``--methods NAME``; a method with learned parts saved by ``SymmetrizedModel.save_pretrained(DIR)`` with
``--methods NAME=DIR`` (loaded by ``SymmetrizedModel.from_pretrained(base, DIR)``). :data:`DEFAULT_METHODS` are
compared when ``--methods`` is not given — each one that is registered and applies to the group; adding a
method to the default comparison is one line there. Methods are never reimplemented here: each is built with
:func:`symwrap.wrap`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from symwrap.errors import ConfigError, SymwrapError
from symwrap.evaluation.loading import LoadedModel
from symwrap.groups.base import Group
from symwrap.plugins import get_registry

__all__ = ["DEFAULT_METHODS", "PLAIN", "SHIPPED", "SHIPPED_DIR", "EvalMethod", "build_methods", "parse_methods"]

PLAIN = "plain"

#: Compared by default, in this order, when registered and applicable to the group (one line per method).
#: Methods with learned parts (``lambda_equitune``, ``canonicalization`` with a learned canonicalizer) join the
#: defaults only where trained weights ship for the model and group (:data:`SHIPPED`): untrained, their accuracy
#: means nothing; select other trained ones with ``--methods NAME=DIR``.
DEFAULT_METHODS = (
    PLAIN,
    "group_averaging",
    "equizero",
    "frame_averaging",
)

#: Where the trained methods shipped in the package live (``save_pretrained`` folders written by
#: ``examples/train_digits_methods.py``, trained on the digits ``"train"`` split only).
SHIPPED_DIR = Path(__file__).with_name("trained")

#: ``(model spec, group) -> {method: save_pretrained folder}``: trained methods compared by default.
SHIPPED = {
    ("digits", "rot90"): {
        "lambda_equitune": SHIPPED_DIR / "digits-rot90-lambda_equitune",
        "canonicalization": SHIPPED_DIR / "digits-rot90-canonicalization",
    },
}


@dataclass(frozen=True)
class EvalMethod:
    """One ``--methods`` entry: a registry name, and a ``save_pretrained`` folder for learned methods."""

    name: str
    directory: str | None = None

    @property
    def label(self) -> str:
        return self.name

    def spec(self) -> str:
        return self.name if self.directory is None else f"{self.name}={self.directory}"


def parse_methods(
    text: str | None, *, model: str | None = None, group: str | None = None, pretrained: str | None = None
) -> tuple[list[EvalMethod], bool]:
    """``"plain,group_averaging,lambda_equitune=runs/lam"`` -> methods; ``None`` -> the defaults (``True``).

    The defaults are :data:`DEFAULT_METHODS` plus the trained methods of :data:`SHIPPED` for ``(model, group)``
    when the model runs with its shipped weights (``pretrained`` not given).
    """
    if text is None:
        methods = [EvalMethod(name) for name in DEFAULT_METHODS]
        if pretrained is None:
            shipped = SHIPPED.get((str(model), str(group)), {})
            methods += [EvalMethod(name, str(folder)) for name, folder in shipped.items() if folder.is_dir()]
        return methods, True
    methods = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        name, _, directory = token.partition("=")
        methods.append(EvalMethod(name.strip(), directory.strip() or None))
    if not methods:
        raise ConfigError("--methods is empty: give e.g. --methods plain,group_averaging")
    names = [m.name for m in methods]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"--methods names {', '.join(duplicates)} more than once")
    return methods, False


def build_one(
    method: EvalMethod, loaded: LoadedModel, group: Group, *, chunk_size: Any, max_memory: int | None = None
) -> nn.Module:
    """The model to evaluate for ``method`` (the plain model itself for ``"plain"``); ``max_memory`` (bytes) caps
    the chunks of ``chunk_size="auto"``."""
    import symwrap

    if method.name == PLAIN:
        if method.directory is not None:
            raise ConfigError("--methods: 'plain' takes no folder")
        return loaded.model
    if method.directory is not None:
        directory = Path(method.directory)
        if not directory.is_dir():
            raise ConfigError(
                f"--methods {method.spec()}: folder {str(directory)!r} does not exist. Give the folder written by "
                "SymmetrizedModel.save_pretrained(DIR)."
            )
        model = symwrap.SymmetrizedModel.from_pretrained(
            loaded.model, str(directory), **({"max_memory": max_memory} if max_memory else {})
        )
        expected = get_registry("method").lookup(method.name)[0].factory  # aliases resolve to the same class
        if type(model.method) is not expected and model.method.name != method.name:
            raise ConfigError(
                f"--methods {method.spec()}: the folder holds method {model.method.name!r}, not {method.name!r}; "
                f"write --methods {model.method.name}={method.directory}"
            )
        return model.eval()
    get_registry("method").lookup(method.name)  # UnknownNameError lists the registered methods
    options = {"chunk_size": chunk_size, "max_memory": max_memory, **loaded.wrap_options}
    if method.name in LEARNED_METHODS:
        raise _needs_training(method.name)
    try:
        model = symwrap.wrap(loaded.model, group, method.name, **options).eval()
    except SymwrapError as exc:
        if method.name in LEARNED_WHEN_IMAGES:
            raise _needs_training(method.name) from exc
        raise
    if any(True for _ in model.method.parameters()):  # untrained learned parts (a learned canonicalizer)
        raise _needs_training(method.name)
    return model


#: Methods that always have learned parts: from the command line they are given as ``NAME=DIR``.
LEARNED_METHODS = frozenset({"lambda_equitune"})
#: Methods whose image variant is learned (a learned canonicalizer); analytic variants (frames of point clouds)
#: need no folder.
LEARNED_WHEN_IMAGES = frozenset({"canonicalization"})


def _needs_training(name: str) -> ConfigError:
    shipped = ", ".join(
        f"--methods {n}={d}" for (m, g), folders in SHIPPED.items() for n, d in folders.items() if n == name
    )
    return ConfigError(
        f"--methods {name}: this method has learned parts, and untrained they give meaningless accuracies. "
        f"Give a trained one as --methods {name}=DIR, where DIR is a folder written by save_pretrained "
        "(examples/train_digits_methods.py trains and saves one for the digits)"
        + (f"; the one shipped for `symwrap eval` on digits with rot90: {shipped}" if shipped else "")
        + "."
    )


def build_methods(
    methods: list[EvalMethod],
    defaults: bool,
    loaded: LoadedModel,
    group: Group,
    *,
    chunk_size: Any,
    max_memory: int | None = None,
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """Build every method's model; with the defaults, skip (and say why) those not registered or not applicable.

    Returns:
        ``{label: model}`` in order, and ``{name: reason}`` for the default methods that were skipped.
    """
    built: dict[str, nn.Module] = {}
    skipped: dict[str, str] = {}
    registry = get_registry("method")
    for method in methods:
        if defaults and method.name != PLAIN and method.name not in registry:
            skipped[method.name] = "not registered (install the plugin that provides it)"
            continue
        try:
            built[method.label] = build_one(method, loaded, group, chunk_size=chunk_size, max_memory=max_memory)
        except SymwrapError as exc:
            if not defaults:
                raise
            skipped[method.name] = f"not applicable: {exc}"
    return built, skipped
