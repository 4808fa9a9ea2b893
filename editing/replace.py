"""Replace one object with another (FreeEdit's object replacement): the selected object is
removed and its hole filled (`editing.removal.remove_object`), then the new object — a scene
(a bundled asset) or one grown from text (`text_to_3d`) — is put on the same support at the
same spot, scaled so its footprint matches the old one's.

    rep = replace_object(scene, mug_mask, load_asset("assets/objects/can.ply"), name="can")
    rep.scene, rep.mask   # the result and its new object's Gaussians

Pure functions: the input scene is never changed; the viewer applies `rep.scene` as one undo
step. The new object gets its own label id named `name` (as `insert_object` does), so language
queries find it once the feature field is updated (`editing.semantics.update_field`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fields import GaussianScene, up_vector

from .insertion import Placement, footprint, place_object
from .ops import check_mask
from .removal import Removal, RemovalConfig, remove_object

__all__ = ["Footprint", "Replacement", "object_footprint", "replace_object", "replace_with_text"]

_OPAQUE = 0.2


@dataclass(frozen=True)
class Footprint:
    """Where an object stands: the centre of its footprint at its lowest height, the footprint's
    area and its radius about the up axis through that centre, and its height; world units."""

    base: np.ndarray  # [3] world point: the footprint's centroid at the object's lowest height
    radius: float
    area: float  # of the convex hull of the projected splat centres
    height: float
    up: np.ndarray  # [3] unit

    def describe(self) -> dict[str, Any]:
        return {
            "base": self.base.tolist(),
            "radius": self.radius,
            "area": self.area,
            "height": self.height,
        }


def _hull(uv: np.ndarray) -> tuple[np.ndarray, float]:
    """(centroid [2], area) of the convex hull of points [M,2] (degenerate: their mean, 0)."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        hull = ConvexHull(uv)
    except (QhullError, ValueError):
        return uv.mean(0), 0.0
    p = uv[hull.vertices]  # counter-clockwise
    q = np.roll(p, -1, axis=0)
    cross = p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1]
    area = 0.5 * float(cross.sum())
    if area <= 0:
        return uv.mean(0), 0.0
    centroid = ((p + q) * cross[:, None]).sum(0) / (6.0 * area)
    return centroid, area


def object_footprint(scene: GaussianScene, mask: Tensor, *, up: Any = None) -> Footprint:
    """The footprint of the selected object [N] bool: its opaque Gaussians' centres projected on
    the plane orthogonal to `up` (default `fields.up_vector`) — their convex hull's centroid and
    area, and the radius about it (plus the splats' size)."""
    mask = check_mask(scene, mask).cpu()
    if not bool(mask.any()):
        raise ValueError("the selection is empty: select the object to replace first")
    sub = scene.detach().to("cpu").subset(mask)
    opaque = torch.sigmoid(sub.opacities) > _OPAQUE
    if bool(opaque.any()):
        sub = sub.subset(opaque)
    u = up_vector(scene, override=up)
    e1 = np.cross(u, [1.0, 0.0, 0.0] if abs(u[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(u, e1)
    p = sub.means.double().numpy()
    h, uv = p @ u, p @ np.stack([e1, e2]).T  # [M], [M,2]
    centre, area = _hull(uv)
    splat = torch.exp(sub.scales).amax(1).double().numpy()
    radius = float((np.linalg.norm(uv - centre, axis=1) + splat).max())
    base = centre[0] * e1 + centre[1] * e2 + float(h.min()) * u
    return Footprint(base, radius, area, float(h.max() - h.min()), u)


@dataclass
class Replacement:
    """What `replace_object` did."""

    scene: GaussianScene  # the rest, the fill, then the new object
    mask: Tensor  # [N'] bool: the new object's Gaussians
    removal: Removal  # the removal step (its fill mask indexes `removal.scene`)
    placement: Placement | None  # the asset's placement (None for text)
    old: Footprint
    scale: float
    name: str

    @property
    def fill(self) -> Tensor:
        """[N'] bool: the Gaussians that fill the old object's hole."""
        out = torch.zeros(len(self.scene), dtype=torch.bool, device=self.mask.device)
        out[: len(self.removal.scene)] = self.removal.fill.to(out.device)
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scale": self.scale,
            "old": self.old.describe(),
            "removed": self.removal.removed,
            "filled": int(self.removal.fill.sum()),
            "count": int(self.mask.sum()),
            "placement": None if self.placement is None else self.placement.describe(),
        }


def replace_object(
    scene: GaussianScene,
    mask: Tensor,  # [N] bool: the object to replace
    obj: GaussianScene,  # the new object in its own frame (base centre at the origin)
    *,
    name: str | None = None,
    scale: float | None = None,  # None: match the old object's footprint area
    yaw: float = 0.0,  # radians about up
    removal: RemovalConfig | None = None,
    distiller: Any = None,  # refines the fill (see `remove_object`)
    features: Tensor | None = None,  # [M,d] `feature` values for the new object's Gaussians
    seed: int = 0,
) -> Replacement:
    """Remove the selected object (filling its hole) and put `obj` on the same support at the
    free spot nearest the old object's footprint centre, scaled so its footprint has the old
    one's area (`scale` overrides). Raises
    `ValueError` naming the problem (empty selection, no support, no room) and changes nothing."""
    name = name or str(obj.meta.get("name") or "").strip()
    if not name:
        raise ValueError("the new object has no name (meta['name']); pass one")
    config = removal or RemovalConfig()
    old = object_footprint(scene, mask, up=config.up)
    if scale is None:
        new = object_footprint(obj, torch.ones(len(obj), dtype=torch.bool))
        if new.area <= 0 or old.area <= 0:
            scale = old.radius / footprint(obj)[0]
        else:
            scale = math.sqrt(old.area / new.area)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be positive, got {scale}")
    removed = remove_object(scene, mask, config, distiller=distiller)
    placement = place_object(
        removed.scene,
        obj,
        None,
        name=name,
        at=old.base,
        yaw=yaw,
        scale=scale,
        up=config.up,
        features=features,
        seed=seed,
    )
    return Replacement(placement.scene, placement.mask, removed, placement, old, float(scale), name)


def replace_with_text(
    scene: GaussianScene,
    mask: Tensor,  # [N] bool: the object to replace
    prompt: str,
    distiller: Any,  # a text-to-image score distiller (`editing.score_distillation`)
    config: Any = None,  # `editing.TextTo3DConfig`
    *,
    name: str | None = None,
    removal: RemovalConfig | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Replacement:
    """Remove the selected object (filling its hole) and grow `prompt` by text-to-3D in a box on
    the old footprint (as wide as it, as tall as the old object), resting on the support."""
    from ._text_to_3d import text_to_3d

    removal = removal or RemovalConfig()
    old = object_footprint(scene, mask, up=removal.up)
    removed = remove_object(scene, mask, removal)
    u = old.up
    e1 = np.cross(u, [1.0, 0.0, 0.0] if abs(u[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    R = np.stack([e1, np.cross(u, e1), u], axis=1)  # box axes: x, y horizontal, z up
    height = max(old.height, 0.5 * old.radius)
    size = np.array([2 * old.radius, 2 * old.radius, height])
    box = (old.base + 0.5 * height * u, size, R)
    new_scene, new_mask = text_to_3d(
        removed.scene,
        box,
        distiller,
        prompt,
        config,
        name=name,
        on_step=on_step,
        should_stop=should_stop,
    )
    return Replacement(new_scene, new_mask, removed, None, old, 1.0, name or prompt)
