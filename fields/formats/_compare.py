"""How far a scene read back from a (quantising) file is from the scene that was written.

`scene_errors(reference, other)` pairs the Gaussians of two scenes of the same count (in order
when the files kept it, else each of `other`'s to the nearest `reference` mean: compressed PLY
and SOG writers may reorder) and reports the largest error per attribute, in the units a user
reads: scene units for positions, natural log for scales, degrees for rotations, [0, 1] for
opacity and colour, SH coefficients for the higher bands. The format tests and the format
benchmark report these numbers; each format has its own quantisation budget.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..scene import GaussianScene, sh_to_rgb

ATTRIBUTES = ("means", "log_scales", "rotation_deg", "opacity", "color", "sh_rest")


def _keys(scene: GaussianScene, extent: float) -> np.ndarray:
    """[N,10] pairing keys: position (by extent) first, then colour, opacity and scale with small
    weights, so Gaussians that share a position (they exist) are told apart by what they look
    like, while quantisation noise (far below these weights) never changes a pair."""
    return torch.cat(
        [
            scene.means.double() / max(extent, 1e-12),
            0.01 * sh_to_rgb(scene.sh[:, 0]).double(),
            0.01 * scene.activated_opacities().double()[:, None],
            0.002 * scene.scales.double(),
        ],
        dim=1,
    ).numpy()


def _pairing(ref: GaussianScene, other: GaussianScene, extent: float) -> tuple[np.ndarray, str]:
    """Index into `ref` for each Gaussian of `other`: identity when the order was kept."""
    n = len(ref)
    same = np.arange(n)
    row_gap = (ref.means.double() - other.means.double()).abs().amax(dim=1)
    if n == 0 or float(row_gap.max()) <= 1e-3 * max(extent, 1e-12):
        return same, "index"  # every row where it was: the writer kept the order
    from scipy.spatial import cKDTree

    keys_ref, keys_other = _keys(ref, extent), _keys(other, extent)
    dist, cand = cKDTree(keys_ref).query(keys_other, k=min(4, n))
    dist, cand = np.atleast_2d(dist.T).T, np.atleast_2d(cand.T).T  # [M,K] even when K = 1
    # The row of the same index is a candidate too, first: a writer that kept the order (or
    # most of it) is paired row for row wherever that is as good as any other pairing.
    cand = np.concatenate([same[:, None], cand], axis=1)
    dist = np.concatenate([np.linalg.norm(keys_ref - keys_other, axis=1)[:, None], dist], axis=1)
    # Gaussians of a tiled or duplicated scene share position, colour, opacity and scale, so
    # the keys alone can pair the wrong twin. Among the nearest candidates pick the one that also
    # agrees on rotation and the higher SH bands, each difference measured against its typical
    # size in this file (the median over nearest candidates: the format's quantisation noise).
    qa, qb = ref.normalized_quats.double(), other.normalized_quats.double()
    k = min(ref.sh.shape[1], other.sh.shape[1])
    terms = []
    for lo in range(0, len(other), 65536):
        c = torch.from_numpy(cand[lo : lo + 65536])  # [B,K]
        rot = 1.0 - (qa[c] * qb[lo : lo + 65536, None]).sum(-1).abs().clamp(max=1.0)
        sh = torch.zeros_like(rot)
        if k > 1:
            diff = ref.sh[c][:, :, 1:k].double() - other.sh[lo : lo + 65536, None, 1:k].double()
            sh = diff.abs().flatten(2).amax(-1)
        terms.append(torch.stack([torch.from_numpy(dist[lo : lo + 65536]), rot, sh]))
    t = torch.cat(terms, dim=1)  # [3,M,K]
    scale = t[:, :, 1].median(dim=1).values.clamp_min(1e-12)[:, None, None]
    cost = (t / scale).sum(0)
    cost[:, 1:] += 1e-9  # an exact tie goes to the same index
    best = torch.from_numpy(cand).gather(1, cost.argmin(1, keepdim=True)).squeeze(1).numpy()
    return best, "index" if np.array_equal(best, same) else "nearest"


def scene_errors(reference: GaussianScene, other: GaussianScene) -> dict[str, float | str | int]:
    """Largest per-attribute errors of `other` against `reference` (same count; see module doc).

    Keys: `means` (scene units), `log_scales`, `rotation_deg` (angle between the rotations),
    `opacity` and `color` (activated, [0, 1]), `sh_rest` (bands both scenes have; 0 when either
    has degree 0), `extent` (the reference's largest bounding-box side, to read `means` against),
    `matched` ("index" or "nearest") and `count`. Raises `ValueError` when the counts differ."""
    if len(reference) != len(other):
        raise ValueError(
            f"the scenes hold {len(reference)} and {len(other)} Gaussians: nothing to compare"
        )
    ref = reference.detach().to("cpu")
    oth = other.detach().to("cpu")
    extent = float((ref.means.amax(0) - ref.means.amin(0)).max()) if len(ref) else 0.0
    idx, matched = _pairing(ref, oth, extent)
    pick = torch.from_numpy(idx)

    def worst(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a[pick].double() - b.double()).abs().max()) if len(b) else 0.0

    qa = ref.normalized_quats[pick].double()
    qb = oth.normalized_quats.double()
    qb = qb * torch.where((qa * qb).sum(-1, keepdim=True) < 0, -1.0, 1.0)  # q and -q: one turn
    half = torch.atan2((qa - qb).norm(dim=-1), (qa + qb).norm(dim=-1))  # stable near 0
    rot = float(torch.rad2deg(4 * half).max()) if len(qb) else 0.0
    k = min(ref.sh.shape[1], oth.sh.shape[1])
    sh_rest = worst(ref.sh[:, 1:k], oth.sh[:, 1:k]) if k > 1 else 0.0
    return {
        "means": worst(ref.means, oth.means),
        "log_scales": worst(ref.scales, oth.scales),
        "rotation_deg": rot if math.isfinite(rot) else float("inf"),
        "opacity": worst(ref.activated_opacities(), oth.activated_opacities()),
        "color": worst(sh_to_rgb(ref.sh[:, 0]), sh_to_rgb(oth.sh[:, 0])),
        "sh_rest": sh_rest,
        "extent": extent,
        "matched": matched,
        "count": len(ref),
    }
