"""What several commands share for `--features F` + text: load a feature field for a scene
(warning when it was distilled from another version of the file) and run a language query."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def load_field_for(field_path: Path, scene_path: Path, n: int | None, command: str) -> Any:
    """The `FeatureField` at `field_path` for the scene at `scene_path` (of `n` Gaussians, when
    known)."""
    from fields.features import load_field
    from fields.features._io import scene_hash

    if not Path(field_path).is_file():
        raise FileNotFoundError(f"no feature field at {field_path}")
    field = load_field(field_path)
    if field.scene_hash is not None and field.scene_hash != scene_hash(scene_path):
        print(
            f"scenelab {command}: warning: {field_path} was distilled from another version of "
            f"{scene_path}",
            file=sys.stderr,
        )
    if n is not None and len(field) != n:
        raise ValueError(f"{field_path} has {len(field)} Gaussians, {scene_path} has {n}")
    return field


def text_query(
    field: Any,
    text: str,
    *,
    negatives: str = "",
    threshold: float | None = None,
    within: Any = None,
    space: str | None = None,
) -> Any:
    """LERF query of `text` (comma-separated positives) against the canonical negatives plus
    `negatives`; a `QueryResult` (mask [N] bool, relevancy [N], threshold)."""
    from fields.features import FieldQuery, build_text_encoder, negatives_for

    space = space or ("clip" if "clip" in field.heads else sorted(field.heads)[0])
    try:
        encode = build_text_encoder(space, field.teachers)
        head = field.head(space)
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    positives = [t.strip() for t in str(text).split(",") if t.strip()]
    if not positives:
        raise ValueError("empty query text")
    negs = negatives_for(str(negatives).split(","))
    fq = FieldQuery(field.features, head)
    return fq.query(encode(positives), encode(negs), threshold=threshold, within=within)
