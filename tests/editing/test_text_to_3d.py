"""Text-to-3D in a box (`editing.text_to_3d`): the shape priors, densification, timestep
annealing, SDS/VSD, and the result resting on the table of a synthetic world (top z = 0.75) like
an inserted asset, driven by stand-in distillers and the toy denoiser that knows the answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import editing
from assets import OBJECTS_DIR
from editing import TextTo3DConfig, shape_prior, text_to_3d
from editing.score_distillation import DistillationConfig, ScoreDistiller, toy_distiller
from fields import Camera, GaussianScene, render
from fields.scene import quat_to_rotmat
from fields.synthetic import WorldConfig, make_world

SIZE = 64  # render side: the toy's latents are 8x8


@pytest.fixture(scope="module")
def world():
    return make_world(0, config=WorldConfig.preview())


def free_table_point(world) -> np.ndarray:
    """[3] the point of the table top farthest from every object."""
    hx, hy = 0.5 * world.table.params["size_x"], 0.5 * world.table.params["size_y"]
    gx, gy = np.meshgrid(
        np.linspace(-hx + 0.15, hx - 0.15, 15), np.linspace(-hy + 0.15, hy - 0.15, 9)
    )
    grid = np.stack([gx.ravel(), gy.ravel()], -1)
    clear = np.min(
        [np.linalg.norm(grid - o.position[:2], axis=1) - o.footprint_radius for o in world.objects],
        axis=0,
    )
    return np.array([*grid[int(np.argmax(clear))], world.table_top_z])


def red_disc(size: int = SIZE) -> torch.Tensor:  # [3,H,W]: a red disc on white
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = 0.5 * (size - 1)
    disc = (((xx - c) ** 2 + (yy - c) ** 2) < (0.3 * size) ** 2).float()
    red = torch.tensor([0.9, 0.15, 0.1])[:, None, None]
    return torch.ones(3, size, size) * (1 - disc) + disc * red


def assert_rows_identical(new: GaussianScene, scene: GaussianScene) -> None:
    """The first len(scene) rows of `new` are `scene`'s, bit for bit, extras included."""
    n = len(scene)
    for name in ("means", "quats", "scales", "opacities", "sh"):
        assert torch.equal(getattr(new, name)[:n], getattr(scene, name)), name
    for key, value in scene.extras.items():
        assert torch.equal(new.extras[key][:n], value), key


def components(means: np.ndarray, stds: np.ndarray) -> int:
    """Connected groups of splats whose two-sigma extents overlap (brute force, O(M^2))."""
    d = np.linalg.norm(means[:, None] - means[None], axis=-1)
    linked = d < 2.0 * (stds[:, None] + stds[None])
    seen = np.zeros(len(means), dtype=bool)
    groups = 0
    for start in range(len(means)):
        if seen[start]:
            continue
        groups += 1
        stack = [start]
        seen[start] = True
        while stack:
            i = stack.pop()
            for j in np.flatnonzero(linked[i] & ~seen):
                seen[j] = True
                stack.append(j)
    return groups


# ---------------------------------------------------------------------- shape priors
def _rotation(yaw: float, pitch: float) -> np.ndarray:
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1.0]])
    Rx = np.array([[1.0, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return Rz @ Rx


def test_ellipsoid_prior_starts_on_the_surface_with_outward_normals():
    centre, size, R = np.array([0.3, -0.2, 0.9]), np.array([0.2, 0.1, 0.06]), _rotation(0.7, 0.3)
    config = TextTo3DConfig(n_gaussians=500, interior=0.1, seed=3)
    prior = shape_prior((centre, size, R), config)
    assert len(prior) == 500 and prior.sh_degree == 0
    local = (prior.means.double().numpy() - centre) @ R / (0.5 * size)  # unit-sphere coords
    r = np.linalg.norm(local, axis=1)
    surface = np.abs(r - 1.0) < 1e-4
    assert surface.sum() == 450  # 10% inside
    assert r[~surface].max() <= 0.8 + 1e-6
    # Surface splats are flat discs whose thin axis is the ellipsoid's outward normal.
    scales = torch.exp(prior.scales).double().numpy()
    thin = scales.argmin(1)
    assert (thin[surface] == 2).all()
    assert (scales[surface, 2] <= 0.11 * scales[surface, 0]).all()
    normal_box = local[surface] / (0.5 * size)  # gradient of |x / half|^2, box frame
    normal = normal_box @ R.T
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    axis_z = quat_to_rotmat(prior.quats[surface]).double().numpy()[:, :, 2]
    assert (np.einsum("ij,ij->i", axis_z, normal) > 0.999).all()
    # The splats tile the surface: neighbours overlap (std ~ half the mean spacing).
    from scipy.spatial import cKDTree

    pts = prior.means.double().numpy()[surface]
    nn = cKDTree(pts).query(pts, k=2)[0][:, 1]
    assert np.median(nn) < 2.5 * float(np.median(scales[surface, 0]))
    # Reproducible in the seed; text_to_3d with no steps returns exactly the prior.
    assert torch.equal(shape_prior((centre, size, R), config).means, prior.means)
    cfg0 = TextTo3DConfig(n_gaussians=500, seed=3, steps=0, on_support=False)
    toy = toy_distiller(red_disc())
    new, mask = text_to_3d(GaussianScene.empty(), (centre, size, R), toy, "a pebble", cfg0)
    grown = new.subset(mask)
    assert torch.allclose(grown.means, prior.means, atol=1e-6)
    assert torch.allclose(grown.colors, prior.colors, atol=1e-5)


def test_box_prior_is_the_uniform_isotropic_cloud():
    size = np.array([0.1, 0.2, 0.3])
    prior = shape_prior((np.zeros(3), size), TextTo3DConfig(init="box", n_gaussians=400))
    local = prior.means.double().numpy() / (0.5 * size)
    assert np.linalg.norm(local, axis=1).max() <= 1.0 + 1e-6
    assert np.linalg.norm(local, axis=1).mean() == pytest.approx(0.75, abs=0.05)  # uniform volume
    assert torch.allclose(torch.exp(prior.scales), torch.tensor(0.08 * 0.1), rtol=1e-5)


def test_asset_prior_is_fitted_into_the_box():
    path = OBJECTS_DIR / "mug.ply"
    mug = editing.load_asset(path)
    centre, size = np.array([0.0, 0.0, 1.0]), np.array([0.2, 0.3, 0.1])
    config = TextTo3DConfig(init=str(path), n_gaussians=len(mug) // 2)
    prior = shape_prior((centre, size), config, up="+z")
    assert len(prior) == len(mug) // 2
    opaque = torch.sigmoid(prior.opacities) > 0.2
    local = (prior.means.double().numpy()[opaque.numpy()] - centre) / (0.5 * size)
    fill = (local.max(0) - local.min(0)) / 2.0
    assert fill.max() == pytest.approx(0.95, abs=1e-3)  # scaled until one side fills the box
    assert np.abs(local.max(0) + local.min(0)).max() < 1e-6  # centred
    # The mug's up (+z) stays up: it is taller than wide in its own frame, so z fills the box.
    assert fill.argmax() == 2
    assert not torch.allclose(prior.colors.mean(0), torch.tensor([0.6, 0.6, 0.6]), atol=0.05)


def test_bad_init_and_config_are_clear_errors(world):
    box = (free_table_point(world) + np.array([0.0, 0.0, 0.05]), np.full(3, 0.1))
    bad = TextTo3DConfig(init="no/such/asset.ply", steps=1)
    with pytest.raises(ValueError, match=r"no/such/asset\.ply.*'ellipsoid', 'box'"):
        text_to_3d(world.scene, box, toy_distiller(red_disc()), "a cup", bad)
    with pytest.raises(ValueError, match="init must be"):
        TextTo3DConfig(init=" ")
    with pytest.raises(ValueError, match="anneal must be"):
        TextTo3DConfig(anneal="cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method must be"):
        TextTo3DConfig(method="dds")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_gaussians"):
        TextTo3DConfig(n_gaussians=100, max_gaussians=50)


# ---------------------------------------------------------------------- the object
def grow(world, *, densify: bool, steps: int = 40, **kw):
    """A red ball grown by the toy denoiser in a box 2 cm above a free spot of the table."""
    base = free_table_point(world)
    box = (base + np.array([0.0, 0.0, 0.07]), np.full(3, 0.1))
    config = TextTo3DConfig(
        n_gaussians=300,
        steps=steps,
        size=SIZE,
        lr=0.05,
        context=False,
        densify=densify,
        densify_every=5,
        seed=0,
        **kw,
    )
    distiller = toy_distiller(red_disc(), "a red ball")
    return text_to_3d(world.scene, box, distiller, "a red ball", config)


@pytest.fixture(scope="module")
def grown(world):
    return grow(world, densify=True)


def test_the_result_rests_on_the_table(world, grown):
    new, mask = grown
    assert_rows_identical(new, world.scene)
    assert mask[len(world.scene) :].all() and not mask[: len(world.scene)].any()
    obj = new.subset(mask)
    z = obj.means[:, 2].double()
    opaque = torch.sigmoid(obj.opacities) > 0.2
    top = world.table_top_z
    assert float(z.min()) >= top - 1e-6  # no splat centre below the table top
    lowest = float(z[opaque].min())
    assert top <= lowest <= top + 0.002  # its lowest opaque splats touch the table
    assert float(z.max()) - lowest > 0.05  # an object, not a film on the table
    stds = torch.exp(obj.scales).amax(1).double().numpy()
    assert components(obj.means.double().numpy(), stds) == 1  # one connected object
    assert float(obj.colors.mean(0)[0]) > float(obj.colors.mean(0)[1]) + 0.2  # red-ish
    record = new.meta["inserted"][-1]
    assert record["name"] == "a red ball" and record["count"] == int(mask.sum())
    assert record["method"] == "sds" and record["init"] == "ellipsoid" and record["steps"] == 40
    assert record["support"] is not None
    assert record["support"]["point"][2] == pytest.approx(top, abs=1e-3)
    assert "rests on the support" in record["support_note"]
    label = int(new.extras["label"][mask][0])
    assert new.meta["label_names"][str(label)] == "a red ball"
    # It dropped the 2 cm from the box bottom to the table along up, and nothing else.
    T = np.array(record["T_rest"])
    assert np.allclose(T[:3, :3], np.eye(3), atol=1e-6)
    assert np.allclose(T[:2, 3], 0.0, atol=1e-6) and -0.03 < T[2, 3] < -0.01


def test_densification_grows_the_count_within_the_cap(world, grown):
    _, mask_dense = grown
    _, mask_plain = grow(world, densify=False)
    assert int(mask_plain.sum()) <= 300
    assert int(mask_dense.sum()) > int(mask_plain.sum()) + 50
    _, mask_capped = grow(world, densify=True, max_gaussians=320)
    assert int(mask_capped.sum()) <= 320


def test_without_a_support_it_stays_where_it_grew(world):
    box = (np.array([0.0, 0.0, 0.5]), np.full(3, 0.1))
    config = TextTo3DConfig(n_gaussians=100, steps=3, size=16, context=False)
    distiller = toy_distiller(torch.full((3, 16, 16), 0.4))
    for scene, why in (
        (GaussianScene.empty(), "the scene is empty"),
        (world.scene.subset(world.scene.means[:, 2] > 0.5), "nothing under the box"),  # no floor
    ):
        new, mask = text_to_3d(scene, box, distiller, "a stone", config)
        record = new.meta["inserted"][-1]
        assert record["support"] is None and why in record["support_note"]
        local = (new.means[mask].double().numpy() - box[0]) / 0.05
        assert np.abs(local).max() <= 1.0 + 1e-5  # still inside its box


# ---------------------------------------------------------------------- annealing and methods
def test_text_to_3d_anneals_the_timesteps_and_restores_the_distiller():
    distiller = toy_distiller(torch.full((3, 16, 16), 0.4))
    assert distiller.config.anneal == "none"
    T = distiller.num_train_timesteps
    seen: list[tuple[int, float]] = []

    def record(step, total, _loss):
        seen.append((step, float(distiller.last_timesteps.max()) / T))

    box = ((0.0, 0.0, 0.0), (0.2, 0.2, 0.2))
    for anneal in ("linear", None):
        seen.clear()
        config = TextTo3DConfig(
            n_gaussians=50, steps=60, size=16, views_per_step=2, anneal=anneal, on_support=False
        )
        text_to_3d(GaussianScene.empty(), box, distiller, "a stone", config, on_step=record)
        assert distiller.config.anneal == "none"  # given back
        late = [t for s, t in seen if s > 45]
        if anneal == "linear":  # t_max(progress) = 0.98 - (0.98 - 0.5) progress
            assert all(t <= 0.98 - 0.48 * (s - 1) / 60 + 1e-3 for s, t in seen)
            assert max(late) < 0.65
        else:  # the distiller's own setting: no annealing
            assert max(late) > 0.7


def test_method_choice_and_vsd_with_the_tiny_pipeline():
    toy = toy_distiller(torch.full((3, 16, 16), 0.4))
    config = TextTo3DConfig(n_gaussians=60, steps=2, size=16, on_support=False)
    box = ((0.0, 0.0, 0.0), (0.2, 0.2, 0.2))
    new, _ = text_to_3d(GaussianScene.empty(), box, toy, "a stone", config)
    assert new.meta["inserted"][-1]["method"] == "sds"  # None on a CPU (and the toy: no LoRA)
    with pytest.raises(ValueError, match="does not support method='vsd'"):
        vsd = TextTo3DConfig(n_gaussians=60, steps=2, size=16, method="vsd")
        text_to_3d(GaussianScene.empty(), box, toy, "a stone", vsd)

    from editing.score_distillation import tiny_parts

    pytest.importorskip("diffusers")
    distiller = ScoreDistiller(tiny_parts(0), DistillationConfig(resolution=64))
    if not getattr(distiller, "supports_vsd", False):
        pytest.skip("editing.score_distillation has no VSD (ScoreDistiller.supports_vsd) yet")
    vsd = TextTo3DConfig(n_gaussians=60, steps=2, size=32, method="vsd", densify_every=1)
    new, mask = text_to_3d(GaussianScene.empty(), box, distiller, "a red apple", vsd)
    assert new.meta["inserted"][-1]["method"] == "vsd" and int(mask.sum()) > 0
    assert distiller.vsd_lora is not None and torch.isfinite(distiller.last_vsd_lora_loss)
    assert distiller.config.anneal == "none"


# ---------------------------------------------------------------------- moved from test_insertion
class _TowardsImage:
    """A stand-in score distiller: the loss pulls every render towards a fixed image."""

    def __init__(self, target: torch.Tensor) -> None:
        self.target = target  # [3,H,W]
        self.calls = 0

    def loss(self, images, prompt, *, method="sds", progress=0.0, generator=None, **_):
        assert images.requires_grad and images.shape[1:] == self.target.shape
        assert method == "sds" and 0.0 <= progress < 1.0
        self.calls += 1
        return ((images - self.target) ** 2).mean()


def test_text_to_3d_optimises_only_the_new_gaussians_inside_the_box(world):
    scene = world.scene
    centre = np.array([0.0, 0.0, world.table_top_z + 0.05])
    size = np.array([0.08, 0.08, 0.1])
    config = TextTo3DConfig(
        n_gaussians=300,
        steps=40,
        size=24,
        lr=0.05,
        seed=1,
        init="box",
        densify=False,
        on_support=False,
        drop_floaters=False,
    )
    red = torch.tensor([0.9, 0.1, 0.1])[:, None, None].expand(3, 24, 24)
    distiller = _TowardsImage(red)
    steps = []
    new, mask = text_to_3d(
        scene, (centre, size), distiller, "a red apple", config, on_step=lambda *a: steps.append(a)
    )
    assert distiller.calls == 40 and len(steps) == 40
    assert_rows_identical(new, scene)  # the scene is frozen context
    n = len(scene)
    assert int(mask.sum()) == 300 and mask[n:].all()
    grown = new.subset(mask)
    local = (grown.means.double().numpy() - centre) / (0.5 * size)
    assert np.abs(local).max() <= 1.0 + 1e-6  # never leaves the box
    rgb = grown.colors.mean(0)
    assert float(rgb[0]) > 0.7 and float(rgb[1]) < 0.4  # grey (0.6) -> red
    label = int(new.extras["label"][mask][0])
    assert new.meta["label_names"][str(label)] == "a red apple"


def test_text_to_3d_stops_when_asked(world):
    config = TextTo3DConfig(n_gaussians=50, steps=100, size=16, context=False, densify=False)
    distiller = _TowardsImage(torch.full((3, 16, 16), 0.2))
    new, mask = text_to_3d(
        world.scene,
        ((0.0, 0.0, 0.8), (0.05, 0.05, 0.05)),
        distiller,
        "a cube",
        config,
        should_stop=lambda: distiller.calls >= 3,
    )
    assert distiller.calls == 3 and new.meta["inserted"][-1]["steps"] == 3
    assert 0 < int(mask.sum()) <= 50
    with pytest.raises(ValueError, match="box size must be positive"):
        text_to_3d(world.scene, ((0, 0, 0), (0, 1, 1)), distiller, "x", config)
    with pytest.raises(ValueError, match="needs a prompt"):
        text_to_3d(world.scene, ((0, 0, 0), (1, 1, 1)), distiller, " ", config)


def test_text_to_3d_with_the_toy_score_distiller():
    """The real SDS code path (the toy denoiser that knows the answer) turns the grey prior
    towards the target colour."""
    size = 16
    target = torch.tensor([0.1, 0.2, 0.9])[:, None, None].expand(3, size, size).contiguous()
    distiller = toy_distiller(target, "a blue ball")
    config = TextTo3DConfig(n_gaussians=200, steps=60, size=size, lr=0.05, context=False)
    new, mask = text_to_3d(
        GaussianScene.empty(), ((0.0, 0.0, 0.0), (0.2, 0.2, 0.2)), distiller, "a blue ball", config
    )
    rgb = new.subset(mask).colors.mean(0)
    assert float(rgb[2]) > float(rgb[0]) + 0.2  # bluer than red, from grey
    cam = Camera.look_at(
        (0.0, -0.6, 0.2),
        (0.0, 0.0, 0.0),
        (0.0, 0.0, 1.0),
        torch.tensor([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]]),
        size,
        size,
    )
    alpha = render(new, cam).alpha
    assert float(alpha.max()) > 0.3  # the object is visible
