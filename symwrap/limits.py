"""Upper bounds on the work one call may ask for: group orders, sample counts and dimensions.

A name like ``c999999999999``, a tampered ``symwrap_config.json`` or ``--samples 100000000`` would otherwise build
tensors until memory runs out or run for ever. Each bound is checked before the work is done, the same way in
:func:`symwrap.wrap`, :func:`symwrap.check`, ``from_pretrained`` and the command line; going over it raises
:class:`~symwrap.errors.LimitError`, whose message names the bound and how to raise it:

* ``SYMWRAP_MAX_GROUP_ORDER``, ``SYMWRAP_MAX_SAMPLES``, ``SYMWRAP_MAX_DIMENSION`` (environment, read on each check);
* :func:`set_limits` (for the process) or ``with limits_raised(max_group_order=...)`` (for a block);
* ``symwrap eval/check --max-group-order N --max-samples N`` on the command line (the dimension bound through the
  environment).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace

from symwrap.errors import ConfigError, LimitError

__all__ = [
    "DEFAULT_LIMITS",
    "Limits",
    "check_dimension",
    "check_group_order",
    "check_samples",
    "current_limits",
    "limits_raised",
    "set_limits",
]


@dataclass(frozen=True)
class Limits:
    """The bounds in force.

    Attributes:
        max_group_order: Most elements a finite group (or a frame) may list: 40320 = 8!, the largest listed
            permutation group. ``c{n}`` takes ``n`` elements, ``d{n}`` ``2n``, ``shift`` on ``H×W`` images ``H·W``.
        max_samples: Most sampled elements per input (``monte_carlo`` ``samples``, ``--samples``, ``check``).
        max_dimension: Largest ``d`` of ``o{d}``, ``so{d}``, ``e{d}``, ``se{d}``.
    """

    max_group_order: int = 40320
    max_samples: int = 4096
    max_dimension: int = 64


DEFAULT_LIMITS = Limits()
_ENV = {
    "max_group_order": "SYMWRAP_MAX_GROUP_ORDER",
    "max_samples": "SYMWRAP_MAX_SAMPLES",
    "max_dimension": "SYMWRAP_MAX_DIMENSION",
}
#: The bounds ``symwrap eval`` and ``symwrap check`` take as flags.
_CLI_FLAGS = {"max_group_order": "--max-group-order", "max_samples": "--max-samples"}
_state = threading.local()
_process: dict[str, Limits] = {"limits": DEFAULT_LIMITS}


def _positive(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive int, got {value!r}")
    return value


def current_limits() -> Limits:
    """The bounds in force here: a :func:`limits_raised` block, else :func:`set_limits`, with the environment."""
    limits = getattr(_state, "limits", None) or _process["limits"]
    changes = {}
    for field, variable in _ENV.items():
        text = os.environ.get(variable, "").strip()
        if text:
            try:
                value = int(text)
            except ValueError:
                value = 0
            changes[field] = _positive(value, f"{variable}={text!r}")
    return replace(limits, **changes) if changes else limits


def set_limits(
    *, max_group_order: int | None = None, max_samples: int | None = None, max_dimension: int | None = None
) -> Limits:
    """Change the bounds for the whole process; returns the previous ones (``set_limits(**vars(old))`` undoes)."""
    old = _process["limits"]
    _process["limits"] = _changed(old, max_group_order, max_samples, max_dimension)
    return old


@contextlib.contextmanager
def limits_raised(
    *, max_group_order: int | None = None, max_samples: int | None = None, max_dimension: int | None = None
) -> Iterator[Limits]:
    """Use other bounds inside a ``with`` block (this thread only)."""
    previous = getattr(_state, "limits", None)
    _state.limits = _changed(previous or _process["limits"], max_group_order, max_samples, max_dimension)
    try:
        yield _state.limits
    finally:
        _state.limits = previous


def _changed(base: Limits, order: int | None, samples: int | None, dimension: int | None) -> Limits:
    values = {"max_group_order": order, "max_samples": samples, "max_dimension": dimension}
    return replace(base, **{k: _positive(v, k) for k, v in values.items() if v is not None})


def _refuse(what: str, value: int, field: str, limit: int, advice: str) -> LimitError:
    ways = f"symwrap.set_limits({field}=N), `with symwrap.limits_raised({field}=N):`"
    if field in _CLI_FLAGS:
        ways += f", {_ENV[field]}=N, or {_CLI_FLAGS[field]} N on the command line"
    else:
        ways += f" or {_ENV[field]}=N"
    return LimitError(
        f"{what} is {value}, above the bound {field}={limit}{advice}. If you mean it, raise the bound: {ways}."
    )


def check_group_order(order: int, what: str, advice: str = "") -> None:
    """Refuse a finite group or frame of more than ``max_group_order`` elements before it is listed."""
    limit = current_limits().max_group_order
    if order > limit:
        raise _refuse(f"the order of {what}", order, "max_group_order", limit, advice)


def check_samples(samples: int, what: str) -> None:
    """Refuse more than ``max_samples`` sampled elements."""
    limit = current_limits().max_samples
    if samples > limit:
        raise _refuse(what, samples, "max_samples", limit, "")


def check_dimension(dimension: int, what: str) -> None:
    """Refuse matrix groups acting in more than ``max_dimension`` dimensions."""
    limit = current_limits().max_dimension
    if dimension > limit:
        raise _refuse(f"the dimension of {what}", dimension, "max_dimension", limit, "")
