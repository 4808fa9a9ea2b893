"""Teachers: the 2D feature extractors that feature fields are distilled from.

A teacher turns one view's image into a feature map in its own embedding space:

    teacher(image, view_name) -> Tensor [h, w, dim]

- `image` is float32 [H, W, 3] in [0, 1] (what `Dataset.__getitem__` returns);
- the map has the teacher's own resolution (a CLIP patch grid, SAM's 64x64, the label map);
  distillation renders the field at that resolution, so nothing is resampled;
- pixels where the teacher has no value (background of the oracle, padding of SAM's square
  input) are NaN in every channel; the distillation loss skips them.

Teachers are built through a registry (`TEACHERS`, name -> builder) and their outputs are
cached on disk by `TeacherCache`, keyed by the teacher's `config()`, the image content and its
resolution, so a second distillation (or a resumed one) never recomputes a view.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "TEACHERS",
    "TEXT_ENCODERS",
    "Teacher",
    "TeacherCache",
    "build_teacher",
    "build_text_encoder",
    "register_teacher",
    "register_text_encoder",
    "teacher_key",
]


@runtime_checkable
class Teacher(Protocol):
    """What distillation needs from a 2D teacher.

    Attributes:
        name: short identifier, e.g. "clip-vit-b16", "sam-vit-h", "oracle".
        dim: channels of the maps it returns (D: 512 for CLIP ViT-B, 256 for SAM).
        space: the embedding space its maps live in ("clip", "sam", "oracle"). Teachers of
            one space share one linear head of the field; queries pick a head by space.

    Optional attribute (read with `getattr`, default True):
        cacheable: False for teachers that are cheaper to recompute than to read back (the
            oracle's maps are a table lookup of the label map), so `TeacherCache` is bypassed.
    """

    name: str
    dim: int
    space: str

    def config(self) -> dict[str, Any]:
        """Everything that determines the output for a given image: model ids, checkpoint
        hashes, resolutions, options. JSON-serialisable. Two teachers with equal configs must
        produce equal maps; the cache relies on it."""
        ...

    def __call__(self, image: Tensor, view_name: str) -> Tensor:
        """`image` float32 [H,W,3] in [0,1] -> float32 [h,w,dim] (NaN where no value), on any
        device. `view_name` is the dataset's name for the view (`Dataset.names[i]`)."""
        ...


# ---------------------------------------------------------------------------------- registry
TeacherBuilder = Callable[..., Teacher]
"""`builder(dataset, *, device, **options) -> Teacher`: `dataset` is the `fields.Dataset` being
distilled (the oracle reads its label maps; image teachers may ignore it), `device` the torch
device to run on, `options` teacher-specific settings (model id, ...)."""

TEACHERS: dict[str, TeacherBuilder] = {}


def register_teacher(name: str, builder: TeacherBuilder) -> None:
    """Make `build_teacher(name, ...)` (and `scenelab distill --teacher name`) available."""
    TEACHERS[name] = builder


def build_teacher(
    name: str, dataset: Any, *, device: torch.device | str = "cpu", **options: Any
) -> Teacher:
    """Build a registered teacher; `KeyError` with the registered names when unknown."""
    try:
        builder = TEACHERS[name]
    except KeyError:
        known = ", ".join(sorted(TEACHERS)) or "none"
        raise KeyError(f"no teacher {name!r} is registered (available: {known})") from None
    return builder(dataset, device=torch.device(device), **options)


TextEncoder = Callable[[list[str]], Tensor]
"""`encode(texts) -> [T, D]`: text embeddings in a teacher space (for language queries)."""

TextEncoderBuilder = Callable[[dict[str, Any]], TextEncoder]
"""`builder(teacher_record) -> encode`: `teacher_record` is the teacher's entry in a feature
field's metadata (`{"name", "space", "dim", **config()}`), enough to rebuild its text side."""

TEXT_ENCODERS: dict[str, TextEncoderBuilder] = {}


def register_text_encoder(space: str, builder: TextEncoderBuilder) -> None:
    """Make language queries in `space` possible (the oracle registers "oracle")."""
    TEXT_ENCODERS[space] = builder


def build_text_encoder(space: str, teacher_records: list[dict[str, Any]]) -> TextEncoder:
    """The text encoder of `space` for a field distilled from `teacher_records`."""
    record = next((r for r in teacher_records if r.get("space") == space), None)
    if record is None:
        raise KeyError(f"the field was not distilled from a {space!r} teacher")
    try:
        builder = TEXT_ENCODERS[space]
    except KeyError:
        known = ", ".join(sorted(TEXT_ENCODERS)) or "none"
        raise KeyError(
            f"no text encoder is registered for the {space!r} space (available: {known})"
        ) from None
    return builder(record)


# ---------------------------------------------------------------------------------- cache
def teacher_key(teacher: Teacher) -> str:
    """Stable identifier of a teacher's outputs: name, space, dim and a hash of `config()`."""
    config = {"name": teacher.name, "space": teacher.space, "dim": int(teacher.dim)}
    config.update(teacher.config())
    blob = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    return f"{_slug(teacher.name)}-{hashlib.sha256(blob).hexdigest()[:16]}"


def image_hash(image: Tensor) -> str:
    """Content hash of an image tensor (values, dtype and shape)."""
    array = np.ascontiguousarray(image.detach().to("cpu", torch.float32).numpy())
    digest = hashlib.sha256(repr(array.shape).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()[:32]


class TeacherCache:
    """Teacher maps on disk, one `.npy` (float16) per (teacher config, image, resolution).

    Layout: `root/<teacher-name>-<config-hash>/config.json` (the teacher's full config, so a
    folder can be traced back to its model) and `.../<image-hash>-<W>x<H>.npy`. Every map is
    written atomically as soon as it is computed, so a run killed halfway keeps the views it
    finished and the next run resumes from them.

        cache = TeacherCache("data/.cache/teachers")
        fmap = cache.get_or_compute(teacher, image, view_name)   # [h,w,D] float32, CPU
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def folder(self, teacher: Teacher) -> Path:
        return self.root / teacher_key(teacher)

    def path(self, teacher: Teacher, image: Tensor) -> Path:
        h, w = image.shape[:2]
        return self.folder(teacher) / f"{image_hash(image)}-{w}x{h}.npy"

    def get(self, teacher: Teacher, image: Tensor) -> Tensor | None:
        path = self.path(teacher, image)
        if not path.is_file():
            return None
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # a torn or foreign file: recompute and replace it
        if array.ndim != 3 or array.shape[2] != teacher.dim:
            return None
        return torch.from_numpy(array.astype(np.float32))

    def put(self, teacher: Teacher, image: Tensor, fmap: Tensor) -> None:
        folder = self.folder(teacher)
        folder.mkdir(parents=True, exist_ok=True)
        sidecar = folder / "config.json"
        if not sidecar.is_file():
            config = {"name": teacher.name, "space": teacher.space, "dim": int(teacher.dim)}
            config["config"] = teacher.config()
            _atomic_write(sidecar, lambda f: f.write(json.dumps(config, indent=2).encode()))
        array = fmap.detach().to("cpu", torch.float32).numpy().astype(np.float16)
        _atomic_write(self.path(teacher, image), lambda f: np.save(f, array))

    def get_or_compute(self, teacher: Teacher, image: Tensor, view_name: str) -> Tensor:
        """The cached map for this image, or the teacher's output (then stored). float32, CPU."""
        cached = self.get(teacher, image)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        with torch.no_grad():
            fmap = teacher(image, view_name)
        check_map(teacher, fmap)
        self.put(teacher, image, fmap)
        # Return what a later run will read back, so a resumed run is bit-identical.
        return fmap.detach().to("cpu", torch.float16).to(torch.float32)


def check_map(teacher: Teacher, fmap: Tensor) -> None:
    if fmap.ndim != 3 or fmap.shape[2] != teacher.dim:
        raise ValueError(
            f"teacher {teacher.name!r} returned a map of shape {tuple(fmap.shape)}; "
            f"expected [h, w, {teacher.dim}]"
        )


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "teacher"


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
