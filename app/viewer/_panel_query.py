"""The "Language query" folder: what `scenelab query` does, live on the viewer's scene.

Per-Gaussian LERF relevancy straight on the Gaussians (`FieldQuery`: |W f_i| cached once per
feature tensor, each query O(N·d)), against the canonical negatives plus the user's; an
automatic (Otsu) threshold with a slider to override it; the relevancy as the per-Gaussian value
overlay (heat map); "Select" makes the thresholded Gaussians the selection with the selection
panel's combine mode. Several positives are comma-separated; "Within selection" runs a part
query inside the current selection ("handle" within "mug").

Text embeddings are cached per string. A query runs in the callback when it is cheap (the
oracle's text side or cached embeddings, and a scene small enough to score in tens of ms);
otherwise — a CLIP text encoder to load, a large scene — in the job runner.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

import editing
from fields import GaussianScene
from fields.features import FieldQuery, QueryResult, auto_threshold, negatives_for
from fields.features._clip import MissingWeightsError

from ._state import NothingSelectedError, ViewerState

if TYPE_CHECKING:
    from ._app import ViewerApp

# Largest scene scored inside a GUI callback: ~1M Gaussians take 30-70 ms per query on one core.
INLINE_GAUSSIANS = 300_000


class LiveSelection:
    """A selection that a panel keeps adjusting (threshold slider, more clicks, granularity):
    combined with what was selected before the first adjustment, and re-combined with that same
    base on every later one — until someone else changes the selection, which starts anew."""

    def __init__(self, state: ViewerState) -> None:
        self.state = state
        self._base: Tensor | None = None
        self._mode = "replace"
        self._last: Tensor | None = None

    def apply(self, mask: Tensor, mode: str) -> int:
        def combine(_scene: GaussianScene, sel: Tensor) -> Tensor:
            fresh = (
                self._last is None
                or self._base is None
                or self._last.shape != sel.shape
                or not torch.equal(self._last, sel)
            )
            if fresh:
                self._base, self._mode = sel, mode
            out = editing.combine(self._base, mask, self._mode)
            self._last = out
            return out

        return self.state.select_with(combine, "replace")

    def reset(self) -> None:
        self._base = self._last = None


@dataclass
class _Query:
    scene: GaussianScene
    positives: list[str]
    negatives: list[str]
    within: Tensor | None
    result: QueryResult


def split_terms(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


class QueryPanel:
    def __init__(self, app: ViewerApp) -> None:
        self.app = app
        self.features = app.features_panel
        self._lock = threading.Lock()
        self._encode_lock = threading.Lock()  # one encoder load, one cache update at a time
        self._field_of_encoder = None
        self._auto_value = 0.5
        self._texts: dict[tuple[str, str], Tensor] = {}  # (space, text) -> [D]
        self._encoder: Callable[[list[str]], Tensor] | None = None
        self._fq: tuple[Tensor, Tensor, FieldQuery] | None = None
        self.last: _Query | None = None
        self.live = LiveSelection(app.state)
        self._syncing = False
        gui = app.server.gui
        with gui.add_folder("Language query"):
            self.text = gui.add_text(
                "Query", "", hint="What to find; several positives separated by commas."
            )
            self.negatives = gui.add_text(
                "Negatives",
                "",
                hint="Extra negatives (comma-separated), besides object, things, stuff, texture.",
            )
            self.within = gui.add_checkbox(
                "Within selection", False, hint="Part query: search only the selected Gaussians."
            )
            self.query_button = gui.add_button("Query", hint="Relevancy heat map only.")
            self.select_button = gui.add_button("Select", hint="Query, then select the matches.")
            self.auto = gui.add_checkbox("Auto threshold", True, hint="Otsu's cut on relevancy.")
            self.threshold = gui.add_slider(
                "Threshold", 0.0, 1.0, 0.001, 0.5, hint="Relevancy cut (moving it overrides auto)."
            )
            self.heatmap = gui.add_checkbox(
                "Heat map", True, hint="Colour splats by relevancy (the View panel's Values)."
            )
            self.status = gui.add_markdown("")
        self.query_button.on_click(app.action("Query")(lambda _e: self.run()))
        self.select_button.on_click(app.action("Select")(lambda _e: self.run(select=True)))
        self.threshold.on_update(app.action("Threshold")(lambda _e: self._on_threshold()))
        self.auto.on_update(app.action("Auto threshold")(lambda _e: self._on_auto()))
        self.heatmap.on_update(app.action("Heat map")(lambda _e: self._show_heatmap()))
        self.features.on_change(self._sync)
        self._sync()

    # ------------------------------------------------------------------ field
    def _sync(self) -> None:
        field = self.features.current()
        space = self.space()
        ok = field is not None and space is not None
        for h in (self.text, self.negatives, self.within, self.query_button, self.select_button):
            h.disabled = not ok
        if field is None:
            self.status.content = "Load or distil features to query the scene."
        elif space is None:
            self.status.content = (
                f"The features have no language head (heads: {', '.join(sorted(field.heads))})."
            )
        elif self.last is None:
            self.status.content = f"Ready ({space} space)."
        with self._lock:
            if self.features.field is not self._field_of_encoder:
                self._field_of_encoder = self.features.field
                self._encoder = None
                self._texts.clear()

    def space(self) -> str | None:
        field = self.features.field
        if field is None:
            return None
        return next((s for s in ("clip", "oracle") if s in field.heads), None)

    def _field_query(self) -> FieldQuery:
        field = self.features.current()
        space = self.space()
        if field is None or space is None:
            raise ValueError("no features with a language head: load or distil them first")
        head = field.head(space)
        with self._lock:
            if self._fq is None or self._fq[0] is not field.features or self._fq[1] is not head:
                self._fq = (field.features, head, FieldQuery(field.features, head))
            return self._fq[2]

    def _cheap_encoder(self) -> bool:
        return self.features.options.text_encoder is not None or self.space() == "oracle"

    def _build_encoder(self) -> Callable[[list[str]], Tensor]:
        if self._encoder is not None:
            return self._encoder
        options, field, space = self.features.options, self.features.field, self.space()
        assert field is not None and space is not None
        if options.text_encoder is not None:
            encoder = options.text_encoder
        elif space == "oracle":
            from fields.features import build_text_encoder

            encoder = build_text_encoder("oracle", field.teachers)
        else:
            from fields.features._clip import ClipTeacher

            teacher = ClipTeacher(
                options.clip_model, options.clip_pretrained, device=options.device
            )
            encoder = teacher.encode_text
        self._encoder = encoder
        return encoder

    def encode(self, texts: list[str]) -> Tensor:
        """[T, D] embeddings, each text encoded once per field."""
        space = str(self.space())
        with self._encode_lock:
            missing = [t for t in dict.fromkeys(texts) if (space, t) not in self._texts]
            if missing:
                out = torch.as_tensor(self._build_encoder()(missing)).detach().float().cpu()
                for t, e in zip(missing, out, strict=True):
                    self._texts[(space, t)] = e
            if not texts:
                return torch.zeros(0, 0)
            return torch.stack([self._texts[(space, t)] for t in texts])

    # ------------------------------------------------------------------ actions (also for tests)
    def run(
        self,
        text: str | None = None,
        *,
        negatives: str | None = None,
        within: bool | None = None,
        select: bool = False,
        mode: str | None = None,
    ):
        """Score the query, show its heat map and (with `select`) select the matches. Inline when
        cheap; else a job (returned)."""
        positives = split_terms(self.text.value if text is None else text)
        if not positives:
            raise ValueError("type what to find (several terms: comma-separated)")
        negs = negatives_for(split_terms(self.negatives.value if negatives is None else negatives))
        snap = self.app.state.snapshot()
        inside = None
        if self.within.value if within is None else within:
            if snap.n_selected == 0:
                raise NothingSelectedError("a part query searches inside the selection")
            inside = snap.selection
        mode = mode or str(self.app.selection_panel.combine.value)
        space = self.space()
        cached = all((str(space), t) in self._texts for t in positives + negs)
        fq = self._field_query()
        if (self._cheap_encoder() or cached) and len(snap.scene) <= INLINE_GAUSSIANS:
            self._score(snap.scene, fq, positives, negs, inside, select, mode)
            return None

        def job(ctx):
            ctx.progress(0.1, "encoding text")
            try:
                self.encode(positives + negs)
            except MissingWeightsError as e:
                self.status.content = f"**CLIP weights missing.** {e}"
                raise
            ctx.check()
            ctx.progress(0.6, "relevancy")
            self._score(snap.scene, fq, positives, negs, inside, select, mode)

        return self.app.jobs.submit(f"Query {', '.join(positives)}", job)

    def mask_for(self, text: str) -> Tensor:
        """[N] bool: the Gaussians `text` names (automatic threshold), without touching the
        selection or the heat map — for other panels' targets. May load a text encoder: call it
        from a job."""
        positives = split_terms(text)
        if not positives:
            raise ValueError("type what to find (several terms: comma-separated)")
        negs = negatives_for(split_terms(self.negatives.value))
        fq = self._field_query()
        rel = fq.relevancy(self.encode(positives), self.encode(negs))
        return rel > auto_threshold(rel)

    def _score(self, scene, fq, positives, negs, inside, select: bool, mode: str) -> None:
        pos_emb, neg_emb = self.encode(positives), self.encode(negs)
        rel = fq.relevancy(pos_emb, neg_emb)
        stats = rel if inside is None else rel[inside]
        auto = auto_threshold(stats)
        thr = auto if self.auto.value else float(self.threshold.value)
        res = QueryResult(mask=self._mask(rel, thr, inside), relevancy=rel, threshold=thr)
        self.last = _Query(scene, positives, negs, inside, res)
        self._auto_value = auto
        self.live.reset()
        self._set_slider(thr)
        if self.app.state.scene is scene:
            self.app.state.set_values("relevancy", rel)
            self._show_heatmap()
        if select:
            self.select(mode)
        self._report()

    @staticmethod
    def _mask(rel: Tensor, threshold: float, inside: Tensor | None) -> Tensor:
        mask = rel > threshold
        return mask & inside if inside is not None else mask

    def select(self, mode: str | None = None) -> int:
        """Make the last query's matches the selection (combined by `mode`)."""
        q = self.last
        if q is None:
            raise ValueError("run a query first")
        if q.scene is not self.app.state.scene:
            raise ValueError("the scene changed since the query; query again")
        mode = mode or str(self.app.selection_panel.combine.value)
        return self.live.apply(q.result.mask, mode)

    def set_threshold(self, value: float) -> int:
        """Override the threshold; re-applies a selection made by Select. Returns the matches."""
        self.auto.value = False
        self._set_slider(value)
        return self._rethreshold()

    # ------------------------------------------------------------------ widgets
    def _set_slider(self, value: float) -> None:
        self._syncing = True
        try:
            self.threshold.value = round(float(value), 3)
        finally:
            self._syncing = False

    def _on_threshold(self) -> None:
        if self._syncing:
            return
        if self.auto.value:
            self._syncing = True
            try:
                self.auto.value = False
            finally:
                self._syncing = False
        self._rethreshold()

    def _on_auto(self) -> None:
        if self._syncing or not self.auto.value or self.last is None:
            return
        self._set_slider(self._auto_value)
        self._rethreshold()

    def _rethreshold(self) -> int:
        q = self.last
        if q is None:
            return 0
        thr = self._auto_value if self.auto.value else float(self.threshold.value)
        q.result = QueryResult(
            self._mask(q.result.relevancy, thr, q.within), q.result.relevancy, thr
        )
        if self.live._last is not None and q.scene is self.app.state.scene:
            self.live.apply(q.result.mask, self.live._mode)
        self._report()
        return int(q.result.mask.sum())

    def _show_heatmap(self) -> None:
        view = self.app.view_panel
        has_values = self.app.state.snapshot().values_name == "relevancy"
        if self.heatmap.value and has_values:
            if view.display.value not in ("Values", "Values (rendered)"):
                view.set_display("Values")
        elif view.display.value in ("Values", "Values (rendered)"):
            view.set_display("Colour")

    def _report(self) -> None:
        q = self.last
        if q is None:
            return
        n = int(q.result.mask.sum())
        where = " within the selection" if q.within is not None else ""
        self.status.content = (
            f"**{', '.join(q.positives)}**: {n:,} Gaussians{where} above "
            f"{q.result.threshold:.3f} ({'auto' if self.auto.value else 'manual'})"
        )
