"""Feature fields: 2D teachers, distillation into per-Gaussian features, language queries.

    from fields.features import OracleTeacher, DistillConfig, distill, FieldQuery

    teacher = OracleTeacher(dataset)                       # or build_teacher("clip", dataset)
    field = distill(scene, dataset, [teacher], DistillConfig(dim=16, steps=600))
    field.save("scene.features.safetensors")
    fq = FieldQuery(field.features, field.head("oracle"))  # caches |W f_i| once
    res = fq.query(teacher.encode_text(["mug"]), teacher.encode_text(negatives_for()))
    res.mask                                               # [N] bool, file order

Teachers implement the small `Teacher` protocol and register a builder in `TEACHERS`; text
sides register in `TEXT_ENCODERS` (by space) so a saved field can be queried on its own.
"""

from ..camera import cameras_from_meta, cameras_to_meta
from . import _clip, _levels, _sam  # noqa: F401  (register the teachers; imports stay lazy)
from ._clip import DEFAULT_MODEL as DEFAULT_CLIP_MODEL
from ._clip import DEFAULT_PRETRAINED as DEFAULT_CLIP_PRETRAINED
from ._clip import ClipTeacher, MissingWeightsError
from ._distill import DistillConfig, distill
from ._eval import evaluate_queries, observed_gaussians
from ._io import FeatureField, FieldMismatchError, load_field, scene_fingerprint, scene_hash
from ._levels import ClipLevelsTeacher, level_maps
from ._lift import (
    LiftConfig,
    SceneViews,
    ViewSource,
    lift,
    lift_values,
    native_side,
    scene_views,
    teacher_levels,
)
from ._objects import (
    DEFAULT_VOCABULARY,
    ObjectList,
    ObjectsConfig,
    SceneObject,
    list_objects,
    name_objects,
    object_vocabulary,
    segment_objects,
)
from ._oracle import OracleTeacher, OracleText, SceneOracleTeacher, read_label_names
from ._query import (
    CANONICAL_NEGATIVES,
    FieldQuery,
    QueryResult,
    auto_threshold,
    decoded_norms,
    negatives_for,
    otsu_threshold,
    query,
    relevancy,
)
from ._sam import SamDecoder, SamTeacher, load_sam
from ._segment import (
    ClickResult,
    ClickSegmenter,
    connected_to,
    eval_click,
    grow_by_affinity,
    lift_mask,
    sam_embedding_from_field,
    segment_click,
)
from ._teacher import (
    TEACHERS,
    TEXT_ENCODERS,
    Teacher,
    TeacherCache,
    build_teacher,
    build_text_encoder,
    register_teacher,
    register_text_encoder,
)
from ._textquery import (
    LANGUAGE_SPACES,
    TextQuery,
    TextQueryResult,
    closed_vocabulary,
    language_space,
    split_terms,
)
from ._views import surrounds, teacher_cameras

__all__ = [
    "CANONICAL_NEGATIVES",
    "DEFAULT_CLIP_MODEL",
    "DEFAULT_CLIP_PRETRAINED",
    "DEFAULT_VOCABULARY",
    "LANGUAGE_SPACES",
    "TEACHERS",
    "TEXT_ENCODERS",
    "ClickResult",
    "ClickSegmenter",
    "ClipLevelsTeacher",
    "ClipTeacher",
    "DistillConfig",
    "FeatureField",
    "FieldMismatchError",
    "FieldQuery",
    "LiftConfig",
    "MissingWeightsError",
    "ObjectList",
    "ObjectsConfig",
    "OracleTeacher",
    "OracleText",
    "QueryResult",
    "SamDecoder",
    "SamTeacher",
    "SceneObject",
    "SceneOracleTeacher",
    "SceneViews",
    "Teacher",
    "TeacherCache",
    "TextQuery",
    "TextQueryResult",
    "ViewSource",
    "auto_threshold",
    "build_teacher",
    "build_text_encoder",
    "cameras_from_meta",
    "cameras_to_meta",
    "closed_vocabulary",
    "connected_to",
    "decoded_norms",
    "distill",
    "eval_click",
    "evaluate_queries",
    "grow_by_affinity",
    "language_space",
    "level_maps",
    "lift",
    "lift_mask",
    "lift_values",
    "list_objects",
    "load_field",
    "load_sam",
    "name_objects",
    "native_side",
    "negatives_for",
    "object_vocabulary",
    "observed_gaussians",
    "otsu_threshold",
    "query",
    "read_label_names",
    "register_teacher",
    "register_text_encoder",
    "relevancy",
    "sam_embedding_from_field",
    "scene_fingerprint",
    "scene_hash",
    "scene_views",
    "segment_click",
    "segment_objects",
    "split_terms",
    "surrounds",
    "teacher_cameras",
    "teacher_levels",
]
