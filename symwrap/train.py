"""Small training helpers: fine-tune a wrapper's learned parts (a λ-net, optionally a head), base frozen.

Plain PyTorch underneath, and they work on a wrapper inside ``DistributedDataParallel``::

    model = symwrap.wrap(cnn, "rot90", "lambda_equitune", features="features")
    params = symwrap.train.prepare(model, images[:2])  # builds the λ-net (a named submodule's width needs a forward)
    ddp = torch.nn.parallel.DistributedDataParallel(model)  # after prepare: DDP needs every parameter built
    optimizer = torch.optim.Adam(params, lr=3e-3)
    for x, y in loader:
        symwrap.train.train_step(ddp, x, y, optimizer)

:func:`fit` runs that loop on in-memory tensors in one process. The base model is never trained unless you
unfreeze part of it (``train_head="head"``); its weights are not written by ``save_pretrained``, so save a
fine-tuned head with the base model's own tools.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from symwrap.errors import ConfigError
from symwrap.groups.base import FiniteGroup, Group

__all__ = ["fit", "group_augment", "prepare", "train_step", "trainable_parameters", "unwrap_parallel"]

Augment = Callable[[Tensor, torch.Generator], Tensor]


def unwrap_parallel(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` (or ``model`` itself)."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that require gradients (the λ-net, and any part of the base you unfroze)."""
    return [p for p in unwrap_parallel(model).parameters() if p.requires_grad]


def prepare(model: nn.Module, example_input: Any = None, *, train_head: str | None = None) -> list[nn.Parameter]:
    """Get a wrapper ready for an optimizer (and DDP): build lazily-sized parts, optionally unfreeze the head.

    Learned parts whose width the adapter knows are built by :func:`symwrap.wrap` already; a λ-net on a named
    submodule (``features=``) or a separate ``feature_model`` needs one forward, which ``example_input`` gives.

    Args:
        model: A :class:`~symwrap.wrapper.SymmetrizedModel` (not yet inside DDP).
        example_input: A few inputs (a tensor ``(b, ...)``, a tuple of positional or a dict of keyword
            arguments); one forward without gradients, in eval mode, sizes the parts not built yet. Needed only
            when some are.
        train_head: Dotted path of a base-model submodule to fine-tune too (``"head"``, ``"classifier"``).

    Returns:
        The trainable parameters (give them to the optimizer).

    Raises:
        ConfigError: ``model`` is not a wrapper; a learned part is unbuilt and no ``example_input`` was given; the
            method has nothing to train and no ``train_head``.
    """
    from symwrap.wrapper import SymmetrizedModel, build_from_example

    if not isinstance(model, SymmetrizedModel):
        raise ConfigError(
            f"prepare() takes the SymmetrizedModel returned by symwrap.wrap, got {type(model).__name__}; call it "
            "before wrapping in DistributedDataParallel"
        )
    if train_head is not None:
        try:
            head = model.base_model.get_submodule(train_head)
        except AttributeError:
            names = ", ".join(n for n, _ in model.base_model.named_children()) or "none"
            raise ConfigError(
                f"invalid option 'train_head': the base model has no submodule {train_head!r} (its top-level "
                f"submodules: {names})"
            ) from None
        head.requires_grad_(True)
    unbuilt = model.method.unbuilt_parts()
    if unbuilt:
        if example_input is None:
            raise ConfigError(
                f"prepare(): method {model.method.name!r} has learned parts only a forward can size "
                f"({', '.join(unbuilt)}); pass example_input=<a few inputs>, e.g. "
                "symwrap.train.prepare(wrapped, images[:2])"
            )
        build_from_example(model, example_input)
    params = trainable_parameters(model)
    if not params:
        raise ConfigError(
            f"method {model.method.name!r} has no trainable parameters; use lambda_equitune (or pass train_head=...)"
        )
    return params


def train_step(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> float:
    """One optimizer step on a batch (``model`` may be inside DDP, which averages the gradients); returns the loss."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def group_augment(group: Group) -> Augment:
    """An augmentation moving each input by a uniformly drawn element of a finite ``group`` (default action)."""
    if not isinstance(group, FiniteGroup):
        raise ConfigError(f"group_augment needs a finite group, got {group.name!r}")
    action = group.default_action()

    def augment(x: Tensor, generator: torch.Generator) -> Tensor:
        elements = group.sample(x.shape[0], generator=generator).to(x.device)
        return action.apply(x, torch.arange(x.shape[0], device=x.device), elements, group)

    return augment


def fit(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 3e-3,
    train_head: str | None = None,
    augment: Augment | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    seed: int = 0,
) -> list[float]:
    """Fine-tune the wrapper's learned parts with Adam on in-memory data, base frozen; returns the losses.

    Args:
        model: A :class:`~symwrap.wrapper.SymmetrizedModel` (for several processes, use :func:`prepare` and
            :func:`train_step` with DDP instead).
        inputs: ``(N, ...)`` training inputs. targets: ``(N, ...)`` targets for ``loss_fn``.
        steps: Optimizer steps, each on ``batch_size`` inputs drawn without replacement (reshuffled per epoch).
        lr: Adam learning rate.
        train_head: A base-model submodule to fine-tune too (see :func:`prepare`).
        augment: ``augment(batch, generator)`` applied to each batch (e.g. :func:`group_augment`).
        seed: Seeds the batch order and the augmentation.

    Returns:
        The loss of every step. The model is left in eval mode.
    """
    if steps < 1 or batch_size < 1:
        raise ConfigError(f"steps and batch_size must be >= 1, got steps={steps}, batch_size={batch_size}")
    generator = torch.Generator().manual_seed(seed)
    params = prepare(model, inputs[:2], train_head=train_head)
    optimizer = torch.optim.Adam(params, lr=lr)
    losses: list[float] = []
    order = torch.randperm(len(inputs), generator=generator)
    position = 0
    for _ in range(steps):
        if position + batch_size > len(order):
            order, position = torch.randperm(len(inputs), generator=generator), 0
        index = order[position : position + batch_size].to(inputs.device)
        position += batch_size
        batch = inputs[index]
        if augment is not None:
            batch = augment(batch, generator)
        losses.append(train_step(model, batch, targets[index], optimizer, loss_fn))
    model.eval()
    return losses
