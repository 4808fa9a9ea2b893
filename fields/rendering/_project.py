"""Shared pieces of the projection to screen-space splats: the `Splats` record the rasterizers
consume, camera `Intrinsics`, the culling constants, and the SH degree check.

The CPU projection itself is compiled (`_project_cpu.project_cpu`, C++ in `_csrc/project.h`);
`_reference.project_reference` is the plain float64 torch version the tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .._sh import sh_degree_from_k

ALPHA_MIN = 1.0 / 255.0  # alpha below this is skipped by the rasterizer (gsplat ALPHA_THRESHOLD)
EXTEND_MAX = 3.33  # bounding-box half-extent in standard deviations, at most
FOV_CLAMP = 0.3  # the Jacobian is evaluated at x/z clamped to the image plus 30% of tan(fov/2)


@dataclass(frozen=True, eq=False)
class Splats:
    """Screen-space splats, the rasterizer's input, one row per Gaussian of the scene."""

    means2d: Tensor  # [N,2] pixel coordinates (pixel (i,j) centre at (i+0.5, j+0.5))
    conics: Tensor  # [N,3] (a, b, c) of the inverse 2D covariance [[a, b], [b, c]]
    opacities: Tensor  # [N] activated
    colors: Tensor  # [N,D] rgb(3), camera z(1), features(C)
    depths: Tensor  # [N] camera z, the sort key (no grad)
    radii: Tensor  # [N,2] int32 bounding-box half-extents in pixels; (0, 0) = culled


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels and the image size."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int


def check_sh_degree(sh: Tensor, sh_degree: int | None) -> int:
    """The SH degree to shade with: the scene's by default, lower ones truncate."""
    have = sh_degree_from_k(sh.shape[1])
    if sh_degree is None:
        return have
    if not 0 <= sh_degree <= have:
        raise ValueError(f"sh_degree={sh_degree} is not in 0..{have} (the scene's SH degree)")
    return int(sh_degree)
