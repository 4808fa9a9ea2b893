"""Scoring language queries against a synthetic world's ground truth.

For every object name: query the field, then
- 3D IoU of the mask against the per-Gaussian `label` extra. Two figures: over the Gaussians
  the dataset's cameras observe (`iou_3d`; a Gaussian counts as observed when its blending
  weight summed over one view's pixels reaches `observed_weight` pixels in some view) and over
  all Gaussians (`iou_3d_all`). Surfaces no camera sees, such as the bottom of a mug standing
  on the table, share their place with the table under it; no view-based method can tell them
  apart, so the observed figure is the one that measures the field;
- 2D IoU on held-out views: the mask rendered as a feature channel, thresholded at 0.5, against
  the view's label map (intersections and unions summed over the views).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..rendering import render
from ..scene import GaussianScene
from ._io import FeatureField
from ._query import negatives_for
from ._textquery import TextQuery

EncodeText = Callable[[Sequence[str]], Tensor]


def observed_gaussians(
    scene: GaussianScene, cameras: Sequence[Any], observed_weight: float = 0.1
) -> Tensor:
    """[N] bool: Gaussians whose summed blending weight in some view is >= `observed_weight`."""
    best = torch.zeros(len(scene))
    for camera in cameras:
        probe = torch.ones(len(scene), 1, device=scene.device, requires_grad=True)
        out = render(scene, camera, features=probe)
        (grad,) = torch.autograd.grad(out.features.sum(), probe)
        best = torch.maximum(best, grad[:, 0].detach().cpu())
    return best >= observed_weight


def _iou(pred: Tensor, gt: Tensor) -> float:
    union = int((pred | gt).sum())
    return float(int((pred & gt).sum()) / union) if union else 1.0


def evaluate_queries(
    field: FeatureField,
    scene: GaussianScene,
    dataset: Any,
    encode_text: EncodeText,
    *,
    space: str,
    label_names: Mapping[int, str],
    negatives: Sequence[str] = (),
    holdout_every: int = 8,
    observed_weight: float = 0.1,
) -> dict[str, Any]:
    """Query every label name; per-object and mean 3D / 2D IoU as a JSON-able dict."""
    if "label" not in scene.extras:
        raise ValueError("evaluation needs the scene's per-Gaussian `label` extra")
    labels = scene.extras["label"].long().cpu()
    scene = scene.detach()
    tq = TextQuery(field, encode_text, space=space)
    neg_names = negatives_for(negatives)
    observed = observed_gaussians(scene, dataset.cameras, observed_weight)
    held_out = dataset.split("test", every=holdout_every)
    gt_maps = [held_out.load_map("labels", i) for i in range(len(held_out))]
    objects = []
    for label_id, name in sorted(label_names.items()):
        res = tq.query(name, negatives, level=0)  # object names answer on the coarsest level
        mask = res.mask.cpu()
        gt = labels == label_id
        inter = union = 0
        probe = mask.float()[:, None].to(scene.device)
        for camera, gt_map in zip(held_out.cameras, gt_maps, strict=True):
            with torch.no_grad():
                rendered = render(scene, camera, features=probe).features[..., 0].cpu()
            pred2d = rendered > 0.5
            gt2d = gt_map == label_id
            inter += int((pred2d & gt2d).sum())
            union += int((pred2d | gt2d).sum())
        objects.append(
            {
                "label": int(label_id),
                "name": name,
                "iou_3d": _iou(mask[observed], gt[observed]),
                "iou_3d_all": _iou(mask, gt),
                "iou_2d": inter / union if union else 1.0,
                "threshold": res.threshold,
                "selected": int(mask.sum()),
                "ground_truth": int(gt.sum()),
            }
        )

    def mean(key: str) -> float:
        return sum(o[key] for o in objects) / len(objects) if objects else 0.0

    return {
        "space": space,
        "negatives": neg_names,
        "num_gaussians": len(scene),
        "observed_fraction": float(observed.float().mean()),
        "held_out_views": held_out.names,
        "miou_3d": mean("iou_3d"),
        "miou_3d_all": mean("iou_3d_all"),
        "miou_2d": mean("iou_2d"),
        "objects": objects,
    }
