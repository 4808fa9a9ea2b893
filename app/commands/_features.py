"""What several commands share for `--features F` + text: load a feature field for a scene
(refusing a field lifted on another scene) and run a language query (`fields.features.TextQuery`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def load_field_for(field_path: Path, scene_path: Path, scene: Any, command: str) -> Any:
    """The `FeatureField` at `field_path` for `scene` (a `GaussianScene`, or its Gaussian count,
    or None when unknown), loaded from `scene_path`. A field lifted on another scene is refused
    (`FieldMismatchError`, a ValueError, naming both files)."""
    from fields import GaussianScene
    from fields.features import FieldMismatchError, load_field, scene_hash

    if not Path(field_path).is_file():
        raise FileNotFoundError(f"no feature field at {field_path}")
    field = load_field(field_path)
    try:
        if isinstance(scene, GaussianScene):
            field.check_scene(scene)
        elif scene is not None:
            field.check_count(int(scene))
    except FieldMismatchError as e:
        raise FieldMismatchError(f"{field_path} does not belong to {scene_path}: {e}") from None
    if (
        field.scene_fingerprint is None
        and field.scene_hash is not None
        and field.scene_hash != scene_hash(scene_path)
    ):
        print(
            f"scenelab {command}: warning: {field_path} was distilled from another version of "
            f"{scene_path}",
            file=sys.stderr,
        )
    return field


def text_query(
    field: Any,
    text: str,
    *,
    negatives: str = "",
    threshold: float | None = None,
    within: Any = None,
    space: str | None = None,
    level: str = "auto",
) -> Any:
    """LERF query of `text` (comma-separated positives) against the canonical negatives plus
    `negatives`: a `TextQueryResult` (mask [N] bool — empty when there is no confident match —,
    relevancy, threshold, level, message)."""
    from fields.features import TextQuery, split_terms

    try:
        tq = TextQuery(field, space=space)
    except (KeyError, ValueError) as e:
        raise ValueError(e.args[0]) from None
    level_arg: Any = level if level in ("auto", *field.levels) else int(level)
    return tq.query(
        text, split_terms(negatives), threshold=threshold, within=within, level=level_arg
    )


def require_match(result: Any, text: str) -> Any:
    """`result.mask`, or a ValueError with the reason when the query found no confident match."""
    if not result.confident or not bool(result.mask.any()):
        hint = f" (known: {', '.join(result.suggestions)})" if result.suggestions else ""
        raise ValueError(f"{text!r}: {result.message or 'nothing selected'}{hint}")
    return result.mask
