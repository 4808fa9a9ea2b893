"""Tabletop worlds: configuration, layout and assembly into a labelled `GaussianScene`.

Frames: world is metric (metres) and z-up; the floor is z = 0 and the table top is
z = `WorldConfig.table_height`. Each object has `T_world_object`, a yaw about z plus a translation
that puts the centre of its base on the table top.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..camera import Camera
from ..scene import GaussianScene, rotmat_to_quat
from ._catalogue import CATALOGUE, PALETTE, RGB, ObjectModel
from ._sdf import Box, Solid, Union, gradient_normals, pose_matrix
from ._shapes import SurfaceSamples, box_faces, sample_surface
from ._views import camera_rig

_WOOD: RGB = (0.66, 0.47, 0.29)
_LEG_WOOD: RGB = (0.48, 0.33, 0.20)
_LIGHT = np.array([0.35, 0.25, 1.0]) / np.linalg.norm([0.35, 0.25, 1.0])  # baked key light
_AMBIENT = 0.72  # share of brightness that does not depend on the normal
_ON_SURFACE = 1e-6  # metres: samples farther inside the solid are buried (e.g. a handle's ends)
_LEG_SIZE, _LEG_INSET = 0.05, 0.06


@dataclass(frozen=True)
class WorldConfig:
    """How `make_world` builds a tabletop world. Lengths in metres, angles in degrees.

    The seed fixes the objects, their sizes, colours and placement independently of the density
    fields, so a coarse preview of a seed has the same layout as the full world."""

    n_objects: tuple[int, int] = (4, 6)
    """Inclusive range for the number of objects on the table."""
    kinds: tuple[str, ...] = tuple(CATALOGUE)
    """Catalogue kinds to draw from; a world never holds two objects of the same kind."""
    colors: tuple[str, ...] = tuple(PALETTE)
    """Colour names to draw from (see `PALETTE`); no two objects share a colour."""
    object_spacing: float = 0.002
    """Distance between neighbouring Gaussians on object surfaces."""
    table_spacing: float = 0.0045
    """Distance between neighbouring Gaussians on the table top and its edges."""
    support_spacing: float = 0.009
    """Distance between neighbouring Gaussians under the table top and on its legs."""
    splat_scale: float = 0.7
    """In-plane standard deviation of a splat as a fraction of its spacing (normal: a tenth of it,
    at least `min_thickness`)."""
    min_thickness: float = 0.0003
    """Smallest standard deviation along a splat's normal."""
    opacity: tuple[float, float] = (0.92, 0.99)
    """Range of per-Gaussian opacities."""
    color_jitter: float = 0.03
    """Standard deviation of the per-Gaussian brightness variation."""
    table_size_x: tuple[float, float] = (1.0, 1.4)
    """Range for the table top's length (along world x)."""
    table_size_y: tuple[float, float] = (0.7, 0.9)
    """Range for the table top's depth (along world y)."""
    table_height: float = 0.75
    """Height of the table top above the floor."""
    table_thickness: float = 0.03
    """Thickness of the table top."""
    edge_margin: float = 0.1
    """Smallest distance from an object's footprint to the table edge."""
    min_gap: float = 0.05
    """Smallest clearance between footprints of two objects (room for a gripper finger)."""
    n_views: int = 32
    """Number of cameras in `World.cameras` (and written by `write_world` by default)."""
    width: int = 320
    """Image width in pixels."""
    height: int = 240
    """Image height in pixels."""
    fov_x_deg: float = 60.0
    """Horizontal field of view."""
    elevations_deg: tuple[float, ...] = (30.0, 45.0, 60.0)
    """Elevation of each camera ring above the table top."""
    distances: tuple[float, ...] = (1.1, 1.0, 0.9)
    """Smallest distance of each ring's cameras from the centre of the object area; a ring
    moves out (up to `max_distance`) until every object is in every view."""
    max_distance: float = 1.6
    """Largest camera distance from the centre of the object area."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """RGB background of the written images."""
    carve_support: bool = True
    """Leave the table top bare under each object, as a real capture does (no camera sees the
    wood under a mug): top-face samples with a part of an object less than `carve_height` above
    them (within one object spacing sideways) are dropped. `make_world(..., without=[name])`
    then shows what a perfect removal of that object restores."""
    carve_height: float = 0.01
    """How close above the table top an object must come to hide the wood under it."""

    def __post_init__(self) -> None:
        lo, hi = self.n_objects
        if not 1 <= lo <= hi <= len(self.kinds):
            raise ValueError(
                f"n_objects {self.n_objects} must satisfy 1 <= lo <= hi <= {len(self.kinds)} kinds"
            )
        if len(self.colors) < hi:
            raise ValueError(
                f"{len(self.colors)} colours cannot give {hi} objects distinct colours"
            )
        unknown = [k for k in self.kinds if k not in CATALOGUE] + [
            c for c in self.colors if c not in PALETTE
        ]
        if unknown:
            raise ValueError(
                f"unknown kinds or colours {unknown}; known: {list(CATALOGUE)}, {list(PALETTE)}"
            )
        if min(self.object_spacing, self.table_spacing, self.support_spacing) <= 0:
            raise ValueError("spacings must be positive")

    @classmethod
    def preview(cls, **changes: Any) -> WorldConfig:
        """A coarse, fast preset (about 10k Gaussians, 8 small views) with the same layouts."""
        coarse = {
            "object_spacing": 0.006,
            "table_spacing": 0.02,
            "support_spacing": 0.04,
            "n_views": 8,
            "width": 96,
            "height": 72,
        }
        return cls(**{**coarse, **changes})

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _as_numpy(points: Any) -> np.ndarray:
    if isinstance(points, Tensor):
        points = points.detach().cpu().double().numpy()
    p = np.asarray(points, dtype=np.float64)
    if p.shape[-1] != 3:
        raise ValueError(f"points must have shape [..., 3], got {p.shape}")
    return p


def _like(result: np.ndarray, points: Any) -> Any:
    if isinstance(points, Tensor):
        dtype = points.dtype if points.is_floating_point() else torch.float32
        return torch.as_tensor(result).to(device=points.device, dtype=dtype)
    return result


@dataclass(frozen=True, eq=False)
class WorldObject:
    """One labelled thing in the world (an object, or the table with label 0), with its analytic
    shape. `solid` and all methods are in the world frame; `params` are the named shape
    parameters (radii, heights, half-extents; metres) in the object frame, see `describe()`."""

    name: str  # unique; also in World.label_names
    kind: str  # catalogue kind ("mug"), or "table"
    label: int
    color_name: str
    color: RGB  # main colour, linear RGB in [0, 1]
    T_world_object: np.ndarray  # [4,4] float64; origin = centre of the base, z up
    dimensions: tuple[float, float, float]  # object-frame bounding box size (x, y, z)
    params: Mapping[str, float]
    solid: Solid  # world frame
    footprint_radius: float  # radius about `position` containing the footprint

    @property
    def position(self) -> np.ndarray:
        """[3] world position of the centre of the base."""
        return self.T_world_object[:3, 3].copy()

    @property
    def yaw(self) -> float:
        """Rotation about world z (radians)."""
        return math.atan2(self.T_world_object[1, 0], self.T_world_object[0, 0])

    def signed_distance(self, points: Any) -> Any:
        """[...] signed distance (metres, < 0 inside) of world points [..., 3]; numpy or torch in,
        the same out. Exact on the surface; a bound away from it for composite shapes."""
        p = _as_numpy(points)
        return _like(self.solid.signed_distance(p.reshape(-1, 3)).reshape(p.shape[:-1]), points)

    def contains(self, points: Any) -> Any:
        """[...] bool: world points [..., 3] inside or on the solid."""
        inside = self.signed_distance(_as_numpy(points)) <= 0.0
        return (
            torch.as_tensor(inside, device=points.device) if isinstance(points, Tensor) else inside
        )

    def surface_normal(self, points: Any) -> Any:
        """[..., 3] unit outward normal of the surface at (or nearest to, within a few mm) world
        points [..., 3]."""
        p = _as_numpy(points)
        return _like(gradient_normals(self.solid, p.reshape(-1, 3)).reshape(p.shape), points)

    def describe(self) -> dict[str, Any]:
        """JSON-able record: identity, colour, pose, dimensions, parameters and the CSG solid."""
        return {
            "name": self.name,
            "kind": self.kind,
            "label": self.label,
            "color_name": self.color_name,
            "color": list(self.color),
            "T_world_object": self.T_world_object.tolist(),
            "position": self.position.tolist(),
            "yaw": self.yaw,
            "dimensions": list(self.dimensions),
            "footprint_radius": self.footprint_radius,
            "params": dict(self.params),
            "solid": self.solid.describe(),
        }


@dataclass(frozen=True, eq=False)
class World:
    """A tabletop world with ground truth: the Gaussians (extra `label` int32 per Gaussian), the
    label names (0 = "table"), the analytic table and objects, and a camera rig."""

    scene: GaussianScene
    label_names: dict[int, str]
    table: WorldObject
    objects: tuple[WorldObject, ...]  # in label order; labels 1.. as in the full world
    cameras: list[Camera]
    seed: int
    config: WorldConfig = field(default_factory=WorldConfig)
    without: tuple[str, ...] = ()  # objects of the seed's world left out (`make_world(without=)`)
    framed: tuple[WorldObject, ...] = ()  # every object of the seed's world: what the rig frames

    @property
    def table_top_z(self) -> float:
        return float(self.table.params["top_z"])

    def object_named(self, name: str) -> WorldObject:
        for obj in (self.table, *self.objects):
            if obj.name == name:
                return obj
        raise KeyError(f"no object named {name!r}; names: {list(self.label_names.values())}")

    def describe(self) -> dict[str, Any]:
        """JSON-able generator record (stored in `scene.meta["generator"]`)."""
        return _generator_record(self.seed, self.config, self.table, self.objects, self.without)


def _generator_record(
    seed: int,
    config: WorldConfig,
    table: WorldObject,
    objects: tuple[WorldObject, ...],
    without: tuple[str, ...] = (),
) -> dict[str, Any]:
    record = {
        "name": "scenelab.synthetic",
        "seed": seed,
        "config": config.to_json(),
        "table": table.describe(),
        "objects": [o.describe() for o in objects],
    }
    if without:
        record["without"] = list(without)
    return record


# ---------------------------------------------------------------------------------- layout
def _place(
    models: list[ObjectModel],
    half_x: float,
    half_y: float,
    config: WorldConfig,
    rng: np.random.Generator,
) -> list[tuple[float, float, float]]:
    """(x, y, yaw) per model: footprint discs inside the table margin, `min_gap` apart."""
    order = sorted(range(len(models)), key=lambda i: -models[i].footprint_radius)
    for _restart in range(200):
        placed: dict[int, tuple[float, float, float]] = {}
        for i in order:
            r = models[i].footprint_radius
            ax, ay = half_x - config.edge_margin - r, half_y - config.edge_margin - r
            if ax < 0 or ay < 0:
                raise ValueError(f"a {models[i].kind} does not fit on the table with this margin")
            for _try in range(100):
                x, y = rng.uniform(-ax, ax), rng.uniform(-ay, ay)
                if all(
                    math.hypot(x - px, y - py) >= r + models[j].footprint_radius + config.min_gap
                    for j, (px, py, _) in placed.items()
                ):
                    placed[i] = (x, y, rng.uniform(0.0, 2 * math.pi))
                    break
            else:
                break
        if len(placed) == len(models):
            return [placed[i] for i in range(len(models))]
    raise RuntimeError("could not place the objects without overlap; lower n_objects or min_gap")


# ---------------------------------------------------------------------------------- splats
def _light(normals: np.ndarray) -> np.ndarray:
    return _AMBIENT + (1.0 - _AMBIENT) * np.clip(normals @ _LIGHT, 0.0, 1.0)


def _wood(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness of a planked wooden top: planks along x, each its own tone, with fine grain
    lines that wobble along the plank and dark seams between planks."""
    x, y = points[:, 0], points[:, 1]
    plank_width = 0.11
    plank = np.floor(y / plank_width).astype(np.int64)
    tones = rng.uniform(0.9, 1.04, 64)
    phases = rng.uniform(0.0, 2 * math.pi, (64, 2))
    k = plank % 64
    wobble = 0.15 * np.sin(2 * math.pi * x / 0.7 + phases[k, 0]) + 0.04 * np.sin(
        2 * math.pi * x / 0.13 + phases[k, 1]
    )
    grain = 0.5 + 0.5 * np.sin(2 * math.pi * (y / 0.018 + wobble))
    seam = np.abs(y / plank_width - np.round(y / plank_width)) * plank_width < 0.0025
    return tones[k] * (0.93 + 0.1 * grain**2) * np.where(seam, 0.7, 1.0)


def _splats(
    samples: SurfaceSamples,
    spacing: np.ndarray,  # [M]
    base_rgb: np.ndarray,  # [M,3]
    label: int,
    config: WorldConfig,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    m = len(samples)
    n, t = samples.normals, samples.tangents
    rot = np.stack([t, np.cross(n, t), n], axis=-1)  # columns: local x, y, z (= normal)
    sigma = config.splat_scale * spacing
    scales = np.stack([sigma, sigma, np.maximum(0.1 * sigma, config.min_thickness)], -1)
    brightness = _light(n) * samples.shade * (1.0 + config.color_jitter * rng.standard_normal(m))
    rgb = base_rgb * brightness[:, None] * (1.0 + 0.01 * rng.standard_normal((m, 3)))
    return {
        "means": samples.points,
        "rot": rot,
        "scales": scales,
        "opacities": rng.uniform(*config.opacity, m),
        "colors": np.clip(rgb, 0.0, 1.0),
        "label": np.full(m, label, dtype=np.int32),
        "part": np.full(m, -1, dtype=np.int32),
    }


def _sample_model(
    model: ObjectModel, spacing: float, rng: np.random.Generator
) -> tuple[SurfaceSamples, np.ndarray]:
    """Samples of every surface of `model`, minus those buried inside another of its parts, and
    the index of the surface each came from [M]."""
    per_surface = [sample_surface(s, spacing, rng) for s in model.surfaces]
    samples = SurfaceSamples.concat(per_surface)
    surface = np.concatenate([np.full(len(p), i, np.int32) for i, p in enumerate(per_surface)])
    on_surface = np.abs(model.solid.signed_distance(samples.points)) <= _ON_SURFACE
    return samples.select(on_surface), surface[on_surface]


def _table(
    config: WorldConfig, rng: np.random.Generator
) -> tuple[WorldObject, dict[str, np.ndarray]]:
    """The table's record and splats (label 0)."""
    size_x, size_y = rng.uniform(*config.table_size_x), rng.uniform(*config.table_size_y)
    hx, hy, top, th = 0.5 * size_x, 0.5 * size_y, config.table_height, config.table_thickness
    slab_half = (hx, hy, 0.5 * th)
    slab_centre = (0.0, 0.0, top - 0.5 * th)
    leg_half = (0.5 * _LEG_SIZE, 0.5 * _LEG_SIZE, 0.5 * (top - th))
    leg_xy = [(sx * (hx - _LEG_INSET), sy * (hy - _LEG_INSET)) for sx in (-1, 1) for sy in (-1, 1)]
    slab = Box(pose_matrix(0.0, slab_centre), slab_half)
    legs = [Box(pose_matrix(0.0, (x, y, leg_half[2])), leg_half) for x, y in leg_xy]
    record = WorldObject(
        name="table",
        kind="table",
        label=0,
        color_name="brown",
        color=_WOOD,
        T_world_object=pose_matrix(0.0, (0.0, 0.0, 0.0)),
        dimensions=(size_x, size_y, top),
        params={
            "size_x": size_x,
            "size_y": size_y,
            "top_z": top,
            "thickness": th,
            "leg_size": _LEG_SIZE,
            "leg_inset": _LEG_INSET,
        },
        solid=Union((slab, *legs)),
        footprint_radius=math.hypot(hx, hy),
    )
    parts = [
        (box_faces(slab_half, slab_centre, "ZxXyY"), config.table_spacing, _WOOD),
        (box_faces(slab_half, slab_centre, "z"), config.support_spacing, _WOOD),
    ]
    for x, y in leg_xy:  # no top faces: they would sit inside the slab
        parts.append(
            (box_faces(leg_half, (x, y, leg_half[2]), "xXyYz"), config.support_spacing, _LEG_WOOD)
        )
    samples, spacing, colors = [], [], []
    for faces, sp, rgb in parts:
        for face in faces:
            s = sample_surface(face, sp, rng)
            samples.append(s)
            spacing.append(np.full(len(s), sp))
            colors.append(np.tile(rgb, (len(s), 1)))
    merged = SurfaceSamples.concat(samples)
    rgb = np.concatenate(colors) * _wood(merged.points, rng)[:, None]
    return record, _splats(merged, np.concatenate(spacing), rgb, 0, config, rng)


def _carve_top(
    table_splats: dict[str, np.ndarray],
    object_splats: list[dict[str, np.ndarray]],
    config: WorldConfig,
) -> dict[str, np.ndarray]:
    """The table's splats without the top-face ones hidden under an object: an object splat
    less than `config.carve_height` above the top lies within one object spacing (in x, y)."""
    from scipy.spatial import cKDTree

    top = config.table_height
    low = [o["means"][o["means"][:, 2] < top + config.carve_height] for o in object_splats]
    above = np.concatenate([np.zeros((0, 3)), *low])[:, :2]
    if len(above) == 0:
        return table_splats
    pts = table_splats["means"]
    on_top = (np.abs(pts[:, 2] - top) < 1e-6) & (table_splats["rot"][:, 2, 2] > 0.5)
    dist, _ = cKDTree(above).query(pts[on_top, :2], distance_upper_bound=config.object_spacing)
    keep = np.ones(len(pts), dtype=bool)
    keep[np.flatnonzero(on_top)[np.isfinite(dist)]] = False
    return {k: v[keep] for k, v in table_splats.items()}


def _object(
    model: ObjectModel,
    name: str,
    label: int,
    color_name: str,
    T_world_object: np.ndarray,
    config: WorldConfig,
    rng: np.random.Generator,
) -> tuple[WorldObject, dict[str, np.ndarray]]:
    """An object's record and splats, placed by `T_world_object`. The splats' `part` is the
    index into `model.part_names` of the named part each lies on, -1 elsewhere."""
    samples, surface = _sample_model(model, config.object_spacing, rng)
    samples = samples.transformed(T_world_object)
    materials = np.array([PALETTE[color_name], *model.secondary_colors])
    splats = _splats(
        samples,
        np.full(len(samples), config.object_spacing),
        materials[samples.material],
        label,
        config,
        rng,
    )
    names = model.part_names or (None,) * len(model.surfaces)
    part_of_surface = np.array([-1 if n is None else i for i, n in enumerate(names)], np.int32)
    splats["part"] = part_of_surface[surface]
    lo, hi = np.asarray(model.bounds[0]), np.asarray(model.bounds[1])
    record = WorldObject(
        name=name,
        kind=model.kind,
        label=label,
        color_name=color_name,
        color=PALETTE[color_name],
        T_world_object=T_world_object,
        dimensions=tuple(float(v) for v in hi - lo),
        params=dict(model.params),
        solid=model.solid.transformed(T_world_object),
        footprint_radius=float(model.footprint_radius),
    )
    return record, splats


def _unique_name(kind: str, taken: set[str]) -> str:
    name, k = kind, 2
    while name in taken:
        name, k = f"{kind} {k}", k + 1
    return name


def make_world(
    seed: int, *, config: WorldConfig | None = None, without: Sequence[str] = ()
) -> World:
    """A random tabletop world, fully determined by `seed` (and `config`).

    Returns the labelled Gaussians, the analytic table and objects (label i+1 for the seed's
    i-th object) and the camera rig. Same seed, same world (bit for bit on one platform); the
    density fields of `config` change only the sampling, never which objects appear or where.

    `without` names objects to leave out: the same table, layout, colours, label ids and cameras,
    every other Gaussian bit for bit the same, and the table top fully sampled where they stood —
    the ground truth of a perfect removal. Unknown names raise `ValueError`."""
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    config = config or WorldConfig()
    design_ss, layout_ss, sample_ss = np.random.SeedSequence(int(seed)).spawn(3)
    design = np.random.default_rng(design_ss)

    n = int(design.integers(config.n_objects[0], config.n_objects[1] + 1))
    kinds = [str(k) for k in design.choice(list(config.kinds), n, replace=False)]
    color_names = [str(c) for c in design.choice(list(config.colors), n, replace=False)]
    models = [CATALOGUE[k](design) for k in kinds]

    sample_rngs = [np.random.default_rng(s) for s in sample_ss.spawn(n + 1)]
    table, table_splats = _table(config, sample_rngs[0])
    hx, hy = 0.5 * table.params["size_x"], 0.5 * table.params["size_y"]
    poses = _place(models, hx, hy, config, np.random.default_rng(layout_ss))

    names: list[str] = []
    for model in models:
        names.append(_unique_name(model.kind, {"table", *names}))
    left_out = tuple(dict.fromkeys(str(w) for w in without))
    unknown = [w for w in left_out if w not in names]
    if unknown:
        raise ValueError(
            f"cannot leave out {unknown}: the world of seed {seed} holds {names} (and the table, "
            "which stays)"
        )

    object_parts: list[dict[str, np.ndarray]] = []
    all_objects: list[WorldObject] = []
    objects: list[WorldObject] = []
    label_names = {0: "table"}
    part_names: dict[int, str] = {}  # world part id -> name ("handle")
    n_parts = 0
    for label, (model, name, color, (x, y, yaw)) in enumerate(
        zip(models, names, color_names, poses, strict=True), 1
    ):
        T = pose_matrix(yaw, (x, y, config.table_height))
        record, splats = _object(model, name, label, color, T, config, sample_rngs[label])
        all_objects.append(record)
        local = splats["part"].copy()  # object-local part index -> world part id
        ids: dict[int, str] = {}
        for i, part in enumerate(model.part_names):
            if part is not None:
                ids[n_parts] = part
                splats["part"][local == i] = n_parts
                n_parts += 1
        if name in left_out:  # part ids stay those of the full world
            continue
        part_names.update(ids)
        objects.append(record)
        object_parts.append(splats)
        label_names[label] = name
    if config.carve_support:
        table_splats = _carve_top(table_splats, object_parts, config)
    parts = [table_splats, *object_parts]

    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    quats = rotmat_to_quat(torch.from_numpy(cat["rot"])).float()
    meta = {
        "label_names": {str(k): v for k, v in label_names.items()},
        "part_names": {str(k): v for k, v in part_names.items()},
        "units": "m",
        "up": [0, 0, 1],
        "generator": _generator_record(int(seed), config, table, tuple(objects), left_out),
    }
    scene = GaussianScene.from_activated(
        torch.from_numpy(cat["means"]).float(),
        quats,
        torch.from_numpy(cat["scales"]).float(),
        torch.from_numpy(cat["opacities"]).float(),
        torch.from_numpy(cat["colors"]).float(),
        extras={"label": torch.from_numpy(cat["label"]), "part": torch.from_numpy(cat["part"])},
        meta=meta,
    )
    # The rig frames every object of the seed, present or not: the views never change.
    cameras = _rig(
        all_objects, config.table_height, config, config.n_views, config.width, config.height
    )
    return World(
        scene,
        label_names,
        table,
        tuple(objects),
        cameras,
        int(seed),
        config,
        left_out,
        tuple(all_objects),
    )


def _object_area_centre(
    objects: list[WorldObject] | tuple[WorldObject, ...], top: float
) -> np.ndarray:
    if not objects:
        return np.array([0.0, 0.0, top])
    lo = np.min([o.position[:2] - o.footprint_radius for o in objects], axis=0)
    hi = np.max([o.position[:2] + o.footprint_radius for o in objects], axis=0)
    return np.array([*(0.5 * (lo + hi)), top + 0.04])


def object_area_centre(world: World) -> np.ndarray:
    """[3] centre of the objects' footprints' bounding box, 4 cm above the table top: the point
    the camera rig looks at."""
    return _object_area_centre(world.objects, world.table_top_z)


def _silhouette_points(objects: list[WorldObject] | tuple[WorldObject, ...]) -> np.ndarray:
    """[P,3] points around each object's footprint at its base and top height."""
    a = np.linspace(0.0, 2 * math.pi, 12, endpoint=False)
    ring = np.stack([np.cos(a), np.sin(a)], -1)
    pts = [np.zeros((0, 3))]
    for o in objects:
        xy = o.position[:2] + o.footprint_radius * ring
        for z in (o.position[2], o.position[2] + o.dimensions[2]):
            pts.append(np.concatenate([xy, np.full((len(a), 1), z)], -1))
    return np.concatenate(pts)


def _rig(
    objects: list[WorldObject] | tuple[WorldObject, ...],
    top: float,
    config: WorldConfig,
    n_views: int,
    width: int,
    height: int,
) -> list[Camera]:
    return camera_rig(
        _object_area_centre(objects, top).tolist(),
        n_views,
        width,
        height,
        fov_x_deg=config.fov_x_deg,
        elevations_deg=config.elevations_deg,
        distances=config.distances,
        keep_in_view=_silhouette_points(objects),
        max_distance=config.max_distance,
    )


def make_cameras(world: World, n_views: int, width: int, height: int) -> list[Camera]:
    """The world's camera rig (any view count or image size): rings at the configured
    elevations, moved out from the configured distances until every object is in every view."""
    framed = world.framed or world.objects
    return _rig(framed, world.table_top_z, world.config, n_views, width, height)
