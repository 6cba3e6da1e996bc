"""The sign group Z2 = {+1, -1} and its action x ↦ ±x on tensors of any shape."""

from __future__ import annotations

import torch
from torch import Tensor

from symwrap.actions import Action
from symwrap.groups import FiniteGroup, Group

__all__ = ["SignAction", "SignGroup"]


class SignGroup(FiniteGroup):
    """Z2 = {+1, -1} under multiplication.

    Convention:
        Codes are float32 scalars (``code_shape = ()``) holding ``+1.0`` or ``-1.0``. ``compose(a, b) = a * b``
        and every element is its own inverse. Elements are listed ``[+1, -1]`` (identity first). The default
        action is :class:`SignAction` (``g·x = g * x``). Exact.
    """

    name = "sign"
    exact = True
    code_shape = ()
    code_dtype = torch.float32

    def elements(self) -> Tensor:
        return torch.tensor([1.0, -1.0], dtype=self.code_dtype)

    def identity(self) -> Tensor:
        return torch.tensor(1.0, dtype=self.code_dtype)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return a * b

    def inverse(self, a: Tensor) -> Tensor:
        return a.clone()

    def default_action(self) -> Action:
        return SignAction()


class SignAction(Action):
    """Multiplies whole inputs by a sign.

    Convention:
        Data of any shape ``(B, ...)`` and any signed dtype (float, complex, signed int). A code ``s``
        (``+1`` or ``-1``, shape ``()`` or ``(1,)``) acts by ``s·x = s * x`` on every entry:
        ``out[r] = elements[r] * x[src[r]]``. The action is its own pull-back, so equivariant outputs
        (``output="equivariant"``: an odd model, ``f(-x) == -f(x)``) use it too. Exact.
    """

    name = "sign"
    layout = "any signed tensor (B, ...)"

    def problem(self, x: object, group: Group, *, output: bool = False) -> str | None:
        base = super().problem(x, group, output=output)
        if base:
            return base
        assert isinstance(x, Tensor)
        if not x.dtype.is_signed:
            return f"cannot negate a {x.dtype} tensor; convert it to a signed dtype first (x.float())."
        if group.code_shape not in ((), (1,)):
            return f"the sign action needs scalar codes of shape () or (1,), not {group.code_shape}."
        return None

    def apply(self, x: Tensor, src: Tensor, elements: Tensor, group: Group) -> Tensor:
        rows = x.index_select(0, src)
        signs = elements.reshape(-1).to(device=rows.device, dtype=rows.dtype)
        return signs.reshape(-1, *([1] * (rows.ndim - 1))) * rows
