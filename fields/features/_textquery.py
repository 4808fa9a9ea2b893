"""`TextQuery`: the one UI-free home of language queries (viewer panels, CLI, benchmarks).

Expensive once, cheap many: the field's |W f_i| per level (`FieldQuery`), the text encoder and
one embedding per string are built or computed once; each query is then O(N·d) on one level.

    tq = TextQuery(field)                          # text encoder rebuilt from the field's records
    res = tq.query("mug")                          # level chosen automatically
    res.mask, res.level, res.confident, res.message
    tq.query("handle", within=res.mask).mask       # a part query

Levels (LangSplat): a field may keep one feature per semantic level ("whole", "part"). `level=
"auto"` scores every level on a strided sample of the Gaussians and answers from the one whose
best relevancy is highest (ties go to the coarser level); the result says which level answered
and how each scored, so a user can choose another.

"No confident match" is an answer. The automatic threshold always finds a cut, so a query is
only trusted when (1) the text is something the field's teacher can express — an oracle field
knows exactly its label names — (2) some Gaussians prefer the text over every negative
(relevancy above one half by a margin) and (3) the relevancy histogram has a separated upper
mode (Otsu's effectiveness: between-class over total variance). Otherwise the mask is empty and
`message` says why and which names the field knows.

`agreement` scores a selection's multi-view consistency: in each view where the selection shows,
the 2D relevancy of the rendered, decoded features against the rendered selection (IoU).
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..camera import Camera
from ..scene import GaussianScene
from ._io import FeatureField
from ._query import (
    TEMPERATURE,
    FieldQuery,
    _otsu_from_hist,
    decoded_norms,
    fold_texts,
    negatives_for,
)
from ._teacher import TextEncoder, build_text_encoder

__all__ = ["LANGUAGE_SPACES", "TextQuery", "TextQueryResult", "language_space", "split_terms"]

LANGUAGE_SPACES = ("clip", "oracle")  # heads a text can be compared in, in order of preference
MIN_MARGIN = 0.55  # best relevancy must reach this (the text beats every negative by a margin)
MIN_SEPARATION = (
    0.6  # Otsu effectiveness below this: no separated upper mode (one normal mode: 0.64)
)
LEVEL_SAMPLE = 16_384  # Gaussians scored per level to pick the level
LEVEL_TIE = 1e-3


def split_terms(text: str | Sequence[str]) -> list[str]:
    """Comma-separated terms (or a list), stripped, empty ones dropped."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    return [t.strip() for t in parts if t.strip()]


def language_space(field: FeatureField, space: str | None = None) -> str | None:
    """The head a text query uses: `space` when the field has it, else clip, else oracle."""
    if space is not None:
        return space if space in field.heads else None
    return next((s for s in LANGUAGE_SPACES if s in field.heads), None)


@dataclass
class TextQueryResult:
    """One query's answer. `mask` is empty when `confident` is False."""

    positives: list[str]
    negatives: list[str]
    mask: Tensor  # [N] bool, file order
    relevancy: Tensor  # [N] float in (0,1), on the answering level
    threshold: float
    level: str
    level_scores: dict[str, float]  # best relevancy per level (the automatic choice's basis)
    confident: bool
    separation: float  # Otsu effectiveness in [0,1] of the relevancy histogram
    best: float  # best relevancy (high quantile)
    message: str = ""  # why the answer is not confident, with the names the field knows
    suggestions: list[str] = field(default_factory=list)
    within: Tensor | None = None

    @property
    def count(self) -> int:
        return int(self.mask.sum())

    def rethreshold(self, threshold: float) -> TextQueryResult:
        """The same relevancy cut elsewhere (a slider): confident by the user's choice."""
        mask = self.relevancy > threshold
        if self.within is not None:
            mask &= self.within
        return TextQueryResult(
            self.positives,
            self.negatives,
            mask,
            self.relevancy,
            float(threshold),
            self.level,
            self.level_scores,
            True,
            self.separation,
            self.best,
            "",
            [],
            self.within,
        )


class TextQuery:
    """Language queries on one field (see the module docstring). Thread-safe.

    `features` [N, L·d]: the features in use (a scene's `feature` extra after edits; default
    the field's own). `encode(texts) -> [T,D]`: default the text encoder registered for the
    field's language space, built on first use (loading CLIP may take seconds: call `encode`
    or the first query from a job)."""

    def __init__(
        self,
        field: FeatureField,
        encode: TextEncoder | None = None,
        *,
        space: str | None = None,
        features: Tensor | None = None,
    ) -> None:
        chosen = language_space(field, space)
        if chosen is None:
            raise ValueError(
                f"the feature field has no language head (heads: {', '.join(sorted(field.heads))})"
                if space is None
                else f"the feature field has no {space!r} head (heads: {sorted(field.heads)})"
            )
        self.field = field
        self.space = chosen
        self.head = field.head(chosen).float()
        self.features = (field.features if features is None else features).float()
        if self.features.ndim != 2 or self.features.shape[1] != field.channels:
            raise ValueError(
                f"features must be [N,{field.channels}], got {tuple(self.features.shape)}"
            )
        self.levels = field.levels
        self._encode = encode
        self._lock = threading.RLock()
        self._texts: dict[str, Tensor] = {}
        self._fq: dict[int, FieldQuery] = {}
        self._samples: list[FieldQuery] | None = None

    def __len__(self) -> int:
        return int(self.features.shape[0])

    # ------------------------------------------------------------------ text side
    @property
    def vocabulary(self) -> list[str] | None:
        """The texts the field's teacher can express (an oracle's label names), or None for an
        open vocabulary (CLIP)."""
        return closed_vocabulary(self.field, self.space)

    @property
    def encoder_ready(self) -> bool:
        """Whether queries need no model load (the oracle's text side, or an encoder given)."""
        return self._encode is not None or self.space == "oracle"

    def cached(self, texts: Sequence[str]) -> bool:
        with self._lock:
            return all(t in self._texts for t in texts)

    def encode(self, texts: Sequence[str]) -> Tensor:
        """[T,D] text embeddings, each string encoded once."""
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._texts]
            if missing:
                if self._encode is None:
                    self._encode = build_text_encoder(self.space, self.field.teachers)
                out = torch.as_tensor(self._encode(missing)).detach().float().cpu()
                if out.ndim != 2 or out.shape[0] != len(missing):
                    raise ValueError(f"text encoder returned {tuple(out.shape)} for {len(missing)}")
                for t, e in zip(missing, out, strict=True):
                    self._texts[t] = e
            if not texts:
                return torch.zeros(0, self.head.shape[0])
            return torch.stack([self._texts[t] for t in texts])

    def field_query(self, level: int) -> FieldQuery:
        with self._lock:
            if level not in self._fq:
                d = self.field.dim
                self._fq[level] = FieldQuery(
                    self.features[:, level * d : (level + 1) * d], self.head
                )
            return self._fq[level]

    # ------------------------------------------------------------------ queries
    def relevancy(
        self, texts: str | Sequence[str], negatives: Sequence[str] = (), *, level: int | str = 0
    ) -> Tensor:
        """[N] LERF relevancy of `texts` (max over positives) against the canonical negatives
        plus `negatives`, on one level."""
        pos, negs = split_terms(texts), negatives_for(negatives)
        li = self.field.level_index(level)
        return self.field_query(li).relevancy(self.encode(pos), self.encode(negs))

    def query(
        self,
        text: str | Sequence[str],
        negatives: Sequence[str] = (),
        *,
        level: int | str = "auto",
        threshold: float | None = None,
        within: Tensor | None = None,  # [N] bool: a part query inside these Gaussians
    ) -> TextQueryResult:
        """Relevancy, level, threshold (automatic unless given), mask and confidence."""
        positives = split_terms(text)
        if not positives:
            raise ValueError("type what to find (several terms: comma-separated)")
        negs = negatives_for(split_terms(negatives))
        n = len(self)
        if within is not None:
            within = torch.as_tensor(within).to("cpu", torch.bool).reshape(-1)
            if within.shape[0] != n:
                raise ValueError(f"within must be [{n}] bool, got {tuple(within.shape)}")
        pos_emb, neg_emb = self.encode(positives), self.encode(negs)
        if level == "auto":
            scores = self._level_scores(pos_emb, neg_emb, within)
            li = _pick_level(scores)
        else:
            li = self.field.level_index(level)
            scores = [float("nan")] * len(self.levels)
        rel = self.field_query(li).relevancy(pos_emb, neg_emb)
        stats = rel if within is None else rel[within]
        auto, separation, best = relevancy_stats(stats)
        thr = auto if threshold is None else float(threshold)
        mask = rel > thr
        if within is not None:
            mask &= within
        confident, message, suggestions = self._judge(positives, best, separation, stats.numel())
        if threshold is not None:
            confident, message = True, ""  # the user's own cut
        if not confident:
            mask = torch.zeros(n, dtype=torch.bool)
        return TextQueryResult(
            positives,
            negs,
            mask,
            rel,
            float(thr),
            self.levels[li],
            {self.levels[i]: s for i, s in enumerate(scores)},
            confident,
            separation,
            best,
            message,
            suggestions,
            within,
        )

    def mask(self, text: str | Sequence[str], negatives: Sequence[str] = (), **kw: Any) -> Tensor:
        """[N] bool: what `text` names (empty when there is no confident match)."""
        return self.query(text, negatives, **kw).mask

    def _level_scores(self, pos: Tensor, neg: Tensor, within: Tensor | None) -> list[float]:
        """Per level, the best relevancy on a sample of the Gaussians (of `within` for a part
        query): what the automatic level choice compares."""
        if len(self.levels) == 1:
            return [float("nan")]
        if within is None:
            queries = self._level_samples()
        else:  # a part query: the candidates' own features (usually few)
            idx = within.nonzero()[:, 0]
            if idx.numel() > LEVEL_SAMPLE:
                idx = idx[:: idx.numel() // LEVEL_SAMPLE]
            if idx.numel() == 0:
                return [0.0] * len(self.levels)
            d = self.field.dim
            queries = [
                FieldQuery(self.features[idx, li * d : (li + 1) * d], self.head)
                for li in range(len(self.levels))
            ]
        return [relevancy_stats(q.relevancy(pos, neg))[2] for q in queries]

    def _level_samples(self) -> list[FieldQuery]:
        """Per level, a `FieldQuery` over a strided sample of about LEVEL_SAMPLE Gaussians
        (cached: the level choice then costs two small products per query)."""
        with self._lock:
            if self._samples is None:
                step = max(1, len(self) // LEVEL_SAMPLE)
                d = self.field.dim
                self._samples = [
                    FieldQuery(self.features[::step, li * d : (li + 1) * d], self.head)
                    for li in range(len(self.levels))
                ]
            return self._samples

    def _judge(
        self, positives: list[str], best: float, separation: float, count: int
    ) -> tuple[bool, str, list[str]]:
        vocab = self.vocabulary
        if vocab is not None:
            known = {v.lower() for v in vocab}
            unknown = [p for p in positives if p.lower() not in known]
            if len(unknown) == len(positives):
                close = []
                for (
                    p
                ) in positives:  # names inside the text ("mug" in "coffee mug"), then look-alikes
                    words = set(p.lower().split())
                    close += [v for v in vocab if v.lower() in words or v.lower() in p.lower()]
                    close += difflib.get_close_matches(p, vocab, n=3, cutoff=0.5)
                suggestions = list(dict.fromkeys(close)) or list(vocab)
                return (
                    False,
                    f"No confident match: this field knows only {', '.join(vocab)}; "
                    f"{', '.join(repr(u) for u in unknown)} is not one of them.",
                    suggestions,
                )
        if count == 0 or best < MIN_MARGIN:
            return (
                False,
                "No confident match: nothing here resembles the text more than the negatives. "
                "Try other words, or click the object instead.",
                list(vocab or []),
            )
        if separation < MIN_SEPARATION:
            return (
                False,
                f"No confident match: the relevancy has no separated mode (separation "
                f"{separation:.2f}); add negatives for what it confuses, or click instead.",
                list(vocab or []),
            )
        return True, "", []

    # ------------------------------------------------------------------ multi-view agreement
    def agreement(
        self,
        scene: GaussianScene,
        result: TextQueryResult,
        cameras: Sequence[Camera],
        *,
        max_side: int = 128,
        min_pixels: int = 16,
    ) -> float | None:
        """Mean IoU, over the views where the selection covers at least `min_pixels`, between
        the rendered selection and the 2D relevancy of the rendered, decoded features (same
        texts, level and threshold). None when the selection shows in no view."""
        from ..rendering import render

        if not bool(result.mask.any()):
            return None
        li = self.field.level_index(result.level)
        d = self.field.dim
        feats = self.features[:, li * d : (li + 1) * d]
        pos, neg = self.encode(result.positives), self.encode(result.negatives)
        probe = torch.cat([feats, result.mask.float()[:, None]], dim=1).to(scene.device)
        ious = []
        for cam in cameras:
            if max(cam.width, cam.height) > max_side:
                cam = cam.scaled(max_side / max(cam.width, cam.height))
            with torch.no_grad():
                out = render(scene.detach(), cam, features=probe)
            alpha = out.alpha[..., 0].cpu()
            f = out.features.cpu()
            shown = f[..., d] / alpha.clamp_min(1e-6) > 0.5
            shown &= alpha > 0.5
            if int(shown.sum()) < min_pixels:
                continue
            covered = alpha > 0.5
            rel2d = _relevancy_of(f[covered][:, :d], self.head, pos, neg)
            hit = torch.zeros_like(shown)
            hit[covered] = rel2d > result.threshold
            union = int((hit | shown).sum())
            ious.append(int((hit & shown).sum()) / union if union else 1.0)
        return sum(ious) / len(ious) if ious else None


# ------------------------------------------------------------------------------ helpers
def closed_vocabulary(field: FeatureField, space: str) -> list[str] | None:
    """The names an oracle teacher embedded (its label names), or None (open vocabulary)."""
    names: list[str] = []
    for record in field.teachers:
        if record.get("space") != space or record.get("text_encoder"):
            continue
        if not str(record.get("name", "")).startswith("oracle"):
            return None  # a real model's text side: open vocabulary
        labels = record.get("label_names")
        if isinstance(labels, dict):
            names += [str(v) for v in labels.values()]
        elif isinstance(labels, list):
            names += [str(v) for v in labels]
    return list(dict.fromkeys(names)) or None


def _relevancy_of(features: Tensor, head: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    """Relevancy [M] of raw features [M,d] (not pre-normalised), with the head folded into the
    texts (O(M·d·T), never decoding to D channels)."""
    if features.shape[0] == 0:
        return torch.zeros(0)
    norms = decoded_norms(features, head).clamp_min(1e-12)[:, None]  # |W f|
    cos_p = (features @ fold_texts(head, pos.float())) / norms  # [M,P]
    if neg.numel() == 0:
        return torch.sigmoid(TEMPERATURE * cos_p.max(dim=1).values)
    cos_n = (features @ fold_texts(head, neg.float())) / norms  # [M,K]
    margin = cos_p - cos_n.max(dim=1, keepdim=True).values
    return torch.sigmoid(TEMPERATURE * margin.max(dim=1).values)


STATS_SAMPLE = 262_144  # relevancies histogrammed for the threshold and the confidence


def relevancy_stats(rel: Tensor, bins: int = 256) -> tuple[float, float, float]:
    """(automatic threshold, separation, best) of a relevancy vector from ONE histogram over
    [0.5, 1] of (a strided sample of at most STATS_SAMPLE of) its values:
    - the threshold is `auto_threshold`'s (Otsu over the candidates above one half);
    - the separation is Otsu's effectiveness with everything below one half as one lump
      (`otsu_separation`);
    - best is a robust maximum: the mean of the top 0.1% (at least 5) values."""
    rel = rel.reshape(-1)
    n = rel.numel()
    if n == 0:
        return 0.5, 0.0, 0.0
    if n > STATS_SAMPLE:
        rel = rel[:: n // STATS_SAMPLE]
        n = rel.numel()
    hist = torch.histc(rel.float(), bins=bins, min=0.5, max=1.0).double()
    above = float(hist.sum())
    threshold = max(_otsu_from_hist(hist, 0.5, 1.0), 0.5) if above >= 2 else 0.5
    k = min(n, max(5, n // 1000))
    if above >= k:
        counts = hist.flip(0)
        take = torch.minimum(counts, (k - (counts.cumsum(0) - counts)).clamp_min(0))
        centres = (0.5 + 0.5 * (torch.arange(bins, dtype=torch.float64) + 0.5) / bins).flip(0)
        best = float((take * centres).sum() / k)
    else:
        best = float(rel.float().topk(k).values.mean())
    lumped = hist.clone()
    lumped[0] += n - above  # values below one half count at one half
    return threshold, _effectiveness(lumped, 0.5, 1.0), best


def _pick_level(scores: list[float]) -> int:
    best = 0
    for i, s in enumerate(scores):
        if s == s and s > scores[best] + LEVEL_TIE:  # NaN-safe; ties go to the coarser
            best = i
    return best


def otsu_separation(values: Tensor, bins: int = 128, lo: float = 0.5) -> float:
    """Otsu's effectiveness η = σ²_between / σ²_total of the relevancies clamped to [`lo`, 1] at
    Otsu's cut: near 1 for two well separated modes, about 0.64 for one normal mode, 0 for a
    constant. Everything below `lo` (a negative wins there) counts as one lump at `lo`: the lower
    class of a clean answer, so a field whose candidates all sit near 1 still reads as
    separated."""
    values = values.reshape(-1).float().clamp(lo, 1.0)
    if values.numel() < 2:
        return 0.0
    return _effectiveness(torch.histc(values, bins=bins, min=lo, max=1.0).double(), lo, 1.0)


def _effectiveness(hist: Tensor, lo: float, hi: float) -> float:
    total = hist.sum()
    if float(total) < 2:
        return 0.0
    bins = hist.numel()
    centres = lo + (hi - lo) * (torch.arange(bins, dtype=torch.float64) + 0.5) / bins
    mean = (hist * centres).sum() / total
    var = (hist * (centres - mean) ** 2).sum() / total
    if float(var) <= 1e-12:
        return 0.0
    cut = _otsu_from_hist(hist, lo, hi)
    lower = centres < cut
    w0 = hist[lower].sum() / total
    w1 = 1 - w0
    if float(w0) <= 0 or float(w1) <= 0:
        return 0.0
    m0 = (hist[lower] * centres[lower]).sum() / hist[lower].sum()
    m1 = (hist[~lower] * centres[~lower]).sum() / hist[~lower].sum()
    return float(w0 * w1 * (m0 - m1) ** 2 / var)
