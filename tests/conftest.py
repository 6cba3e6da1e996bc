"""Shared fixtures: small non-invariant models and generic inputs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import symwrap


def smooth_disk_image(size: int = 33, batch: int = 1, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random image ``(batch, channels, size, size)`` zeroed outside the inscribed disk, and the
    normalised radius of each pixel ``(size, size)`` (the regime where interpolated rotations are accurate)."""
    low = torch.randn(batch, channels, 6, 6)
    x = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    axis = torch.linspace(-1, 1, size)
    radius = (axis[:, None] ** 2 + axis[None, :] ** 2).sqrt()
    return x * (radius <= 1), radius


@pytest.fixture
def builtins_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process registries with only the built-in plugins (autoload off, as in the CLI tests' child processes)."""
    monkeypatch.setenv("SYMWRAP_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("SYMWRAP_LOAD_PLUGINS", raising=False)
    symwrap.reload_plugins()
    yield
    symwrap.reload_plugins()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


class SmallCNN(nn.Module):
    """A classifier with no built-in symmetry (strided convs, position-dependent linear head)."""

    def __init__(self, size: int = 16, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1))
        self.head = nn.Linear(8 * (size // 2) ** 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.features(x)).flatten(1))


class DenseCNN(nn.Module):
    """A size-preserving network with position-dependent output (not equivariant by itself)."""

    def __init__(self, size: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, classes, 5, padding=2)
        self.pos = nn.Parameter(torch.randn(1, classes, size, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x))) + self.pos


class PointMLP(nn.Module):
    """An MLP on flattened point clouds: neither rotation nor permutation invariant."""

    def __init__(self, points: int = 6, dim: int = 3, out: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(points * dim, 32), nn.Tanh(), nn.Linear(32, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture
def cnn() -> SmallCNN:
    return SmallCNN().eval()


@pytest.fixture
def dense_cnn() -> DenseCNN:
    return DenseCNN().eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 16, 16)
