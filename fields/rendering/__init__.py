"""Rendering Gaussian scenes: `render(scene, camera)` -> `RenderOutput` (rgb, alpha, expected
depth, optional feature channels, per-Gaussian radii and screen positions).

Backends: "gsplat" (CUDA) and "cpu" (compiled projection + tile rasterizer); "auto" picks
by the scene's device. Slow references for tests live in `fields.rendering._reference`.
"""

from ._render import RenderOutput, render

__all__ = ["RenderOutput", "render"]
