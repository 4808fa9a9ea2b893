"""The "Language query" folder: what `scenelab query` does, live on the viewer's scene.

A thin user of the state's `TextQuery` (`ViewerState.text_query()`): per-Gaussian LERF relevancy,
the level that answered (whole / part; a Level dropdown overrides "auto"), an automatic
threshold with a slider to override it, and the confidence — the histogram's separation, then
the multi-view agreement computed in a job. When the answer is not confident nothing is selected
and the panel shows why and which words the field knows. The relevancy is the per-Gaussian value
overlay (heat map); "Select" combines the matches with the state's combine mode. "Within
selection" runs a part query inside the current selection ("handle" within "mug").

A query runs in the callback when it is cheap (the oracle's text side or cached embeddings, and
a scene small enough to score in tens of ms); otherwise in the job runner.

On a NeRF with a feature branch (`fields.nerf.NerfQuery`) a query is a job: it finds the query's
3D region (observed cells whose features answer it: level, threshold, confidence, which the
status reports) and then shows the per-pixel relevancy heat map that the server renders from the
branch for every frame (the View panel's "Relevancy"). Selecting needs Gaussians: convert first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

import editing
from fields import GaussianScene
from fields.features import (
    MissingWeightsError,
    TextQuery,
    TextQueryResult,
    language_space,
    negatives_for,
    split_terms,
)

from ._nerf_view import Relevancy
from ._state import FIELD, NothingSelectedError, ViewerState

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
    tq: TextQuery
    result: TextQueryResult
    agreement: float | None = None
    agreement_pending: bool = False


LEVEL_AUTO = "auto"
AGREEMENT_VIEWS = 6


class QueryPanel:
    def __init__(self, app: ViewerApp) -> None:
        self.app = app
        self.state = app.state
        self.last: _Query | None = None
        self.live = LiveSelection(app.state)
        self._syncing = False
        gui = app.server.gui
        with gui.add_folder("Language query") as self.folder:
            self.text = gui.add_text(
                "Query", "", hint="What to find; several positives separated by commas."
            )
            self.negatives = gui.add_text(
                "Negatives",
                "",
                hint="Extra negatives (comma-separated), besides object, things, stuff, texture.",
            )
            self.level = gui.add_dropdown(
                "Level",
                (LEVEL_AUTO,),
                initial_value=LEVEL_AUTO,
                hint="Which semantic level answers (whole objects or their parts); auto picks "
                "the one that matches best.",
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
        app.state.on_change(lambda kind: self._sync() if kind == FIELD else None)
        self.region = None  # the last NeRF query's `fields.nerf.QueryRegion`
        self._sync()

    # ------------------------------------------------------------------ field
    def sync(self) -> None:
        """Refresh the widgets for what is shown now (Gaussians or a NeRF)."""
        self._sync()

    def _sync(self) -> None:
        nerf = self.app.nerf
        if nerf is not None:
            self._sync_nerf(nerf)
            return
        self.select_button.visible = self.within.visible = True
        field = self.state.current_field()
        space = self.space()
        ok = field is not None and space is not None
        for h in (
            self.text,
            self.negatives,
            self.level,
            self.within,
            self.query_button,
            self.select_button,
        ):
            h.disabled = not ok
        levels = (LEVEL_AUTO, *(field.levels if field is not None else ()))
        if tuple(self.level.options) != levels:
            self.level.options = levels
            if self.level.value not in levels:
                self.level.value = LEVEL_AUTO
        if field is None:
            self.status.content = "Lift or load features to query the scene."
        elif space is None:
            self.status.content = (
                f"The features have no language head (heads: {', '.join(sorted(field.heads))})."
            )
        elif self.last is None:
            self.status.content = f"Ready ({space} space; levels: {', '.join(field.levels)})."

    def _sync_nerf(self, nerf) -> None:
        field = self.state.field if nerf.has_features else None
        space = self.space() if field is not None else None
        ok = field is not None and space is not None
        for h in (self.text, self.negatives, self.level, self.query_button):
            h.disabled = not ok
        self.select_button.visible = self.within.visible = False  # selections need Gaussians
        levels = (LEVEL_AUTO, *(field.levels if field is not None else ()))
        if tuple(self.level.options) != levels:
            self.level.options = levels
        if field is None:
            self.status.content = (
                "This NeRF has no feature branch: add one with `scenelab distill SCENE.nerf "
                "--data DATA` to query it."
            )
        elif space is None:
            self.status.content = (
                f"The features have no language head (heads: {', '.join(sorted(field.heads))})."
            )
        elif self.region is None:
            self.status.content = (
                f"Ready ({space} space; levels: {', '.join(field.levels)}). On a NeRF a query "
                "shows a relevancy heat map; convert to Gaussians to select."
            )

    def space(self) -> str | None:
        field = self.state.field
        return None if field is None else language_space(field)

    # ------------------------------------------------------------------ actions (also for tests)
    def run(
        self,
        text: str | None = None,
        *,
        negatives: str | None = None,
        within: bool | None = None,
        select: bool = False,
        mode: str | None = None,
        level: str | None = None,
    ):
        """Score the query, show its heat map and (with `select`) select the matches; then the
        multi-view agreement as a job. Inline when cheap; else a job (returned)."""
        positives = split_terms(self.text.value if text is None else text)
        if not positives:
            raise ValueError("type what to find (several terms: comma-separated)")
        negs = split_terms(self.negatives.value if negatives is None else negatives)
        if self.app.nerf is not None:
            if select:
                raise ValueError("selections are made of Gaussians: Convert to Gaussians first")
            return self.run_nerf(positives, negs, str(self.level.value if level is None else level))
        snap = self.state.snapshot()
        inside = None
        if self.within.value if within is None else within:
            if snap.n_selected == 0:
                raise NothingSelectedError("a part query searches inside the selection")
            inside = snap.selection
        mode = mode or self.state.combine_mode
        level = str(self.level.value if level is None else level)
        tq = self.state.text_query()
        if tq is None:
            raise ValueError("no features with a language head: lift or load them first")
        threshold = None if self.auto.value else float(self.threshold.value)
        ask = (positives, negs, level, threshold, inside)
        if self.state.text_ready(positives + negatives_for(negs)) and (
            len(snap.scene) <= INLINE_GAUSSIANS
        ):
            self._score(snap.scene, tq, *ask, select, mode)
            return None

        def job(ctx):
            ctx.progress(0.1, "encoding text")
            try:
                tq.encode(positives + negatives_for(negs))
            except MissingWeightsError as e:
                self.status.content = f"**CLIP weights missing.** {e}"
                raise
            ctx.check()
            ctx.progress(0.6, "relevancy")
            self._score(snap.scene, tq, *ask, select, mode)

        return self.app.jobs.submit(f"Query {', '.join(positives)}", job)

    def run_nerf(self, positives: list[str], negatives: list[str], level: str = LEVEL_AUTO):
        """Query the NeRF shown (a job, returned): its 3D region, then the relevancy heat map."""
        nerf = self.app.nerf
        if nerf is None:
            raise ValueError("no NeRF is shown")
        from fields.nerf import NerfQuery

        nq = NerfQuery(nerf, self.state.encode_texts, cameras=self.app.cameras or None)
        what = ", ".join(positives)

        def job(ctx):
            ctx.progress(0.05, "encoding text")
            try:
                pos = self.state.encode_texts(positives)
                neg = self.state.encode_texts(negatives_for(negatives))
            except MissingWeightsError as e:
                self.status.content = f"**CLIP weights missing.** {e}"
                raise
            ctx.check()
            ctx.progress(0.2, "finding the 3D region")
            region = nq.region(positives, negatives, level=level)
            ctx.check()
            answer = region.level or (level if level != LEVEL_AUTO else nq.field.levels[0])

            def score(camera, features, alpha):
                return nq.relevancy(camera, pos, neg, level=answer, features=features, alpha=alpha)

            self.region = region
            self.last = None
            display = self.app.nerf_display
            if display is None or display.scene is not nerf:
                raise RuntimeError("the scene changed while querying; query again")
            display.set_relevancy(Relevancy(what, score), show=bool(self.heatmap.value))
            self.app.view_panel.sync_display()
            self._report_region(what, region)
            return region

        return self.app.jobs.submit(f"Query {what}", job)

    def _report_region(self, what: str, region) -> None:
        if not region.confident:
            self.status.content = (
                f"**{what}**: heat map shown; no confident 3D region ({region.message})"
            )
            return
        self.status.content = (
            f"**{what}**: heat map shown; 3D region of {region.count:,} cells above "
            f"{region.threshold:.3f}, level **{region.level}**. Convert to Gaussians to select."
        )

    def mask_for(self, text: str) -> Tensor:
        """[N] bool: the Gaussians `text` names (empty without a confident match), without
        touching the selection or the heat map. May load a text encoder: call it from a job."""
        tq = self.state.text_query()
        if tq is None:
            raise ValueError("no features with a language head: lift or load them first")
        return tq.mask(text, split_terms(self.negatives.value))

    def _score(self, scene, tq, positives, negs, level, threshold, inside, select, mode) -> None:
        res = tq.query(positives, negs, level=level, threshold=threshold, within=inside)
        q = _Query(scene, tq, res)
        self.last = q
        self.live.reset()
        self._set_slider(res.threshold)
        if self.state.scene is scene:
            # A part query's heat map covers what it searched: zero outside the selection.
            shown = res.relevancy if inside is None else res.relevancy * inside
            self.state.set_values("relevancy", shown)
            self._show_heatmap()
        if select:
            if res.confident:
                self.select(mode)
            elif mode == "replace":
                self.state.clear_selection()  # nothing confident: nothing selected
        self._report()
        if res.confident and res.count:
            self._agreement(q)

    def _agreement(self, q: _Query):
        """The selection's multi-view agreement, as a job (skipped without cameras)."""
        cameras = self.agreement_cameras(q.scene)
        if not cameras:
            return None
        q.agreement_pending = True

        def job(ctx):
            ctx.progress(0.1, f"rendering {len(cameras)} views")
            try:
                q.agreement = q.tq.agreement(q.scene, q.result, cameras)
            finally:
                q.agreement_pending = False
            if self.last is q:
                self._report()
            return q.agreement

        return self.app.jobs.submit("Query agreement", job)

    def agreement_cameras(self, scene: GaussianScene) -> list:
        """The dataset's cameras (at most `AGREEMENT_VIEWS`, spread; moved with the scene when
        it was levelled or rescaled), else an orbit."""
        cams = list(self.app.cameras)
        if cams:
            step = max(1, len(cams) // AGREEMENT_VIEWS)
            cams = cams[::step][:AGREEMENT_VIEWS]
            T = editing.scene_alignment(scene)
            return cams if T is None else [editing.align_camera(c, T) for c in cams]
        try:
            from fields.conventions import orbit_cameras
        except ImportError:
            return []
        if len(scene) == 0:
            return []
        lo, hi = scene.bounds(quantile=0.02 if len(scene) > 100 else 0.0)
        centre = (lo + hi) / 2
        radius = max(float((hi - lo).norm()) / 2, 1e-3)
        azimuths = [2 * math.pi * i / AGREEMENT_VIEWS for i in range(AGREEMENT_VIEWS)]
        return list(
            orbit_cameras(
                centre,
                radius,
                self.app.up,
                azimuths,
                [30.0] * AGREEMENT_VIEWS,
                width=128,
                height=96,
                fov_deg=50.0,
            )
        )

    def select(self, mode: str | None = None) -> int:
        """Make the last query's matches the selection (combined by `mode`)."""
        q = self.last
        if q is None:
            raise ValueError("run a query first")
        if q.scene is not self.state.scene:
            raise ValueError("the scene changed since the query; query again")
        return self.live.apply(q.result.mask, mode or self.state.combine_mode)

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
        q = self.last
        r = q.result
        q.result = q.tq.query(
            r.positives, r.negatives, level=r.level, within=r.within
        )  # the automatic cut again (and its confidence)
        self._set_slider(q.result.threshold)
        if self.live._last is not None and q.scene is self.state.scene:
            self.live.apply(q.result.mask, self.live._mode)
        self._report()

    def _rethreshold(self) -> int:
        q = self.last
        if q is None:
            return 0
        if self.auto.value:
            return q.result.count
        q.result = q.result.rethreshold(float(self.threshold.value))
        if self.live._last is not None and q.scene is self.state.scene:
            self.live.apply(q.result.mask, self.live._mode)
        self._report()
        return q.result.count

    def _show_heatmap(self) -> None:
        view = self.app.view_panel
        display = self.app.nerf_display
        if display is not None:
            if self.heatmap.value and display.relevancy is not None:
                view.set_display("Relevancy")
            elif display.mode == "relevancy":
                view.set_display("Colour")
            return
        has_values = self.state.snapshot().values_name == "relevancy"
        if self.heatmap.value and has_values:
            if view.display.value not in ("Values", "Values (rendered)"):
                view.set_display("Values")
        elif view.display.value in ("Values", "Values (rendered)"):
            view.set_display("Colour")

    def _report(self) -> None:
        q = self.last
        if q is None:
            return
        r = q.result
        what = ", ".join(r.positives)
        if not r.confident:
            hint = f" Try: {', '.join(r.suggestions[:8])}." if r.suggestions else ""
            self.status.content = f"**{what}**: {r.message}{hint}"
            return
        where = " within the selection" if r.within is not None else ""
        agreement = (
            "agreement …"
            if q.agreement_pending
            else f"agreement {q.agreement:.2f}"
            if q.agreement is not None
            else "agreement n/a"
        )
        self.status.content = (
            f"**{what}**: {r.count:,} Gaussians{where} above {r.threshold:.3f} "
            f"({'auto' if self.auto.value else 'manual'}); level **{r.level}**; "
            f"separation {r.separation:.2f}, {agreement}"
        )
