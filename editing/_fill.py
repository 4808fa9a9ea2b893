"""Exemplar fill of the holes an object leaves in the surfaces around it (`editing.removal`).

Each surface (the support under the object, a wall behind it) is a plane. On a grid over the
plane (cells of about one splat spacing, a window of `1 + ring` hole radii around the hole) a
cell is *covered* when a surface splat lies within `_COVER` spacings of its centre. The hole is
the object's projection onto the plane (filled in, dilated a little) minus the covered cells,
kept inside the convex hull of the covered cells (a table's edge stays an edge).

The fill is a shift-map (Pritch et al., "Shift-Map Image Editing", 2009) reduced to a few global
shifts: every integer shift of the grid is scored by how well the surface's colours around the
hole (a band of covered cells) match the colours the same shift points at, all shifts at once
by FFT cross-correlation. The best-matching shift that covers (nearly) the whole hole wins, the
next ones take what it leaves, and each copies the surface's splats that land in its part of the
hole: whole splats (colour and SH, scale, rotation, opacity, every extra), translated in the
plane. Cells no shift reaches take the nearest covered cell's splat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from fields.conventions import horizontal_basis

from ._spatial import kdtree
from ._support import SupportPlane

# A cell is covered when a surface splat lies within this many spacings of its centre.
_COVER = 0.75
# Shifts whose boundary band falls on covered cells for less than this share are not scored.
_BAND_SHARE = 0.8
# A shift "covers the hole" when it reaches this share of the cells left (of the best one's).
_FULL_SHARE = 0.98
# Shifts whose band cost is within this factor of the best are ties, broken by the seed.
_TIE = 1.03
_MAX_SHIFTS = 8
_MIN_HOLE = 3  # cells: smaller uncovered patches are gaps in the sampling
_MAX_CELLS = 640  # grid side; a larger window coarsens the cells instead


@dataclass
class FillPlan:
    """Which splats a surface's hole copies and by how much each moves."""

    sources: np.ndarray  # [F] int64 rows to copy (numbered as `plan_fill`'s `rows`)
    shifts: np.ndarray  # [F,3] float64 world translation of each copy
    hole_cells: int = 0
    cell: float = 0.0  # grid cell size (metres)
    shifted_cells: int = 0  # hole cells filled by a global shift (the rest: nearest splat)
    shifts_used: list[list[float]] = field(default_factory=list)  # [K][2] where each part of
    # the hole copies from, relative to it, in plane coordinates (metres)
    band_rmse: float | None = None  # colour RMSE between the hole's band and the first shift's

    @property
    def area(self) -> float:
        return self.hole_cells * self.cell**2

    def describe(self) -> dict[str, Any]:
        return {
            "count": len(self.sources),
            "area": self.area,
            "hole_cells": self.hole_cells,
            "cell": self.cell,
            "shifted_share": self.shifted_cells / max(1, self.hole_cells),
            "shifts": self.shifts_used,
            "band_rmse": self.band_rmse,
        }


def empty_plan() -> FillPlan:
    return FillPlan(np.zeros(0, np.int64), np.zeros((0, 3)))


def _disc(radius: float) -> np.ndarray:
    r = max(0, math.floor(radius))
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return x * x + y * y <= radius * radius + 1e-9


class _Correlator:
    """Cross-correlations sum_x f(x) g(x + d) of [n,n] grids for every shift d, by FFT with zero
    padding (no wrap-around); results are [2n-1, 2n-1], shift d at index d + n - 1."""

    def __init__(self, n: int) -> None:
        from scipy import fft

        self.n = n
        self.fft = fft
        self.shape = (fft.next_fast_len(2 * n, real=True),) * 2

    def spectrum(self, f: np.ndarray) -> np.ndarray:
        return self.fft.rfft2(f, self.shape)

    def correlate(self, product: np.ndarray) -> np.ndarray:
        """Shifts from a spectrum product conj(F) G (or a sum of such products)."""
        full = self.fft.irfft2(product, self.shape)
        n = self.n
        # circular index d mod m -> d in [-(n-1), n-1]
        return np.roll(full, (n - 1, n - 1), axis=(0, 1))[: 2 * n - 1, : 2 * n - 1]

    def __call__(self, f_spec: np.ndarray, g_spec: np.ndarray) -> np.ndarray:
        return self.correlate(np.conj(f_spec) * g_spec)


def inside_hull(points: np.ndarray, query: np.ndarray, tol: float) -> np.ndarray:
    """[Q] bool: `query` [Q,2] inside the convex hull of `points` [P,2] (grown by `tol`)."""
    from scipy.spatial import ConvexHull, QhullError

    if len(points) < 3 or len(query) == 0:
        return np.zeros(len(query), bool)
    try:
        hull = ConvexHull(points)
    except QhullError:  # all on a line
        return np.zeros(len(query), bool)
    eq = hull.equations  # [F,3]: a x + b y + c <= 0 inside, (a, b) unit
    return (query @ eq[:, :2].T + eq[:, 2] <= tol).all(1)


def plan_fill(
    uv: np.ndarray,  # [M,2] the surface's splats in plane coordinates (metres)
    opaque: np.ndarray,  # [M] bool: splats that cover (opaque enough)
    colors: np.ndarray,  # [M,3] their base colours (matching only)
    rows: np.ndarray,  # [M] int64 their scene rows
    footprint: np.ndarray,  # [P,2] the object's points projected onto the plane
    axes: np.ndarray,  # [2,3] world directions of the plane's u, v
    *,
    spacing: float,  # the surface's splat spacing (metres)
    cell: float,  # grid cell size (metres)
    dilate: float,  # grow the projection by this many cells
    ring: float,  # exemplar window: (1 + ring) hole radii about the hole's centre
    band: float,  # width of the matched boundary band, in cells
    seed: int,
) -> FillPlan:
    """The splats to copy into this surface's hole (see the module docstring)."""
    if len(footprint) == 0 or len(uv) == 0:
        return empty_plan()
    lo, hi = footprint.min(0), footprint.max(0)
    centre = 0.5 * (lo + hi)
    r_hole = float(np.linalg.norm(footprint - centre, axis=1).max()) + (dilate + 1) * cell
    r_win = r_hole * (1.0 + ring)
    half = math.ceil(r_win / cell)
    if 2 * half + 1 > _MAX_CELLS:
        half = (_MAX_CELLS - 1) // 2
        cell = r_win / half
    n = 2 * half + 1
    origin = centre - half * cell  # centre of cell (0, 0); cell (i, j) lies at origin + (i, j)*cell

    inwin = (np.abs(uv - centre) <= r_win + cell).all(1)
    uv, opaque, colors, rows = uv[inwin], opaque[inwin], colors[inwin], rows[inwin]
    cov_uv = uv[opaque]
    if len(cov_uv) < 3:
        return empty_plan()

    # The object's projection, its inside filled, grown by `dilate` cells.
    fc = np.round((footprint - origin) / cell).astype(np.int64)
    fc = fc[((fc >= 0) & (fc < n)).all(1)]
    proj = np.zeros((n, n), bool)
    proj[fc[:, 0], fc[:, 1]] = True
    proj = ndimage.binary_closing(proj, structure=_disc(1.5), border_value=0)
    proj = ndimage.binary_fill_holes(proj)
    if dilate > 0:
        proj = ndimage.binary_dilation(proj, structure=_disc(dilate))
    tree = kdtree(cov_uv)
    pc = np.argwhere(proj)
    d_proj, _ = tree.query(origin + pc * cell, distance_upper_bound=_COVER * spacing)
    if np.isfinite(d_proj).all():  # the surface is whole under the object: nothing to fill
        return FillPlan(np.zeros(0, np.int64), np.zeros((0, 3)), cell=cell)

    ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    centres = origin + np.stack([ii, jj], -1).reshape(-1, 2) * cell
    dist, near = tree.query(centres, distance_upper_bound=_COVER * spacing)
    covered = np.isfinite(dist).reshape(n, n)
    near_colour = np.zeros((n * n, 3))
    hit = np.isfinite(dist)
    near_colour[hit] = colors[opaque][near[hit]]
    image = near_colour.reshape(n, n, 3)

    hole = proj & ~covered
    if hole.any():  # a lone uncovered cell is a gap in the sampling, not a hole
        parts, k = ndimage.label(hole)
        sizes = np.bincount(parts.ravel(), minlength=k + 1)
        hole &= sizes[parts] >= _MIN_HOLE
    if hole.any():
        idx = np.argwhere(hole)
        inside = inside_hull(np.argwhere(covered).astype(float), idx.astype(float), 0.5)
        hole = np.zeros_like(hole)
        hole[idx[inside, 0], idx[inside, 1]] = True
    n_hole = int(hole.sum())
    if n_hole == 0:
        return FillPlan(np.zeros(0, np.int64), np.zeros((0, 3)), cell=cell)

    # Score every shift d by the colour match of the hole's band B against B + d:
    # sum_b B W(b+d) (I(b) - I(b+d))^2 = (B I^2 * W) - 2 sum_c (B I_c * W I_c) + (B * W I^2).
    bandm = ndimage.binary_dilation(hole, structure=_disc(max(1.0, band))) & covered & ~hole
    W = covered.astype(np.float64)
    B = bandm.astype(np.float64)
    I2 = (image**2).sum(-1)
    xc = _Correlator(n)
    sW, sB = xc.spectrum(W), xc.spectrum(B)
    prod = np.conj(xc.spectrum(B * I2)) * sW + np.conj(sB) * xc.spectrum(W * I2)
    for c in range(3):
        Ic = image[..., c]
        prod -= 2.0 * np.conj(xc.spectrum(B * Ic)) * xc.spectrum(W * Ic)
    num = xc.correlate(prod)
    count = xc(sB, sW)
    n_band = max(1.0, float(B.sum()))
    band_ok = count >= _BAND_SHARE * n_band - 0.5
    cost = np.where(band_ok, np.maximum(num, 0.0) / np.maximum(count, 1.0), np.inf)

    rng = np.random.default_rng(seed)
    label = np.full((n, n), -1, np.int64)
    remaining = hole.copy()
    chosen: list[tuple[int, int]] = []
    first_cost: float | None = None
    for k in range(_MAX_SHIFTS):
        left = float(remaining.sum())
        if left == 0:
            break
        gain = xc(xc.spectrum(remaining.astype(np.float64)), sW) / left
        reach = np.where(band_ok, gain, 0.0)
        best_reach = float(reach.max())
        if best_reach * left < 0.5:  # no shift reaches a single remaining cell
            break
        eligible = reach >= min(_FULL_SHARE, best_reach) * _FULL_SHARE - 1e-9
        c_el = np.where(eligible, cost, np.inf)
        best = float(c_el.min())
        if not math.isfinite(best):
            break
        ties = np.argwhere(c_el <= best * _TIE + 1e-12)
        pick = ties[int(rng.integers(len(ties)))] if len(ties) > 1 else ties[0]
        d = (int(pick[0]) - (n - 1), int(pick[1]) - (n - 1))
        if first_cost is None:
            first_cost = float(c_el[pick[0], pick[1]]) / 3.0
        # cells x of the remaining hole whose source x + d is covered take shift k
        src = np.zeros((n, n), bool)
        a0, a1 = max(0, -d[0]), min(n, n - d[0])
        b0, b1 = max(0, -d[1]), min(n, n - d[1])
        src[a0:a1, b0:b1] = covered[a0 + d[0] : a1 + d[0], b0 + d[1] : b1 + d[1]]
        take = remaining & src
        if not take.any():
            break
        label[take] = k
        remaining &= ~take
        chosen.append(d)

    sources: list[np.ndarray] = []
    shifts: list[np.ndarray] = []
    for k, d in enumerate(chosen):
        moved = uv - np.asarray(d, dtype=np.float64) * cell  # the source x + d lands on x
        dc = np.round((moved - origin) / cell).astype(np.int64)
        ok = ((dc >= 0) & (dc < n)).all(1)
        ok[ok] = label[dc[ok, 0], dc[ok, 1]] == k
        sel = rows[ok]
        sources.append(sel)
        shifts.append(np.tile(-np.asarray(d, dtype=np.float64) * cell @ axes, (len(sel), 1)))

    shifted = n_hole - int(remaining.sum())
    if remaining.any():  # no shift reaches these cells: copy the nearest covered cell's splat
        _, nearest = ndimage.distance_transform_edt(~covered, return_indices=True)
        cells = np.argwhere(remaining)
        src_cells = nearest[:, cells[:, 0], cells[:, 1]].T  # [R,2]
        src_centres = origin + src_cells * cell
        _, member = kdtree(cov_uv).query(src_centres)
        opaque_rows = rows[opaque]
        sources.append(opaque_rows[member])
        move = origin + cells * cell - cov_uv[member]
        shifts.append(move @ axes)

    return FillPlan(
        sources=np.concatenate(sources) if sources else np.zeros(0, np.int64),
        shifts=np.concatenate(shifts) if shifts else np.zeros((0, 3)),
        hole_cells=n_hole,
        cell=cell,
        shifted_cells=shifted,
        shifts_used=[[d[0] * cell, d[1] * cell] for d in chosen],
        band_rmse=None if first_cost is None else math.sqrt(first_cost),
    )


# ---------------------------------------------------------------------------- surfaces
@dataclass(frozen=True)
class ObjectExtent:
    """Where the removed object was: its points and size about the world's up."""

    points: np.ndarray  # [P,3] float64 world positions of its (opaque) splats
    up: np.ndarray  # [3] unit
    base: float  # height of its lowest points along up
    top: float
    centre: np.ndarray  # [3] centre of its horizontal footprint, at base height
    radius: float  # horizontal radius of the footprint about `centre`

    @property
    def size(self) -> float:
        return max(self.radius, self.top - self.base)

    @classmethod
    def of(cls, points: np.ndarray, up: np.ndarray) -> ObjectExtent:
        h = points @ up
        base = float(np.quantile(h, 0.01)) if len(h) >= 100 else float(h.min())
        e1, e2 = horizontal_basis(up)
        xy = points @ np.stack([e1, e2]).T
        c = 0.5 * (xy.min(0) + xy.max(0))
        radius = float(np.linalg.norm(xy - c, axis=1).max())
        centre = c[0] * e1 + c[1] * e2 + base * up
        return cls(points, up, base, float(h.max()), centre, max(radius, 1e-6))


def plane_frame(normal: np.ndarray) -> np.ndarray:
    """[2,3] unit in-plane axes (u, v) with u x v = normal."""
    u = np.cross(normal, [1.0, 0.0, 0.0] if abs(normal[0]) < 0.9 else [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    return np.stack([u, np.cross(normal, u)])


def tighten_plane(
    plane: SupportPlane,
    points: np.ndarray,  # [M,3] world positions of the plane's inliers
    thin: float,  # their typical splat thickness (smallest standard deviation)
) -> SupportPlane:
    """The plane refit to the densest layer of its inliers, with a slab as thin as they are.

    `fit_support_plane`'s tolerance suits a noisy capture; a cup's inner floor a few mm above
    the table would count as table in it."""
    if len(points) < 3:
        return plane
    h = (points - plane.point) @ plane.normal
    med = float(np.median(h))
    mad = float(np.median(np.abs(h - med)))
    slab = min(plane.thickness, max(2.0 * thin, 6.0 * mad, 1e-9))
    keep = np.abs(h - med) <= slab
    P = points[keep]
    c = P.mean(0)
    normal = plane.normal
    if len(P) >= 3:
        _, sv, vt = np.linalg.svd(P - c, full_matrices=False)
        n = vt[-1] * (1.0 if vt[-1] @ plane.normal >= 0 else -1.0)
        if sv[1] > 1e-9 and sv[-1] < 0.5 * sv[1] and n @ plane.normal > math.cos(math.radians(10)):
            normal = n / np.linalg.norm(n)
    axes = plane_frame(normal)
    return SupportPlane(
        point=c,
        normal=normal,
        axes=axes,
        points2d=(P - c) @ axes.T,
        inliers=plane.inliers[keep],
        spacing=plane.spacing,
        thickness=slab,
    )


def median_spacing(uv: np.ndarray) -> float:
    if len(uv) < 2:
        return 0.0
    sample = uv if len(uv) <= 20_000 else uv[:: len(uv) // 20_000]
    d, _ = kdtree(uv).query(sample, k=2)
    return float(np.median(d[:, 1]))


def find_walls(
    means: np.ndarray,  # [M,3] candidate flat splats (shown, opaque, near the object)
    normals: np.ndarray,  # [M,3] their unit normals
    obj: ObjectExtent,
    *,
    reach: float,  # how far behind the object a wall may stand (metres)
    min_splats: int,
    max_walls: int = 4,
) -> list[SupportPlane]:
    """Vertical-ish planes near the object: flat splats whose normals are within 30 deg of
    horizontal, grouped by normal azimuth (15 deg bins) and offset, each group refit by least
    squares. Only planes with the whole object on one side, within `reach` of it."""
    up = obj.up
    side = np.abs(normals @ up) < math.sin(math.radians(30.0))
    if side.sum() < min_splats:
        return []
    p, nrm = means[side], normals[side]
    e1, e2 = horizontal_basis(up)
    az = np.mod(np.arctan2(nrm @ e2, nrm @ e1), math.pi)  # normals' sign is arbitrary
    bins = np.floor(az / math.radians(15.0)).astype(np.int64) % 12
    walls: list[tuple[int, SupportPlane]] = []
    for b in range(12):
        grp = (bins == b) | (bins == (b + 1) % 12)  # overlapping bins: a plane never splits
        if grp.sum() < min_splats:
            continue
        a = math.radians(15.0 * (b + 1))
        n0 = math.cos(a) * e1 + math.sin(a) * e2
        off = p[grp] @ n0
        thick = max(1e-6, 0.01 * obj.size)
        ob = np.floor((off - off.min()) / thick).astype(np.int64)
        counts = np.bincount(ob)
        for peak in np.flatnonzero(counts >= min_splats):
            near = np.abs(ob - peak) <= 1
            P = p[grp][near]
            if len(P) < min_splats:
                continue
            c = P.mean(0)
            _, sv, vt = np.linalg.svd(P - c, full_matrices=False)
            normal = vt[-1]
            if sv[1] <= 1e-9 or sv[-1] > 0.2 * sv[1] or abs(normal @ up) > 0.5:
                continue
            s = (obj.points - c) @ normal
            if s.min() < -thick and s.max() > thick:
                continue  # the plane cuts through the object: not a wall behind it
            if s.min() < -thick:
                normal = -normal
                s = -s
            if float(s.min()) > reach:
                continue
            axes = plane_frame(normal)
            walls.append(
                (
                    len(P),
                    SupportPlane(
                        point=c,
                        normal=normal,
                        axes=axes,
                        points2d=(P - c) @ axes.T,
                        inliers=np.zeros(0, np.int64),
                        spacing=max(median_spacing((P - c) @ axes.T), 1e-9),
                        thickness=2.0 * thick,
                    ),
                )
            )
    # Peaks found from two overlapping bins are one wall: keep the fullest per (normal, offset).
    walls.sort(key=lambda w: -w[0])
    kept: list[SupportPlane] = []
    for _, w in walls:
        same = any(
            abs(w.normal @ k.normal) > math.cos(math.radians(10.0))
            and abs((w.point - k.point) @ k.normal) < 2.0 * k.thickness
            for k in kept
        )
        if not same:
            kept.append(w)
        if len(kept) == max_walls:
            break
    return kept
