"""NeRF scene files: `SCENE.nerf` is one safetensors file.

Its tensors are the field's parameters (`table`, `density_mlp.*`, `color_mlp.*`, and the
feature branch's `feature_table`, `feature_head.*` when present) and `occupancy` ([G,G,G] uint8).
Its safetensors header's `__metadata__` holds, as JSON strings:

    "format":  "scenelab-nerf"
    "version": "1"
    "model":   NerfModelConfig fields
    "box":     {"center": [x, y, z], "radius": r, "mode": "box" | "contract"}
    "march":   {"dt": .., "cone": .., "dt_max": .., "max_samples_per_ray": ..}
    "meta":    the scene's facts (cameras, up axis, training, metrics), the same keys a
               Gaussian scene's JSON sidecar holds
    "feature_field": (with a feature branch) the decoding side of its feature field: levels,
               config, teachers and meta as `FeatureField.metadata()` writes them; its heads are
               the tensors `space_head.<space>` [D, d]
    "edits":   (an edited NeRF, `EditedNerfField`) one record per region edit, `{"resolution":
               R, "density": bool}`; its tensors are `edits.<i>.voxels` [R,R,R] bool and
               `edits.<i>.color_mlp.*` (`edits.<i>.density_mlp.*` when density was edited)

so `python -c "import safetensors; ..."` or any safetensors reader can inspect it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import SceneFormatError
from ..features import FeatureField
from ..formats import write_files
from ._features import EditedNerfField
from ._field import NerfField, NerfModelConfig, SceneBox
from ._march import MarchSettings
from ._scene import NerfScene

FORMAT = "scenelab-nerf"
VERSION = 1
SUFFIX = ".nerf"
MAX_HEADER = 100 * 1024 * 1024
HEAD_PREFIX = "space_head."


def is_nerf_path(path: str | Path) -> bool:
    """True when the path names a NeRF scene (by extension)."""
    return Path(path).suffix.lower() == SUFFIX


def save_nerf(scene: NerfScene, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write `scene` atomically (never a half-written file; refuses to replace an existing file
    unless `overwrite`)."""
    from safetensors.torch import save

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in scene.field.state_dict().items()}
    tensors["occupancy"] = scene.occupancy.to("cpu", torch.uint8).contiguous()
    box = scene.box
    header = {
        "format": FORMAT,
        "version": str(VERSION),
        "model": json.dumps(scene.config.to_dict()),
        "box": json.dumps({"center": list(box.center), "radius": box.radius, "mode": box.mode}),
        "march": json.dumps(
            {
                "dt": scene.march.dt,
                "cone": scene.march.cone,
                "dt_max": scene.march.dt_max,
                "max_samples_per_ray": scene.march.max_samples_per_ray,
            }
        ),
        "meta": json.dumps(scene.meta),
    }
    if isinstance(scene.field, EditedNerfField):
        header["edits"] = json.dumps(scene.field.edit_records())
    ff = scene.feature_field
    if ff is not None:
        if scene.field.feature_table is None:
            raise ValueError("the scene has a feature field but its NeRF has no feature branch")
        for space, w in ff.heads.items():
            tensors[f"{HEAD_PREFIX}{space}"] = w.detach().to("cpu", torch.float32).contiguous()
        header["feature_field"] = json.dumps(ff.metadata())
    data = save(tensors, metadata=header)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_files([(path, lambda f: f.write(data))], overwrite=overwrite)
    return path


def _fail(path: Path, what: str) -> SceneFormatError:
    return SceneFormatError(path, f"not a scenelab NeRF file: {what}")


def load_nerf(path: str | Path, device: torch.device | str = "cpu") -> NerfScene:
    """Read a `.nerf` file; bad content raises `SceneFormatError` naming the problem."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such NeRF scene: {path}")
    if not path.is_file():
        raise SceneFormatError(path, "not a regular file")
    size = os.path.getsize(path)
    if size < 8:
        raise _fail(path, f"{size} bytes is too short for a safetensors file")
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little")
        if n > min(size - 8, MAX_HEADER):
            raise _fail(path, f"header length {n} does not fit the file ({size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _fail(path, f"its header is not JSON ({e})") from e
        meta = header.get("__metadata__") if isinstance(header, dict) else None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise _fail(path, "the safetensors header does not say format=scenelab-nerf")
        if meta.get("version") != str(VERSION):
            raise SceneFormatError(
                path, f"NeRF file version {meta.get('version')!r}; this scenelab reads {VERSION}"
            )
        f.seek(0)
        data = f.read()
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise _fail(path, f"its tensors cannot be read ({e})") from e
    try:
        config = NerfModelConfig.from_dict(json.loads(meta["model"]))
        b = json.loads(meta["box"])
        box = SceneBox(tuple(float(v) for v in b["center"]), float(b["radius"]), b["mode"])  # type: ignore[arg-type]
        march = MarchSettings(**json.loads(meta["march"]))
        scene_meta: dict[str, Any] = json.loads(meta.get("meta", "{}"))
    except (KeyError, TypeError, ValueError) as e:
        raise _fail(path, f"bad header entry ({e})") from e
    try:
        edits = json.loads(meta["edits"]) if "edits" in meta else None
        field = (
            NerfField(config, box)
            if edits is None
            else EditedNerfField.from_records(config, box, edits)
        )
    except (KeyError, TypeError, ValueError) as e:
        raise _fail(path, f"bad edits entry ({e})") from e
    heads = {
        k[len(HEAD_PREFIX) :]: tensors.pop(k).float()
        for k in list(tensors)
        if k.startswith(HEAD_PREFIX)
    }
    occ = tensors.pop("occupancy", None)
    if occ is None:
        raise _fail(path, "no occupancy grid")
    try:
        field.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise _fail(path, f"its tensors do not match its model settings ({e})") from e
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise SceneFormatError(path, f"tensor {k!r} holds NaN or Inf values")
    G = config.occupancy_res
    if tuple(occ.shape) != (G, G, G):
        raise _fail(path, f"occupancy grid is {tuple(occ.shape)}, expected ({G},{G},{G})")
    scene = NerfScene(field, occ.bool(), meta=scene_meta, march=march)
    if "feature_field" in meta:
        if field.feature_table is None:
            raise _fail(path, "a feature field is recorded but the NeRF has no feature branch")
        try:
            fm = json.loads(meta["feature_field"])
            scene.feature_field = FeatureField(
                features=torch.zeros(0, config.feature_dim),
                heads=heads,
                config=fm.get("config", {}),
                teachers=fm.get("teachers", []),
                meta=fm.get("meta", {}),
                levels=tuple(fm.get("levels") or ()),
            )
        except (TypeError, ValueError, json.JSONDecodeError) as e:
            raise _fail(path, f"bad feature field ({e})") from e
    return scene.to(device)
