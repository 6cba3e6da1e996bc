"""What a model-spec loader returns (``timm:NAME``, ``hf:PATH``, ``open_clip:ARCH@TAG``, ``pkg.module:factory``).

Loaders are registered by plugins through the ``symwrap_register_model_loaders`` hook:
``register("timm", loader)``; the spec ``timm:resnet50`` then calls
``loader("resnet50", pretrained=False, device="cpu")``. Heavy imports stay inside the plugin that registers
the loader, so the core never imports timm, transformers or open_clip.

Loaders share two helpers for clear failures: :class:`UnknownBackboneError` (an unknown model name, with close
matches from the library's own list) and :func:`load_from_hub` (without a network, read only the local cache and
fail within seconds with a :class:`HubUnreachableError` that says how to give a local copy).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor, nn

from symwrap.errors import SymwrapError, UnknownNameError

__all__ = [
    "OFFLINE_VARIABLES",
    "HubUnreachableError",
    "LoadedModel",
    "ModelLoader",
    "UnknownBackboneError",
    "hub_offline",
    "hub_offline_reason",
    "load_from_hub",
]


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


# ------------------------------------------------------------------------------------- clear loader errors
#: Environment variables that put the Hugging Face hub clients (transformers, timm, open_clip) offline.
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class UnknownBackboneError(UnknownNameError):
    """A model name the backbone library does not know; the message lists close matches from its own list."""

    def __init__(self, kind: str, name: str, available: Iterable[str], hint: str = "") -> None:
        names = sorted(set(available))
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
        message = f"unknown {kind} {name!r}."
        message += f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else " No close match."
        if hint:
            message += f" {hint}"
        SymwrapError.__init__(self, message)
        self.kind, self.name, self.available, self.message = kind, name, names, message


class HubUnreachableError(SymwrapError, OSError):
    """A model spec needs files from a model hub that cannot be reached, and they are not cached locally."""


def hub_offline_reason(host: str = "huggingface.co", *, timeout: float = 2.0) -> str | None:
    """Why the hub cannot be reached (an offline variable set, or no connection within ``timeout`` s), or ``None``.

    A connection probe with a short timeout, so a machine without network fails in seconds instead of after the
    hub clients' retries.
    """
    for variable in OFFLINE_VARIABLES:
        if os.environ.get(variable, "").strip().lower() in {"1", "true", "yes", "on"}:
            return f"{variable}={os.environ[variable]} is set"
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(f"{host} cannot be reached ({type(exc).__name__}: {exc})")

    # (the name lookup ignores the socket timeout and can hang for a minute without a network: a daemon thread
    # bounds the whole probe)
    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    return outcome[0] if outcome else f"{host} did not answer within {timeout:g} s"


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Within the block the Hugging Face hub clients read only their local cache (no network retries)."""
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    saved = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # read once at import; set for clients already imported
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved


def load_from_hub(spec: str, load: Callable[[], Any], *, probe: Callable[[], str | None] = hub_offline_reason) -> Any:
    """Call ``load()`` (which may download from the Hugging Face hub); without a network, fail fast and clearly.

    When the hub is reachable, ``load()`` runs as is. When it is not, ``load()`` runs against the local cache
    only; if the files are not there, :class:`HubUnreachableError` says so and how to go on.
    """
    reason = probe()
    if reason is None:
        return load()
    try:
        with hub_offline():
            logging.disable(logging.ERROR)  # the clients' own "failed to download" lines: the error below says it
            try:
                return load()
            finally:
                logging.disable(logging.NOTSET)
    except SymwrapError:
        raise
    except Exception as exc:
        raise HubUnreachableError(
            f"model spec {spec!r} needs files from the Hugging Face hub, which is not reachable here ({reason}), "
            "and they are not in the local cache. Download them once on a machine with a network and point "
            "HF_HOME (or HF_HUB_CACHE) at that cache, or give a local copy: a save_pretrained folder "
            "(hf:./my-model) or a checkpoint file (--pretrained PATH.safetensors)."
        ) from exc
