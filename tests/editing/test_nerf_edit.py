"""`editing.nerf_text_edit`: SDS/DDS edits of a NeRF inside a region under the toy denoiser
(`editing.score_distillation.toy_distiller`, whose answer is known). Pixels whose rays never
cross the region must render bit-identically; the input scene must stay untouched.

One small NeRF (a synthetic tabletop, 16 views at 48x36, 300 steps: ~22 dB held-out) is shared
by the module; edits run a handful of steps at 32x32."""

from __future__ import annotations

import copy

import pytest
import torch

from editing import NerfEditConfig, nerf_edit_views, nerf_region, nerf_text_edit
from fields import load_dataset
from fields.nerf import (
    EditedNerfField,
    MarchSettings,
    NerfModelConfig,
    NerfScene,
    NerfTrainConfig,
    NerfTrainer,
    QueryRegion,
    camera_rays,
    render_nerf,
)
from fields.synthetic import WorldConfig, make_world, write_world

toy = pytest.importorskip("editing.score_distillation")

pytestmark = pytest.mark.slow  # one NeRF trained for the module (~20 s)

SIZE = 32
SMALL = NerfModelConfig(
    levels=6, log2_table=14, max_res=64, occupancy_res=32, hidden=32, color_hidden=32
)
GREY, GREEN = (0.5, 0.5, 0.5), (0.15, 0.8, 0.2)


def solid(rgb, size: int = SIZE) -> torch.Tensor:  # [3,size,size]
    return torch.tensor(rgb, dtype=torch.float32)[:, None, None].expand(3, size, size).clone()


@pytest.fixture(scope="module")
def world():
    return make_world(0, config=WorldConfig.preview(n_objects=(3, 3)))


@pytest.fixture(scope="module")
def nerf(world, tmp_path_factory) -> NerfScene:
    root = tmp_path_factory.mktemp("nerf_edit") / "data"
    write_world(world, root, n_views=16, width=48, height=36)
    # A box around the table top (the cameras stay outside it) and coarse steps: fast to train.
    cfg = NerfTrainConfig(
        steps=300, model=SMALL, target_samples=1 << 14, bound="box", box_radius=0.62
    )
    trainer = NerfTrainer(load_dataset(root), cfg)
    trainer.model.march = MarchSettings.for_box(trainer.model.box, steps_across=128)
    trainer.run()
    return trainer.scene(final=True)


@pytest.fixture(scope="module")
def box(world) -> tuple[torch.Tensor, torch.Tensor]:
    """A world box around the first object (its footprint and height, a little margin)."""
    obj = world.objects[0]
    p = torch.tensor(obj.position, dtype=torch.float32)
    r = obj.footprint_radius + 0.02
    h = float(max(obj.dimensions)) + 0.02
    return p - torch.tensor([r, r, 0.0]), p + torch.tensor([r, r, h])


def params(scene: NerfScene) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in scene.field.state_dict().items()}


def crossing(scene: NerfScene, region: QueryRegion, camera) -> torch.Tensor:
    """[H,W] bool, by brute force: pixels whose ray has a marched sample within half a voxel
    (per axis) of a set voxel's centre (box mode: the voxel's cube)."""
    o, d, _ = camera_rays(camera)
    smp = scene.march_rays(o, d)
    pos = o[smp.ray_ids] + smp.t[:, None] * d[smp.ray_ids]
    half = scene.box.radius / region.resolution
    inside = torch.zeros(pos.shape[0], dtype=torch.bool)
    for c in region.centers:
        inside |= ((pos - c).abs() <= half).all(-1)
    hit = torch.zeros(o.shape[0], dtype=torch.bool)
    hit[smp.ray_ids[inside]] = True
    return hit.reshape(camera.height, camera.width)


def config(**changes) -> NerfEditConfig:
    base = {"prompt": "a green thing", "steps": 12, "size": SIZE, "views": 6, "lr": 2e-2}
    return NerfEditConfig(**{**base, **changes})


def dds_toy():
    return toy.toy_distiller(
        solid(GREEN), "a green thing", source=solid(GREY), source_prompt="a thing"
    )


@pytest.fixture(scope="module")
def dds_edit(nerf, box):
    before = params(nerf)
    edited = nerf_text_edit(nerf, box, dds_toy(), config(method="dds", source_prompt="a thing"))
    return before, edited


def test_dds_changes_only_pixels_whose_rays_cross_the_region(nerf, box, dds_edit):
    before, edited = dds_edit
    region = nerf_region(nerf, box)
    assert isinstance(edited.field, EditedNerfField) and len(edited.field.edits) == 1
    cams = nerf_edit_views(nerf, box, config())[:3]
    changed_inside = 0
    for cam in cams:
        a = render_nerf(nerf, cam).rgb
        b = render_nerf(edited, cam).rgb
        cross = crossing(nerf, region, cam)
        assert bool(cross.any()) and not bool(cross.all())
        assert torch.equal(a[~cross], b[~cross]), "a pixel the region never reaches changed"
        diff = (b - a)[cross]
        changed_inside += int((diff.abs().amax(-1) > 0.02).sum())
        # DDS moves by target - source: green up, red and blue down.
        mean = diff.mean(0)
        assert float(mean[1]) > 0.0 and float(mean[0]) < 0.0
    assert changed_inside > 20
    # The input is untouched: same parameters, no edits, still a plain field.
    assert type(nerf.field) is not EditedNerfField
    after = params(nerf)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # The edited field's frozen part is the input's; only the edit's MLP moved.
    state = edited.field.state_dict()
    for k, v in before.items():
        assert torch.equal(state[k], v), k
    assert edited.field.edits[0].voxels.equal(region.voxels)
    assert not any(p.requires_grad for p in edited.field.parameters())


def test_sds_pulls_the_region_towards_the_target(nerf, box):
    edited = nerf_text_edit(nerf, box, toy.toy_distiller(solid(GREEN)), config(method="sds"))
    region = nerf_region(nerf, box)
    cam = nerf_edit_views(nerf, box, config())[0]
    a, b = render_nerf(nerf, cam).rgb, render_nerf(edited, cam).rgb
    cross = crossing(nerf, region, cam)
    green = torch.tensor(GREEN)
    err_a = (a[cross] - green).norm(dim=-1).mean()
    err_b = (b[cross] - green).norm(dim=-1).mean()
    assert float(err_b) < float(err_a) - 0.05
    assert torch.equal(a[~cross], b[~cross])


def test_identical_prompts_with_dds_change_next_to_nothing(nerf, box):
    distiller = toy.toy_distiller(solid(GREEN), "a thing", source=solid(GREY), source_prompt="x")
    same = config(prompt="x", source_prompt="x", method="dds", steps=4)
    edited = nerf_text_edit(nerf, box, distiller, same)
    cam = nerf_edit_views(nerf, box, config())[0]
    a, b = render_nerf(nerf, cam).rgb, render_nerf(edited, cam).rgb
    assert float((a - b).abs().max()) < 0.02


def test_density_edits_keep_the_outside_identical(nerf, box):
    edited = nerf_text_edit(
        nerf, box, toy.toy_distiller(solid(GREEN)), config(steps=4, density=True)
    )
    assert edited.field.edits[0].density_mlp is not None
    region = nerf_region(nerf, box)
    # The region's cells are marched now (matter may grow there); elsewhere the grid is the same.
    assert bool((edited.occupancy | ~nerf.occupancy).all())
    cam = nerf_edit_views(nerf, box, config())[1]
    a, b = render_nerf(nerf, cam).rgb, render_nerf(edited, cam).rgb
    cross = crossing(edited, region, cam)
    # Exact here; close (not equal) allowed since the colour MLP sees other batches now.
    assert torch.allclose(a[~cross], b[~cross], atol=1e-6)


def test_edits_stack_and_the_later_one_starts_from_what_renders(nerf, box, dds_edit):
    _, first = dds_edit
    # A zero learning rate: the second edit must render exactly what the first did.
    again = nerf_text_edit(first, box, dds_toy(), config(steps=2, lr=0.0))
    assert len(again.field.edits) == 2 and len(first.field.edits) == 1
    cam = nerf_edit_views(nerf, box, config())[2]
    assert torch.equal(render_nerf(first, cam).rgb, render_nerf(again, cam).rgb)
    assert [e["prompt"] for e in again.meta["edits"]] == ["a green thing", "a green thing"]


def test_progress_previews_and_stopping(nerf, box):
    calls, previews = [], []
    nerf_text_edit(
        nerf,
        box,
        toy.toy_distiller(solid(GREEN)),
        config(method="sds", steps=7, preview_every=3),
        on_progress=lambda *a: calls.append(a),
        preview=previews.append,
    )
    assert [c[0] for c in calls] == list(range(1, 8)) and {c[1] for c in calls} == {7}
    assert len(previews) == 4  # steps 1, 3, 6 and the last
    assert all(isinstance(p, NerfScene) for p in previews)
    assert previews[0].field is not previews[-1].field  # snapshots, not the live scene
    done = []
    nerf_text_edit(
        nerf,
        box,
        toy.toy_distiller(solid(GREEN)),
        config(method="sds", steps=50),
        on_progress=lambda *a: done.append(a),
        should_stop=lambda: len(done) >= 3,
    )
    assert len(done) == 3


def test_bad_regions_are_clear_errors(nerf, box):
    cfg = config()
    distiller = dds_toy()
    with pytest.raises(ValueError, match="lo <= hi"):
        QueryRegion.from_box(nerf, box[1], box[0])
    far = nerf.box.center[0] + 10 * nerf.box.radius
    empty = QueryRegion.from_box(nerf, (far, far, far), (far + 1, far + 1, far + 1))
    assert empty.empty
    with pytest.raises(ValueError, match="region is empty"):
        nerf_text_edit(nerf, empty, distiller, cfg)
    with pytest.raises(ValueError, match="region is empty"):
        nerf_text_edit(nerf, ((far,) * 3, (far + 1,) * 3), distiller, cfg)
    # Voxels in empty air: nothing there for colour to act on.
    lo, hi = box
    air = QueryRegion.from_box(nerf, lo + torch.tensor([0, 0, 0.3]), hi + torch.tensor([0, 0, 0.3]))
    assert not air.empty
    with pytest.raises(ValueError, match="no edit view sees anything"):
        nerf_text_edit(nerf, air, distiller, cfg)
    other = copy.deepcopy(nerf)
    other.field.box = type(nerf.box)(nerf.box.center, nerf.box.radius * 2, nerf.box.mode)
    with pytest.raises(ValueError, match="another NeRF"):
        nerf_text_edit(other, nerf_region(nerf, box), distiller, cfg)
    with pytest.raises(TypeError, match="QueryRegion or a box"):
        nerf_text_edit(nerf, "the mug", distiller, cfg)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prompt is empty"):
        NerfEditConfig(" ")
    with pytest.raises(ValueError, match="method"):
        NerfEditConfig("x", method="sdf")  # type: ignore[arg-type]
