"""Synthetic tabletop worlds with ground truth, generated in code from a seed.

A world is a wooden table with 4-6 everyday objects (mug, cup, bowl, ball, box, book, can,
bottle) in distinct colours, as Gaussians sampled on analytic surfaces, with a per-Gaussian
`label` (0 = table), the analytic solids (inside tests, outward normals) and a camera rig.

    world = make_world(0)                       # deterministic in the seed
    world.objects[0].surface_normal(points)     # analytic ground truth, world frame
    write_world(world, "out/demo")              # scene.ply, labels.json, transforms.json,
                                                # images/*.png, labels/*.png

Frames: metres, world z up, the table top at z = `WorldConfig.table_height`; cameras follow
`fields.camera` (viewmat world-to-camera, OpenCV axes).
"""

from ._catalogue import CATALOGUE, PALETTE
from ._world import World, WorldConfig, WorldObject, make_world
from ._writer import write_world

__all__ = [
    "CATALOGUE",
    "PALETTE",
    "World",
    "WorldConfig",
    "WorldObject",
    "make_world",
    "write_world",
]
