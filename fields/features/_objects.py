"""The object list ("segment everything"): a feature field cut into named objects.

    objects = list_objects(field, scene.means, scene.opacities, encode_text, "clip")
    for obj in objects:                       # largest first
        obj.name, obj.score, obj.count, obj.indices   # indices: int64, file order

1. `segment_objects` partitions the Gaussians: the unit features of a voxel-downsampled set of
   opaque splats that agree with their spatial neighbours are clustered (average-linkage
   dendrogram on the cosine distance, cut at its most persistent level, never between clusters
   closer than `ObjectsConfig.min_separation`); every splat joins its nearest cluster centre;
   each cluster is split into spatially connected pieces (voxel hashing as `connected_to`, the
   gap a multiple of the cluster's own median nearest-neighbour spacing — a table's legs are
   sampled more sparsely than a mug); pieces smaller than the minimum size, and thin layers
   between two larger pieces (hidden contact surfaces of distilled fields), join the piece of
   their nearest neighbour, transparent splats likewise at the end. Feature clusters only need
   to tell touching things apart: two mugs far apart share a cluster and come out as two
   objects from the spatial split.
2. `name_objects`: each object's name is the vocabulary term with the highest LERF relevancy
   (against the canonical negatives, `fields.features._query`) of the object's mean unit
   feature; the score is that relevancy.

Everything is deterministic (no random sampling) and O(N log N) in the number of Gaussians; the
clustering itself sees at most `max_samples` points.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ._io import FeatureField
from ._query import TEMPERATURE, cosines, decoded_norms, negatives_for
from ._segment import VoxelGraph, _median_spacing

__all__ = [
    "DEFAULT_VOCABULARY",
    "ObjectList",
    "ObjectsConfig",
    "SceneObject",
    "list_objects",
    "name_objects",
    "object_vocabulary",
    "segment_objects",
]

DEFAULT_VOCABULARY: tuple[str, ...] = (
    # tableware and kitchen
    "mug", "cup", "glass", "bowl", "plate", "dish", "saucer", "bottle", "jar", "can", "teapot",
    "kettle", "pot", "pan", "spoon", "fork", "knife", "chopsticks", "cutting board", "napkin",
    "tray", "basket", "lunch box", "thermos", "water bottle", "wine glass", "coffee maker",
    "toaster", "microwave", "blender",
    # food
    "apple", "banana", "orange", "lemon", "bread", "egg", "carrot", "tomato", "cereal box",
    # office and study
    "book", "notebook", "paper", "envelope", "pen", "pencil", "marker", "scissors", "stapler",
    "tape", "ruler", "eraser", "folder", "calculator", "clipboard", "sticky notes",
    # electronics
    "laptop", "keyboard", "computer mouse", "monitor", "phone", "tablet", "remote control",
    "headphones", "speaker", "camera", "charger", "cable", "lamp", "clock", "game controller",
    # containers and household
    "box", "cardboard box", "bag", "backpack", "wallet", "key", "candle", "vase", "plant",
    "flower pot", "picture frame", "mirror", "tissue box", "towel", "soap", "toothbrush",
    "spray bottle", "sponge", "bucket", "trash can", "pillow", "blanket",
    # toys and sport
    "ball", "tennis ball", "toy", "teddy bear", "toy car", "block", "cube", "dice", "puzzle",
    # tools
    "hammer", "screwdriver", "wrench", "pliers", "drill", "tape measure", "glove",
    # furniture and surfaces
    "table", "desk", "chair", "stool", "shelf", "cabinet", "drawer", "couch", "bed", "floor",
    "wall", "rug", "countertop", "door", "window",
    # clothing
    "shoe", "hat", "glasses", "watch",
)  # fmt: skip
"""Common household, office and tabletop words: the names `list_objects` chooses from by default
(plus the user's words and the label names a field's teacher records carry)."""


@dataclass(frozen=True)
class ObjectsConfig:
    """How `segment_objects` partitions a scene. Distances in scene units unless stated."""

    min_size: int = 100
    """Smallest object, in Gaussians; smaller connected pieces join the object of their nearest
    neighbour (or are left out when none is within reach)."""
    min_fraction: float = 0.001
    """The smallest object is also at least this fraction of the opaque Gaussians."""
    min_opacity: float = 0.1
    """Splats more transparent than this (activated opacity) do not take part in the clustering;
    at the end they join the object of their nearest opaque neighbour within reach."""
    max_samples: int = 3000
    """Points the feature clustering runs on (a voxel-downsampled set; O(M²) memory)."""
    neighbours: int = 8
    """Spatial neighbours a sample's feature is compared with (see `min_consistency`)."""
    min_consistency: float = 0.75
    """A point seeds the clustering only when its unit feature's cosine with its neighbours'
    mean is at least this (or the median over the points, if lower); -1 disables the test."""
    min_separation: float = 0.1
    """Cosine distance (1 − cos, average linkage) below which two feature clusters are never
    told apart: the noise level of one object's features."""
    max_clusters: int = 64
    """Most feature clusters considered (objects can be more: clusters split spatially)."""
    gap_factor: float = 2.5
    """Spatial connectivity gap = this × the cluster's median nearest-neighbour spacing."""
    gap: float | None = None
    """A fixed connectivity gap instead (scene units)."""
    max_contact: float = 0.25
    """A piece with more than this fraction of its Gaussians in contact with larger pieces, two
    of them at least, is a layer between objects (hidden contact surfaces) and joins its
    neighbours; 1 disables the test."""
    contact_factor: float = 2.0
    """Contact distance, in median nearest-neighbour spacings of the piece's cluster."""
    attach_factor: float = 2.0
    """Reach of the final nearest-neighbour assignment (small pieces, transparent splats), in
    connectivity gaps; splats further from every object are left out."""

    def __post_init__(self) -> None:
        if self.min_size < 1 or not 0 <= self.min_fraction < 1:
            raise ValueError("min_size must be >= 1 and min_fraction in [0, 1)")
        if self.max_samples < 2 or self.max_clusters < 1:
            raise ValueError("max_samples must be >= 2 and max_clusters >= 1")
        if not 0 <= self.min_separation < 2:
            raise ValueError(
                f"min_separation is a cosine distance in [0, 2), got {self.min_separation}"
            )
        if (
            self.gap_factor <= 0
            or self.attach_factor < 0
            or (self.gap is not None and self.gap <= 0)
        ):
            raise ValueError("gap_factor and gap must be positive, attach_factor >= 0")


# ------------------------------------------------------------------------------ segmentation
def segment_objects(
    features: Tensor,  # [N, d]
    means: Tensor,  # [N, 3]
    *,
    opacities: Tensor | None = None,  # [N] logits
    config: ObjectsConfig | None = None,
) -> list[Tensor]:
    """The scene's objects: one int64 index tensor per object (file order), largest first.

    Objects are disjoint; Gaussians in no object (transparent or featureless splats far from
    every object, specks smaller than the minimum size with nothing near) are in none. See the
    module docstring for the method."""
    config = config or ObjectsConfig()
    n = _check_inputs(features, means, opacities)
    feats = features.detach().to("cpu", torch.float32)
    norms = feats.norm(dim=1)
    unit = feats / norms.clamp_min(1e-12)[:, None]
    points = means.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(points).all() or not bool(torch.isfinite(feats).all()):
        raise ValueError("means and features must be finite")
    # Seeds: opaque splats with a feature (an all-zero row has no direction to cluster).
    core_mask = norms > 1e-6 * float(norms.max().clamp_min(1e-30))
    if opacities is not None:
        core_mask &= (
            torch.sigmoid(opacities.detach().to("cpu", torch.float32)) >= config.min_opacity
        )
    core = core_mask.nonzero()[:, 0].numpy()
    if len(core) == 0:
        return []
    core_unit, core_points = unit[core], points[core]

    # 1. Feature clusters on a voxel-downsampled sample; 2. every seed to its nearest centre.
    sample = _consistent_sample(core_points, core_unit, config)
    centres = _feature_clusters(core_unit[torch.from_numpy(sample)], config)  # [K, d]
    cluster = (core_unit @ centres.T).argmax(dim=1).numpy()

    # 3. Spatially connected pieces of each cluster, each cluster with its own gap.
    piece = np.empty(len(core), dtype=np.int64)
    piece_spacing, gaps, offset = [], [], 0
    for k in range(centres.shape[0]):
        members = np.nonzero(cluster == k)[0]
        if len(members) == 0:
            continue
        spacing = _median_spacing(core_points[members])
        gap = config.gap or config.gap_factor * spacing
        if gap > 0:
            local = voxel_components(core_points[members], gap)
            gaps.append(gap)
        else:  # every member at one point
            local = np.zeros(len(members), dtype=np.int64)
        piece[members] = local + offset
        count = int(local.max()) + 1
        piece_spacing += [spacing] * count
        offset += count
    reach = config.attach_factor * (max(gaps) if gaps else 0.0)

    # 4. Pieces below the minimum size, and layers sandwiched between larger pieces, join the
    # piece of their nearest neighbour among the rest.
    min_size = max(config.min_size, math.ceil(config.min_fraction * len(core)))
    sizes = np.bincount(piece, minlength=offset)
    kept = sizes >= min_size
    kept &= ~_sandwiched(core_points, piece, sizes, kept, np.array(piece_spacing), config)
    big = kept[piece]
    if not big.any():
        return []
    label = np.full(n, -1, dtype=np.int64)
    label[core[big]] = piece[big]
    if (~big).any():
        label[core[~big]] = _nearest_label(core_points[big], piece[big], core_points[~big], reach)
    # 5. Transparent and featureless splats: the object of the nearest assigned seed, in reach.
    rest = np.nonzero(~core_mask.numpy())[0]
    if len(rest):
        seeded = label[core] >= 0
        label[rest] = _nearest_label(core_points[seeded], label[core][seeded], points[rest], reach)

    # Objects largest first (ties: the one whose first Gaussian comes first), indices in file
    # order: a stable sort by label keeps file order inside each label.
    assigned = np.nonzero(label >= 0)[0]
    order = assigned[np.argsort(label[assigned], kind="stable")]
    ids, starts, counts = np.unique(label[order], return_index=True, return_counts=True)
    rank = sorted(range(len(ids)), key=lambda j: (-counts[j], order[starts[j]]))
    return [
        torch.from_numpy(order[starts[j] : starts[j] + counts[j]].astype(np.int64)) for j in rank
    ]


def _sandwiched(
    points: np.ndarray,  # [M, 3]
    piece: np.ndarray,  # [M] piece id
    sizes: np.ndarray,  # [P] Gaussians per piece
    kept: np.ndarray,  # [P] bool: candidates (big enough)
    spacing: np.ndarray,  # [P] median nearest-neighbour spacing of the piece's cluster
    config: ObjectsConfig,
) -> np.ndarray:
    """[P] bool: pieces lying as a layer between larger pieces — more than `max_contact` of
    their Gaussians within `contact_factor` spacings of larger pieces, and at least two larger
    pieces each touching a twentieth of them.

    Distilled fields give hidden contact surfaces (a box's underside, the table under it) the
    features of whatever is nearest in the views, which makes thin layers of some class between
    an object and its support. An object standing on a support touches one larger piece (along
    its base); such a layer touches the object above and the support below, most of it."""
    from scipy.spatial import cKDTree

    out = np.zeros(len(sizes), dtype=bool)
    if config.max_contact >= 1 or len(points) < 2:
        return out
    candidates = [p for p in np.nonzero(kept)[0] if sizes[p] < sizes.max()]
    if not candidates:
        return out
    tree = cKDTree(points)
    piece_ext = np.append(piece, -1)  # index M: no neighbour
    sizes_ext = np.append(sizes, 0)
    for p in candidates:
        own = np.nonzero(piece == p)[0]
        radius = config.contact_factor * spacing[p]
        if radius <= 0:
            continue
        k = min(16, len(points))
        _, nb = tree.query(points[own], k=k, distance_upper_bound=radius)
        other = piece_ext[nb.reshape(len(own), k)]  # [n, k] piece ids, -1 = none
        larger = sizes_ext[other] > sizes[p]
        if larger.any(axis=1).mean() <= config.max_contact:
            continue
        rows, cols = np.nonzero(larger)
        pairs = np.unique(np.stack([rows, other[rows, cols]], 1), axis=0)  # (point, piece)
        _, per_piece = np.unique(pairs[:, 1], return_counts=True)
        out[p] = int((per_piece >= 0.05 * len(own)).sum()) >= 2
    return out


def _check_inputs(features: Tensor, means: Tensor, opacities: Tensor | None) -> int:
    if features.ndim != 2 or features.shape[1] == 0:
        raise ValueError(f"features must be [N, d], got {tuple(features.shape)}")
    n = int(features.shape[0])
    if n == 0:
        raise ValueError("segment_objects needs at least one Gaussian (features are [0, d])")
    if means.shape != (n, 3):
        raise ValueError(
            f"means must be [{n}, 3] to match features [{n}, d], got {tuple(means.shape)}"
        )
    if opacities is not None and opacities.reshape(-1).shape != (n,):
        raise ValueError(f"opacities must be [{n}] logits, got {tuple(opacities.shape)}")
    return n


def _voxel_codes(points: np.ndarray, size: float) -> np.ndarray:
    """[M] int64 code of each point's voxel of side `size` (equal code = same voxel)."""
    cells = np.floor((points - points.min(0)) / size).astype(np.int64)
    dims = cells.max(0) + 1
    return (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]


def _voxel_sample(points: np.ndarray, target: int) -> np.ndarray:
    """Indices of about `target` points (at most ~1.5x), one per voxel (its first point in file
    order), the voxel size searched so that the occupied voxels number about `target`. Voxels,
    not random picks: a small object keeps its share of the surface whatever its density."""
    m = len(points)
    if m <= target:
        return np.arange(m)
    extent = float((points.max(0) - points.min(0)).max())
    if extent <= 0:
        return np.arange(1)
    size = extent / math.sqrt(target)  # surfaces: occupied voxels ~ area / size²
    for _ in range(8):
        _, first = np.unique(_voxel_codes(points, size), return_index=True)
        if 0.7 * target <= len(first) <= 1.2 * target:
            break
        size *= min(2.0, max(0.5, math.sqrt(len(first) / target)))
    if len(first) > 1.5 * target:  # extreme layouts: thin it evenly
        first = first[:: math.ceil(len(first) / target)]
    return np.sort(first)


def _consistent_sample(points: np.ndarray, unit: Tensor, config: ObjectsConfig) -> np.ndarray:
    """Indices of the clustering's samples: a voxel-downsampled set (twice `max_samples`) of
    which the points that agree with their spatial neighbours are kept, then thinned to
    `max_samples`. Agreement: the cosine between a point's unit feature and the mean of its
    `neighbours` nearest neighbours' at least `min_consistency` (or the median agreement, if
    lower). Distilled fields carry outliers — hidden contact surfaces, splats seen through a
    crack — whose features belong to no class; as seeds they would make levels of their own."""
    from scipy.spatial import cKDTree

    pre = _voxel_sample(points, 2 * config.max_samples)
    k = min(config.neighbours, len(points) - 1)
    if k < 1 or config.min_consistency <= -1:
        return pre[_voxel_sample(points[pre], config.max_samples)]
    _, nb = cKDTree(points).query(points[pre], k=k + 1)
    nb = torch.from_numpy(nb[:, 1:].astype(np.int64))  # drop the point itself (mostly first)
    local = F.normalize(unit[nb].mean(dim=1), dim=1)
    agree = (unit[torch.from_numpy(pre)] * local).sum(dim=1).numpy()
    keep = pre[agree >= min(config.min_consistency, float(np.median(agree)))]
    return keep[_voxel_sample(points[keep], config.max_samples)]


def _feature_clusters(unit: Tensor, config: ObjectsConfig) -> Tensor:
    """Cluster centres [K, d] (unit) of unit features [M, d]: an average-linkage dendrogram on
    the cosine distance, cut at its most persistent level above `min_separation`.

    Only merges of two groups of at least `min_points` samples count as levels (an outlier
    joining a cluster late is no level of the scene). With their heights h_1 >= h_2 >= ...
    (average linkage is monotone), the cut goes into the widest gap in log height,
    log(h_k / h_{k+1}), among the h_k above `min_separation`: between objects features differ
    by a class (heights near 1), inside one by noise (near 0), and the persistent level is the
    gap between the two whatever the class sizes — unlike a silhouette, which a table many
    times the size of a mug dominates. Clusters of fewer than `min_points` samples are dropped
    (their points join the nearest centre later). One cluster when no level is
    `min_separation` apart."""
    from scipy.cluster.hierarchy import fcluster, linkage

    x = unit.to(torch.float64)
    m = x.shape[0]
    whole = F.normalize(x.mean(0, keepdim=True), dim=1).float()
    if m < 2:
        return whole
    tree = linkage(x.numpy(), method="average", metric="cosine")
    size = np.ones(2 * m - 1)
    size[m:] = tree[:, 3]
    smaller = np.minimum(size[tree[:, 0].astype(np.int64)], size[tree[:, 1].astype(np.int64)])
    min_points = max(3, math.ceil(0.002 * m))
    heights = np.sort(tree[smaller >= min_points, 2])[::-1].clip(min=1e-9)
    levels = min(int((heights > config.min_separation).sum()), config.max_clusters - 1)
    if levels == 0:
        return whole
    below = np.append(heights, 1e-9)  # no level left under the last
    gaps = np.log(below[:levels]) - np.log(below[1 : levels + 1])
    k = int(np.argmax(gaps))  # ties keep the fewer clusters
    cut = math.sqrt(below[k] * max(below[k + 1], 1e-9 * below[k]))
    assign = torch.from_numpy(fcluster(tree, cut, criterion="distance").astype(np.int64) - 1)
    counts = torch.bincount(assign)
    sums = torch.zeros(len(counts), x.shape[1], dtype=x.dtype).index_add_(0, assign, x)
    return F.normalize(sums[counts >= min_points], dim=1).float()


def voxel_components(points: np.ndarray, gap: float) -> np.ndarray:
    """[M] int64 connected-component id (0..C-1) of every point, points linked when in the same
    or adjacent (26-neighbourhood) voxels of side `gap` — the linking rule of `connected_to`,
    all components at once."""
    return VoxelGraph(points, gap).components()


def _nearest_label(
    points: np.ndarray, labels: np.ndarray, queries: np.ndarray, reach: float
) -> np.ndarray:
    """The label of each query's nearest point, -1 where that is further than `reach`."""
    from scipy.spatial import cKDTree

    out = np.full(len(queries), -1, dtype=np.int64)
    if len(points) == 0 or len(queries) == 0:
        return out
    dist, idx = cKDTree(points).query(queries, k=1, distance_upper_bound=max(reach, 1e-12))
    hit = np.isfinite(dist)
    out[hit] = labels[idx[hit]]
    return out


# ------------------------------------------------------------------------------ naming
def name_objects(
    object_features: Tensor,  # [K, d]
    head: Tensor,  # [D, d]
    encode_text: Callable[[list[str]], Tensor],  # texts -> [T, D]
    vocabulary: Sequence[str],
    negatives: Sequence[str] = (),
) -> list[tuple[str, float]]:
    """(name, relevancy) per object: the vocabulary term whose LERF relevancy against
    `negatives` is highest for the object's feature, i.e. the term maximising
    sigmoid(10 · (cos(W f, t) − max_j cos(W f, n_j))). Terms that are also negatives are
    skipped; ties go to the earlier term."""
    if object_features.ndim != 2 or head.ndim != 2 or head.shape[1] != object_features.shape[1]:
        raise ValueError(
            f"need object features [K, d] and a head [D, d], got {tuple(object_features.shape)} "
            f"and {tuple(head.shape)}"
        )
    negs = list(dict.fromkeys(t.strip() for t in negatives if t.strip()))
    terms = [t for t in dict.fromkeys(v.strip() for v in vocabulary if v.strip()) if t not in negs]
    if not terms:
        raise ValueError("name_objects needs a vocabulary with at least one term")
    if object_features.shape[0] == 0:
        return []
    texts = encode_text(terms + negs)
    if texts.ndim != 2 or texts.shape != (len(terms) + len(negs), head.shape[0]):
        raise ValueError(
            f"encode_text returned {tuple(texts.shape)}, expected [{len(terms) + len(negs)}, "
            f"{head.shape[0]}] (the head's space)"
        )
    feats = object_features.detach().to("cpu", torch.float32)
    w = head.detach().to("cpu", torch.float32)
    texts = texts.detach().to("cpu", torch.float32)
    norms = decoded_norms(feats, w)
    margin = cosines(feats, norms, w, texts[: len(terms)])  # [K, T]
    if negs:
        margin = margin - cosines(feats, norms, w, texts[len(terms) :]).max(dim=1).values[:, None]
    rel = torch.sigmoid(TEMPERATURE * margin)
    score, best = rel.max(dim=1)  # max returns the first maximum
    return [(terms[int(i)], float(s)) for i, s in zip(best, score, strict=True)]


def object_vocabulary(field: FeatureField | None = None, user: Sequence[str] = ()) -> list[str]:
    """The terms objects are named from: `DEFAULT_VOCABULARY`, the user's words, and the label
    names the field records (`field.meta["label_names"]`, a teacher record's `label_names`,
    e.g. the oracle's). Deduplicated, order kept."""
    names: list[str] = []
    if field is not None:
        sources = [field.meta.get("label_names"), *(r.get("label_names") for r in field.teachers)]
        for source in sources:
            if isinstance(source, Mapping):
                names += [str(v) for v in source.values()]
            elif isinstance(source, list | tuple):
                names += [str(v) for v in source]
    words = [*DEFAULT_VOCABULARY, *user, *names]
    return list(dict.fromkeys(w.strip() for w in words if w.strip()))


# ------------------------------------------------------------------------------ the list
@dataclass
class SceneObject:
    """One object of the list: its Gaussians (file order) and the best vocabulary name."""

    id: int
    name: str
    score: float  # LERF relevancy of `name`, in (0, 1)
    count: int
    bbox: list[list[float]]  # [[xmin, ymin, zmin], [xmax, ymax, zmax]], scene units
    indices: Tensor  # [count] int64, file order

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "score": round(self.score, 6),
            "count": self.count,
            "bbox": self.bbox,
            "indices": self.indices.tolist(),
        }


@dataclass
class ObjectList:
    """The objects of a scene, largest first (a sequence of `SceneObject`), with what named
    them."""

    objects: list[SceneObject]
    num_gaussians: int
    vocabulary: list[str]
    negatives: list[str]
    space: str
    config: ObjectsConfig = field(default_factory=ObjectsConfig)

    def __len__(self) -> int:
        return len(self.objects)

    def __iter__(self) -> Iterator[SceneObject]:
        return iter(self.objects)

    def __getitem__(self, i: int) -> SceneObject:
        return self.objects[i]

    def labels(self) -> Tensor:
        """[N] int64: each Gaussian's object id, -1 for none."""
        out = torch.full((self.num_gaussians,), -1, dtype=torch.int64)
        for obj in self.objects:
            out[obj.indices] = obj.id
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "objects": [o.to_json() for o in self.objects],
            "num_gaussians": self.num_gaussians,
            "num_assigned": sum(o.count for o in self.objects),
            "vocabulary_size": len(self.vocabulary),
            "negatives": self.negatives,
            "space": self.space,
            "config": asdict(self.config),
        }


def list_objects(
    field: FeatureField,
    means: Tensor,  # [N, 3]
    opacities: Tensor | None,  # [N] logits
    encode_text: Callable[[list[str]], Tensor],  # texts -> [T, D] in `space`
    space: str,
    vocabulary: Sequence[str] = (),
    config: ObjectsConfig | None = None,
    *,
    negatives: Sequence[str] = (),
    level: int | str = 0,
) -> ObjectList:
    """Segment the field's scene into objects (on the field's `level`, by default its first,
    coarsest one: whole objects, not parts) and name each from `object_vocabulary(field,
    vocabulary)` through the `space` head, against the canonical negatives plus `negatives`."""
    config = config or ObjectsConfig()
    head = field.head(space)
    field.check_count(int(means.shape[0]))
    features = field.level(level)  # [N, d]
    pieces = segment_objects(features, means, opacities=opacities, config=config)
    unit = F.normalize(features.detach().to("cpu", torch.float32), dim=1)
    feats = (
        torch.stack([_robust_mean(unit[idx]) for idx in pieces])
        if pieces
        else torch.zeros(0, field.dim)
    )
    words = object_vocabulary(field, vocabulary)
    negs = negatives_for(negatives)
    names = name_objects(feats, head, encode_text, words, negs) if pieces else []
    points = means.detach().to("cpu", torch.float64)
    objects = []
    for i, (idx, (name, score)) in enumerate(zip(pieces, names, strict=True)):
        p = points[idx]
        bbox = [p.min(0).values.tolist(), p.max(0).values.tolist()]
        objects.append(SceneObject(i, name, score, int(idx.numel()), bbox, idx))
    return ObjectList(objects, len(field), words, negs, space, config)


def _robust_mean(unit: Tensor) -> Tensor:
    """Unit mean of unit features [M, d], recomputed over the members at least as similar to it
    as the median: the fringe of a neighbour's features at the borders does not pull it."""
    mean = F.normalize(unit.mean(0), dim=0)
    sim = unit @ mean
    return F.normalize(unit[sim >= sim.median()].mean(0), dim=0)
