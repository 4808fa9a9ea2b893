"""`FeatureField`: per-Gaussian features plus their linear heads, as `.safetensors`.

Tensors: `features` [N, L·d] and one `head.<space>` [D,d] per teacher space. A field has L ≥ 1
semantic levels (LangSplat's whole / part / subpart): level l is `features[:, l·d:(l+1)·d]`
(`level(l)`), and every level decodes with the same heads. Metadata (the safetensors header,
key "scenelab", JSON): format/version, the distill config, the teachers' configs, the level
names, the scene it belongs to (Gaussian count and geometry fingerprint, `scene_fingerprint`;
the scene file's sha256 when known) and free-form `meta` (label names, the oracle's seed...).
Files are written atomically and never over an existing one unless asked; a field lives next
to its scene, never inside the scene file.

A field belongs to one scene: `check_scene` refuses any other (another count, or the same count
with other geometry). The fingerprint covers positions, shapes and opacities, not colours, so a
recoloured scene keeps its field.
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
VERSION = 2  # 2: levels, scene count + fingerprint (version 1 files read as one level)
DEFAULT_LEVELS = ("default",)


class FieldMismatchError(ValueError):
    """A feature field was given a scene it was not lifted on."""


def scene_fingerprint(scene: GaussianScene) -> str:
    """Content hash of a scene's geometry: count, means, quats, scales and opacities (float32,
    file order). Colours are left out on purpose: a recolour keeps the semantics."""
    digest = hashlib.sha256(f"n={len(scene)}".encode())
    for t in (scene.means, scene.quats, scene.scales, scene.opacities):
        digest.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


@dataclass
class FeatureField:
    """Per-Gaussian features `[N, L·d]` (file order of the scene; L levels of d channels) and
    heads `{space: W [D,d]}`."""

    features: Tensor  # [N, L*d]
    heads: dict[str, Tensor]  # space -> [D, d]
    config: dict[str, Any] = field(default_factory=dict)
    teachers: list[dict[str, Any]] = field(default_factory=list)
    scene_hash: str | None = None  # sha256 of the scene file, when lifted from a file
    meta: dict[str, Any] = field(default_factory=dict)
    levels: tuple[str, ...] = DEFAULT_LEVELS  # level names, coarse to fine ("whole", "part")
    scene_count: int | None = None  # Gaussians of the scene it was lifted on
    scene_fingerprint: str | None = None  # `scene_fingerprint` of that scene

    def __post_init__(self) -> None:
        self.levels = tuple(str(x) for x in self.levels) or DEFAULT_LEVELS
        if self.features.ndim != 2:
            raise ValueError(f"features must be [N,L*d], got {tuple(self.features.shape)}")
        if self.features.shape[1] % len(self.levels):
            raise ValueError(
                f"features have {self.features.shape[1]} channels, not a multiple of the "
                f"{len(self.levels)} levels {list(self.levels)}"
            )
        d = self.dim
        for space, w in self.heads.items():
            if w.ndim != 2 or w.shape[1] != d:
                raise ValueError(f"head {space!r} must be [D,{d}], got {tuple(w.shape)}")

    @property
    def dim(self) -> int:
        """Channels per level (d): what the heads decode."""
        return int(self.features.shape[1]) // len(self.levels)

    @property
    def channels(self) -> int:
        """Channels per Gaussian over all levels (L·d): the width of the `feature` extra."""
        return int(self.features.shape[1])

    def level(self, level: int | str = 0, features: Tensor | None = None) -> Tensor:
        """[N,d]: one level's features (of `features` [N,L·d] when given, e.g. a scene's
        `feature` extra)."""
        i = self.level_index(level)
        f = self.features if features is None else features
        return f[:, i * self.dim : (i + 1) * self.dim]

    def level_index(self, level: int | str) -> int:
        if isinstance(level, str):
            if level not in self.levels:
                raise KeyError(f"no level {level!r} (levels: {', '.join(self.levels)})")
            return self.levels.index(level)
        if not 0 <= int(level) < len(self.levels):
            raise IndexError(f"level {level} out of range (the field has {len(self.levels)})")
        return int(level)

    def with_features(self, features: Tensor) -> FeatureField:
        """The same heads and records with other features [N', L·d] (e.g. a scene's `feature`
        extra after edits); the scene it belongs to is unknown then."""
        return FeatureField(
            features=features,
            heads=self.heads,
            config=self.config,
            teachers=self.teachers,
            meta=self.meta,
            levels=self.levels,
        )

    def bind(self, scene: GaussianScene) -> FeatureField:
        """Record `scene` as the scene this field belongs to (its count and fingerprint)."""
        self.check_count(len(scene))
        self.scene_count = len(scene)
        self.scene_fingerprint = scene_fingerprint(scene)
        return self

    def check_count(self, n: int) -> None:
        if len(self) != n:
            raise FieldMismatchError(
                f"the feature field has {len(self):,} Gaussians and the scene {n:,}: it was "
                "lifted on another scene (or on this one before an edit); lift features for "
                "this scene (scenelab distill SCENE)"
            )

    def check_scene(self, scene: GaussianScene) -> None:
        """Raise `FieldMismatchError` unless this field was lifted on `scene` (same count and,
        when the field records one, the same geometry fingerprint)."""
        self.check_count(len(scene))
        if self.scene_fingerprint is not None and self.scene_fingerprint != scene_fingerprint(
            scene
        ):
            raise FieldMismatchError(
                "the feature field was lifted on another scene with the same number of "
                "Gaussians (its geometry fingerprint differs); lift features for this scene "
                "(scenelab distill SCENE)"
            )

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
        self.check_count(len(scene))
        return scene.with_extras(feature=self.features.to(scene.device))

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "config": self.config,
            "teachers": self.teachers,
            "levels": list(self.levels),
            "scene_hash": self.scene_hash,
            "scene_count": self.scene_count,
            "scene_fingerprint": self.scene_fingerprint,
            "meta": self.meta,
        }

    def save(self, path: str | Path, *, overwrite: bool = False, half: bool = False) -> Path:
        """Write the field to `path` (.safetensors), atomically; `FileExistsError` when it
        exists and `overwrite` is False. `half` stores the features as float16 (half the
        size; they read back as float32)."""
        from safetensors.torch import save

        path = Path(path)
        dtype = torch.float16 if half else torch.float32
        tensors = {"features": self.features.detach().to("cpu", dtype).contiguous()}
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
    if int(meta.get("version", 1)) > VERSION:
        raise ValueError(
            f"{path}: feature field version {meta.get('version')} is newer than this scenelab "
            f"reads ({VERSION}); update scenelab"
        )
    heads = {k[5:]: v for k, v in tensors.items() if k.startswith("head.")}
    try:
        return FeatureField(
            features=tensors["features"].float(),
            heads={k: v.float() for k, v in heads.items()},
            config=meta.get("config", {}),
            teachers=meta.get("teachers", []),
            scene_hash=meta.get("scene_hash"),
            meta=meta.get("meta", {}),
            levels=tuple(meta.get("levels") or DEFAULT_LEVELS),
            scene_count=meta.get("scene_count"),
            scene_fingerprint=meta.get("scene_fingerprint"),
        )
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def scene_hash(path: str | Path) -> str:
    """sha256 of a scene file: records which scene a field was distilled for."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
