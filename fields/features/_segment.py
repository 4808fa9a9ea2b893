"""Click segmentation in 3D: SAM prompts on a rendered feature map, lifted to Gaussians.

A click costs one small render, SAM's prompt encoder + mask decoder, one render with a
backward pass and an O(N·d) affinity pass — never SAM's image encoder:

1. `sam_embedding_from_field`: the field's low-d features rendered at the view's cells of SAM's
   embedding grid (`image_grid`), decoded per cell by the linear "sam" head (a 1x1 layer), zeros
   in the padding of SAM's square.
2. `SamDecoder` turns points / a box plus that embedding into a 2D mask at the view's size.
3. `lift_mask`: each Gaussian's blending weight inside vs outside the mask, in one render.
4. `grow_by_affinity`: the view sees only the front of an object; feature affinity to the lifted
   seed recovers the rest (the back side, what is occluded), with one granularity control.

    result = segment_click(scene, field, SamDecoder(sam), camera, points=[[120, 80]], labels=[1])
    result.mask3d                                   # [N] bool

`eval_click` scores steps 3-4 with the ground-truth 2D mask standing in for SAM's output.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..camera import Camera
from ..rendering import render
from ..scene import GaussianScene
from ._eval import observed_gaussians
from ._io import FeatureField
from ._sam import SamDecoder, image_grid

__all__ = [
    "ClickResult",
    "ClickSegmenter",
    "eval_click",
    "grow_by_affinity",
    "lift_mask",
    "sam_embedding_from_field",
    "segment_click",
]

_HIDDEN_LOGIT = -30.0  # opacity logit of a hidden Gaussian: sigmoid < 1e-13, below 1/255 alpha


def shown_scene(scene: GaussianScene) -> GaussianScene:
    """`scene` as the viewer shows it: hidden Gaussians (bool extra `hidden`) neither draw nor
    occlude. Detached: nothing here optimises the scene."""
    scene = scene.detach()
    hidden = scene.extras.get("hidden")
    if hidden is None or not bool(hidden.any()):
        return scene
    hidden = hidden.to(scene.device, torch.bool)
    return scene.replace(
        opacities=torch.where(
            hidden, torch.full_like(scene.opacities, _HIDDEN_LOGIT), scene.opacities
        )
    )


def _hidden(scene: GaussianScene) -> Tensor | None:
    hidden = scene.extras.get("hidden")
    return None if hidden is None else hidden.to("cpu", torch.bool)


# ------------------------------------------------------------------------------ embedding
def sam_embedding_from_field(
    scene: GaussianScene,
    field: FeatureField,
    camera: Camera,
    *,
    grid: tuple[int, int] = (64, 64),
    cell_norm: float | None = None,
) -> Tensor:
    """SAM's image embedding of this view, rendered from the field: [D, gh, gw] (D = 256 for
    the official models, `grid` = (gh, gw) = SAM's `prompt_encoder.image_embedding_size`).

    The camera is rescaled so that the image maps onto the `image_grid` cells that cover it
    (e.g. 48x64 for a 480x640 view) — the same crop the SAM teacher distilled — and the field's
    d channels are rendered there, un-premultiplied by alpha (a cell's feature is then the
    surface's, not scaled by its coverage), decoded by `field.head("sam")` and placed top-left
    in the grid; the padding and empty cells (alpha < 0.05) stay 0.

    Distillation fits the head with a cosine loss, so the decoded length is arbitrary:
    `cell_norm` (default: `field.meta["sam_cell_norm"]` when present, the teacher's mean cell
    length) rescales every covered cell to that length; without one the decoded values pass
    unchanged."""
    head = field.head("sam")  # [D, d]
    if len(field) != len(scene):
        raise ValueError(f"field has {len(field)} Gaussians, the scene {len(scene)}")
    gh, gw = int(grid[0]), int(grid[1])
    rows, cols = image_grid(camera.height, camera.width, (gh, gw))
    cam = camera.scaled(cols / camera.width)
    if (cam.height, cam.width) != (rows, cols):  # image_grid guarantees this; fail loudly
        raise ValueError(f"{camera} does not rescale to the {rows}x{cols} SAM cells")
    feats = field.features.to(scene.device, torch.float32)
    with torch.no_grad():
        out = render(shown_scene(scene), cam, features=feats)
    assert out.features is not None
    alpha = out.alpha[..., 0].cpu()  # [rows, cols]
    covered = alpha >= 0.05
    surface = out.features.cpu() / alpha.clamp_min(0.05)[..., None]  # [rows, cols, d]
    decoded = surface @ head.to(torch.float32).T  # [rows, cols, D]
    if cell_norm is None:
        cell_norm = field.meta.get("sam_cell_norm")
    if cell_norm is not None:
        decoded = F.normalize(decoded, dim=-1) * float(cell_norm)
    decoded = decoded * covered[..., None]
    embedding = torch.zeros(head.shape[0], gh, gw)
    embedding[:, :rows, :cols] = decoded.permute(2, 0, 1)
    return embedding


# ------------------------------------------------------------------------------ lifting
def blending_weights(
    scene: GaussianScene,
    camera: Camera,
    pixel_weights: Tensor,  # [H, W, C] per-pixel weights (e.g. a mask and its complement)
) -> Tensor:
    """[N, C]: per Gaussian, sum over pixels p of w_ip * pixel_weights[p, c], where w_ip is its
    blending weight (alpha_i T_i) at pixel p — in one render and one backward pass.

    The trick: a rendered feature map is out[p] = sum_i w_ip f_i, linear in the features f.
    With f = 0 requiring grad and loss = sum_p,c out[p,c] m[p,c], d loss / d f_ic =
    sum_p w_ip m[p,c] exactly (no approximation: the geometry is fixed and w does not depend
    on f). C channels give C weighted sums in the same pass."""
    h, w = camera.height, camera.width
    if pixel_weights.ndim != 3 or pixel_weights.shape[:2] != (h, w):
        raise ValueError(
            f"pixel_weights must be [{h}, {w}, C] for a {w}x{h} camera, got {tuple(pixel_weights.shape)}"
        )
    channels = pixel_weights.shape[2]
    probe = torch.zeros(len(scene), channels, device=scene.device, requires_grad=True)
    out = render(shown_scene(scene), camera, features=probe)
    assert out.features is not None
    m = pixel_weights.to(out.features.device, torch.float32)
    (grad,) = torch.autograd.grad((out.features * m).sum(), probe)
    return grad.detach().cpu()


def lift_mask(
    scene: GaussianScene,
    camera: Camera,
    mask2d: Tensor,  # [H, W] bool
    *,
    min_weight: float = 0.05,
) -> tuple[Tensor, Tensor, Tensor]:
    """Lift a 2D mask of this view to Gaussians: (selected [N] bool, w_in [N], w_out [N]).

    w_in / w_out are a Gaussian's blending weight summed over the pixels inside / outside the
    mask (units: pixels; `blending_weights`). Selected: visible in this view (w_in + w_out
    > 1e-6, so occluded Gaussians, which get no weight, never are), most of its footprint inside
    (w_in > w_out) and w_in > `min_weight` pixels (drops faint halos). Hidden Gaussians (bool
    extra `hidden`) never are."""
    if mask2d.shape != (camera.height, camera.width):
        raise ValueError(
            f"mask2d must be [{camera.height}, {camera.width}], got {tuple(mask2d.shape)}"
        )
    inside = mask2d.to(torch.bool)
    # One render for both sums: channel 0 weighted by the mask, channel 1 by its complement; the
    # gradient w.r.t. zero features is exactly each Gaussian's (w_in, w_out) — the rendered map
    # is linear in the features (see `blending_weights`).
    pixel_weights = torch.stack([inside, ~inside], dim=-1).float()
    weights = blending_weights(scene, camera, pixel_weights)
    w_in, w_out = weights[:, 0], weights[:, 1]
    selected = (w_in + w_out > 1e-6) & (w_in > w_out) & (w_in > min_weight)
    hidden = _hidden(scene)
    if hidden is not None:
        selected &= ~hidden
    return selected, w_in, w_out


# ------------------------------------------------------------------------------ affinity
def affinity(
    features: Tensor,  # [N, d]
    seed: Tensor,  # [N] bool
    weights: Tensor | None = None,  # [N] seed weights (e.g. w_in); None = uniform
) -> Tensor:
    """[N] cosine similarity of every Gaussian's feature to the seed's robust mean feature.

    The mean of the seed's unit features (weighted), then recomputed over the seed members at
    least as similar as the seed's median: lifted masks carry a fringe of neighbours' Gaussians
    at their border, and the trim keeps them from pulling the mean."""
    unit = F.normalize(features.to(torch.float32), dim=-1)
    idx = seed.nonzero()[:, 0]
    if idx.numel() == 0:
        return torch.full((features.shape[0],), -1.0)
    wt = torch.ones(idx.numel()) if weights is None else weights[idx].to(torch.float32)
    wt = wt.clamp_min(1e-12)
    mean = F.normalize((unit[idx] * wt[:, None]).sum(0), dim=0)
    sim = unit[idx] @ mean
    core = sim >= sim.median()
    mean = F.normalize((unit[idx][core] * wt[core, None]).sum(0), dim=0)
    return unit @ mean


def granularity_threshold(sim: Tensor, seed: Tensor, granularity: float) -> float:
    """The cosine threshold that `granularity` in [0, 1] stands for.

    0.5 — the natural extent — is Otsu's threshold on the similarity histogram of all Gaussians
    (the cut that best separates "like the seed" from the rest, whatever their proportions),
    at most the seed's median similarity. Below 0.5 the threshold rises linearly to the seed's
    median at 0 (the seed's tighter core); above it, it falls linearly to -1 at 1 (everything).
    Monotonic: a higher granularity never selects less."""
    if not 0.0 <= granularity <= 1.0:
        raise ValueError(f"granularity must be in [0, 1], got {granularity}")
    top = float(sim[seed].median())
    natural = min(otsu_threshold(sim), top)
    if granularity <= 0.5:
        return natural + (1.0 - 2.0 * granularity) * (top - natural)
    return natural - (2.0 * granularity - 1.0) * (natural + 1.0)


def otsu_threshold(values: Tensor, bins: int = 256) -> float:
    """Otsu's threshold of `values` in [-1, 1]: the histogram cut maximising the between-class
    variance (the lower edge of the upper class)."""
    hist = torch.histc(values.to(torch.float64), bins=bins, min=-1.0, max=1.0)
    centres = torch.linspace(-1.0, 1.0, bins + 1, dtype=torch.float64)[:-1] + 1.0 / bins
    w0 = hist.cumsum(0)[:-1]
    w1 = hist.sum() - w0
    m0 = (hist * centres).cumsum(0)[:-1] / w0.clamp_min(1e-12)
    m1 = ((hist * centres).sum() - (hist * centres).cumsum(0)[:-1]) / w1.clamp_min(1e-12)
    between = w0 * w1 * (m0 - m1) ** 2
    k = int(between.argmax())
    return float(-1.0 + 2.0 * (k + 1) / bins)


def grow_by_affinity(
    field_features: Tensor,  # [N, d]
    seed_mask: Tensor,  # [N] bool
    granularity: float = 0.5,
    *,
    weights: Tensor | None = None,  # [N] seed weights for the mean feature (e.g. w_in)
    means: Tensor | None = None,  # [N, 3] Gaussian centres: restrict growth spatially
    gap: float | None = None,
    graph: Callable[[float], VoxelGraph] | None = None,
) -> Tensor:
    """[N] bool: the Gaussians whose feature is similar enough to the seed's (robust) mean
    feature, with `granularity` in [0, 1] setting the cosine threshold
    (`granularity_threshold`: 0.5 = the natural object extent by Otsu's cut, lower shrinks
    towards the seed's core, higher grows up to everything at 1). Seed members below the threshold drop out:
    they are the fringe that the 2D mask's border caught from neighbours. An empty seed gives an
    empty mask.

    With `means`, growth stays spatially connected to the seed: only the similar Gaussians
    linked to a (similar) seed member through chains of similar Gaussians at most about `gap`
    apart are kept (`connected_to`), so a second mug across the room is not grabbed along with
    the clicked one (`graph(gap)`, when given, returns a prebuilt `VoxelGraph` of all the
    means for that gap, so repeated growth skips the hashing). `gap` defaults to twice the
    seed's median nearest-neighbour spacing
    (surfaces are sampled densely; separate objects stand further apart than that)."""
    n = field_features.shape[0]
    if field_features.ndim != 2 or seed_mask.shape != (n,):
        raise ValueError(
            f"need features [N, d] and seed_mask [N], got {tuple(field_features.shape)} and "
            f"{tuple(seed_mask.shape)}"
        )
    seed = seed_mask.to("cpu", torch.bool)
    if not bool(seed.any()):
        return torch.zeros(n, dtype=torch.bool)
    sim = affinity(field_features.cpu(), seed, None if weights is None else weights.cpu())
    mask = sim >= granularity_threshold(sim, seed, granularity)
    if means is None or not bool((mask & seed).any()):
        return mask
    if means.shape != (n, 3):
        raise ValueError(f"means must be [{n}, 3], got {tuple(means.shape)}")
    points = means.detach().to("cpu", torch.float64).numpy()
    if gap is None:
        gap = 2.0 * _median_spacing(points[seed.numpy()])
    if not gap > 0:
        return mask
    if graph is not None:  # a prebuilt adjacency of all the points (`VoxelGraph`)
        return torch.from_numpy(graph(float(gap)).connected(mask.numpy(), seed.numpy()))
    idx = mask.nonzero()[:, 0]
    keep = connected_to(points[idx.numpy()], seed[idx].numpy(), float(gap))
    out = torch.zeros(n, dtype=torch.bool)
    out[idx[torch.from_numpy(keep)]] = True
    return out


def _median_spacing(points: np.ndarray) -> float:
    """Median distance of a point to its nearest neighbour (0 for fewer than two points),
    over a sample of at most ~2k points."""
    if len(points) < 2:
        return 0.0
    from scipy.spatial import cKDTree

    probes = points[:: max(1, len(points) // 2048)]  # a strided sample is plenty for a median
    dist, _ = cKDTree(points).query(probes, k=2)
    return float(np.median(dist[:, 1]))


def connected_to(
    points: np.ndarray,  # [M, 3]
    start: np.ndarray,  # [M] bool
    gap: float,
) -> np.ndarray:
    """[M] bool: the points linked to a `start` point by chains of neighbours, neighbours being
    points in the same or adjacent (26-neighbourhood) voxels of side `gap` — so points closer
    than `gap` always link, points further than 2·sqrt(3)·`gap` never do. O(M log M): voxels
    are hashed, not allocated as a dense grid."""
    if len(points) == 0 or not start.any():
        return np.zeros(len(points), dtype=bool)
    return VoxelGraph(points, gap).connected(np.ones(len(points), dtype=bool), start)


class VoxelGraph:
    """The voxel adjacency of a point set (voxels of side `gap`, 26-neighbourhood), built once,
    so that connectivity within any subset of the points is one connected-components pass over
    the voxels that subset occupies (`connected`): what repeated clicks on one scene need."""

    def __init__(self, points: np.ndarray, gap: float) -> None:  # points [M, 3]
        if not gap > 0:
            raise ValueError(f"gap must be positive, got {gap}")
        self.gap = float(gap)
        self.size = len(points)
        if self.size == 0:
            self.inverse = np.zeros(0, dtype=np.int64)
            self.n_voxels = 0
            self.edges = (np.zeros(0, np.int64), np.zeros(0, np.int64))
            return
        cells = np.floor((points - points.min(0)) / gap).astype(np.int64) + 1  # +1: room for -1
        dims = cells.max(0) + 2
        codes = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
        voxels, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        coords = cells[first]
        src, dst = [], []
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for dz in (-1, 0, 1):
                    if (dx, dy, dz) <= (0, 0, 0):  # each undirected pair once
                        continue
                    nb = coords + np.array([dx, dy, dz])
                    ncode = (nb[:, 0] * dims[1] + nb[:, 1]) * dims[2] + nb[:, 2]
                    pos = np.searchsorted(voxels, ncode).clip(max=len(voxels) - 1)
                    hit = voxels[pos] == ncode
                    src.append(np.nonzero(hit)[0])
                    dst.append(pos[hit])
        self.inverse = inverse.reshape(-1)
        self.n_voxels = len(voxels)
        self.edges = (np.concatenate(src), np.concatenate(dst))

    def components(self) -> np.ndarray:
        """[M] int64: the connected component of every point (labels 0..K-1)."""
        if self.size == 0:
            return np.zeros(0, dtype=np.int64)
        return self._components(self.edges)[self.inverse].astype(np.int64)

    def _components(self, edges: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """[V] component of every voxel under `edges`."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        a, b = edges
        graph = coo_matrix(
            (np.ones(len(a), dtype=np.int8), (a, b)), shape=(self.n_voxels, self.n_voxels)
        )
        return connected_components(graph, directed=False)[1]

    def connected(self, mask: np.ndarray, start: np.ndarray) -> np.ndarray:
        """[M] bool: the points of `mask` linked to a point of `start & mask` through chains of
        neighbouring voxels that hold points of `mask`."""
        if mask.shape != (self.size,) or start.shape != (self.size,):
            raise ValueError(f"mask and start must be [{self.size}] bool")
        seeds = start & mask
        if not seeds.any():
            return np.zeros(self.size, dtype=bool)
        occupied = np.zeros(self.n_voxels, dtype=bool)
        occupied[self.inverse[mask]] = True
        a, b = self.edges
        keep = occupied[a] & occupied[b]
        component = self._components((a[keep], b[keep]))
        reached = np.zeros(component.max() + 1, dtype=bool)
        reached[component[self.inverse[seeds]]] = True
        return mask & reached[component[self.inverse]]


# ------------------------------------------------------------------------------ pipeline
@dataclass
class ClickResult:
    """One click's segmentation: the 3D selection and the 2D mask it came from."""

    mask3d: Tensor  # [N] bool
    mask2d: Tensor  # [H, W] bool, SAM's best mask
    score: float  # SAM's predicted IoU of that mask
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds per stage


def segment_click(
    scene: GaussianScene,
    field: FeatureField,
    decoder: SamDecoder,
    camera: Camera,
    *,
    points: Tensor | np.ndarray | Sequence | None = None,  # [K, 2] pixel (u, v) in `camera`
    labels: Tensor | np.ndarray | Sequence | None = None,  # [K] 1 = positive, 0 = negative
    box: Tensor | np.ndarray | Sequence | None = None,  # (u0, v0, u1, v1) pixels
    granularity: float = 0.5,
    min_weight: float = 0.05,
    connect: bool = True,
) -> ClickResult:
    """Clicks and/or a box in `camera`'s pixels -> a 3D selection: the field's SAM embedding of
    this view, SAM's decoder (best mask by predicted IoU), `lift_mask`, `grow_by_affinity`
    (spatially connected to the seed unless `connect` is False). Hidden Gaussians are never
    selected. One click on a fresh `ClickSegmenter`; keep a segmenter for several clicks."""
    seg = ClickSegmenter(scene, field, decoder, min_weight=min_weight, connect=connect)
    seg.set_view(camera)
    return seg.predict(points=points, labels=labels, box=box, granularity=granularity)


# ------------------------------------------------------------------------------ evaluation
def _iou(pred: Tensor, gt: Tensor) -> float:
    union = int((pred | gt).sum())
    return int((pred & gt).sum()) / union if union else 1.0


def eval_click(
    scene: GaussianScene,
    field: FeatureField,
    dataset: Any,
    views: Sequence[int],
    granularity: float = 0.5,
    *,
    min_pixels: int = 20,
    min_weight: float = 0.05,
    observed_weight: float = 0.1,
    connect: bool = True,
    label_names: dict[int, str] | None = None,
) -> dict[str, Any]:
    """Score lifting + growth with ground truth standing in for SAM: for every label k seen in
    an evaluated view (at least `min_pixels` pixels of its label map), the 2D mask
    (label map == k) -> `lift_mask` -> `grow_by_affinity` -> 3D IoU against
    `scene.extras["label"] == k`, over the Gaussians some dataset view observes (`iou_3d`; as the
    language-query evaluation: summed blending weight >= `observed_weight` pixels in some view —
    the bottom of a mug on the table shares its place with the table under it, and no view-based
    method can tell them apart) and over all (`iou_3d_all`). Also the precision of the lifted seed alone (how much of what
    the view lifts belongs to k). Per-object figures average over the views; the means over
    objects. `connect`: growth spatially connected to the seed (as `segment_click`). JSON-able."""
    if "label" not in scene.extras:
        raise ValueError("eval_click needs the scene's per-Gaussian `label` extra")
    labels = scene.extras["label"].long().cpu()
    observed = observed_gaussians(scene.detach(), dataset.cameras, observed_weight)
    means = scene.means if connect else None
    per_object: dict[int, list[dict[str, float]]] = {}
    for i in views:
        camera = dataset.cameras[i]
        label_map = dataset.load_map("labels", i)
        if label_map.shape != (camera.height, camera.width):
            raise ValueError(f"view {i}: label map {tuple(label_map.shape)} != camera size")
        ids, counts = torch.unique(label_map, return_counts=True)
        for k, count in zip(ids.tolist(), counts.tolist(), strict=True):
            if k == 255 or count < min_pixels:
                continue
            gt = labels == k
            seed, w_in, _ = lift_mask(scene, camera, label_map == k, min_weight=min_weight)
            mask = grow_by_affinity(field.level(0), seed, granularity, weights=w_in, means=means)
            n_seed = int(seed.sum())
            per_object.setdefault(int(k), []).append(
                {
                    "view": int(i),
                    "iou_3d": _iou(mask[observed], gt[observed]),
                    "iou_3d_all": _iou(mask, gt),
                    "seed_precision": int((seed & gt).sum()) / n_seed if n_seed else 0.0,
                    "seed_recall": int((seed & gt).sum()) / max(1, int(gt.sum())),
                }
            )
    objects = []
    for k, runs in sorted(per_object.items()):
        objects.append(
            {
                "label": k,
                "name": (label_names or {}).get(k, str(k)),
                "views": len(runs),
                "iou_3d": sum(r["iou_3d"] for r in runs) / len(runs),
                "iou_3d_all": sum(r["iou_3d_all"] for r in runs) / len(runs),
                "min_iou_3d": min(r["iou_3d"] for r in runs),
                "seed_precision": sum(r["seed_precision"] for r in runs) / len(runs),
                "seed_recall": sum(r["seed_recall"] for r in runs) / len(runs),
                "ground_truth": int((labels == k).sum()),
            }
        )

    def mean(key: str) -> float:
        return sum(o[key] for o in objects) / len(objects) if objects else 0.0

    return {
        "granularity": granularity,
        "connect": connect,
        "views": [int(v) for v in views],
        "num_gaussians": len(scene),
        "miou_3d": mean("iou_3d"),
        "miou_3d_all": mean("iou_3d_all"),
        "observed_fraction": float(observed.float().mean()),
        "mean_seed_precision": mean("seed_precision"),
        "objects": objects,
    }


# ------------------------------------------------------------------------------ predictor
class ClickSegmenter:
    """Click segmentation in segment-anything's predictor style: `set_view` does the expensive
    part once per view, `predict` the cheap part per click.

        seg = ClickSegmenter(scene, field, decoder)        # decoder: SamDecoder (SAM's heads)
        seg.set_view(camera)                               # embedding, visible Gaussians
        res = seg.predict(points=[[120, 80]], labels=[1])  # mask -> 3D lift -> growth
        seg.regrow(0.7).sum()                              # granularity only: no render

    Per view: the field's SAM embedding rendered and decoded (`sam_embedding_from_field`), the
    Gaussians the view sees and each one's summed blending weight (one accumulation pass); the
    lift of a click's mask then renders only those Gaussians with one channel. Per click: SAM's
    prompt encoder + mask decoder, that lift, `grow_by_affinity` on the field's features at
    `level` (spatially connected to the seed unless `connect` is False). Hidden Gaussians (bool
    extra `hidden`) are never selected. Not thread-safe: one segmenter per user."""

    def __init__(
        self,
        scene: GaussianScene,
        field: FeatureField,
        decoder: SamDecoder,
        *,
        level: int | str = 0,
        min_weight: float = 0.05,
        connect: bool = True,
    ) -> None:
        if "sam" not in field.heads:
            raise ValueError(
                "the feature field has no SAM head: lift it with the SAM teacher "
                "(--teacher clip,sam) to segment by clicks"
            )
        field.check_count(len(scene))
        self.scene = shown_scene(scene)
        self.hidden = _hidden(scene)
        self.field = field
        self.decoder = decoder
        self.level = field.level_index(level)
        self.features = field.level(self.level)  # [N,d]
        self.min_weight = min_weight
        self.connect = connect
        self.camera: Camera | None = None
        self._embedding: Tensor | None = None
        self._visible: Tensor | None = None  # [M] int64 indices of the Gaussians the view sees
        self._sub: GaussianScene | None = None
        self._total: Tensor | None = None  # [M] summed blending weight in the view
        self.seed: Tensor | None = None
        self.w_in: Tensor | None = None
        self.timings: dict[str, float] = {}
        self._graphs: dict[int, VoxelGraph] = {}

    def set_view(self, camera: Camera) -> None:
        """The expensive part for `camera` (pixels of later prompts are in its image)."""
        from ..rendering import accumulate_weights

        t0 = time.perf_counter()
        level_field = FeatureField(self.features, self.field.heads, meta=self.field.meta)
        self._embedding = sam_embedding_from_field(
            self.scene, level_field, camera, grid=self.decoder.grid
        )
        total = accumulate_weights(self.scene, camera).total.cpu()
        visible = (total > 1e-6).nonzero()[:, 0]
        self._visible = visible
        self._sub = self.scene.subset(visible) if len(visible) < len(self.scene) else self.scene
        self._total = total[visible]
        self.camera = camera
        self.seed = self.w_in = None
        self.timings = {"view_ms": 1e3 * (time.perf_counter() - t0)}

    def predict(
        self,
        *,
        points: Tensor | np.ndarray | Sequence | None = None,  # [K, 2] pixel (u, v)
        labels: Tensor | np.ndarray | Sequence | None = None,  # [K] 1 positive, 0 negative
        box: Tensor | np.ndarray | Sequence | None = None,  # (u0, v0, u1, v1) pixels
        granularity: float = 0.5,
    ) -> ClickResult:
        """Prompts in the current view's pixels -> the 3D selection (`ClickResult`)."""
        from ..rendering import accumulate_weights

        if self.camera is None or self._sub is None:
            raise RuntimeError("call set_view(camera) before predict")
        cam = self.camera
        t0 = time.perf_counter()
        pred = self.decoder(
            self._embedding, (cam.height, cam.width), points=points, labels=labels, box=box
        )
        mask2d = pred.masks[0].cpu()
        t1 = time.perf_counter()
        inside = mask2d.float()[..., None].to(self._sub.device)
        w_in_sub = accumulate_weights(self._sub, cam, inside).sums[:, 0].cpu()
        w_out_sub = self._total - w_in_sub
        chosen = (w_in_sub > w_out_sub) & (w_in_sub > self.min_weight)
        n = len(self.scene)
        seed = torch.zeros(n, dtype=torch.bool)
        seed[self._visible[chosen]] = True
        w_in = torch.zeros(n)
        w_in[self._visible] = w_in_sub
        if self.hidden is not None:
            seed &= ~self.hidden
        self.seed, self.w_in = seed, w_in
        t2 = time.perf_counter()
        mask3d = self.regrow(granularity)
        t3 = time.perf_counter()
        timings = {
            **self.timings,
            "decoder_ms": 1e3 * (t1 - t0),
            "lift_ms": 1e3 * (t2 - t1),
            "growth_ms": 1e3 * (t3 - t2),
            "click_ms": 1e3 * (t3 - t0),
        }
        timings["total_ms"] = timings["view_ms"] + timings["click_ms"]
        return ClickResult(mask3d, mask2d, float(pred.scores[0]), timings)

    def _graph(self, gap: float) -> VoxelGraph:
        """The scene's voxel adjacency for about this gap, built once per quarter-octave of gap
        (clicks on one object ask for the same gap; the gap only separates look-alike objects)."""
        key = round(4 * math.log2(gap))
        if key not in self._graphs:
            points = self.scene.means.detach().to("cpu", torch.float64).numpy()
            self._graphs[key] = VoxelGraph(points, 2.0 ** (key / 4))
        return self._graphs[key]

    def regrow(self, granularity: float = 0.5) -> Tensor:
        """[N] bool: the last click's seed grown to `granularity` (no render)."""
        if self.seed is None:
            raise RuntimeError("click first (predict)")
        mask = grow_by_affinity(
            self.features,
            self.seed,
            granularity,
            weights=self.w_in,
            means=self.scene.means if self.connect else None,
            graph=self._graph,
        )
        if self.hidden is not None:
            mask &= ~self.hidden
        return mask
