"""Headless tests of the feature panels (features, language query, click segmentation): a real
viewer in-process, an oracle-style field built directly from one-hot label embeddings, and a
tiny random-weight SAM for the click pipeline."""

from __future__ import annotations

import pytest
import torch

from app.viewer import ViewerApp, ViewerConfig
from app.viewer._jobs import JobStatus
from app.viewer._panel_features import FeatureOptions
from fields import save_scene
from fields.features import FeatureField, FieldMismatchError
from fields.features._oracle import name_embedding

from .conftest import look_camera, project

NAMES = {0: "table", 1: "mug", 2: "bowl"}
DIM = 64  # the oracle space's dimension (512 for real fields; small keeps the test fast)


def oracle_field(scene, *, noise: float = 0.05, sam: bool = True, seed: int = 0) -> FeatureField:
    """What a well-distilled oracle field looks like: each Gaussian's feature is its label's
    one-hot (plus noise), the oracle head maps one-hots to the labels' name embeddings."""
    gen = torch.Generator().manual_seed(seed)
    labels = scene.extras["label"].long()
    c = len(NAMES)
    features = torch.nn.functional.one_hot(labels, c).float()
    features = features + noise * torch.randn(features.shape, generator=gen).abs()
    head = torch.stack([name_embedding(NAMES[k], DIM, 0) for k in range(c)], dim=1)  # [D,c]
    heads = {"oracle": head}
    if sam:
        heads["sam"] = torch.randn(256, c, generator=gen)
    teachers = [{"name": "oracle", "space": "oracle", "dim": DIM, "seed": 0}]
    return FeatureField(features, heads, teachers=teachers, meta={"label_names": NAMES})


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return int((a & b).sum()) / max(1, int((a | b).sum()))


@pytest.fixture
def make_viewer(scene, tmp_path):
    apps = []

    def make(**options) -> ViewerApp:
        src = save_scene(scene, tmp_path / "input.ply", overwrite=True)
        app = ViewerApp(
            scene,
            ViewerConfig(port=0, root=tmp_path),
            source=src,
            features=FeatureOptions(**options),
        )
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.stop()


def tiny_decoder():
    pytest.importorskip("segment_anything")
    from fields.features._sam import SamDecoder
    from tests.fields.test_teachers import tiny_sam

    return SamDecoder(tiny_sam())


# ---------------------------------------------------------------------- language query
def test_query_select_threshold_positives_and_parts(make_viewer, scene):
    app = make_viewer(field=oracle_field(scene))
    qp = app.query_panel
    labels = scene.extras["label"]
    mug, bowl = labels == 1, labels == 2
    assert app.features_panel.current() is not None and not qp.select_button.disabled

    qp.text.value = "mug"
    qp.run(select=True)  # what the Select button does
    assert iou(app.state.selection, mug) > 0.8
    snap = app.state.snapshot()
    assert snap.values_name == "relevancy" and snap.values.shape == (len(scene),)
    assert snap.values[mug].mean() > snap.values[~mug].mean() + 0.3
    assert app.state.color_mode == "values"  # the heat map is the value overlay
    assert 0.5 <= qp.threshold.value < 1.0 and qp.auto.value

    # The slider overrides the automatic cut; the selection follows, monotonically.
    counts = []
    for t in (0.3, 0.5, 0.8, 0.95, 0.999):
        counts.append(qp.set_threshold(t))
        assert app.state.n_selected == counts[-1]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    assert not qp.auto.value
    qp.set_threshold(0.3)
    assert app.state.n_selected == counts[0] and bool((app.state.selection | ~mug).all())
    qp.auto.value = True  # back to the automatic threshold
    assert iou(app.state.selection, mug) > 0.8

    # Several positives select both objects.
    qp.run("mug, bowl", select=True)
    assert iou(app.state.selection, mug | bowl) > 0.8

    # Part query: inside the current selection only, never outside it.
    before = app.state.selection.clone()
    qp.run("bowl", within=True, select=True, mode="replace")
    after = app.state.selection
    assert bool((after <= before).all()) and iou(after, bowl) > 0.8

    # Select combines with the selection panel's modes.
    app.state.select(mug)
    qp.run("bowl", within=False, select=True, mode="add")
    assert iou(app.state.selection, mug | bowl) > 0.8
    qp.run("bowl", select=True, mode="subtract")
    assert iou(app.state.selection, mug) > 0.8

    # Heat map off: back to colours; the relevancy values stay for the View panel.
    qp.heatmap.value = False
    assert app.state.color_mode == "rgb" and app.state.snapshot().values_name == "relevancy"


def test_query_survives_edits_and_text_is_encoded_once(make_viewer, scene):
    calls = []
    field = oracle_field(scene)
    from fields.features._oracle import OracleText

    text = OracleText(DIM, 0)

    def encoder(texts):
        calls.append(list(texts))
        return text.encode_text(texts)

    app = make_viewer(field=field, text_encoder=encoder)
    qp = app.query_panel
    qp.run("mug")
    qp.run("mug")
    assert sum(len(c) for c in calls) == 5  # "mug" + 4 canonical negatives, once each
    app.state.select(scene.extras["label"] == 2)
    app.edit_panel.delete()  # features follow the Gaussians (scene extras)
    qp.run("mug", select=True, mode="replace")
    labels = app.state.scene.extras["label"]
    assert iou(app.state.selection, labels == 1) > 0.8
    assert app.history_panel.undo() and app.history_panel.undo()  # undo the delete, the attach
    assert app.features_panel.current() is None and qp.select_button.disabled


def test_clip_head_without_weights_says_so(make_viewer, scene, tmp_path):
    field = oracle_field(scene, sam=False)
    field = FeatureField(
        field.features, {"clip": field.heads["oracle"]}, teachers=[{"space": "clip"}]
    )
    app = make_viewer(field=field, clip_pretrained=str(tmp_path / "absent.bin"))
    pytest.importorskip("open_clip")
    job = app.query_panel.run("mug", select=True)
    assert job is not None and job.wait(60)
    assert job.status is JobStatus.FAILED
    assert "--clip-pretrained" in app.query_panel.status.content
    assert app.state.n_selected == 0


# ---------------------------------------------------------------------- click segmentation
def test_click_segmentation_with_an_injected_sam(make_viewer, scene):
    app = make_viewer(field=oracle_field(scene, noise=0.3), sam_decoder=tiny_decoder())
    cp = app.click_panel
    assert cp.unavailable() is None and not cp.mode.disabled
    app.selection_panel.set_tool("Click")
    cp.set_mode("positive")
    assert app.selection_panel.active_tool == "Navigate"  # the pointer is the click panel's

    cam = look_camera()
    u, v = project(cam, (0.4, 0.0, 0.2))  # the red blob ("mug")
    job = cp.add_point(cam, u, v)
    assert job.wait(60) and job.status is JobStatus.DONE, job.error
    assert cp.lift is not None and cp.lift.mask2d.shape == (cam.height, cam.width)
    first = app.state.selection.clone()
    assert first.any()

    sizes = [cp.regrow(g) for g in (0.0, 0.5, 1.0)]
    assert sizes[0] <= sizes[1] <= sizes[2] and sizes[0] < sizes[2]
    assert app.state.n_selected == sizes[2]

    # A negative click in the same view refines the same prompt set; a box prompt too.
    job = cp.add_point(cam, *project(cam, (-0.4, 0.0, 0.2)), positive=False)
    assert job.wait(60) and job.status is JobStatus.DONE, job.error
    assert len(cp.prompts.points) == 2 and cp.prompts.labels == [1, 0]
    job = cp.set_box(cam, (u - 20, v - 20, u + 20, v + 20))
    assert job.wait(60) and job.status is JobStatus.DONE, job.error
    cp.clear()
    assert cp.prompts is None

    # Picking a selection tool takes the pointer back.
    app.selection_panel.set_tool("Rectangle")
    assert cp.mode.value == "off"


def test_without_sam_the_panel_says_so_and_selection_tools_work(make_viewer, scene, tmp_path):
    pytest.importorskip("segment_anything")
    app = make_viewer(field=oracle_field(scene), sam_checkpoint=tmp_path / "absent.pth")
    cp = app.click_panel
    assert "--sam-checkpoint" in cp.status.content and "absent.pth" in cp.status.content
    assert cp.mode.disabled and cp.granularity.disabled
    with pytest.raises(RuntimeError, match="SAM"):
        cp.set_mode("positive")
    # the model-free tools keep working
    cam = look_camera()
    u, v = project(cam, (0.4, 0.0, 0.2))
    n = app.selection_panel.select_rect(cam, (u - 5, v - 5, u + 5, v + 5))
    assert n > 0 and (scene.extras["label"][app.state.selection] == 1).all()
    # and so does the language query
    app.query_panel.run("bowl", select=True, mode="replace")
    assert iou(app.state.selection, scene.extras["label"] == 2) > 0.8


# ---------------------------------------------------------------------- features panel
def test_load_save_and_distil(make_viewer, scene, tmp_path):
    app = make_viewer()
    fp = app.features_panel
    assert fp.current() is None and app.query_panel.select_button.disabled
    with pytest.raises(ValueError, match="dataset"):
        fp.lift("oracle", "optimise")  # optimising needs a dataset; lifting does not
    oracle_field(scene).save(tmp_path / "f.features.safetensors")
    fp.load("f.features.safetensors")
    assert fp.current() is not None and not app.query_panel.select_button.disabled
    out = fp.save("copy.features.safetensors")
    assert out.is_file()
    before = out.read_bytes()
    with pytest.raises(FileExistsError):
        fp.save("copy.features.safetensors")  # no browser to ask: refused, file untouched
    assert out.read_bytes() == before
    client = _ModalClient()
    assert fp.save("copy.features.safetensors", client=client) is None  # asks first
    assert client.asked == ["Overwrite?"] and out.read_bytes() == before
    out.write_bytes(b"stale")
    client.buttons["Overwrite"]()  # the user confirms
    assert out.read_bytes() != b"stale" and fp.load("copy.features.safetensors") is not None
    with pytest.raises(ValueError):
        fp.load("../outside.safetensors")


class _ModalClient:
    """Just enough of a viser client for `confirm_overwrite`: records the modal and its
    buttons' click handlers."""

    def __init__(self) -> None:
        import contextlib
        import types

        self.asked: list[str] = []
        self.buttons: dict = {}
        outer = self

        class _Button:
            def __init__(self, label: str) -> None:
                self.label = label

            def on_click(self, fn):
                outer.buttons[self.label] = lambda: fn(types.SimpleNamespace(client=outer))
                return fn

        @contextlib.contextmanager
        def add_modal(title: str):
            outer.asked.append(title)
            yield types.SimpleNamespace(close=lambda: None)

        self.gui = types.SimpleNamespace(
            add_modal=add_modal,
            add_markdown=lambda *a, **k: None,
            add_button=lambda label, **k: _Button(label),
        )


def test_view_and_demo_take_the_feature_options(tmp_path):
    import argparse

    from app.commands import demo, view
    from app.viewer._panel_features import sam_model_type
    from fields.features._clip import DEFAULT_PRETRAINED

    field = tmp_path / "f.features.safetensors"
    field.write_bytes(b"")
    p = argparse.ArgumentParser()
    view.add_arguments(p)
    argv = ["s.ply", "--features", str(field), "--sam-checkpoint", "sam_vit_b_01ec64.pth"]
    args = p.parse_args([*argv, "--clip-model", "ViT-L-14"])
    options = view.feature_options(args)
    assert options.features == field and options.clip_model == "ViT-L-14"
    assert options.clip_pretrained == DEFAULT_PRETRAINED
    assert sam_model_type(options, None) == "vit_b"
    d = argparse.ArgumentParser()
    demo.add_arguments(d)
    args = d.parse_args(["--features", str(tmp_path / "missing.safetensors")])
    with pytest.raises(FileNotFoundError, match="missing"):
        view.feature_options(args)


@pytest.fixture(scope="module")
def world_data(tmp_path_factory):
    from fields import load_dataset
    from fields.synthetic import WorldConfig, make_world, write_world

    world = make_world(7, config=WorldConfig.preview())
    root = write_world(world, tmp_path_factory.mktemp("world") / "w7")
    return world, load_dataset(root)


def test_distil_with_the_oracle_as_a_job_then_query(world_data, tmp_path):
    world, ds = world_data
    app = ViewerApp(world.scene, ViewerConfig(port=0, root=tmp_path), dataset=ds)
    try:
        fp = app.features_panel
        assert not fp.lift_button.disabled
        cancelled = fp.distil("oracle", steps=100_000)
        job = fp.distil("oracle", steps=60)
        assert app.jobs.cancel(cancelled)
        assert job.wait(300) and job.status is JobStatus.DONE, job.error
        assert cancelled.status is JobStatus.CANCELLED
        assert fp.current() is not None and "oracle" in fp.field.heads
        steps, _ = app.state.history_steps()
        assert steps == ["open", "optimise oracle"]
        labels = world.scene.extras["label"]
        k = max(world.label_names)  # an object, not the table
        app.query_panel.run(world.label_names[k], select=True)
        assert iou(app.state.selection, labels == k) > 0.8
    finally:
        app.stop()


def test_distil_after_a_level_pairs_the_photos_with_the_file_frame(world_data, tmp_path):
    """A scene levelled (or rescaled) since its dataset was shot is distilled in the dataset's
    frame (`editing.in_file_frame`): the field is as good as on the unmoved scene, and the
    query cameras follow the scene. Pairing the photos with the moved splats would not be."""
    import math

    import editing

    world, ds = world_data
    c, s = 1.5 * math.cos(0.5), 1.5 * math.sin(0.5)  # a rotation about y, a scale of 1.5
    T = [[c, 0, s, 0.2], [0, 1.5, 0, -0.1], [-s, 0, c, 0.3], [0, 0, 0, 1]]
    moved = editing.align_scene(world.scene, T)
    app = ViewerApp(moved, ViewerConfig(port=0, root=tmp_path), dataset=ds, cameras=ds.cameras)
    try:
        job = app.features_panel.distil("oracle", steps=60)
        assert job.wait(300) and job.status is JobStatus.DONE, job.error
        labels = world.scene.extras["label"]
        k = max(world.label_names)
        app.query_panel.run(world.label_names[k], select=True)
        assert iou(app.state.selection, labels == k) > 0.8
        cams = app.query_panel.agreement_cameras(app.state.scene)
        want = editing.align_camera(ds.cameras[0], T)
        assert torch.allclose(cams[0].viewmat, want.viewmat, atol=1e-4)
    finally:
        app.stop()


# ---------------------------------------------------------------------- browser
@pytest.mark.browser
def test_query_in_the_browser_highlights_the_selection(make_viewer, scene, browser):
    import re
    import time

    from ._browser import (
        grab,
        open_page,
        orange_pixels,
        poll,
        red_pixels,
        saturated_pixels,
        wait_until,
    )

    app = make_viewer(field=oracle_field(scene), sam_decoder=tiny_decoder())
    page = open_page(browser, app.url)
    img = poll(page, lambda im: red_pixels(im) > 2000, what="splats")
    assert orange_pixels(img) < 50
    coloured = saturated_pixels(img)
    box = page.locator("label", has_text=re.compile(r"^Query$")).locator(
        "xpath=ancestor::div[contains(@class, 'mantine-Flex-root')][1]//input"
    )
    box.fill("mug")
    box.press("Enter")
    wait_until(lambda: app.query_panel.text.value == "mug", what="query text")
    page.get_by_role("button", name="Select", exact=True).click()
    wait_until(lambda: app.state.n_selected > 0, what="query selection")
    mug = scene.extras["label"] == 1
    assert iou(app.state.selection, mug) > 0.8
    # The heat map: relevancy through the value overlay (turbo: the floor turns blue).
    poll(page, lambda im: saturated_pixels(im) > 3 * coloured, what="heat map")
    grab(page, "20_query_heatmap")
    page.get_by_role("checkbox", name="Heat map").click()
    wait_until(lambda: app.state.color_mode == "rgb", what="colours back")
    poll(page, lambda im: orange_pixels(im) > 300, what="selection highlight")
    grab(page, "21_query_selection")

    # Click segmentation through viser's scene click: prompt mode, then click the mug.
    app.state.clear_selection()
    page.get_by_role("combobox", name="Prompt").click()
    page.get_by_role("option", name="positive").click()
    wait_until(lambda: app.click_panel._mode == "positive", what="prompt mode")
    time.sleep(0.5)  # the pointer registration reaches the browser
    from app.viewer._camera import client_camera

    from .conftest import project

    client = next(iter(app.server.get_clients().values()))
    u, v = project(client_camera(client.camera), (0.4, 0.0, 0.2))
    page.mouse.click(u, v)
    wait_until(lambda: app.click_panel.lift is not None, timeout=60, what="click lift")
    assert app.jobs.wait_idle(60)
    assert app.click_panel.prompts is not None and app.click_panel.prompts.labels == [1]
    if app.state.n_selected:
        poll(page, lambda im: orange_pixels(im) > 100, what="click selection")
    grab(page, "22_click_segmentation")
    page.close()


# ---------------------------------------------------------------------- levels, confidence
@pytest.fixture(scope="module")
def part_world():
    from fields.synthetic import WorldConfig, make_world

    world = make_world(0, config=WorldConfig.preview())
    assert "mug" in world.scene.meta["label_names"].values() and world.scene.meta["part_names"]
    return world


@pytest.fixture(scope="module")
def lifted(part_world):
    """The world's oracle field lifted dataset-free (levels whole / part), as the demo does."""
    from fields.features import LiftConfig, SceneOracleTeacher, lift, scene_views

    teacher = SceneOracleTeacher(part_world.scene)
    views = scene_views(part_world.scene, [teacher])
    return lift(part_world.scene, views, [teacher], LiftConfig())


@pytest.mark.slow  # the lift: ~15 s on 2 shared cores
def test_part_query_reports_the_part_level_and_unknown_words_select_nothing(
    part_world, lifted, tmp_path
):
    scene = part_world.scene
    app = ViewerApp(scene, ViewerConfig(port=0, root=tmp_path), features=FeatureOptions())
    try:
        app.state.set_field(lifted, "features")
        qp = app.query_panel
        assert tuple(qp.level.options) == ("auto", "whole", "part")
        names = {v: int(k) for k, v in scene.meta["label_names"].items()}
        mug = scene.extras["label"].long() == names["mug"]
        qp.run("mug", select=True, mode="replace")
        assert qp.last.result.level == "whole" and iou(app.state.selection, mug) > 0.8
        assert "level **whole**" in qp.status.content and "separation" in qp.status.content

        handle = mug & (scene.extras["part"].long() >= 0)
        assert handle.any()
        qp.run("handle", within=True, select=True, mode="replace")
        assert qp.last.result.level == "part"  # the part level answered
        assert "level **part**" in qp.status.content
        assert iou(app.state.selection, handle) > 0.6  # a thin part: lifted edges blur

        qp.run("zebra", within=False, select=True, mode="replace")
        assert not qp.last.result.confident and app.state.n_selected == 0
        assert "No confident match" in qp.status.content and "mug" in qp.status.content
    finally:
        app.stop()


def test_loading_a_field_of_another_scene_is_refused(make_viewer, scene, tmp_path):
    from .conftest import blob_scene

    other = blob_scene(seed=1)  # same count, other geometry
    assert len(other) == len(scene)
    oracle_field(other).bind(other).save(tmp_path / "other.features.safetensors")
    app = make_viewer()
    with pytest.raises(FieldMismatchError, match="another scene"):
        app.features_panel.load("other.features.safetensors")
    assert app.state.current_field() is None and "Not loaded" in app.features_panel.status.content
    assert app.state.history_steps()[0] == ["open"]
    # Saved from this scene (bound to it), it loads.
    app.state.set_field(oracle_field(scene), "features")
    out = app.features_panel.save("mine.features.safetensors")
    app.history_panel.undo()
    assert app.features_panel.load(out.name) is not None


@pytest.mark.slow
def test_the_demo_lifts_its_oracle_field_on_open(part_world, tmp_path, monkeypatch):
    """The demo opens with its field lifted and no error notification (it used to greet a new
    user with "Load features failed … No such file"); the lift's own "done" note is green."""
    notes = []
    monkeypatch.setattr(ViewerApp, "notify", lambda self, *a, **k: notes.append((a, k)))
    scene = part_world.scene
    app = ViewerApp(
        scene, ViewerConfig(port=0, root=tmp_path), features=FeatureOptions(lift_on_open=True)
    )
    try:
        assert app.jobs.wait_idle(300)
        assert [a for a, k in notes if k.get("color") != "green"] == [], notes
        field = app.state.current_field()
        assert field is not None and field.levels == ("whole", "part")
        assert "level(s)" in app.features_panel.status.content  # no error, the field's summary
        qp = app.query_panel
        qp.run("mug", select=True, mode="replace")
        qp.run("handle", within=True, select=True, mode="replace")
        assert qp.last.result.level == "part" and app.state.n_selected > 0
    finally:
        app.stop()
