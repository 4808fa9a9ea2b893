"""Surface samplers: near-even, area-uniform points with outward normals on analytic surfaces.

Two surface kinds cover the catalogue:
- `Revolution`: a profile in the (r, z) half-plane swept about the z axis (cylinders, spheres,
  hollow mugs and bowls, bottles, and a handle tube swept over part of a turn). The profile is
  walked so that the solid lies on its left: the outward normal is the tangent turned clockwise.
- `Rectangle`: a flat face (boxes, books, the table).

Points come in rows: rows every `spacing` of arc length along the profile, each row holding
circumference/`spacing` points with a random phase and a little jitter. Spacing is therefore even
everywhere (also near poles and axes, where a plain (u, v) grid would bunch up), and density is
1/spacing² per unit area.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Fraction of a cell by which rows and points are jittered (keeps them strictly inside the cell).
_JITTER = 0.25


@dataclass(frozen=True)
class Line:
    """A straight profile segment from `start` to `end`, both (r, z)."""

    start: tuple[float, float]
    end: tuple[float, float]
    material: int = 0  # index into the object's colours
    shade: float = 1.0  # baked occlusion factor (inner walls are darker)

    @property
    def length(self) -> float:
        return math.dist(self.start, self.end)

    def evaluate(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        (r0, z0), (r1, z1) = self.start, self.end
        tr, tz = (r1 - r0) / self.length, (z1 - z0) / self.length
        return r0 + (r1 - r0) * t, z0 + (z1 - z0) * t, np.full_like(t, tz), np.full_like(t, -tr)


@dataclass(frozen=True)
class Arc:
    """A circular profile segment: centre (r, z), radius, angles (radians, 0 = +r, pi/2 = +z).
    Counter-clockwise (end > start) has the solid inside the circle, clockwise outside it."""

    centre: tuple[float, float]
    radius: float
    start_angle: float
    end_angle: float
    material: int = 0
    shade: float = 1.0

    @property
    def length(self) -> float:
        return abs(self.end_angle - self.start_angle) * self.radius

    def evaluate(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        a = self.start_angle + (self.end_angle - self.start_angle) * t
        sign = 1.0 if self.end_angle > self.start_angle else -1.0
        c, s = np.cos(a), np.sin(a)
        return (
            self.centre[0] + self.radius * c,
            self.centre[1] + self.radius * s,
            sign * c,
            sign * s,
        )


Segment = Line | Arc


def _identity() -> np.ndarray:
    return np.eye(4)


@dataclass(frozen=True, eq=False)
class Revolution:
    """`profile` swept about the z axis of `pose` (object-from-surface transform) over
    `angles` (radians; default a full turn)."""

    profile: tuple[Segment, ...]
    pose: np.ndarray = field(default_factory=_identity)
    angles: tuple[float, float] | None = None


@dataclass(frozen=True, eq=False)
class Rectangle:
    """The face `origin + a*u + b*v`, a, b in [0, 1]; outward normal along u x v."""

    origin: tuple[float, float, float]
    u: tuple[float, float, float]
    v: tuple[float, float, float]
    material: int = 0
    shade: float = 1.0


Surface = Revolution | Rectangle


@dataclass(frozen=True, eq=False)
class SurfaceSamples:
    points: np.ndarray  # [M,3]
    normals: np.ndarray  # [M,3] unit, outward
    tangents: np.ndarray  # [M,3] unit, orthogonal to normals
    material: np.ndarray  # [M] int
    shade: np.ndarray  # [M] float

    def __len__(self) -> int:
        return len(self.points)

    def select(self, mask: np.ndarray) -> SurfaceSamples:
        return SurfaceSamples(
            self.points[mask],
            self.normals[mask],
            self.tangents[mask],
            self.material[mask],
            self.shade[mask],
        )

    def transformed(self, T: np.ndarray) -> SurfaceSamples:
        R, t = T[:3, :3], T[:3, 3]
        return SurfaceSamples(
            self.points @ R.T + t,
            self.normals @ R.T,
            self.tangents @ R.T,
            self.material,
            self.shade,
        )

    @staticmethod
    def concat(parts: list[SurfaceSamples]) -> SurfaceSamples:
        return SurfaceSamples(
            np.concatenate([p.points for p in parts]),
            np.concatenate([p.normals for p in parts]),
            np.concatenate([p.tangents for p in parts]),
            np.concatenate([p.material for p in parts]),
            np.concatenate([p.shade for p in parts]),
        )


def box_faces(
    half_extents: tuple[float, float, float],
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0),
    faces: str = "xXyYzZ",
    materials: dict[str, int] | None = None,
) -> list[Rectangle]:
    """Faces of an axis-aligned box: lower-case letter = the -axis face, upper-case = +axis."""
    hx, hy, hz = half_extents
    cx, cy, cz = centre
    lo = (cx - hx, cy - hy, cz - hz)
    sx, sy, sz = (2 * hx, 0.0, 0.0), (0.0, 2 * hy, 0.0), (0.0, 0.0, 2 * hz)
    table = {  # origin, u, v with u x v outward
        "x": (lo, sz, sy),
        "X": ((cx + hx, lo[1], lo[2]), sy, sz),
        "y": (lo, sx, sz),
        "Y": ((lo[0], cy + hy, lo[2]), sz, sx),
        "z": (lo, sy, sx),
        "Z": ((lo[0], lo[1], cz + hz), sx, sy),
    }
    materials = materials or {}
    return [Rectangle(*table[f], material=materials.get(f, 0)) for f in faces]


def sample_surface(surface: Surface, spacing: float, rng: np.random.Generator) -> SurfaceSamples:
    """Near-even samples of `surface` at about one point per `spacing`² of area."""
    if spacing <= 0:
        raise ValueError(f"spacing must be positive, got {spacing}")
    if isinstance(surface, Rectangle):
        return _sample_rectangle(surface, spacing, rng)
    return _sample_revolution(surface, spacing, rng)


def _sample_rectangle(rect: Rectangle, spacing: float, rng: np.random.Generator) -> SurfaceSamples:
    u, v = np.asarray(rect.u, float), np.asarray(rect.v, float)
    nu = max(1, round(np.linalg.norm(u) / spacing))
    nv = max(1, round(np.linalg.norm(v) / spacing))
    iu, iv = np.meshgrid(np.arange(nu), np.arange(nv), indexing="ij")
    a = (iu.ravel() + 0.5 + rng.uniform(-_JITTER, _JITTER, iu.size)) / nu
    b = (iv.ravel() + 0.5 + rng.uniform(-_JITTER, _JITTER, iv.size)) / nv
    points = np.asarray(rect.origin, float) + a[:, None] * u + b[:, None] * v
    n = np.cross(u, v)
    n /= np.linalg.norm(n)
    m = len(points)
    return SurfaceSamples(
        points,
        np.tile(n, (m, 1)),
        np.tile(u / np.linalg.norm(u), (m, 1)),
        np.full(m, rect.material, dtype=np.int64),
        np.full(m, rect.shade),
    )


def _sample_revolution(rev: Revolution, spacing: float, rng: np.random.Generator) -> SurfaceSamples:
    lengths = np.array([seg.length for seg in rev.profile])
    total = float(lengths.sum())
    n_rows = max(1, round(total / spacing))
    row_s = (np.arange(n_rows) + 0.5 + rng.uniform(-_JITTER, _JITTER, n_rows)) * (total / n_rows)
    starts = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
    seg_idx = np.clip(np.searchsorted(starts, row_s, side="right") - 1, 0, len(lengths) - 1)

    r = np.empty(n_rows)
    z = np.empty(n_rows)
    nr = np.empty(n_rows)
    nz = np.empty(n_rows)
    material = np.empty(n_rows, dtype=np.int64)
    shade = np.empty(n_rows)
    for i, seg in enumerate(rev.profile):
        sel = seg_idx == i
        if not sel.any():
            continue
        t = np.clip((row_s[sel] - starts[i]) / max(lengths[i], 1e-12), 0.0, 1.0)
        r[sel], z[sel], nr[sel], nz[sel] = seg.evaluate(t)
        material[sel], shade[sel] = seg.material, seg.shade

    full_turn = rev.angles is None
    a0, a1 = (0.0, 2 * math.pi) if full_turn else rev.angles
    span = a1 - a0
    counts = np.maximum(1, np.round(np.abs(span) * np.maximum(r, 0.0) / spacing)).astype(np.int64)
    row = np.repeat(np.arange(n_rows), counts)
    slot = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
    phase = rng.uniform(0.0, 1.0, n_rows) if full_turn else np.zeros(n_rows)
    frac = (slot + 0.5 + rng.uniform(-_JITTER, _JITTER, len(row)) + phase[row]) / counts[row]
    theta = a0 + span * frac
    c, s = np.cos(theta), np.sin(theta)
    points = np.stack([r[row] * c, r[row] * s, z[row]], -1)
    normals = np.stack([nr[row] * c, nr[row] * s, nz[row]], -1)
    tangents = np.stack([-s, c, np.zeros_like(c)], -1)
    local = SurfaceSamples(points, normals, tangents, material[row], shade[row])
    return local.transformed(rev.pose)
