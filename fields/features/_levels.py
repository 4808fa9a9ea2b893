"""Multi-level CLIP teacher: dense CLIP features pooled inside SAM's automatic masks, at three
levels (LangSplat's whole / part / subpart).

SAM's automatic mask generator cuts each view into masks of every granularity (a mug, its
handle, a logo on it). The view's dense MaskCLIP features (`ClipTeacher`) are averaged inside
each mask (`pool_in_masks`: one CLIP pass per view, not one per mask crop), and each pixel takes,
per level, the pooled feature of one of the masks that cover it, ranked by area: the largest
("whole"), the median ("part") and the smallest ("subpart"). Pixels no mask covers have no value
(NaN). The maps are returned at a modest resolution (`max_side`), a uniform rescale of the view,
so lifting renders the field at exactly that size.

    teacher = ClipLevelsTeacher(ClipTeacher("ViT-B-16"), load_sam("vit_b", "sam_vit_b.pth"))
    maps = teacher(image, "frame_0001")          # [3, h, w, 512], NaN where no mask

Its space is "clip": queries use CLIP's text side, rebuilt from the field's teacher record.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._clip import ClipTeacher, pool_in_masks
from ._sam import _import_segment_anything, load_sam
from ._teacher import register_teacher

__all__ = ["LEVELS", "ClipLevelsTeacher", "level_maps"]

LEVELS = ("whole", "part", "subpart")


def level_maps(masks: Tensor, pooled: Tensor) -> Tensor:
    """Per level, each pixel's pooled feature of a covering mask ranked by area.

    masks [M,h,w] bool, pooled [M,D] -> [3,h,w,D]: level 0 the largest covering mask, 1 the
    median, 2 the smallest; NaN where no mask covers the pixel."""
    m, h, w = masks.shape
    d = pooled.shape[1]
    out = torch.full((len(LEVELS), h, w, d), float("nan"))
    if m == 0:
        return out
    areas = masks.flatten(1).sum(1)
    order = torch.argsort(areas, descending=True, stable=True)
    cover = masks[order]  # [M,h,w], largest first
    count = cover.sum(0)  # [h,w]
    rank = cover.long().cumsum(0)  # 1-based rank among covering masks, largest first
    table = torch.cat([pooled[order].float(), torch.full((1, d), float("nan"))])
    for level, k in enumerate((torch.ones_like(count), count // 2 + 1, count)):
        # level 0: rank 1 (largest); 1: the median rank (the finer of two); 2: the smallest
        hit = cover & (rank == k[None])
        idx = torch.where(count > 0, hit.float().argmax(0), m)
        out[level] = table[idx]
    return out


class ClipLevelsTeacher:
    """See the module docstring. `clip`: a `ClipTeacher`; `sam`: a segment-anything `Sam`
    model (its automatic mask generator runs the image encoder and a grid of point prompts).
    Mask-generator options follow segment-anything's `SamAutomaticMaskGenerator`."""

    space = "clip"
    levels = LEVELS
    cacheable = False  # three maps per view; cached through the CLIP teacher's own features

    def __init__(
        self,
        clip: ClipTeacher,
        sam: nn.Module,
        *,
        sam_model_type: str = "custom",
        sam_weights: dict[str, Any] | None = None,
        points_per_side: int = 16,
        pred_iou_thresh: float = 0.86,
        stability_score_thresh: float = 0.9,
        min_mask_region_area: int = 0,
        max_side: int = 96,
    ) -> None:
        segment_anything = _import_segment_anything()
        self.clip = clip
        self.dim = int(clip.dim)
        self.name = f"{clip.name}-sam-levels"
        self.max_side = int(max_side)
        self.options = {
            "points_per_side": int(points_per_side),
            "pred_iou_thresh": float(pred_iou_thresh),
            "stability_score_thresh": float(stability_score_thresh),
            "min_mask_region_area": int(min_mask_region_area),
        }
        self.sam_record = {"model_type": sam_model_type, "weights": dict(sam_weights or {})}
        self.generator = segment_anything.SamAutomaticMaskGenerator(sam, **self.options)

    def config(self) -> dict[str, Any]:
        # The CLIP teacher's own record first: the "clip" text encoder is rebuilt from it.
        return {
            **self.clip.config(),
            "levels": list(LEVELS),
            "sam": self.sam_record,
            "mask_generator": self.options,
            "max_side": self.max_side,
        }

    def map_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the maps for a `height` x `width` view: long side `max_side` at most, and
        exactly what `Camera.scaled(w / width)` gives."""
        f = min(1.0, self.max_side / max(height, width))
        w = max(1, round(width * f))
        return max(1, round(height * (w / width))), w

    @torch.no_grad()
    def __call__(self, image: Tensor, view_name: str = "") -> Tensor:
        """`image` float [H,W,3] in [0,1] -> [3, h, w, D] (NaN where no mask covers)."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an image [H, W, 3], got shape {tuple(image.shape)}")
        height, width = image.shape[:2]
        dense = self.clip(image).cpu()  # [hp, wp, D]
        pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        records = self.generator.generate(np.ascontiguousarray(pixels))
        h, w = self.map_size(height, width)
        if not records:
            return torch.full((len(LEVELS), h, w, self.dim), float("nan"))
        masks = torch.from_numpy(np.stack([r["segmentation"] for r in records]))  # [M,H,W]
        pooled = pool_in_masks(dense, masks)  # [M,D]
        ok = torch.isfinite(pooled).all(1)
        small = F.interpolate(masks[:, None].float(), size=(h, w), mode="area")[:, 0] >= 0.5
        return level_maps(small[ok], pooled[ok])


def _build(
    dataset: Any,
    *,
    device: torch.device,
    model: str | None = None,
    pretrained: str | None = None,
    model_type: str = "vit_b",
    checkpoint: str | None = None,
    **options: Any,
) -> ClipLevelsTeacher:
    from pathlib import Path

    from ._clip import DEFAULT_MODEL, DEFAULT_PRETRAINED

    clip = ClipTeacher(model or DEFAULT_MODEL, pretrained or DEFAULT_PRETRAINED, device=device)
    sam = load_sam(model_type, checkpoint, device=device)
    weights = {"checkpoint": Path(checkpoint).name} if checkpoint else {}
    return ClipLevelsTeacher(clip, sam, sam_model_type=model_type, sam_weights=weights, **options)


register_teacher("clip-levels", _build)
