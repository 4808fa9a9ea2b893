"""Object insertion: put an object scene on a support ("on the table") or at a point, and
text-to-3D Gaussians grown inside a box.

Asset insertion, as pure functions:

    plane = fit_support_plane(scene, table_mask)                  # the table's top plane
    r, h = footprint(obj)                                         # the object's size
    spot = find_free_spot(scene, plane, r, height=h)              # [3] free, on the table
    placed, T_world_object = place_on_support(obj, plane, spot)   # resting on the plane
    new_scene, inserted = insert_object(scene, obj, T_world_object, name="mug")

or `place_object(scene, obj, support_mask, name="mug")` for all four. Objects come in their own
frame: the centre of the base at the origin, the object's up (`fields.conventions.up_vector`: its
`meta["up"]`, else estimated from its flat base, else -y; bundled assets record +z) up, metric
like the scene. Existing Gaussians keep their order and stay bit-identical; the object's
Gaussians are appended with a new `label` id whose name is added to `meta["label_names"]` (as
in `fields.synthetic` worlds), so exports and language queries know it.

Text-to-3D (`editing.text_to_3d`, in `editing._text_to_3d`) grows an object from a shape prior
fitted to a user box with score distillation and rests it on the support under the box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fields import GaussianScene, up_vector

from ._spatial import rotation_between
from ._support import (
    SupportPlane,
    extent_along,
    find_free_spot,
    fit_support_plane,
)

# Text-to-3D lives in its own module (which imports this one lazily); re-exported where it started.

__all__ = [
    "AssetNotFoundError",
    "Placement",
    "SupportPlane",
    "find_free_spot",
    "fit_support_plane",
    "footprint",
    "insert_object",
    "load_asset",
    "place_object",
    "place_on_support",
    "support_near",
]

_OPAQUE = 0.2


def _yaw(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class AssetNotFoundError(FileNotFoundError, ValueError):
    """An asset file that does not exist (a `FileNotFoundError` and a `ValueError`)."""


def load_asset(path: str | Path) -> GaussianScene:
    """Read an object scene (any format `fields.load_scene` reads); `AssetNotFoundError` naming
    the file when it is missing, `ValueError` when it holds no Gaussians."""
    from fields import load_scene

    path = Path(path)
    if not path.is_file():
        raise AssetNotFoundError(f"asset {path} does not exist")
    obj = load_scene(path)
    if len(obj) == 0:
        raise ValueError(f"asset {path} holds no Gaussians")
    return obj


def _object_frame(obj: GaussianScene) -> np.ndarray:
    """[3,3] rotation taking the object's up (`fields.up_vector`: meta["up"], else its estimate,
    else -y) to +z."""
    return rotation_between(up_vector(obj), np.eye(3)[2])


def footprint(obj: GaussianScene, *, scale: float = 1.0) -> tuple[float, float]:
    """(radius, height) of an object in its own frame: the largest horizontal distance of an
    opaque Gaussian's centre from the up axis through the origin (plus its splat's extent), and
    the height span of the centres; both times `scale`."""
    if len(obj) == 0:
        raise ValueError("the object holds no Gaussians")
    opaque = torch.sigmoid(obj.opacities.detach()) > _OPAQUE
    sub = obj.subset(opaque) if bool(opaque.any()) else obj
    p = sub.means.detach().cpu().double().numpy() @ _object_frame(obj).T
    splat = torch.exp(sub.scales.detach()).amax(1).cpu().double().numpy()
    radius = float((np.linalg.norm(p[:, :2], axis=1) + splat).max())
    height = float(p[:, 2].max() - p[:, 2].min())
    return radius * scale, height * scale


def place_on_support(
    obj: GaussianScene,
    plane: SupportPlane,
    spot: Any,  # [3] world point on the plane where the base centre goes
    *,
    yaw: float = 0.0,  # radians about the plane normal
    scale: float = 1.0,
) -> tuple[GaussianScene, Tensor]:
    """The object moved so its base centre sits over `spot` and its lowest splats rest on the
    plane: the lowest centre lies one splat thickness (its standard deviation along the normal,
    at most 0.5% of the object's height) above the plane, so it touches without sinking in.
    Returns (the placed object, T_world_object [4,4] float64)."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    spot = np.asarray(spot, dtype=np.float64).reshape(3)
    R = rotation_between(np.eye(3)[2], plane.normal) @ _yaw(yaw) @ _object_frame(obj)
    T = np.eye(4)
    T[:3, :3] = scale * R
    T[:3, 3] = spot
    moved = obj.transform(torch.from_numpy(T))
    _, h = plane.to_plane(moved.means.detach().cpu().double().numpy())
    opaque = (torch.sigmoid(moved.opacities.detach()) > _OPAQUE).cpu().numpy()
    if not opaque.any():
        opaque[:] = True
    lowest = float(h[opaque].min())
    span = float(h[opaque].max()) - lowest
    # The lowest splat's own thickness along the normal (capped at 0.5% of the height): its
    # one-sigma shell then touches the plane.
    i = int(np.flatnonzero(opaque)[np.argmin(h[opaque])])
    sigma = float(extent_along(moved.subset([i]), plane.normal)[0])
    gap = min(sigma, 0.005 * span)
    T[:3, 3] += (gap - lowest) * plane.normal
    T_world_object = torch.from_numpy(T)
    return obj.transform(T_world_object), T_world_object


def _next_label(scene: GaussianScene) -> int:
    names = scene.meta.get("label_names") or {}
    ids = [int(k) for k in names]
    label = scene.extras.get("label")
    if label is not None and len(label):
        ids.append(int(label.max()))
    return max(ids, default=-1) + 1


def insert_object(
    scene: GaussianScene,
    obj: GaussianScene,
    T_world_object: Tensor | np.ndarray,  # [4,4] similarity: object frame -> world
    *,
    name: str,
    label: int | None = None,
    features: Tensor | None = None,  # [M,d] `feature` values for the object's Gaussians
) -> tuple[GaussianScene, Tensor]:
    """Append the object, moved by `T_world_object`, after every existing Gaussian. It gets the
    `label` id `label` (default: one past every id in use) named `name` in `meta["label_names"]`
    and an entry in `meta["inserted"]`; scene extras it lacks are filled (`feature` from
    `features` when given, else zeros — see `editing.semantics`), extras only it has are dropped.
    Returns (the new scene, bool mask [N+M] of the inserted Gaussians)."""
    name = str(name).strip()
    if not name:
        raise ValueError("an inserted object needs a name")
    if len(obj) == 0:
        raise ValueError("the object holds no Gaussians")
    label = _next_label(scene) if label is None else int(label)
    if label < 0:
        raise ValueError(f"label ids are non-negative, got {label}")
    T = torch.as_tensor(np.asarray(T_world_object, dtype=np.float64))
    moved = obj.to(scene.device).transform(T)
    if len(scene):  # the scene's SH degree wins: its Gaussians must not change shape
        moved = moved.with_sh_degree(scene.sh_degree)
    extras: dict[str, Tensor] = {}
    for key, value in scene.extras.items():
        if key == "label":
            continue
        if key == "feature" and features is not None:
            f = torch.as_tensor(features).to(device=scene.device, dtype=value.dtype)
            if f.shape != (len(obj), *value.shape[1:]):
                raise ValueError(
                    f"features for the object must be {(len(obj), *value.shape[1:])}, "
                    f"got {tuple(f.shape)}"
                )
            extras[key] = f
        elif key in moved.extras and moved.extras[key].shape[1:] == value.shape[1:]:
            extras[key] = moved.extras[key].to(value.dtype)
    label_dtype = scene.extras["label"].dtype if "label" in scene.extras else torch.int32
    extras["label"] = torch.full((len(obj),), label, dtype=label_dtype, device=scene.device)
    moved = moved.replace(extras=extras)
    out = GaussianScene.concat([scene, moved])
    names = {str(k): v for k, v in (scene.meta.get("label_names") or {}).items()}
    names[str(label)] = name
    record = {
        "name": name,
        "label": label,
        "count": len(obj),
        "T_world_object": T.tolist(),
        "source": obj.meta.get("name"),
    }
    meta = {**scene.meta, "label_names": names}
    meta["inserted"] = [*scene.meta.get("inserted", []), record]
    out = out.replace(meta=meta)
    mask = torch.zeros(len(out), dtype=torch.bool, device=scene.device)
    mask[len(scene) :] = True
    return out, mask


def support_near(scene: GaussianScene, point: Any, radius: float) -> Tensor:
    """[N] bool: Gaussians within `radius` of a world `point` [3] (the support around a click);
    `ValueError` when there are none."""
    p = torch.as_tensor(np.asarray(point, dtype=np.float64).reshape(3))
    mask = (scene.means.detach().cpu().double() - p).norm(dim=1) <= radius
    if not bool(mask.any()):
        raise ValueError(f"no Gaussians within {radius:.3g} of {p.tolist()} to put the object on")
    return mask.to(scene.device)


@dataclass
class Placement:
    """What `place_object` did."""

    scene: GaussianScene  # the scene with the object appended
    mask: Tensor  # [N+M] bool, the inserted Gaussians
    T_world_object: Tensor  # [4,4] float64
    spot: np.ndarray  # [3] world point under the base centre
    plane: SupportPlane
    gap: float  # lowest centre of the object above the plane
    name: str
    label: int

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "position": self.spot.tolist(),
            "gap": self.gap,
            "count": int(self.mask.sum()),
            "support": self.plane.describe(),
        }


def place_object(
    scene: GaussianScene,
    obj: GaussianScene,
    support_mask: Tensor | None,  # [N] bool: the support (a table); None: around `at`
    *,
    name: str | None = None,
    at: Any = None,  # [3] world point: the free spot nearest it (and the plane nearest it)
    yaw: float = 0.0,  # radians
    scale: float = 1.0,
    up: Any = None,
    label: int | None = None,
    features: Tensor | None = None,
    seed: int = 0,
) -> Placement:
    """Fit the support's top plane, find a free spot (nearest `at` when given), rest the object
    on it and insert it: `fit_support_plane` -> `find_free_spot` -> `place_on_support` ->
    `insert_object`. Without a support mask the support is every Gaussian within four
    footprint radii of `at` (a clicked point). `name` defaults to the object's `meta["name"]`."""
    name = name or str(obj.meta.get("name") or "").strip()
    if not name:
        raise ValueError("the object has no name (meta['name']); pass one")
    radius, height = footprint(obj, scale=scale)
    if support_mask is None:
        if at is None:
            raise ValueError("say where: a support mask, or a point `at` to put the object near")
        support_mask = support_near(scene, at, 4.0 * radius)
    plane = fit_support_plane(scene, support_mask, up=up, near=at)
    spot = find_free_spot(scene, plane, radius, height=height, near=at, seed=seed)
    placed, T = place_on_support(obj, plane, spot, yaw=yaw, scale=scale)
    _, h = plane.to_plane(placed.means.detach().cpu().double().numpy())
    new_scene, mask = insert_object(scene, obj, T, name=name, label=label, features=features)
    label_id = int(new_scene.extras["label"][mask][0])
    return Placement(new_scene, mask, T, spot, plane, float(h.min()), name, label_id)
