"""`editing.text_edit`: views around a selection, SDS/DDS edits under a toy denoiser whose answer
is known (`editing.score_distillation.toy_distiller`), and the invariants every edit keeps."""

from __future__ import annotations

import math

import pytest
import torch

from editing import TextEditConfig, edit_views, sample_edit_views, text_edit
from editing._views import selection_sphere
from fields import GaussianScene, parse_up, render

toy = pytest.importorskip("editing.score_distillation")

RED, BLUE, GREEN = (0.85, 0.1, 0.1), (0.1, 0.2, 0.85), (0.1, 0.8, 0.15)
SIZE = 64  # edit views (the toy's resolution)


def blobs(seed: int = 0, up: str = "+z") -> GaussianScene:
    """A grey floor (label 0), a red blob (label 1) and a blue blob (label 2), z up."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.linspace(-0.6, 0.6, 16)
    fx, fy = torch.meshgrid(xs, xs, indexing="ij")
    floor = torch.stack([fx.reshape(-1), fy.reshape(-1), torch.zeros(fx.numel())], -1)
    parts = [(floor, torch.tensor([0.04, 0.04, 0.004]).expand(len(floor), 3), (0.5, 0.5, 0.5))]
    for centre, color in (((0.25, 0.0, 0.15), RED), ((-0.25, 0.0, 0.15), BLUE)):
        d = torch.randn(250, 3, generator=g)
        d = d / d.norm(dim=-1, keepdim=True) * 0.1 * torch.rand(250, 1, generator=g) ** (1 / 3)
        parts.append((torch.tensor(centre) + d, torch.full((250, 3), 0.025), color))
    means = torch.cat([p[0] for p in parts])
    n = len(means)
    labels = torch.cat(
        [torch.full((len(p[0]),), i, dtype=torch.int32) for i, p in enumerate(parts)]
    )
    colors = torch.cat([torch.tensor(p[2]).expand(len(p[0]), 3) for p in parts])
    scene = GaussianScene.from_activated(
        means,
        torch.randn(n, 4, generator=g),
        torch.cat([p[1] for p in parts]),
        torch.full((n,), 0.9),
        colors,
        extras={"label": labels, "feature": torch.randn(n, 3, generator=g)},
        meta={"up": up, "units": "m"},
    )
    if up != "+z":  # the same world, turned so that its up is `up`
        T = torch.eye(4, dtype=torch.float64)
        T[:3, :3] = _rotation_z_to(torch.from_numpy(parse_up(up)))
        scene = scene.transform(T)
    return scene


def _rotation_z_to(u: torch.Tensor) -> torch.Tensor:
    z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    if torch.allclose(u, z):
        return torch.eye(3, dtype=torch.float64)
    if torch.allclose(u, -z):
        return torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    v = torch.linalg.cross(z, u)
    c = float(z @ u)
    vx = torch.tensor([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + vx + vx @ vx / (1 + c)


def solid(rgb, size: int = SIZE) -> torch.Tensor:  # [3,size,size]
    return torch.tensor(rgb, dtype=torch.float32)[:, None, None].expand(3, size, size).clone()


def config(**changes) -> TextEditConfig:
    base = {"prompt": "a green ball", "steps": 25, "size": SIZE, "views": 8, "lr_color": 0.1}
    return TextEditConfig(**{**base, **changes})


def assert_rest_identical(before: GaussianScene, after: GaussianScene, mask: torch.Tensor):
    assert len(after) == len(before)
    keep = ~mask
    for name in ("means", "quats", "scales", "opacities", "sh"):
        assert torch.equal(getattr(after, name)[keep], getattr(before, name)[keep]), name
    assert set(after.extras) == set(before.extras)
    for k, v in before.extras.items():
        assert torch.equal(after.extras[k], v), k
    assert after.meta == before.meta


def snapshot(scene: GaussianScene) -> list[torch.Tensor]:
    return [t.clone() for t in (scene.means, scene.quats, scene.scales, scene.opacities, scene.sh)]


@pytest.fixture(scope="module")
def scene() -> GaussianScene:
    return blobs()


@pytest.fixture(scope="module")
def red(scene) -> torch.Tensor:
    return scene.extras["label"] == 1


# ---------------------------------------------------------------------- views
def _project(cam, p: torch.Tensor) -> torch.Tensor:  # [M,3] -> [M,3] (u, v, z)
    pc = p.double() @ cam.viewmat.double()[:3, :3].T + cam.viewmat.double()[:3, 3]
    uv = (pc[:, :2] / pc[:, 2:]) * cam.fx + cam.cx
    return torch.cat([uv, pc[:, 2:]], -1)


def test_views_frame_the_selection_from_all_around(scene, red):
    cams = sample_edit_views(scene, red, 12, size=80, seed=3, elevation_deg=(20.0, 50.0))
    centre, radius = selection_sphere(scene, red)
    assert len(cams) == 12 and all(c.width == c.height == 80 for c in cams)
    azimuths = []
    for cam in cams:
        uvz = _project(cam, scene.means[red])
        assert bool((uvz[:, 2] > 0).all())
        assert bool(((uvz[:, :2] > 0) & (uvz[:, :2] < 80)).all()), "selection leaves the frame"
        c = _project(cam, centre[None].float())[0]
        assert abs(c[0] - 40) < 0.5 and abs(c[1] - 40) < 0.5  # looks at the centre
        d = cam.center.double() - centre
        dist = float(d.norm())
        assert dist > radius / math.sin(math.radians(25))  # the sphere fits the 50° view
        elevation = math.degrees(math.asin(float(d[2]) / dist))
        assert 20.0 - 1e-6 <= elevation <= 50.0 + 1e-6
        azimuths.append(math.degrees(math.atan2(float(d[1]), float(d[0]))) % 360)
        # Image "up" is world up: the top of the selection is higher in the image.
        top = _project(cam, (centre + torch.tensor([0, 0, radius]))[None].float())[0]
        assert top[1] < c[1]
    gaps = torch.diff(torch.tensor([*sorted(azimuths), sorted(azimuths)[0] + 360.0]))
    assert float(gaps.max()) < 2.5 * 360 / 12  # stratified all around, no big hole

    again = sample_edit_views(scene, red, 12, size=80, seed=3, elevation_deg=(20.0, 50.0))
    assert all(torch.equal(a.viewmat, b.viewmat) for a, b in zip(cams, again, strict=True))
    other = sample_edit_views(scene, red, 12, size=80, seed=4, elevation_deg=(20.0, 50.0))
    assert not torch.equal(cams[0].viewmat, other[0].viewmat)


def test_views_follow_the_scene_up_axis():
    tilted = blobs(up="-y")
    mask = tilted.extras["label"] == 1
    centre, _ = selection_sphere(tilted, mask)
    views = sample_edit_views(tilted, mask, 6, size=32, elevation_deg=(30.0, 60.0))
    for cam in views:
        d = cam.center.double() - centre
        assert -float(d[1]) / float(d.norm()) > math.sin(math.radians(29))  # above, along -y
    # Without a recorded up the product default (-y, fields.conventions) applies.
    bare = sample_edit_views(tilted.replace(meta={}), mask, 6, size=32, elevation_deg=(30, 60))
    assert all(torch.equal(a.viewmat, b.viewmat) for a, b in zip(views, bare, strict=True))
    # An explicit up wins over the scene's; vectors and names both parse.
    for up, axis in (((0, 0, 2), 2), ("+x", 0)):
        for cam in sample_edit_views(tilted, mask, 4, size=32, up=up, elevation_deg=(30, 60)):
            d = cam.center.double() - centre
            assert float(d[axis]) / float(d.norm()) > math.sin(math.radians(29))
    for bad in ("up", (0, 0, 0), "w"):
        with pytest.raises(ValueError, match="up"):
            TextEditConfig("a green blob", up=bad)
        with pytest.raises(ValueError, match="up"):
            sample_edit_views(tilted, mask, 2, up=bad)


# ---------------------------------------------------------------------- SDS / DDS
def test_sds_moves_the_selection_to_the_target_and_nothing_else(scene, red):
    before = snapshot(scene)
    distiller = toy.toy_distiller(solid(GREEN))
    edited = text_edit(scene, red, distiller, config(method="sds"))
    green = torch.tensor(GREEN)
    err_before = (scene.colors[red] - green).norm(dim=-1).mean()
    err_after = (edited.colors[red] - green).norm(dim=-1).mean()
    assert err_before > 0.8 and err_after < 0.5 * err_before
    assert float(edited.colors[red, 1].mean()) > 0.5  # green went up
    assert_rest_identical(scene, edited, red)
    # Only colours were optimised: the other fields are the input's own tensors.
    assert edited.means is scene.means and edited.opacities is scene.opacities
    assert edited.scales is scene.scales and edited.quats is scene.quats
    # Colours stay valid; the input scene is untouched.
    assert bool((edited.colors[red] <= 1.0 + 1e-6).all())
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(scene), strict=True))


def test_dds_moves_by_the_difference_between_the_prompts(scene, red):
    # The toy maps "a ball" to grey and "a green ball" to grey + delta: DDS moves the render by
    # that delta, starting from the unedited render.
    grey = (0.5, 0.5, 0.5)
    delta = torch.tensor([-0.35, 0.35, -0.3])
    distiller = toy.toy_distiller(
        solid(tuple((torch.tensor(grey) + delta).tolist())),
        "a green ball",
        source=solid(grey),
        source_prompt="a ball",
    )
    cfg = config(method="dds", source_prompt="a ball", steps=20)
    edited = text_edit(scene, red, distiller, cfg)
    change = (edited.colors[red] - scene.colors[red]).mean(0)
    cos = float(change @ delta / (change.norm() * delta.norm()))
    assert cos > 0.9 and float(change.norm()) > 0.2
    assert_rest_identical(scene, edited, red)


def test_dds_with_identical_prompts_changes_nothing(scene, red):
    distiller = toy.toy_distiller(
        solid(GREEN), "a green ball", source=solid(BLUE), source_prompt="a ball"
    )
    same = config(
        prompt="a ball", method="dds", source_prompt="a ball", steps=6, preserve_weight=1.0
    )
    edited = text_edit(scene, red, distiller, same)
    for name in ("means", "quats", "scales", "opacities", "sh"):
        assert torch.equal(getattr(edited, name), getattr(scene, name)), name
    # The same distiller and views with a target prompt that differs do move the selection.
    moved = text_edit(scene, red, distiller, config(method="dds", source_prompt="a ball", steps=6))
    assert not torch.equal(moved.sh[red], scene.sh[red])


def test_geometry_parameters_are_optional_and_selected_only(scene, red):
    cfg = config(method="sds", params=("opacity", "scale", "position"), steps=8)
    edited = text_edit(scene, red, toy.toy_distiller(solid(GREEN)), cfg)
    assert_rest_identical(scene, edited, red)
    assert edited.sh is scene.sh and edited.quats is scene.quats  # colour was not asked for
    for name in ("means", "scales", "opacities"):
        changed = (getattr(edited, name) != getattr(scene, name)).reshape(len(scene), -1).any(-1)
        assert bool(changed[red].any()), name


def test_the_loss_sees_the_edit_only_inside_the_selection_footprint(scene, red):
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    class Recording:
        def loss(
            self, images, prompt, *, method, source_images, source_prompt, progress, generator
        ):
            seen.append((images.detach().clone(), source_images.clone()))
            return -images[:, 1].sum()  # "greener": pushes every pixel it reaches

    cfg = config(method="dds", views=1, steps=4)
    edited = text_edit(scene, red, Recording(), cfg)
    cam = edit_views(scene, red, cfg)[0]
    with torch.no_grad():
        fp = render(scene, cam, features=red.float()[:, None]).features[..., 0]  # [H,W]
        src = render(scene, cam, background=(1.0, 1.0, 1.0)).rgb.permute(2, 0, 1).clamp(0, 1)
    images, sources = seen[-1]
    assert torch.equal(sources[0], src)  # the unedited render of the same view
    assert torch.equal(seen[0][0], seen[0][1])  # before any step: the edit shows nothing
    differs = (images[0] != sources[0]).any(0)
    assert bool(differs.any()) and not bool(differs[fp == 0].any())
    assert float(edited.colors[red, 1].mean()) > float(scene.colors[red, 1].mean())


def test_previews_progress_and_stopping(scene, red):
    calls: list[tuple[int, int, GaussianScene | None]] = []
    distiller = toy.toy_distiller(solid(GREEN))
    text_edit(
        scene,
        red,
        distiller,
        config(method="sds", steps=10, preview_every=4),
        on_step=lambda *a: calls.append(a),
    )
    assert [c[0] for c in calls] == list(range(1, 11)) and {c[1] for c in calls} == {10}
    assert [c[0] for c in calls if c[2] is not None] == [1, 4, 8, 10]
    for _, _, preview in calls:
        if preview is not None:
            assert_rest_identical(scene, preview, red)

    steps = []
    partial = text_edit(
        scene,
        red,
        distiller,
        config(method="sds", steps=50),
        on_step=lambda i, n, p: steps.append(i),
        should_stop=lambda: len(steps) >= 3,
    )
    assert steps == [1, 2, 3]
    assert not torch.equal(partial.sh[red], scene.sh[red])
    assert_rest_identical(scene, partial, red)


def test_bad_input_is_refused(scene, red):
    distiller = toy.toy_distiller(solid(GREEN))
    with pytest.raises(ValueError, match="empty"):
        text_edit(scene, torch.zeros(len(scene), dtype=torch.bool), distiller, config())
    with pytest.raises(ValueError, match="shape"):
        text_edit(scene, red[:-1], distiller, config())
    for changes, match in (
        ({"prompt": "  "}, "prompt"),
        ({"method": "ddim"}, "method"),
        ({"steps": 0}, "steps"),
        ({"params": ()}, "at least one"),
        ({"params": ("color", "hue")}, "params"),
        ({"lr_color": -1.0}, "lr_color"),
        ({"size": 4}, "size"),
    ):
        with pytest.raises(ValueError, match=match):
            config(**changes)


def test_hidden_gaussians_stay_out_of_the_edit_views(scene, red):
    seen = []

    class Recording:
        def loss(
            self, images, prompt, *, method, source_images, source_prompt, progress, generator
        ):
            seen.append(source_images.clone())
            return images.sum() * 0.0

    blue = scene.extras["label"] == 2
    isolated = scene.with_extras(hidden=blue)  # what `editing.isolate(~blue)` leaves hidden
    cfg = config(method="dds", views=1, steps=1, margin=4.0)  # wide: the blue blob in view
    text_edit(isolated, red, Recording(), cfg)
    cam = edit_views(isolated, red, cfg)[0]
    with torch.no_grad():
        without = render(scene.subset(~blue), cam, background=(1.0, 1.0, 1.0)).rgb
        with_blue = render(scene, cam, background=(1.0, 1.0, 1.0)).rgb
    shown = seen[0][0].permute(1, 2, 0)
    assert torch.allclose(shown, without.clamp(0, 1), atol=1e-4)
    assert not torch.allclose(shown, with_blue.clamp(0, 1), atol=1e-2)  # blue was in view


def test_native_resolution_of_the_tiny_pipeline():
    from editing.score_distillation._distiller import native_resolution

    assert native_resolution(toy.tiny_parts()) == 64  # UNet 32 latents x VAE factor 2
