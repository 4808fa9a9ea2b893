"""The JSON sidecar written next to a scene file (`scene.ply` -> `scene.ply.json`).

A PLY file can hold per-Gaussian extras as properties, but not their exact dtype (no bool, no
int64, no float16), their shape beyond a flat list of columns, or scene facts such as label
names. The sidecar carries those:

```json
{
  "format": "scenelab.scene-sidecar",
  "version": 1,
  "num_gaussians": 1000,
  "sh_degree": 3,
  "meta": {"label_names": ["table", "mug"], "units": "m", "up_axis": "-y"},
  "extras": [
    {"name": "label", "dtype": "int32", "shape": [], "properties": ["label"]},
    {"name": "feature", "dtype": "float32", "shape": [8], "properties": ["feature_0", "..."]},
    {"name": "selected", "dtype": "bool", "shape": [], "properties": ["selected"]}
  ]
}
```

`shape` is the per-Gaussian shape (the extra is `[N, *shape]`); `properties` are the PLY vertex
properties that hold its values, in row-major order. The sidecar is optional: without it the
reader infers extras from the PLY properties. A sidecar that does not match its PLY (another
count or SH degree, missing properties) is stale and ignored with a warning.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ._common import fail

FORMAT = "scenelab.scene-sidecar"
VERSION = 1

# dtype names as written in the sidecar <-> torch dtypes
DTYPES: dict[str, torch.dtype] = {
    "bool": torch.bool,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


@dataclass(frozen=True)
class ExtraSpec:
    name: str
    dtype: str  # a key of DTYPES
    shape: tuple[int, ...]  # per-Gaussian shape
    properties: tuple[str, ...]


@dataclass(frozen=True)
class Sidecar:
    num_gaussians: int
    sh_degree: int
    meta: dict[str, Any]
    extras: tuple[ExtraSpec, ...]


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def encode(sidecar: Sidecar) -> bytes:
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "num_gaussians": sidecar.num_gaussians,
        "sh_degree": sidecar.sh_degree,
        "meta": sidecar.meta,
        "extras": [
            {
                "name": e.name,
                "dtype": e.dtype,
                "shape": list(e.shape),
                "properties": list(e.properties),
            }
            for e in sidecar.extras
        ],
    }
    try:
        text = json.dumps(doc, indent=2, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"scene meta must be JSON-serialisable (finite numbers, str keys): {e}"
        ) from e
    return (text + "\n").encode("utf-8")


def decode(path: Path, raw: bytes) -> Sidecar:
    """Parse a sidecar; raises `SceneFormatError` naming the sidecar file for malformed content."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        fail(path, f"sidecar is not valid JSON ({type(e).__name__}: {e})")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        fail(path, f"sidecar is not a {FORMAT} document")
    if doc.get("version") != VERSION:
        fail(
            path,
            f"unsupported sidecar version {doc.get('version')!r} (this reader knows {VERSION})",
        )
    n, degree, meta, extras = (doc.get(k) for k in ("num_gaussians", "sh_degree", "meta", "extras"))
    if (
        not _is_int(n)
        or not _is_int(degree)
        or not isinstance(meta, dict)
        or not isinstance(extras, list)
    ):
        fail(path, "sidecar lacks num_gaussians, sh_degree, meta or extras, or has wrong types")
    specs = []
    for i, e in enumerate(extras):
        ok = (
            isinstance(e, dict)
            and isinstance(e.get("name"), str)
            and isinstance(e.get("dtype"), str)
            and e["dtype"] in DTYPES
            and isinstance(e.get("shape"), list)
            and all(_is_int(s) and s >= 0 for s in e["shape"])
            and isinstance(e.get("properties"), list)
            and all(isinstance(p, str) for p in e["properties"])
        )
        if not ok:
            fail(path, f"sidecar extras[{i}] is malformed")
        if len(set(e["properties"])) != len(e["properties"]):
            fail(path, f"sidecar extras[{i}] ({e['name']!r}) lists a property twice")
        if math.prod(e["shape"]) != len(e["properties"]):
            fail(path, f"sidecar extras[{i}] ({e['name']!r}): shape does not match its properties")
        specs.append(ExtraSpec(e["name"], e["dtype"], tuple(e["shape"]), tuple(e["properties"])))
    if len({s.name for s in specs}) != len(specs):
        fail(path, "sidecar names an extra twice")
    return Sidecar(n, degree, meta, tuple(specs))


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_meta(meta: Mapping[str, Any]) -> None:
    """Raise ValueError now, before anything is written, if `meta` cannot go into JSON."""
    encode(Sidecar(0, 0, dict(meta), ()))
