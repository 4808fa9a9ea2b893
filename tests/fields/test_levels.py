"""The multi-level CLIP teacher (CLIP pooled in SAM's automatic masks), with tiny random models."""

from __future__ import annotations

import pytest
import torch

open_clip = pytest.importorskip("open_clip")
pytest.importorskip("segment_anything")

from fields.features import ClipLevelsTeacher, LiftConfig, TextQuery, level_maps, lift  # noqa: E402
from fields.synthetic import WorldConfig, make_world  # noqa: E402

from .test_teachers import clip_teacher, tiny_sam  # noqa: E402


def test_level_maps_rank_covering_masks_by_area():
    masks = torch.zeros(3, 4, 6, dtype=torch.bool)
    masks[0] = True  # the whole image
    masks[1, :, :3] = True  # the left half
    masks[2, :2, :2] = True  # a corner of it
    pooled = torch.eye(3)
    out = level_maps(masks, pooled)  # [3,4,6,3]
    assert out.shape == (3, 4, 6, 3)
    # pixel in the corner: whole = mask 0, part (median of 3) = mask 1, subpart = mask 2
    assert out[0, 0, 0].argmax() == 0 and out[1, 0, 0].argmax() == 1 and out[2, 0, 0].argmax() == 2
    # left half outside the corner: two masks; part is the finer one
    assert out[0, 3, 0].argmax() == 0 and out[1, 3, 0].argmax() == 1 and out[2, 3, 0].argmax() == 1
    # right half: only the whole image
    assert all(int(out[i, 0, 5].argmax()) == 0 for i in range(3))
    # no mask at all: no value
    empty = level_maps(torch.zeros(0, 4, 6, dtype=torch.bool), torch.zeros(0, 3))
    assert torch.isnan(empty).all()


def test_levels_teacher_lifts_three_levels():
    """Plumbing with random weights: three maps per view, a three-level field in the clip space
    whose queries answer on one of the levels."""
    teacher = ClipLevelsTeacher(
        clip_teacher(),
        tiny_sam(),
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        max_side=32,
    )
    world = make_world(0, config=WorldConfig.preview())
    cams = [c.scaled(48 / c.width) for c in world.cameras[:3]]

    class Views:
        def __init__(self):
            self.cameras = cams
            self.names = [f"v{i}" for i in range(len(cams))]

        def __len__(self):
            return len(cams)

        def __getitem__(self, i):
            from fields import render

            return cams[i], render(world.scene, cams[i], background=(1, 1, 1)).rgb

    image = Views()[0][1]
    maps = teacher(image, "v0")
    h, w = teacher.map_size(*image.shape[:2])
    assert maps.shape == (3, h, w, teacher.dim)
    assert torch.isfinite(maps).any()
    field = lift(world.scene, Views(), [teacher], LiftConfig(dim=4))
    assert field.levels == ("whole", "part", "subpart") and field.features.shape[1] == 12
    assert teacher.config()["levels"] == ["whole", "part", "subpart"]
    tq = TextQuery(field, lambda texts: torch.randn(len(texts), teacher.dim))
    assert tq.query("mug").level in field.levels
