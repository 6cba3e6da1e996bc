"""Actions: how group elements move inputs and outputs (images, point clouds, vectors, sets)."""

from symwrap.actions.base import Action
from symwrap.actions.image import ImageAction
from symwrap.actions.points import PointCloudAction, VectorAction
from symwrap.actions.sets import AxisPermutationAction
from symwrap.actions.signal import SignalAction
from symwrap.actions.tokens import TokenGridAction
from symwrap.actions.volume import VolumeAction

__all__ = [
    "Action",
    "AxisPermutationAction",
    "ImageAction",
    "PointCloudAction",
    "SignalAction",
    "TokenGridAction",
    "VectorAction",
    "VolumeAction",
]
