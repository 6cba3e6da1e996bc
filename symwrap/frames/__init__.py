"""Input-dependent frames and canonical poses: PCA frames for O(d)/SO(d)/E(d)/SE(d), sorting frames for S_n.

A *frame* F(x) ⊂ G is a small set of group elements that moves with the input, ``F(h·x) = F(x)·h⁻¹`` in
symwrap's plan convention (the planned elements ``a`` put ``a·x`` in a canonical pose), so averaging over
it is exactly invariant (Puny et al., "Frame Averaging for Invariant and Equivariant Network Design",
ICLR 2022, arXiv 2110.03336). A frame of size one is a canonicalizer.
"""

from symwrap.frames.base import DegenerateFrameWarning, DegenerateInputError, check_cloud, check_mask
from symwrap.frames.pca import PCAFrame, pca
from symwrap.frames.sorting import SortFrame, check_set_input, lexsort

__all__ = [
    "DegenerateFrameWarning",
    "DegenerateInputError",
    "PCAFrame",
    "SortFrame",
    "check_cloud",
    "check_mask",
    "check_set_input",
    "lexsort",
    "pca",
]
