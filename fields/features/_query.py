"""Language queries over a feature field: per-Gaussian relevancy, threshold, mask.

Because a head W [D,d] is linear, the cosine between a Gaussian's decoded feature and a text
embedding folds into the text side:

    cos(W f_i, t) = f_i · (Wᵀ t) / (|W f_i| |t|)

`decoded_norms` computes |W f_i| once per field (O(N·d²) through the Gram matrix WᵀW); each
query is then one [N,d] x [d,T] product. No rendering is needed.

Relevancy follows LERF: for a positive q and negatives n_j,
    min_j softmax(10 · [cos(q), cos(n_j)])[0] = sigmoid(10 · (cos(q) − max_j cos(n_j)))
(the softmax of two is a sigmoid of the difference, and sigmoid is monotone), and several
positives take the max over positives, which again moves inside the sigmoid.

The automatic threshold (`auto_threshold`) is Otsu's on the histogram of the relevancies above
0.5 — below 0.5 a negative matches better than every positive, so those Gaussians are out
anyway and only the candidates' statistics decide the cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

CANONICAL_NEGATIVES: tuple[str, ...] = ("object", "things", "stuff", "texture")
TEMPERATURE = 10.0


def decoded_norms(features: Tensor, head: Tensor) -> Tensor:
    """|W f_i| for every Gaussian: features [N,d], head W [D,d] -> [N]."""
    gram = head.T @ head  # [d,d]
    sq = ((features @ gram) * features).sum(dim=1)
    return sq.clamp_min(0).sqrt()


def cosines(features: Tensor, norms: Tensor, head: Tensor, texts: Tensor) -> Tensor:
    """cos(W f_i, t_k) for texts [T,D] -> [N,T], with the head folded into the text side."""
    texts = texts.to(features.dtype)
    folded = head.T @ (texts / texts.norm(dim=1, keepdim=True).clamp_min(1e-12)).T  # [d,T]
    return (features @ folded) / norms.clamp_min(1e-12)[:, None]


def fold_texts(head: Tensor, texts: Tensor) -> Tensor:
    """Texts [T,D] folded through the head: Wᵀ t / |t| -> [d,T]."""
    texts = texts.to(head.dtype)
    return head.T @ (texts / texts.norm(dim=1, keepdim=True).clamp_min(1e-12)).T


def relevancy(
    features: Tensor, norms: Tensor, head: Tensor, positives: Tensor, negatives: Tensor
) -> Tensor:
    """LERF relevancy [N] in (0,1): positives [P,D] (max over them), negatives [M,D]."""
    unit_t = (features / norms.clamp_min(1e-12)[:, None]).T
    return _relevancy_unit(unit_t, head, positives, negatives)


def _relevancy_unit(unit_t: Tensor, head: Tensor, positives: Tensor, negatives: Tensor) -> Tensor:
    """Relevancy from features pre-divided by |W f_i|, transposed to [d,N]: one
    [P·M,d] x [d,N] product.

    cos(q_p) − cos(n_j) = unit_i · (u_p − u_j), so the differences are folded too and the
    whole query is a matmul, a min over negatives, a max over positives and a sigmoid."""
    if positives.ndim != 2 or positives.shape[0] == 0:
        raise ValueError("relevancy needs at least one positive embedding [P,D]")
    pos = fold_texts(head, positives)  # [d,P]
    p = pos.shape[1]
    if negatives.numel() == 0:
        rows = pos.T @ unit_t  # [P,N]
        return torch.sigmoid(_reduce_rows(rows, torch.maximum).mul_(TEMPERATURE))
    neg = fold_texts(head, negatives.reshape(-1, positives.shape[1]))  # [d,M]
    m = neg.shape[1]
    diff = (pos[:, :, None] - neg[:, None, :]).reshape(pos.shape[0], p * m)  # [d,P·M]
    # Rows, not columns: [P·M,N] keeps every reduction an elementwise op on contiguous rows
    # (a reduction over a trailing dim of 4 is several times slower in torch).
    margins = diff.T @ unit_t  # [P·M,N]
    per_pos = [_reduce_rows(margins[i * m : (i + 1) * m], torch.minimum) for i in range(p)]
    best = per_pos[0] if p == 1 else _reduce_rows(torch.stack(per_pos), torch.maximum)
    return torch.sigmoid(best.mul_(TEMPERATURE))


def relevancy_cpu(unit_t: Tensor, head: Tensor, positives: Tensor, negatives: Tensor) -> Tensor:
    """`_relevancy_unit` in one compiled pass over the features (CPU, float32): P + M dot
    products per Gaussian, the LERF margin, then the sigmoid — the same values up to float
    rounding, without the [P·M, N] intermediate."""
    from .. import _raster_cpu

    if positives.ndim != 2 or positives.shape[0] == 0:
        raise ValueError("relevancy needs at least one positive embedding [P,D]")
    pos = fold_texts(head, positives).T.contiguous().float()  # [P,d]
    if negatives.numel():
        neg = fold_texts(head, negatives.reshape(-1, positives.shape[1])).T.contiguous().float()
    else:
        neg = torch.zeros(0, pos.shape[1])
    margins = _raster_cpu.relevancy_margins(
        unit_t.float().contiguous().numpy(), pos.numpy(), neg.numpy(), torch.get_num_threads()
    )
    return torch.sigmoid_(torch.from_numpy(margins).mul_(TEMPERATURE))


def _reduce_rows(rows: Tensor, op) -> Tensor:
    out = rows[0].clone()
    for row in rows[1:]:
        op(out, row, out=out)
    return out


def otsu_threshold(values: Tensor, bins: int = 256) -> float:
    """Otsu's threshold of `values` (1-D): the cut maximising the between-class variance."""
    values = values.reshape(-1).float()
    if values.numel() == 0:
        return 0.5
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return hi
    return _otsu_from_hist(torch.histc(values, bins=bins, min=lo, max=hi), lo, hi)


def _otsu_from_hist(hist: Tensor, lo: float, hi: float) -> float:
    hist = hist.double()
    bins = hist.numel()
    centers = lo + (torch.arange(bins, dtype=torch.float64) + 0.5) * (hi - lo) / bins
    w0 = hist.cumsum(0)
    m0 = (hist * centers).cumsum(0)
    total, total_m = w0[-1], m0[-1]
    w1 = total - w0
    between = (total_m * w0 - total * m0) ** 2 / (w0 * w1).clamp_min(1e-12)
    between[(w1 <= 0) | (w0 <= 0)] = -1
    k = int(between.argmax())
    return lo + (k + 1) * (hi - lo) / bins  # upper edge of the last bin of the lower class


def auto_threshold(rel: Tensor, bins: int = 256) -> float:
    """Otsu's threshold over the relevancies in [0.5, 1] (where the positive beats every
    negative), never below 0.5. The Gaussians below 0.5 are clearly not the query and usually
    the majority; left in, their spread pulls Otsu's cut into their own mode."""
    # histc ignores values outside [min, max], so no compaction pass over N is needed.
    hist = torch.histc(rel.reshape(-1).float(), bins=bins, min=0.5, max=1.0)
    if float(hist.sum()) < 2:
        return 0.5
    return max(_otsu_from_hist(hist, 0.5, 1.0), 0.5)


@dataclass
class QueryResult:
    mask: Tensor  # [N] bool, file order
    relevancy: Tensor  # [N] float
    threshold: float


def query(
    features: Tensor,  # [N,d]
    norms: Tensor,  # [N], from decoded_norms
    head: Tensor,  # [D,d]
    positives: Tensor,  # [P,D]
    negatives: Tensor,  # [M,D]
    *,
    threshold: float | None = None,
    within: Tensor | None = None,  # [N] bool: restrict to these Gaussians (part queries)
) -> QueryResult:
    """Relevancy, threshold (`auto_threshold` unless given) and mask of one query.

    With `within`, only those Gaussians are candidates and the threshold statistics come from
    them alone, so "handle" inside a mug's mask splits the mug, not the scene."""
    n = features.shape[0]
    if norms.shape != (n,):
        raise ValueError(f"norms must be [{n}], got {tuple(norms.shape)}")
    rel = relevancy(features, norms, head, positives, negatives)
    return threshold_relevancy(rel, threshold=threshold, within=within)


def threshold_relevancy(
    rel: Tensor, *, threshold: float | None = None, within: Tensor | None = None
) -> QueryResult:
    """The mask of a relevancy vector: `rel > threshold` (automatic when None), inside `within`."""
    n = rel.shape[0]
    if within is not None:
        within = within.to(torch.bool).reshape(-1)
        if within.shape[0] != n:
            raise ValueError(f"within must be [{n}] bool, got {tuple(within.shape)}")
    if threshold is None:
        stats = rel if within is None else rel[within]
        threshold = auto_threshold(stats)
    mask = rel > threshold
    if within is not None:
        mask &= within
    return QueryResult(mask=mask, relevancy=rel, threshold=float(threshold))


class FieldQuery:
    """Expensive once, cheap many: caches |W f_i| of one head; each query is O(N·d).

    fq = FieldQuery(field.features, field.head("clip"))
    res = fq.query(encode(["mug"]), encode(list(CANONICAL_NEGATIVES)))
    """

    def __init__(self, features: Tensor, head: Tensor) -> None:
        if features.ndim != 2 or head.ndim != 2 or head.shape[1] != features.shape[1]:
            raise ValueError(
                f"need features [N,d] and head [D,d], got {tuple(features.shape)}, {tuple(head.shape)}"
            )
        self.features = features.float().contiguous()
        self.head = head.to(self.features).contiguous()
        self.norms = decoded_norms(self.features, self.head)
        # [d,N] contiguous: the query's product and reductions then stream whole rows.
        self._unit_t = (self.features / self.norms.clamp_min(1e-12)[:, None]).T.contiguous()

    def relevancy(self, positives: Tensor, negatives: Tensor) -> Tensor:
        positives, negatives = positives.to(self.head), negatives.to(self.head)
        if self._unit_t.device.type != "cpu":
            return _relevancy_unit(self._unit_t, self.head, positives, negatives)
        return relevancy_cpu(self._unit_t, self.head, positives, negatives)

    def query(
        self,
        positives: Tensor,
        negatives: Tensor,
        *,
        threshold: float | None = None,
        within: Tensor | None = None,
    ) -> QueryResult:
        rel = self.relevancy(positives, negatives)
        return threshold_relevancy(rel, threshold=threshold, within=within)


def negatives_for(user: Sequence[str] = ()) -> list[str]:
    """Canonical negatives plus the user's (deduplicated, order kept)."""
    return list(dict.fromkeys([*CANONICAL_NEGATIVES, *(u.strip() for u in user if u.strip())]))
