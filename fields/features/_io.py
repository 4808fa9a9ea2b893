"""`FeatureField`: distilled per-Gaussian features plus their linear heads, as `.safetensors`.

Tensors: `features` [N,d] and one `head.<space>` [D,d] per teacher space. Metadata (the
safetensors header, key "scenelab", JSON): format/version, the distill config, the teachers'
configs, the scene file's sha256 and free-form `meta` (label names, the oracle's seed...).
Files are written atomically and never over an existing one unless asked; a field lives next
to its scene, never inside the scene file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..formats._atomic import write_files
from ..scene import GaussianScene

FORMAT = "scenelab.feature-field"
VERSION = 1


@dataclass
class FeatureField:
    """Per-Gaussian features `[N,d]` (file order of the scene) and heads `{space: W [D,d]}`."""

    features: Tensor  # [N, d]
    heads: dict[str, Tensor]  # space -> [D, d]
    config: dict[str, Any] = field(default_factory=dict)
    teachers: list[dict[str, Any]] = field(default_factory=list)
    scene_hash: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.features.ndim != 2:
            raise ValueError(f"features must be [N,d], got {tuple(self.features.shape)}")
        d = self.features.shape[1]
        for space, w in self.heads.items():
            if w.ndim != 2 or w.shape[1] != d:
                raise ValueError(f"head {space!r} must be [D,{d}], got {tuple(w.shape)}")

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def head(self, space: str) -> Tensor:
        try:
            return self.heads[space]
        except KeyError:
            raise KeyError(
                f"the field has no {space!r} head (it has {sorted(self.heads)})"
            ) from None

    def attach(self, scene: GaussianScene) -> GaussianScene:
        """`scene` with the features as its `feature` extra (sizes must agree)."""
        if len(scene) != len(self):
            raise ValueError(f"field has {len(self)} Gaussians, the scene {len(scene)}")
        return scene.with_extras(feature=self.features.to(scene.device))

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "config": self.config,
            "teachers": self.teachers,
            "scene_hash": self.scene_hash,
            "meta": self.meta,
        }

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the field to `path` (.safetensors), atomically; `FileExistsError` when it
        exists and `overwrite` is False."""
        from safetensors.torch import save

        path = Path(path)
        tensors = {"features": self.features.detach().to("cpu", torch.float32).contiguous()}
        for space, w in self.heads.items():
            tensors[f"head.{space}"] = w.detach().to("cpu", torch.float32).contiguous()
        blob = save(tensors, metadata={"scenelab": json.dumps(self.metadata())})
        write_files([(path, lambda f: f.write(blob))], overwrite=overwrite)
        return path


def load_field(path: str | Path) -> FeatureField:
    """Read a `FeatureField` written by `FeatureField.save`."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        meta = json.loads(header["scenelab"])
    except (KeyError, json.JSONDecodeError):
        raise ValueError(f"{path}: no scenelab feature-field metadata") from None
    if meta.get("format") != FORMAT or "features" not in tensors:
        raise ValueError(f"{path}: not a scenelab feature field")
    heads = {k[5:]: v for k, v in tensors.items() if k.startswith("head.")}
    return FeatureField(
        features=tensors["features"],
        heads=heads,
        config=meta.get("config", {}),
        teachers=meta.get("teachers", []),
        scene_hash=meta.get("scene_hash"),
        meta=meta.get("meta", {}),
    )


def scene_hash(path: str | Path) -> str:
    """sha256 of a scene file: records which scene a field was distilled for."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
