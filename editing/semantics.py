"""Semantics that survive edits: per-Gaussian feature values for Gaussians an edit created, so
language queries (and grasps) on the edited scene stay right.

Ops that move, recolour, delete or duplicate carry the `feature` extra with their Gaussians
(`editing.ops`); only Gaussians that come from elsewhere need values:

- an inserted object with a name: `features_from_text` solves W f ≈ t for a head W [D,d] and
  the name's text embedding t (least squares). When the name lies outside what the head can
  express — the field was distilled without that class, so |W f| points elsewhere —
  `claim_direction` re-targets the feature direction the field uses least (the smallest
  eigenvector of its features' second moment, ~0 on every old Gaussian) to decode to t; old
  Gaussians decode as before up to their tiny component along it.
- Gaussians without a name (text-to-3D blobs, ops that add Gaussians without features):
  `propagate_features` copies the inverse-distance-weighted mean of their nearest old neighbours.

`update_field` does the right one and returns a `FeatureField` for the edited scene (same heads
unless a direction was claimed, same teachers), to save next to the edited scene.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from fields import GaussianScene
from fields.features import FeatureField

from .ops import check_mask

__all__ = [
    "MIN_COSINE",
    "claim_direction",
    "features_from_text",
    "propagate_features",
    "text_space",
    "update_field",
]

MIN_COSINE = 0.9
"""Least cosine between W f and the text embedding for the least-squares feature to count."""

Encoder = Callable[[Sequence[str]], Tensor]  # texts -> [T,D]


def text_space(field: FeatureField, space: str | None = None) -> str:
    """The language head to use: `space`, else "clip", else "oracle"; `ValueError` without one."""
    if space is not None:
        if space not in field.heads:
            raise ValueError(f"the field has no {space!r} head (it has {sorted(field.heads)})")
        return space
    for s in ("clip", "oracle"):
        if s in field.heads:
            return s
    raise ValueError(f"the field has no language head (heads: {sorted(field.heads)})")


def _typical_norm(features: Tensor) -> float:
    if features.numel() == 0:
        return 1.0
    norms = features.float().norm(dim=1)
    norms = norms[norms > 0]
    return float(norms.median()) if len(norms) else 1.0


def features_from_text(
    field_or_heads: FeatureField | Mapping[str, Tensor],
    text_embedding: Tensor,  # [D]
    *,
    space: str | None = None,
    norm: float | None = None,
) -> Tensor:
    """[d] least-squares feature f with head·f ≈ the text embedding (unit), scaled to `norm`
    (default: the median feature norm of the field, 1 for bare heads)."""
    if isinstance(field_or_heads, FeatureField):
        field = field_or_heads
        W = field.head(text_space(field, space))
        norm = _typical_norm(field.features.reshape(-1, field.dim)) if norm is None else norm
    else:
        heads = dict(field_or_heads)
        if space is None:
            space = next((s for s in ("clip", "oracle") if s in heads), None)
        if space is None or space not in heads:
            raise ValueError(f"no head for space {space!r} (heads: {sorted(heads)})")
        W = heads[space]
        norm = 1.0 if norm is None else norm
    t = torch.as_tensor(text_embedding).reshape(-1).to(torch.float64)
    if t.shape[0] != W.shape[0]:
        raise ValueError(f"text embedding has {t.shape[0]} channels, the head expects {W.shape[0]}")
    t = t / t.norm().clamp_min(1e-12)
    f = torch.linalg.lstsq(W.double(), t[:, None]).solution[:, 0]
    return (f / f.norm().clamp_min(1e-12) * float(norm)).to(W.dtype)


def _cosine(W: Tensor, f: Tensor, t: Tensor) -> float:
    decoded = W.double() @ f.double()
    t = t.double().reshape(-1)
    return float(decoded @ t / (decoded.norm() * t.norm()).clamp_min(1e-12))


def claim_direction(
    field: FeatureField,
    text_embedding: Tensor,  # [D]
    *,
    space: str | None = None,
    features: Tensor | None = None,  # [N,L*d] the features in use (default: field.features)
) -> tuple[FeatureField, Tensor]:
    """Make the least-used feature direction u decode to the text embedding in head `space`:
    W' = W + (a·t − W u) uᵀ with a = median |W f| / median |f|. Returns (the field with the new
    head, the feature [d] = u · median |f| to give the new Gaussians). Old Gaussians decode as
    before up to (a·t − W u)(u·f_i), and u·f_i ≈ 0 for all of them by the choice of u. Every
    level of the field decodes through the same head, so u is chosen over all levels."""
    space = text_space(field, space)
    d = field.dim
    F = (field.features if features is None else features).double().reshape(-1, d)
    W = field.head(space).double()
    moment = F.T @ F / max(1, F.shape[0])  # [d,d]
    _, vecs = torch.linalg.eigh(moment)
    u = vecs[:, 0]
    t = torch.as_tensor(text_embedding).reshape(-1).double()
    if t.shape[0] != W.shape[0]:
        raise ValueError(f"text embedding has {t.shape[0]} channels, the head expects {W.shape[0]}")
    t = t / t.norm().clamp_min(1e-12)
    fnorm = _typical_norm(F)
    dec = (F @ W.T).norm(dim=1)
    a = float(dec[dec > 0].median()) / fnorm if bool((dec > 0).any()) else 1.0
    W_new = W + torch.outer(a * t - W @ u, u)
    heads = dict(field.heads)
    heads[space] = W_new.to(field.head(space).dtype)
    out = field.with_features(field.features if features is None else features)
    out.heads = heads
    return out, (u * fnorm).to(field.features.dtype).reshape(d)


def propagate_features(
    scene: GaussianScene,
    new_mask: Tensor,  # [N] bool: Gaussians that need values
    k: int = 8,
    *,
    features: Tensor | None = None,  # [N,d] (default: the scene's `feature` extra)
) -> Tensor:
    """[N,d] features where every Gaussian of `new_mask` takes the inverse-distance-weighted mean
    of its `k` nearest Gaussians outside the mask; the others keep theirs exactly."""
    from scipy.spatial import cKDTree

    mask = check_mask(scene, new_mask).cpu()
    feats = scene.extras.get("feature") if features is None else features
    if feats is None:
        raise ValueError("the scene carries no `feature` extra: attach a feature field first")
    feats = torch.as_tensor(feats)
    if feats.ndim != 2 or feats.shape[0] != len(scene):
        raise ValueError(f"features must be [{len(scene)},d], got {tuple(feats.shape)}")
    out = feats.clone()
    if not bool(mask.any()):
        return out
    old = ~mask
    if not bool(old.any()):
        raise ValueError("no Gaussians outside the mask to propagate features from")
    means = scene.means.detach().cpu().double().numpy()
    tree = cKDTree(means[old.numpy()])
    kk = min(int(k), int(old.sum()))
    dist, idx = tree.query(means[mask.numpy()], k=kk)
    dist = torch.as_tensor(dist).reshape(-1, kk)
    idx = torch.as_tensor(idx).reshape(-1, kk)
    w = 1.0 / dist.clamp_min(1e-9)
    w = w / w.sum(1, keepdim=True)
    src = feats[old.to(feats.device)].double().cpu()  # [N_old,d]
    values = (src[idx] * w[..., None]).sum(1)  # [M,d]
    out[mask.to(out.device)] = values.to(out.dtype).to(out.device)
    return out


def update_field(
    field: FeatureField,
    scene: GaussianScene,
    new_mask: Tensor,  # [N] bool: the Gaussians the edit created
    *,
    name: str | None = None,
    encode: Encoder | None = None,
    space: str | None = None,
    min_cosine: float = MIN_COSINE,
) -> FeatureField:
    """A `FeatureField` for the edited `scene`: old Gaussians keep the `feature` values the scene
    carries (ops keep them aligned); the new ones get the name's features (least squares, or a
    claimed direction when the head cannot express the name — see the module docstring), or
    without a `name` their neighbours' (`propagate_features`). `encode(texts) -> [T,D]` defaults
    to the field's registered text encoder for `space`."""
    mask = check_mask(scene, new_mask).cpu()
    feats = scene.extras.get("feature")
    if feats is None or feats.ndim != 2 or feats.shape[1] != field.channels:
        raise ValueError(
            "the scene must carry the field's features as its `feature` extra "
            f"[N,{field.channels}] (FeatureField.attach before editing)"
        )
    feats = feats.detach().cpu().float()
    base = field.with_features(feats)
    if name is None or not bool(mask.any()):
        return _with_features(base, propagate_features(scene, mask, features=feats))
    space = text_space(field, space)
    if encode is None:
        from fields.features import build_text_encoder

        try:
            encode = build_text_encoder(space, field.teachers)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
    t = torch.as_tensor(encode([name])).reshape(-1).float()
    old = feats[~mask].reshape(-1, field.dim)
    f = features_from_text(field.heads, t, space=space, norm=_typical_norm(old))
    if _cosine(field.head(space), f, t) < min_cosine:
        base, f = claim_direction(base, t, space=space, features=_zero_rows(feats, mask))
    new = feats.clone()
    new[mask] = f.to(new.dtype).repeat(len(field.levels))  # the name at every level
    out = _with_features(base, new)
    names = dict(out.meta.get("label_names") or {})
    label = scene.extras.get("label")
    if label is not None:
        ids = torch.unique(label[mask.to(label.device)]).tolist()
        for i in ids:
            names[str(int(i))] = name
        out.meta = {**out.meta, "label_names": names}
    return out


def _zero_rows(features: Tensor, mask: Tensor) -> Tensor:
    out = features.clone()
    out[mask] = 0
    return out


def _with_features(field: FeatureField, features: Tensor) -> FeatureField:
    out = field.with_features(features)
    out.meta = dict(field.meta)
    return out
