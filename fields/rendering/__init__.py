"""Rendering Gaussian scenes: `render(scene, camera)` -> `RenderOutput` (rgb, alpha, expected
depth, optional feature channels, per-Gaussian radii and screen positions).

Backends: "gsplat" (CUDA) and "cpu" (compiled projection + tile rasterizer); "auto" picks
by the scene's device. Slow references for tests live in `fields.rendering._reference`.

`accumulate_weights(scene, camera, values)` -> `WeightSums`: each Gaussian's blending weights in
one view summed over the pixels, alone and against a per-pixel value map (training-free lifting).
"""

from ._accumulate import WeightSums, accumulate_weights
from ._render import RenderOutput, render

__all__ = ["RenderOutput", "WeightSums", "accumulate_weights", "render"]
