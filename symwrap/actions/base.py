"""Actions: how a group element moves one kind of data. Separate from the group's algebra."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from symwrap.errors import InputLayoutError

if TYPE_CHECKING:
    from symwrap.groups.base import Group

__all__ = ["Action"]


class Action(ABC):
    """Moves batches of data by batches of group elements.

    Subclasses document their layout and conventions in a ``Convention:`` block.

    Attributes:
        name: Short name (``"image"``, ``"points"``, ``"set"``...).
        layout: Human description of the data layout, used in error messages.
    """

    name: str = "action"
    layout: str = "(B, ...)"

    @abstractmethod
    def apply(self, x: Tensor, src: Tensor, elements: Tensor, group: Group) -> Tensor:
        """Move rows of ``x`` by elements: ``out[r] = elements[r] · x[src[r]]``.

        Args:
            x: Data ``(B, ...)`` in this action's layout.
            src: ``(R,)`` int64 row of ``x`` each output row starts from.
            elements: ``(R, *group.code_shape)`` codes of ``group``.
            group: The group the codes belong to.

        Returns:
            ``(R, ...)``, same trailing shape as ``x``.
        """

    def row_gather(self, x: Tensor, src: Tensor, elements: Tensor, group: Group) -> Callable[[Tensor], Tensor]:
        """``apply`` with ``src`` and ``elements`` fixed, for inputs shaped like ``x``: what the fast path of a static
        plan calls every time (:mod:`symwrap.fast_path`).

        The default calls :meth:`apply`; actions override it to precompute what depends only on the elements.

        Args:
            x: An input ``(B, ...)`` of the shape the returned function will take.
            src: ``(R,)`` the input row of each output row.
            elements: ``(R, *group.code_shape)``.
            group: The group the codes belong to.

        Returns:
            ``x (B, ...) -> (R, ...)``, equal to ``apply(x, src, elements, group)``.
        """
        return lambda data: self.apply(data, src, elements, group)

    def apply_orbit(self, x: Tensor, elements: Tensor, group: Group) -> Tensor:
        """:meth:`apply` in the engine's row order: ``out[b·k + j] = elements[b·k + j] · x[b]``.

        What the fast path of a plan made from the input calls every time (:mod:`symwrap.fast_path`); the default
        builds that ``src`` and calls :meth:`apply`, and actions override it where the rows of ``x`` need not be
        copied ``k`` times first.

        Args:
            x: Data ``(B, ...)``.
            elements: ``(B·k, *group.code_shape)``, ``k`` codes per input.
            group: The group the codes belong to.

        Returns:
            ``(B·k, ...)``, equal to ``apply(x, arange(B).repeat_interleave(k), elements, group)``.
        """
        batch = x.shape[0]
        src = torch.arange(batch, device=x.device).repeat_interleave(elements.shape[0] // max(batch, 1))
        return self.apply(x, src, elements, group)

    def check(self, x: object, group: Group, *, output: bool = False) -> None:
        """Raise :class:`InputLayoutError` when ``x`` (an input, or an output to pull back) does not fit."""
        problem = self.problem(x, group, output=output)
        if not problem:
            return
        if output:
            shape = tuple(x.shape[1:]) if isinstance(x, Tensor) else type(x).__name__
            raise InputLayoutError(
                f"output='equivariant' pulls outputs back with group {group.name!r} as {self.layout} "
                f"({self.name} action), but the model's output has shape {shape} per input: {problem} "
                "Use output='invariant' for outputs that do not move with the input (class scores, embeddings), "
                "or pass output=<an Action> that can move this output."
            )
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputLayoutError(
            f"group {group.name!r} acts on {self.layout} ({self.name} action) but the input has shape {shape}: "
            f"{problem}"
        )

    def problem(self, x: object, group: Group, *, output: bool = False) -> str | None:
        """Why ``x`` does not fit (a sentence that says how to fix it), or ``None`` if it does."""
        if not isinstance(x, Tensor):
            return "expected a torch.Tensor."
        if x.ndim < 1:
            return "expected a batched tensor."
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
