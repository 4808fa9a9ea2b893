"""The object catalogue: everyday tabletop objects with real sizes, as analytic solids plus the
surfaces to sample. Each builder draws its sizes from the generator it is given and returns the
object in its own frame: origin at the centre of its base (resting on z = 0), z up.

Sizes suit a parallel-jaw gripper with an 8 cm opening: every object has a graspable part under
7 cm (a ball's diameter, a box's width, a book's thickness, a mug's rim or handle).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._sdf import Box, Cylinder, Difference, Intersection, Solid, Sphere, TorusArc, Union
from ._shapes import Arc, Line, Rectangle, Revolution, Surface, box_faces

RGB = tuple[float, float, float]

# Distinct, nameable colours for objects (a language query can say "the red mug").
PALETTE: dict[str, RGB] = {
    "red": (0.85, 0.12, 0.10),
    "orange": (0.98, 0.52, 0.08),
    "yellow": (0.97, 0.85, 0.12),
    "green": (0.16, 0.62, 0.22),
    "blue": (0.12, 0.32, 0.85),
    "purple": (0.52, 0.22, 0.72),
    "pink": (0.96, 0.52, 0.72),
    "cyan": (0.12, 0.76, 0.86),
    "white": (0.94, 0.94, 0.92),
    "black": (0.12, 0.12, 0.13),
}

# Fixed colours of secondary materials (material index >= 1).
_CREAM: RGB = (0.96, 0.93, 0.80)  # book pages
_SILVER: RGB = (0.74, 0.75, 0.78)  # can lids
_CAP: RGB = (0.90, 0.90, 0.90)  # bottle caps

# Baked occlusion of inner walls: cavities read as cavities even with view-independent colour.
_INNER = 0.78


@dataclass(frozen=True, eq=False)
class ObjectModel:
    """One catalogue object in its own frame."""

    kind: str
    solid: Solid
    surfaces: tuple[Surface, ...]
    params: dict[str, float]  # named analytic parameters (metres, radians)
    bounds: tuple[tuple[float, float, float], tuple[float, float, float]]  # object-frame AABB
    footprint_radius: float  # radius about the origin that contains the object's footprint
    secondary_colors: tuple[RGB, ...] = ()  # colours of materials 1, 2, ...
    part_names: tuple[str | None, ...] = ()  # per surface: the named part it belongs to, or None


def _shift(z: float, x: float = 0.0, y: float = 0.0) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = (x, y, z)
    return T


def _slab(z_lo: float, z_hi: float) -> Box:
    """A horizontal slab (large box) used to cut spheres into caps and zones."""
    return Box(_shift(0.5 * (z_lo + z_hi)), (1.0, 1.0, 0.5 * (z_hi - z_lo)))


def _cylinder(radius: float, z_lo: float, z_hi: float) -> Cylinder:
    return Cylinder(_shift(0.5 * (z_lo + z_hi)), radius, 0.5 * (z_hi - z_lo))


def _round_bounds(radius: float, height: float) -> tuple[tuple[float, float, float], ...]:
    return ((-radius, -radius, 0.0), (radius, radius, height))


def mug(rng: np.random.Generator) -> ObjectModel:
    ro = rng.uniform(0.036, 0.040)  # outer radius
    h = rng.uniform(0.090, 0.105)
    wall, floor = 0.004, 0.006
    ri = ro - wall
    # Handle: a tube over a C-shaped arc in the xz plane whose ends sit inside the wall.
    big_r, small_r, half_angle = rng.uniform(0.024, 0.028), 0.006, math.radians(115.0)
    cx = ro - 0.5 * wall + big_r * abs(math.cos(half_angle))
    T_handle = np.eye(4)  # arc plane = object xz, sweep axis = object y
    T_handle[:3, :3] = [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]
    T_handle[:3, 3] = (cx, 0.0, 0.5 * h)
    body = Revolution(
        (
            Line((0.0, 0.0), (ro, 0.0)),
            Line((ro, 0.0), (ro, h)),
            Line((ro, h), (ri, h)),
            Line((ri, h), (ri, floor), shade=_INNER),
            Line((ri, floor), (0.0, floor), shade=_INNER),
        )
    )
    handle = Revolution(
        (Arc((big_r, 0.0), small_r, -math.pi, math.pi),), T_handle, (-half_angle, half_angle)
    )
    solid = Difference(
        Union((_cylinder(ro, 0.0, h), TorusArc(T_handle, big_r, small_r, half_angle))),
        _cylinder(ri, floor, h + 0.05),
    )
    reach = cx + big_r + small_r
    return ObjectModel(
        "mug",
        solid,
        (body, handle),
        {
            "outer_radius": ro,
            "inner_radius": ri,
            "height": h,
            "floor_thickness": floor,
            "handle_major_radius": big_r,
            "handle_minor_radius": small_r,
            "handle_half_angle": half_angle,
            "handle_centre_x": cx,
        },
        ((-ro, -ro, 0.0), (reach, ro, h)),
        reach,
        part_names=(None, "handle"),
    )


def cup(rng: np.random.Generator) -> ObjectModel:
    ro = rng.uniform(0.030, 0.034)
    h = rng.uniform(0.085, 0.10)
    wall, floor = 0.003, 0.005
    ri = ro - wall
    surface = Revolution(
        (
            Line((0.0, 0.0), (ro, 0.0)),
            Line((ro, 0.0), (ro, h)),
            Line((ro, h), (ri, h)),
            Line((ri, h), (ri, floor), shade=_INNER),
            Line((ri, floor), (0.0, floor), shade=_INNER),
        )
    )
    solid = Difference(_cylinder(ro, 0.0, h), _cylinder(ri, floor, h + 0.05))
    params = {"outer_radius": ro, "inner_radius": ri, "height": h, "floor_thickness": floor}
    return ObjectModel("cup", solid, (surface,), params, _round_bounds(ro, h), ro)


def bowl(rng: np.random.Generator) -> ObjectModel:
    ro = rng.uniform(0.070, 0.082)  # outer sphere radius = rim radius
    wall, floor = 0.005, 0.006
    ri = ro - wall
    rim_z = ro * rng.uniform(0.72, 0.80)  # sphere centre and rim height
    base_angle = -math.asin(rim_z / ro)
    inner_angle = -math.asin((rim_z - floor) / ri)
    foot_r = ro * math.cos(base_angle)
    floor_r = ri * math.cos(inner_angle)
    surface = Revolution(
        (
            Line((0.0, 0.0), (foot_r, 0.0)),
            Arc((0.0, rim_z), ro, base_angle, 0.0),
            Line((ro, rim_z), (ri, rim_z)),
            Arc((0.0, rim_z), ri, 0.0, inner_angle, shade=_INNER),
            Line((floor_r, floor), (0.0, floor), shade=_INNER),
        )
    )
    centre = _shift(rim_z)
    solid = Difference(
        Intersection((Sphere(centre, ro), _slab(0.0, rim_z))),
        Intersection((Sphere(centre, ri), _slab(floor, rim_z + 1.0))),
    )
    params = {
        "outer_radius": ro,
        "inner_radius": ri,
        "height": rim_z,
        "sphere_centre_z": rim_z,
        "floor_thickness": floor,
        "foot_radius": foot_r,
    }
    return ObjectModel("bowl", solid, (surface,), params, _round_bounds(ro, rim_z), ro)


def ball(rng: np.random.Generator) -> ObjectModel:
    r = rng.uniform(0.030, 0.034)
    surface = Revolution((Arc((0.0, r), r, -0.5 * math.pi, 0.5 * math.pi),))
    params = {"radius": r, "centre_z": r}
    return ObjectModel("ball", Sphere(_shift(r), r), (surface,), params, _round_bounds(r, 2 * r), r)


def box(rng: np.random.Generator) -> ObjectModel:
    half = (rng.uniform(0.025, 0.032), rng.uniform(0.040, 0.060), rng.uniform(0.035, 0.060))
    centre = (0.0, 0.0, half[2])
    faces = tuple(box_faces(half, centre))
    params = {"half_x": half[0], "half_y": half[1], "half_z": half[2]}
    bounds = ((-half[0], -half[1], 0.0), (half[0], half[1], 2 * half[2]))
    return ObjectModel(
        "box", Box(_shift(half[2]), half), faces, params, bounds, math.hypot(*half[:2])
    )


def book(rng: np.random.Generator) -> ObjectModel:
    half = (rng.uniform(0.065, 0.080), rng.uniform(0.095, 0.115), rng.uniform(0.010, 0.016))
    centre = (0.0, 0.0, half[2])
    # Covers (top, bottom) and spine (-x) in the book's colour; page edges cream.
    faces: tuple[Rectangle, ...] = tuple(
        box_faces(half, centre, materials={"X": 1, "y": 1, "Y": 1})
    )
    params = {"half_x": half[0], "half_y": half[1], "half_z": half[2]}
    bounds = ((-half[0], -half[1], 0.0), (half[0], half[1], 2 * half[2]))
    return ObjectModel(
        "book", Box(_shift(half[2]), half), faces, params, bounds, math.hypot(*half[:2]), (_CREAM,)
    )


def can(rng: np.random.Generator) -> ObjectModel:
    r = rng.uniform(0.032, 0.034)
    h = rng.uniform(0.110, 0.125)
    surface = Revolution(
        (
            Line((0.0, 0.0), (r, 0.0), material=1),
            Line((r, 0.0), (r, h)),
            Line((r, h), (0.0, h), material=1),
        )
    )
    params = {"radius": r, "height": h}
    return ObjectModel(
        "can", _cylinder(r, 0.0, h), (surface,), params, _round_bounds(r, h), r, (_SILVER,)
    )


def bottle(rng: np.random.Generator) -> ObjectModel:
    rb = rng.uniform(0.030, 0.034)  # body radius
    hb = rng.uniform(0.120, 0.150)  # height where the rounded shoulder starts
    rn, rc = 0.012, 0.0145  # neck and cap radii
    shoulder_end = math.acos(rn / rb)
    zs = hb + rb * math.sin(shoulder_end)  # neck starts
    hn = zs + 0.018  # cap starts
    ht = hn + 0.020  # top
    surface = Revolution(
        (
            Line((0.0, 0.0), (rb, 0.0)),
            Line((rb, 0.0), (rb, hb)),
            Arc((0.0, hb), rb, 0.0, shoulder_end),
            Line((rn, zs), (rn, hn)),
            Line((rn, hn), (rc, hn), material=1),
            Line((rc, hn), (rc, ht), material=1),
            Line((rc, ht), (0.0, ht), material=1),
        )
    )
    solid = Union(
        (
            _cylinder(rb, 0.0, hb),
            Intersection((Sphere(_shift(hb), rb), _slab(hb, hb + rb))),
            _cylinder(rn, hb, hn),
            _cylinder(rc, hn, ht),
        )
    )
    params = {
        "body_radius": rb,
        "body_height": hb,
        "neck_radius": rn,
        "neck_start_z": zs,
        "cap_radius": rc,
        "cap_start_z": hn,
        "height": ht,
    }
    return ObjectModel("bottle", solid, (surface,), params, _round_bounds(rb, ht), rb, (_CAP,))


CATALOGUE: dict[str, Callable[[np.random.Generator], ObjectModel]] = {
    "mug": mug,
    "cup": cup,
    "bowl": bowl,
    "ball": ball,
    "box": box,
    "book": book,
    "can": can,
    "bottle": bottle,
}
