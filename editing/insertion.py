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
`meta["up"]`, else -y; bundled assets record +z) up, metric like the
scene. Existing Gaussians keep their order and stay bit-identical; the object's Gaussians are
appended with a new `label` id whose name is added to `meta["label_names"]` (as in
`fields.synthetic` worlds), so exports and language queries know it.

Text-to-3D (`text_to_3d`) is LucidDreaming-style: Gaussians initialised in a user box are the
only parameters; views around the box render them together with the frozen scene, and a score
distiller's SDS loss on those renders drives them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from fields import Camera, GaussianScene, orbit_cameras, render, up_vector
from fields.scene import rgb_to_sh

from ._support import (
    SupportPlane,
    extent_along,
    find_free_spot,
    fit_support_plane,
)

__all__ = [
    "AssetNotFoundError",
    "Placement",
    "SupportPlane",
    "TextTo3DConfig",
    "find_free_spot",
    "fit_support_plane",
    "footprint",
    "insert_object",
    "load_asset",
    "place_object",
    "place_on_support",
    "support_near",
    "text_to_3d",
]

_OPAQUE = 0.2


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[3,3] the smallest rotation taking unit vector `a` to unit vector `b`."""
    v = np.cross(a, b)
    c = float(a @ b)
    if c < -1 + 1e-9:  # opposite: half a turn about any axis orthogonal to a
        axis = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


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
    """[3,3] rotation taking the object's up (`fields.up_vector`: meta["up"], else -y) to +z."""
    return _rotation_between(up_vector(obj), np.eye(3)[2])


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
    at most 0.5% of the object's height) above the plane, so it touches without sinking in. Returns (the placed object,
    T_world_object [4,4] float64)."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    spot = np.asarray(spot, dtype=np.float64).reshape(3)
    R = _rotation_between(np.eye(3)[2], plane.normal) @ _yaw(yaw) @ _object_frame(obj)
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


# ---------------------------------------------------------------------------------- text-to-3D
class Distiller(Protocol):
    """What `text_to_3d` needs from a score distiller (`editing.score_distillation`)."""

    def loss(
        self,
        images: Tensor,  # [B,3,H,W] in [0,1], requires grad
        prompt: str,
        *,
        method: str = "sds",
        progress: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Tensor: ...


@dataclass(frozen=True)
class TextTo3DConfig:
    """How `text_to_3d` grows Gaussians in a box."""

    n_gaussians: int = 2000
    """Gaussians initialised in the box."""
    steps: int = 300
    """Optimisation steps (one batch of views each)."""
    views_per_step: int = 1
    """Views rendered per step (the batch the distiller scores)."""
    size: int = 64
    """Side of the square renders, pixels."""
    lr: float = 0.02
    """Adam learning rate of every parameter: colours and opacities (logits), positions (the
    box's tanh coordinates) and log scales."""
    init_scale: float = 0.08
    """Initial splat standard deviation as a fraction of the box's smallest side."""
    init_opacity: float = 0.5
    """Initial opacity."""
    init_color: tuple[float, float, float] = (0.6, 0.6, 0.6)
    """Initial RGB."""
    fov_deg: float = 50.0
    """Vertical field of view of the views around the box."""
    elevation_deg: tuple[float, float] = (10.0, 50.0)
    """Range of view elevations above the plane orthogonal to up."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background colour behind scene and object."""
    context: bool = True
    """Render the (frozen) scene together with the new Gaussians."""
    seed: int = 0
    """Seed of the initialisation, the views and the distiller's noise."""
    up: Any = None
    """World up ("+z", "-y", a vector); default: `fields.up_vector` (the scene's meta "up", else
    -y)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments passed on to `distiller.loss` (method, guidance...)."""

    def __post_init__(self) -> None:
        if self.n_gaussians < 1 or self.steps < 0 or self.views_per_step < 1:
            raise ValueError("n_gaussians and views_per_step must be >= 1, steps >= 0")
        if self.size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {self.size}")
        if not 0 < self.init_opacity < 1:
            raise ValueError("init_opacity must be in (0, 1)")


def _box_parts(box: Any) -> tuple[Tensor, Tensor, Tensor]:
    """(centre [3], size [3], R [3,3]) float64 from (centre, size) or (centre, size, R)."""
    if len(box) not in (2, 3):
        raise ValueError("box must be (centre [3], size [3]) or (centre, size, R [3,3])")
    centre = torch.as_tensor(np.asarray(box[0], dtype=np.float64)).reshape(-1)
    size = torch.as_tensor(np.asarray(box[1], dtype=np.float64)).reshape(-1)
    R = torch.eye(3, dtype=torch.float64)
    if len(box) == 3 and box[2] is not None:
        R = torch.as_tensor(np.asarray(box[2], dtype=np.float64))
    if centre.shape != (3,) or size.shape != (3,) or R.shape != (3, 3):
        raise ValueError("box centre and size must be 3-vectors and R a 3x3 rotation")
    if not bool((size > 0).all()) or not bool(torch.isfinite(centre).all()):
        raise ValueError(f"box size must be positive, got {size.tolist()}")
    if torch.dist(R @ R.T, torch.eye(3, dtype=torch.float64)) > 1e-4:
        raise ValueError("box R must be a rotation matrix")
    return centre, size, R


def _views_around(
    centre: Tensor, radius: float, up: np.ndarray, config: TextTo3DConfig, gen: torch.Generator
) -> list[Camera]:
    """`config.views_per_step` random views of the box's sphere (uniform azimuth and
    elevation in `config.elevation_deg`)."""
    n = config.views_per_step
    lo, hi = config.elevation_deg
    azimuths = 2 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64)
    elevations = lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)
    return orbit_cameras(
        centre,
        radius,
        up,
        azimuths,
        elevations,
        width=config.size,
        height=config.size,
        fov_deg=config.fov_deg,
        name="t3d",
    )


def text_to_3d(
    scene: GaussianScene,
    box: Any,  # (centre [3], size [3]) or (centre [3], size [3], R [3,3] box-to-world)
    distiller: Distiller,
    prompt: str,
    config: TextTo3DConfig | None = None,
    *,
    name: str | None = None,
    on_step: Callable[[int, int, float], None] | None = None,  # (step, total, loss)
    should_stop: Callable[[], bool] | None = None,
) -> tuple[GaussianScene, Tensor]:
    """Grow Gaussians for `prompt` inside `box`, LucidDreaming-style.

    `config.n_gaussians` Gaussians start uniformly inside the ellipsoid inscribed in the box
    (small isotropic splats, grey, half opaque); only their colours, opacities, scales and
    positions (kept inside the box) are optimised, by `distiller.loss` on renders from views
    around the box that show them together with the frozen scene. `should_stop()` ends early
    (the result so far is returned). Returns (scene with them appended under a new label named
    `name` or the prompt, bool mask of them)."""
    config = config or TextTo3DConfig()
    prompt = str(prompt).strip()
    if not prompt:
        raise ValueError("text_to_3d needs a prompt")
    centre, size, R = _box_parts(box)
    gen = torch.Generator().manual_seed(int(config.seed))
    n = config.n_gaussians
    # Uniform in the unit ball, squashed to the box's inscribed ellipsoid (box frame coords).
    d = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    d = (
        d
        / d.norm(dim=1, keepdim=True)
        * torch.rand(n, 1, generator=gen, dtype=torch.float64) ** (1 / 3)
    )
    half = 0.5 * size
    local0 = (d * half).float()
    dtype, dev = torch.float32, scene.device
    R32, c32, half32 = R.to(dtype), centre.to(dtype), half.to(dtype)

    # Parameters: box-frame position through tanh (never leaves the box), log scale, opacity
    # logit and RGB logit.
    pos = torch.atanh((local0 / half32).clamp(-0.95, 0.95)).to(dev).requires_grad_()
    s0 = config.init_scale * float(size.min())
    log_scale = torch.full((n, 3), math.log(s0), dtype=dtype, device=dev).requires_grad_()
    opac = torch.full((n,), math.log(config.init_opacity / (1 - config.init_opacity)), device=dev)
    opac.requires_grad_()
    rgb0 = torch.tensor(config.init_color, dtype=dtype).clamp(0.02, 0.98)
    color = torch.logit(rgb0).expand(n, 3).clone().to(dev).requires_grad_()
    lr = config.lr
    optim = torch.optim.Adam([color, opac, pos, log_scale], lr=lr)
    quats = torch.zeros(n, 4, device=dev)
    quats[:, 0] = 1.0
    context = scene.detach() if config.context and len(scene) else None
    if context is not None and "hidden" in context.extras:
        hidden = context.extras["hidden"].bool()
        context = context.subset(~hidden)
    radius = float(half.norm())
    up = up_vector(scene, override=config.up)
    background = torch.tensor(config.background, dtype=dtype, device=dev)

    def build() -> GaussianScene:
        local = torch.tanh(pos) * half32.to(dev)
        means = local @ R32.to(dev).T + c32.to(dev)
        return GaussianScene(
            means=means,
            quats=quats,
            scales=log_scale.clamp(math.log(1e-4 * radius), math.log(0.5 * radius)),
            opacities=opac,
            sh=rgb_to_sh(torch.sigmoid(color))[:, None, :],
        )

    loss_kwargs = {"method": "sds", **config.extra}
    for step in range(config.steps):
        if should_stop is not None and should_stop():
            break
        grown = build()
        full = grown if context is None else GaussianScene.concat([context, grown])
        cams = _views_around(centre, radius, up, config, gen)
        images = torch.stack(
            [render(full, cam, background=background).rgb.permute(2, 0, 1) for cam in cams]
        )  # [B,3,H,W]
        loss = distiller.loss(
            images.clamp(0, 1),
            prompt,
            progress=step / max(1, config.steps),
            generator=gen,
            **loss_kwargs,
        )
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if on_step is not None:
            on_step(step + 1, config.steps, float(loss.detach()))

    with torch.no_grad():
        grown = build().detach()
    T = torch.eye(4, dtype=torch.float64)  # the Gaussians are already in world coordinates
    return insert_object(scene, grown, T, name=name or prompt)
