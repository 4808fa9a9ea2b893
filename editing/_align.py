"""Measure and align a capture: the distance between two picked points, a robust plane fitted
around a clicked point (the floor, a table top), the rotation that levels that plane (its normal
becomes +z) and the uniform scale that gives a measured segment its real length.

The transforms are [4,4] similarities in the world frame (`T_new_old`); `align_scene` applies one
to every Gaussian (means, rotations, scales, SH) and keeps the scene's facts consistent: the
cameras the sidecar records (`meta["cameras"]`) move with it, `meta["alignment"]` accumulates the
transform from the file's original frame, a levelled scene records `meta["up"] = "+z"` and a
rescaled one its `meta["units"]`. Pure functions: the viewer records each as one history step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fields import Camera, GaussianScene, cameras_from_meta, up_vector
from fields.conventions import format_up, parse_up, robust_bounds, support_side

from ._spatial import rotation_between
from ._support import splat_normals

# Splats less opaque than this do not define surfaces.
_OPAQUE = 0.2
# The neighbourhood of a click: at least this many splats (the radius doubles until it holds them).
_MIN_NEIGHBOURS = 40
_MAX_NEIGHBOURS = 20_000
_RANSAC_ITERS = 200
# `support_side` evidence from which the splats, not the camera, say which side is up.
_DECISIVE_SIDE = 0.3


@dataclass(frozen=True)
class PlaneFit:
    """A plane fitted to the splats around a point, in world coordinates."""

    point: np.ndarray  # [3] the inliers' centroid
    normal: np.ndarray  # [3] unit, pointing up (see `fit_plane_at`)
    inliers: np.ndarray  # [M] int64 indices of the inlier Gaussians in the scene
    rms: float  # root-mean-square distance of the inliers from the plane
    radius: float  # of the neighbourhood the plane was fitted in


def measure(a: Any, b: Any) -> float:
    """Distance between two world points [3] (in scene units)."""
    pa = np.asarray(a, dtype=np.float64).reshape(3)
    pb = np.asarray(b, dtype=np.float64).reshape(3)
    return float(np.linalg.norm(pb - pa))


def fit_plane_at(
    scene: GaussianScene,
    where: Any,  # [3] world point (a click on the plane) or [N] bool mask (the plane's splats)
    *,
    radius: float | None = None,  # neighbourhood of a point; default 5% of the robust diameter
    toward: Any = None,  # [3] world point on the up side (the camera that clicked)
    up: Any = None,  # orients the normal without `toward`; default fields.up_vector(scene)
    seed: int = 0,
) -> PlaneFit:
    """The dominant plane through the splats at `where`: RANSAC on the opaque splats' centres
    (flat splats lying along a candidate count double), then least squares on the inliers.
    Robust to objects standing on the plane and to the plane's edge inside the neighbourhood.
    The normal points up: to the side the splats say (`fields.conventions.support_side`: mass
    and free space above), else to `toward`, else along `up`. Raises `ValueError` when too few
    splats are there."""
    if len(scene) == 0:
        raise ValueError("an empty scene has no plane to fit")
    means = scene.means.detach().cpu().double()
    opaque = torch.sigmoid(scene.opacities.detach().cpu().double()) >= _OPAQUE
    hidden = scene.extras.get("hidden")
    if hidden is not None:
        opaque &= ~hidden.detach().cpu().bool()
    where_t = torch.as_tensor(where)
    if where_t.dtype == torch.bool:
        if where_t.shape != (len(scene),):
            raise ValueError(
                f"plane mask has shape {tuple(where_t.shape)}, scene has {len(scene)} Gaussians"
            )
        cand = where_t.cpu() & opaque
        if int(cand.sum()) < 3:
            raise ValueError("the plane selection holds fewer than 3 opaque, shown splats")
        centre = means[cand].mean(0).numpy()
        radius_used = float(torch.linalg.norm(means[cand] - means[cand].mean(0), dim=1).max())
    else:
        centre = np.asarray(where, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(centre)):
            raise ValueError(f"the plane's point must be finite, got {centre.tolist()}")
        if radius is None:
            lo, hi = robust_bounds(scene)
            radius = 0.05 * float(np.linalg.norm(hi - lo)) or 1e-3
        if not radius > 0:
            raise ValueError(f"radius must be positive, got {radius}")
        d = torch.linalg.norm(means - torch.from_numpy(centre), dim=1)
        radius_used = float(radius)
        for _ in range(6):
            cand = opaque & (d <= radius_used)
            if int(cand.sum()) >= _MIN_NEIGHBOURS:
                break
            radius_used *= 2.0
        if int(cand.sum()) < 3:
            raise ValueError(
                f"fewer than 3 opaque splats within {radius_used:.3g} of the point: "
                "click on a surface"
            )
    idx = cand.nonzero().squeeze(1).numpy()
    rng = np.random.default_rng(seed)
    if len(idx) > _MAX_NEIGHBOURS:
        idx = np.sort(rng.choice(idx, _MAX_NEIGHBOURS, replace=False))
    sub = scene.detach().to("cpu").subset(torch.from_numpy(idx))
    P = sub.means.double().numpy()  # [M,3]
    normals_t, flat_t = splat_normals(sub)
    normals, flat = normals_t.double().numpy(), flat_t.numpy()
    thick = float(np.median(torch.exp(sub.scales).amin(1).double().numpy()))
    tol = max(3.0 * thick, 0.01 * radius_used, 1e-9)

    def support(n: np.ndarray, c: np.ndarray) -> np.ndarray:  # [M] float weight of inliers
        on = np.abs((P - c) @ n) <= tol
        along = flat & (np.abs(normals @ n) > math.cos(math.radians(20.0)))
        return on * (1.0 + along)

    best_w, best_n, best_c = -1.0, None, None
    if len(P) >= 3:
        for _ in range(_RANSAC_ITERS):
            a, b, c = P[rng.choice(len(P), 3, replace=False)]
            n = np.cross(b - a, c - a)
            nn = float(np.linalg.norm(n))
            if nn < 1e-12:
                continue
            n /= nn
            w = float(support(n, a).sum())
            if w > best_w:
                best_w, best_n, best_c = w, n, a
    if best_n is None:  # collinear or too few points: the flat splats' mean normal
        if not flat.any():
            raise ValueError("the splats there do not span a plane")
        _, v = np.linalg.eigh(normals[flat].T @ normals[flat])
        best_n, best_c = v[:, -1], P.mean(0)
    n, c = best_n, best_c
    inl = np.abs((P - c) @ n) <= tol
    for _ in range(3):  # least squares on the inliers, then re-select about the fitted plane
        Q = P[inl]
        if len(Q) < 3:
            break
        c = Q.mean(0)
        _, _, vt = np.linalg.svd(Q - c, full_matrices=False)
        n = vt[-1] / np.linalg.norm(vt[-1])
        inl = np.abs((P - c) @ n) <= tol
    # Which side is up: the splats' say when decisive (mass on it, free space above it: a
    # table's underside lies close below its top), else the clicking camera's side, else `up`.
    evidence = support_side(scene, c, n)
    if abs(evidence) >= _DECISIVE_SIDE:
        side = n * evidence
    elif toward is not None:
        side = np.asarray(toward, dtype=np.float64).reshape(3) - c
    else:
        side = up_vector(scene, override=up)
    if float(n @ side) < 0:
        n = -n
    rms = float(np.sqrt(np.mean(((P[inl] - c) @ n) ** 2))) if inl.any() else 0.0
    return PlaneFit(point=c, normal=n, inliers=idx[inl], rms=rms, radius=radius_used)


def level_transform(
    scene: GaussianScene,
    where: Any,  # [3] a clicked point on the floor/table, or [N] bool mask of its splats
    *,
    toward: Any = None,  # [3] the clicking camera's position: the plane's up side
    up: Any = None,  # orients the plane without `toward` (default fields.up_vector(scene))
    pivot: Any = None,  # [3] fixed point of the rotation; default the fitted plane's centroid
    radius: float | None = None,
) -> Tensor:
    """[4,4] float64 rotation (about `pivot`) that turns the plane at `where` level: its normal
    (`fit_plane_at`) becomes +z. Apply with `align_scene(scene, T, up="+z")`."""
    plane = fit_plane_at(scene, where, radius=radius, toward=toward, up=up)
    R = rotation_between(plane.normal, [0.0, 0.0, 1.0])
    p = plane.point if pivot is None else np.asarray(pivot, dtype=np.float64).reshape(3)
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = p - R @ p
    return torch.from_numpy(T)


def scale_transform(
    measured: float,  # a segment's length in scene units
    real: float,  # its true length (in the units the scene should be in)
    *,
    pivot: Any = None,  # [3] fixed point; default the world origin
) -> Tensor:
    """[4,4] float64 uniform scale by `real / measured` about `pivot`."""
    measured, real = float(measured), float(real)
    if not (math.isfinite(measured) and measured > 0):
        raise ValueError(f"the measured length must be positive, got {measured}")
    if not (math.isfinite(real) and real > 0):
        raise ValueError(f"the real length must be positive, got {real}")
    s = real / measured
    p = np.zeros(3) if pivot is None else np.asarray(pivot, dtype=np.float64).reshape(3)
    T = np.eye(4)
    T[:3, :3] *= s
    T[:3, 3] = p - s * p
    return torch.from_numpy(T)


def align_scene(
    scene: GaussianScene,
    T: Any,  # [4,4] similarity T_new_old (rotation x uniform scale | translation)
    *,
    up: Any = None,  # the up axis after the transform ("+z" after levelling); None: moved along
    units: str | None = None,  # the unit the scene is in afterwards (e.g. "m" after set scale)
) -> GaussianScene:
    """Every Gaussian moved by `T` (`GaussianScene.transform`), with the facts that depend on the
    frame kept true: the recorded cameras move, `meta["alignment"]` becomes T @ the previous one,
    `meta["up"]` is `up` (or the old up rotated by T when the scene recorded one) and
    `meta["units"]` is `units` when given."""
    Tt = torch.as_tensor(np.asarray(T, dtype=np.float64))
    if Tt.shape != (4, 4):
        raise ValueError(f"align_scene expects a 4x4 matrix, got {tuple(Tt.shape)}")
    moved = scene.transform(Tt)
    A = Tt[:3, :3].numpy()
    s = abs(float(np.linalg.det(A))) ** (1.0 / 3.0)
    R = A / s
    meta = dict(scene.meta)
    prev = np.asarray(meta.get("alignment", np.eye(4)), dtype=np.float64)
    if prev.shape != (4, 4):
        prev = np.eye(4)
    meta["alignment"] = (Tt.numpy() @ prev).tolist()
    if up is not None:
        meta["up"] = format_up(parse_up(up))
        meta.pop("up_axis", None)
    elif not np.allclose(R, np.eye(3), atol=1e-12):
        for key in ("up", "up_axis"):
            if key in meta:
                try:
                    meta[key] = format_up(R @ parse_up(meta[key]))
                except ValueError:
                    pass
    if units is not None:
        meta["units"] = str(units)
    if meta.get("cameras") is not None:
        try:
            readable = cameras_from_meta(meta) is not None
        except ValueError:
            readable = False  # unreadable records stay as they were
        if readable:  # each record keeps its other fields; only its pose moves
            records = []
            for rec in meta["cameras"]:
                c2w = np.asarray(rec["c2w"], dtype=np.float64)
                new = np.eye(4)
                new[:3, :3] = R @ c2w[:3, :3]
                new[:3, 3] = A @ c2w[:3, 3] + Tt[:3, 3].numpy()
                records.append({**rec, "c2w": new.tolist()})
            meta["cameras"] = records
    return moved.replace(meta=meta)


def scene_alignment(scene: GaussianScene) -> np.ndarray | None:
    """[4,4] float64 `meta["alignment"]`: the similarity from the frame of the scene's file (and
    its dataset's cameras) to the scene's frame now, or None when it was never aligned (or the
    record is unreadable)."""
    value = scene.meta.get("alignment")
    if value is None:
        return None
    try:
        T = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if T.shape != (4, 4) or not np.isfinite(T).all() or np.allclose(T, np.eye(4)):
        return None
    return T


def align_camera(camera: Camera, T: Any) -> Camera:
    """`camera` moved by the similarity `T` [4,4] (`T_new_old`) as `align_scene` moves the
    splats: its centre by T, its axes by T's rotation (the scale leaves intrinsics alone)."""
    T = np.asarray(T, dtype=np.float64)
    c2w = camera.c2w.double().numpy()
    A = T[:3, :3]
    s = abs(float(np.linalg.det(A))) ** (1.0 / 3.0)
    new = np.eye(4)
    new[:3, :3] = (A / s) @ c2w[:3, :3]
    new[:3, 3] = A @ c2w[:3, 3] + T[:3, 3]
    return camera.with_pose(torch.from_numpy(np.linalg.inv(new)).to(camera.viewmat.dtype))


def in_file_frame(scene: GaussianScene) -> GaussianScene:
    """`scene` moved back into the frame of its file and dataset (the inverse of its
    `meta["alignment"]`): what to pair with the dataset's photos and cameras after a level or a
    rescale. The scene itself when it was never aligned. Gaussians keep their rows."""
    T = scene_alignment(scene)
    if T is None:
        return scene
    return align_scene(scene, np.linalg.inv(T))
