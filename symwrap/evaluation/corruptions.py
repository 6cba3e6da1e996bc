"""Corruptions for ``symwrap eval``: each group element on its own, and one seeded random element per image.

A corruption moves a batch of images by group elements with the group's own input action (the same code the
wrapper uses), so "rotated by 90°" means exactly ``torch.rot90(x, 1, dims=(-2, -1))`` here and in the methods.
The random corruption draws one element per *dataset index* from ``seed`` up front, so the drawn element of an
image does not depend on the batch size, the process count of a distributed run, or a resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from symwrap.actions.base import Action
from symwrap.groups.base import FiniteGroup, Group

__all__ = ["Corruption", "build_corruptions", "element_label"]


@dataclass
class Corruption:
    """One column of the results table.

    Attributes:
        name: ``"0°"``, ``"90°"``, ..., ``"g3"`` or ``"random"``.
        element: ``(*code_shape)`` the element applied to every image, or ``None`` for per-image elements.
        per_index: ``(N, *code_shape)`` the element of each dataset index (the random corruption).
        angle: Rotation angle in degrees of a planar element (for polar plots), else ``None``.
    """

    name: str
    element: Tensor | None = None
    per_index: Tensor | None = None
    angle: float | None = None

    def apply(self, images: Tensor, indices: Tensor, group: Group, action: Action) -> Tensor:
        """``(B, C, H, W)`` images of dataset ``indices`` ``(B,)`` -> the corrupted images."""
        rows = images.shape[0]
        if self.element is not None:
            elements = self.element.to(images.device).expand(rows, *self.element.shape)
        else:
            assert self.per_index is not None
            elements = self.per_index[indices.cpu()].to(images.device)
        src = torch.arange(rows, device=images.device)
        return action.apply(images, src, elements.to(images.dtype) if elements.is_floating_point() else elements, group)


def _planar_angle(element: Tensor) -> tuple[float, bool] | None:
    """Angle (degrees) and mirror flag of a 2×2 orthogonal matrix, else ``None``."""
    if tuple(element.shape) != (2, 2):
        return None
    m = element.double()
    mirrored = bool(torch.det(m) < 0)
    angle = math.degrees(math.atan2(float(m[1, 0]), float(m[0, 0]))) % 360.0
    return round(angle, 6) % 360.0, mirrored


def element_label(element: Tensor, index: int) -> str:
    """A short column name: ``"90°"``, ``"90°+m"`` (rotation after a mirror), or ``"g{index}"``."""
    planar = _planar_angle(element)
    if planar is None:
        return f"g{index}"
    angle, mirrored = planar
    text = f"{angle:.4g}°"
    return f"{text}+m" if mirrored else text


def build_corruptions(
    group: Group, size: int, *, seed: int, samples: int = 8, per_element: bool = True, random: bool = True
) -> list[Corruption]:
    """The corruptions of a run over ``size`` dataset indices.

    Args:
        group: A finite group (each element is a corruption) or a continuous one (``samples`` seeded elements).
        size: Number of dataset indices (for the per-image random elements).
        seed: Seeds the random elements.
        samples: Elements listed for a continuous group.
        per_element, random: Which corruptions to include.
    """
    generator = torch.Generator().manual_seed(seed)
    if isinstance(group, FiniteGroup):
        elements = group.elements()
    else:
        elements = group.sample(samples, generator=torch.Generator().manual_seed(seed + 1))
        elements = torch.cat([group.identity()[None].to(elements.dtype), elements[1:]])
    corruptions = []
    if per_element:
        for i, element in enumerate(elements):
            planar = _planar_angle(element)
            angle = planar[0] if planar is not None and not planar[1] else None
            corruptions.append(Corruption(element_label(element, i), element=element, angle=angle))
    if random:
        corruptions.append(Corruption("random", per_index=group.sample(size, generator=generator)))
    return corruptions
