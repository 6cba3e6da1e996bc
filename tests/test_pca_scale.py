"""PCA frames and canonical poses at every scale float32 holds, and for half / bfloat16 clouds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import symwrap
from symwrap.frames.pca import PCAFrame
from symwrap.groups import haar_orthogonal

SCALES = [1e-20, 1e-13, 1.0, 1e13, 1e20]


class ScaleFreeMLP(nn.Module):
    """Not rotation invariant, but blind to the cloud's overall scale (so large clouds do not saturate it)."""

    def __init__(self, points: int = 10, dim: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(points * dim, 16), nn.Tanh(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x / x.abs().amax(dim=(1, 2), keepdim=True))


def _cloud() -> torch.Tensor:
    return torch.randn(3, 10, 3) * torch.tensor([3.0, 1.5, 0.5])  # well separated eigenvalues


def _rotation() -> torch.Tensor:
    return haar_orthogonal(1, 3, special=False, generator=torch.Generator().manual_seed(1))[0].float()


@pytest.mark.parametrize("scale", SCALES)
def test_canonical_pose_is_the_same_at_every_scale(scale: float) -> None:
    x, rotation = _cloud() * scale, _rotation()
    frame = PCAFrame(3, special=False, translation=True)
    pose = x @ frame.canonical(x)[:, 0, :3, :3].transpose(1, 2)
    moved = x @ rotation.T + 5 * scale
    pose_moved = (moved - moved.mean(dim=1, keepdim=True)) @ frame.canonical(moved)[:, 0, :3, :3].transpose(1, 2)
    centred = pose - pose.mean(dim=1, keepdim=True)
    torch.testing.assert_close(pose_moved / scale, centred / scale, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["canonicalization", "frame_averaging"])
@pytest.mark.parametrize("scale", SCALES)
def test_wrapped_model_is_invariant_at_every_scale(method: str, scale: float) -> None:
    wrapped = symwrap.wrap(ScaleFreeMLP(), "o3", method, chunk_size=None)
    x = _cloud() * scale
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x @ _rotation().T), wrapped(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["canonicalization", "frame_averaging"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_clouds_are_symmetrized(method: str, dtype: torch.dtype) -> None:
    model = ScaleFreeMLP().to(dtype)
    wrapped = symwrap.wrap(model, "o3", method, chunk_size=None)
    x = _cloud()
    with torch.no_grad():
        out, moved = wrapped(x.to(dtype)), wrapped((x @ _rotation().T).to(dtype))
    assert out.shape == (3, 3) and torch.isfinite(out.float()).all()
    # the rotated cloud is rounded to half precision: the outputs agree to that precision, not to float32's
    tolerance = 0.05 if dtype == torch.bfloat16 else 5e-3
    torch.testing.assert_close(moved.float(), out.float(), rtol=tolerance, atol=tolerance)


def test_half_precision_frame_elements_come_back_in_the_input_dtype() -> None:
    elements, weights = PCAFrame(3, special=True, translation=False).frame(_cloud().half())
    assert elements.dtype == torch.float16 and elements.shape == (3, 4, 3, 3) and weights.shape == (3, 4)
