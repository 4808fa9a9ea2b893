"""fields.conventions: the one up axis, horizontal bases, robust framing and orbit cameras."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fields import Camera, GaussianScene, cameras_to_meta
from fields.conventions import (
    DEFAULT_UP,
    ESTIMATE_MIN_CONFIDENCE,
    estimate_up,
    format_up,
    framing_sphere,
    framing_view,
    horizontal_basis,
    look_at_camera,
    orbit_cameras,
    parse_up,
    pinhole_K,
    robust_bounds,
    scene_up,
    up_vector,
    weighted_quantiles,
)


def cloud(n=400, seed=0, floaters=0, meta=None, transparent=0) -> GaussianScene:
    """Points in the box [-1,1]x[-0.5,0.5]x[0,0.4], plus far floaters and transparent splats."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) * torch.tensor([2.0, 1.0, 0.4]) - torch.tensor(
        [1.0, 0.5, 0.0]
    )
    opac = torch.full((n,), 0.9)
    if floaters:
        means = torch.cat([means, 50.0 + torch.rand(floaters, 3, generator=g)])
        opac = torch.cat([opac, torch.full((floaters,), 0.9)])
    if transparent:
        means = torch.cat([means, -80.0 - torch.rand(transparent, 3, generator=g)])
        opac = torch.cat([opac, torch.full((transparent,), 0.01)])
    m = len(means)
    return GaussianScene.from_activated(
        means,
        torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(m, 4),
        torch.full((m, 3), 0.01),
        opac,
        torch.full((m, 3), 0.5),
        meta=meta or {},
    )


def upright_camera(up) -> Camera:
    """A camera whose image up is world `up`."""
    u = parse_up(up)
    e1, _ = horizontal_basis(u)
    return look_at_camera(3 * e1, np.zeros(3), u, pinhole_K(32, 24, 50), 32, 24)  # level


def project(cam: Camera, pts: np.ndarray) -> np.ndarray:
    """[P,3] world -> [P,3] (u, v, camera z)."""
    V = cam.viewmat.double().numpy()
    p = pts @ V[:3, :3].T + V[:3, 3]
    K = cam.K.double().numpy()
    return np.stack(
        [K[0, 0] * p[:, 0] / p[:, 2] + K[0, 2], K[1, 1] * p[:, 1] / p[:, 2] + K[1, 2], p[:, 2]], 1
    )


# ---------------------------------------------------------------------- parse_up
@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("+z", (0, 0, 1)),
        ("-y", (0, -1, 0)),
        ("z", (0, 0, 1)),
        (" -X ", (-1, 0, 0)),
        ("0,0,2", (0, 0, 1)),
        ("0 -3 0", (0, -1, 0)),
        ([0, 0, 2], (0, 0, 1)),
        ((1, 1, 0), (math.sqrt(0.5), math.sqrt(0.5), 0)),
        (np.array([[0.0], [0.0], [-4.0]]), (0, 0, -1)),
        (torch.tensor([0.0, 5.0, 0.0]), (0, 1, 0)),
    ],
)
def test_parse_up_reads_names_and_vectors(spec, want):
    v = parse_up(spec)
    assert v.dtype == np.float64 and v.shape == (3,)
    assert np.allclose(v, want)


@pytest.mark.parametrize(
    "bad", ["up", "w", "+", "", "++z", (0, 0, 0), (1, 2), [1, 2, 3, 4], (0, np.nan, 1), object()]
)
def test_parse_up_rejects_anything_else_naming_up(bad):
    with pytest.raises(ValueError, match="up"):
        parse_up(bad)


def test_format_up_round_trips():
    for s in ("+x", "-y", "+z", "-z"):
        assert format_up(s) == s
    assert format_up((1, 1, 0)) == "(0.71, 0.71, 0.00)"


# ---------------------------------------------------------------------- scene_up
def test_scene_up_order_override_meta_cameras_default():
    bare = cloud()
    z_cams = [upright_camera("+z") for _ in range(3)]
    up = scene_up(bare)
    assert up.source == "default" and np.array_equal(up.vector, [0.0, -1.0, 0.0])
    assert np.array_equal(DEFAULT_UP, [0.0, -1.0, 0.0]) and not DEFAULT_UP.flags.writeable
    up = scene_up(bare, z_cams)
    assert up.source == "cameras" and np.allclose(up.vector, [0, 0, 1], atol=1e-6)
    meta = cloud(meta={"up": "+x"})
    up = scene_up(meta, z_cams)
    assert up.source == "scene" and np.allclose(up.vector, [1, 0, 0]) and up.label == "+x"
    sidecar = cloud(meta={"up_axis": "-z"})  # the sidecar spelling
    assert scene_up(sidecar).source == "scene" and np.allclose(scene_up(sidecar).vector, [0, 0, -1])
    up = scene_up(meta, z_cams, override=(0, 2, 0))
    assert up.source == "override" and np.allclose(up.vector, [0, 1, 0])
    assert np.allclose(up_vector(meta), [1, 0, 0])
    assert np.allclose(up_vector(meta, override="-z"), [0, 0, -1])
    with pytest.raises(ValueError, match="up"):
        scene_up(meta, override="sideways")
    # The returned vector is the caller's to modify.
    v = scene_up(bare).vector
    v[0] = 5.0
    assert np.array_equal(scene_up(bare).vector, [0.0, -1.0, 0.0])


def test_scene_up_skips_unreadable_meta_with_a_warning():
    bad = cloud(meta={"up": "sideways"})
    with pytest.warns(UserWarning, match="sideways"):
        up = scene_up(bad, [upright_camera("+z")])
    assert up.source == "cameras"
    with pytest.warns(UserWarning):
        assert scene_up(bad).source == "default"


def test_cameras_that_disagree_do_not_decide():
    cams = [upright_camera(u) for u in ("+z", "-z", "+x", "-x")]
    assert scene_up(cloud(), cams).source == "default"


# ---------------------------------------------------------------------- basis
def test_horizontal_basis_is_orthonormal_right_handed_and_deterministic():
    g = np.random.default_rng(0)
    ups = [*g.normal(size=(50, 3)), (1, 0, 0), (-1, 0, 0), (0.95, 0.3, 0), (0, 0, 1), (0, -1, 0)]
    for up in ups:
        u = parse_up(up)
        e1, e2 = horizontal_basis(up)
        B = np.stack([e1, e2, u])
        assert np.allclose(B @ B.T, np.eye(3), atol=1e-12)
        assert np.allclose(np.cross(e1, e2), u, atol=1e-12)
        f1, f2 = horizontal_basis(u * 3.0)
        assert np.allclose(e1, f1, atol=1e-15) and np.allclose(e2, f2, atol=1e-15)
    e1, e2 = horizontal_basis("+z")
    assert np.allclose(e1, [1, 0, 0]) and np.allclose(e2, [0, 1, 0])


# ---------------------------------------------------------------------- extent
def test_weighted_quantiles_match_repeated_samples():
    g = np.random.default_rng(1)
    vals = g.normal(size=(200, 2))
    w = g.integers(1, 5, size=200)
    rep = np.repeat(vals, w, axis=0)
    qs = (0.02, 0.3, 0.5, 0.98)
    got = weighted_quantiles(vals, w.astype(float), qs)
    want = np.quantile(rep, qs, axis=0, method="inverted_cdf")
    assert np.allclose(got, want)
    assert np.allclose(weighted_quantiles(vals[:, 0], w, qs), want[:, 0])


def test_robust_bounds_ignore_floaters_and_transparent_splats():
    clean = cloud(n=2000)
    messy = cloud(n=2000, floaters=15, transparent=300)
    lo, hi = robust_bounds(messy)
    clo, chi = robust_bounds(clean)
    assert np.allclose(lo, clo, atol=0.05) and np.allclose(hi, chi, atol=0.05)
    assert np.all(hi < 2.0) and np.all(lo > -2.0)
    exact_lo, exact_hi = robust_bounds(messy, quantile=0.0)  # every opaque splat, floaters too
    assert exact_hi.max() > 49.0 and exact_lo.min() > -2.0  # the transparent ones still ignored
    along = robust_bounds(clean, axes=np.array([[0.0, 0.0, 1.0]]))
    assert along[0].shape == (1,) and along[1][0] == pytest.approx(chi[2])
    small = cloud(n=20)  # too few for quantiles: exact bounds
    slo, _ = robust_bounds(small)
    assert np.allclose(slo, small.means.double().amin(0).numpy())
    with pytest.raises(ValueError, match="empty"):
        robust_bounds(GaussianScene.empty())
    with pytest.raises(ValueError, match="quantile"):
        robust_bounds(clean, quantile=0.7)


@pytest.mark.parametrize("up", ["+z", "-y", (1.0, 2.0, 0.5)])
def test_framing_view_sees_the_scene_despite_floaters(up):
    scene = cloud(n=3000, floaters=20)
    eye, target = framing_view(scene, up, fov_deg=50.0)
    u = parse_up(up)
    assert (eye - target) @ u > 0  # from above
    cam = look_at_camera(eye, target, u, pinhole_K(160, 120, 50.0), 160, 120)
    lo, hi = robust_bounds(scene)
    corners = np.array(
        [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    )
    uvz = project(cam, corners)
    assert np.all(uvz[:, 2] > 0)
    assert np.all((uvz[:, 0] >= 0) & (uvz[:, 0] <= 160) & (uvz[:, 1] >= 0) & (uvz[:, 1] <= 120))
    # ... and the scene is not a dot: it spans a good part of the frame.
    assert np.ptp(uvz[:, 0]) > 50
    centre, radius = framing_sphere(scene)
    assert radius < 2.0 and np.all(np.abs(centre) < 1.0)


# ---------------------------------------------------------------------- cameras
def test_orbit_cameras_look_at_the_centre_and_fit_the_sphere():
    centre, radius = np.array([0.5, -1.0, 2.0]), 0.3
    az = np.linspace(0, 2 * math.pi, 7, endpoint=False)
    el = np.array([-30.0, 0.0, 20.0, 45.0, 60.0, 89.0, 90.0])
    for up in ("+z", "-y", (0.3, 0.2, 1.0)):
        u = parse_up(up)
        cams = orbit_cameras(centre, radius, up, az, el, width=64, height=48, fov_deg=40.0)
        assert [c.name for c in cams] == [f"orbit_{i:03d}" for i in range(7)]
        sphere = centre + radius * np.random.default_rng(0).normal(size=(200, 3))
        sphere = (
            centre + radius * (sphere - centre) / np.linalg.norm(sphere - centre, axis=1)[:, None]
        )
        for cam, e in zip(cams, el, strict=True):
            assert (cam.width, cam.height) == (64, 48) and cam.fx == pytest.approx(cam.fy)
            uvz = project(cam, centre[None])[0]
            assert abs(uvz[0] - 32) < 1e-3 and abs(uvz[1] - 24) < 1e-3
            d = cam.center.double().numpy() - centre
            assert math.degrees(
                math.asin(np.clip(d @ u / np.linalg.norm(d), -1, 1))
            ) == pytest.approx(e, abs=1e-3)
            p = project(cam, sphere)
            assert np.all((p[:, 1] > 0) & (p[:, 1] < 48) & (p[:, 0] > 0) & (p[:, 0] < 64))
            if e < 89:  # world up is image up
                top = project(cam, (centre + 0.2 * u)[None])[0]
                assert top[1] < 24
    with pytest.raises(ValueError, match="elevations"):
        orbit_cameras(centre, radius, "+z", az, el[:3], width=8, height=8, fov_deg=40)
    with pytest.raises(ValueError, match="fov"):
        orbit_cameras(centre, radius, "+z", az, el, width=8, height=8, fov_deg=0.1)


def test_look_at_camera_straight_down_and_up():
    K = pinhole_K(32, 32, 60)
    down = look_at_camera((0, 0, 5), (0, 0, 0), "+z", K, 32, 32)
    e1, e2 = horizontal_basis("+z")
    assert np.allclose(down.c2w[:3, 0].double().numpy(), e1, atol=1e-6)  # e1 to the right
    assert np.allclose(-down.c2w[:3, 1].double().numpy(), e2, atol=1e-6)  # e2 up in the image
    up = look_at_camera((0, 0, -5), (0, 0, 0), "+z", K, 32, 32)
    assert np.allclose(up.c2w[:3, 2].double().numpy(), [0, 0, 1], atol=1e-6)
    with pytest.raises(ValueError, match="coincide"):
        look_at_camera((1, 1, 1), (1, 1, 1), "+z", K, 32, 32)


def test_parse_up_reads_what_format_up_writes():
    from fields.conventions import format_up

    for v in ([0.09, 0.16, 0.98], [0.0, 0.0, -1.0], [1.0, 2.0, 3.0]):
        text = format_up(v)
        back = parse_up(text)
        np.testing.assert_allclose(back, np.asarray(v) / np.linalg.norm(v), atol=0.01)


# ---------------------------------------------------------------------- estimated up
def _tilted_world(seed: int, floaters: int = 0):
    """A synthetic world turned by a random rotation, its meta["up"] dropped (as a capture file
    that does not state up); optionally with far, opaque floaters. (scene, true up)."""
    from scipy.spatial.transform import Rotation

    from fields.synthetic import WorldConfig, make_world

    world = make_world(seed, config=WorldConfig.preview())
    R = Rotation.random(random_state=seed).as_matrix()
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = torch.from_numpy(R)
    T[:3, 3] = torch.tensor([0.3, -2.0, 1.0])
    scene = world.scene.transform(T)
    meta = {k: v for k, v in scene.meta.items() if k != "up"}
    if floaters:
        g = torch.Generator().manual_seed(seed)
        far = 40.0 * torch.randn(floaters, 3, generator=g)
        extra = GaussianScene.from_activated(
            far,
            torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(floaters, 4),
            torch.full((floaters, 3), 0.05),
            torch.full((floaters,), 0.9),
            torch.full((floaters, 3), 0.5),
        )
        scene = GaussianScene.concat([scene.replace(extras={}), extra])
    return scene.replace(meta=meta), R @ np.array([0.0, 0.0, 1.0])


def _angle(a, b) -> float:
    return math.degrees(math.acos(float(np.clip(np.dot(a, b), -1.0, 1.0))))


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_estimated_up_recovers_a_tilted_worlds_up(seed):
    scene, true_up = _tilted_world(seed)
    up = scene_up(scene)
    assert up.source == "estimated" and up.confidence >= 0.9
    assert _angle(up.vector, true_up) < 3.0
    assert np.allclose(up_vector(scene), up.vector)  # every tool gets the same answer
    guess = estimate_up(scene)
    assert guess is not None and "plane" in guess.evidence and guess.support > 0.2
    # The plane point lies on the table top (its height along the true up: 0.75 m).
    assert (guess.plane_point - np.array([0.3, -2.0, 1.0])) @ true_up == pytest.approx(
        0.75, abs=0.01
    )


def test_estimated_up_and_framing_survive_floaters():
    scene, true_up = _tilted_world(5, floaters=60)
    up = scene_up(scene)
    assert up.source == "estimated" and _angle(up.vector, true_up) < 3.0
    eye, target = framing_view(scene, up.vector)
    assert np.linalg.norm(target - np.array([0.3, -2.0, 1.0])) < 1.0  # not pulled to a floater
    assert np.linalg.norm(eye - target) < 6.0  # the bulk fills the view, not a dot


def test_estimate_defers_to_what_the_file_or_cameras_say_and_declines_without_evidence():
    scene, _ = _tilted_world(6)
    assert scene_up(scene.replace(meta={"up": "-x"})).source == "scene"
    z_cams = [upright_camera("+z") for _ in range(3)]
    assert scene_up(scene, z_cams).source == "cameras"
    # The sidecar's recorded cameras count as the capture's cameras.
    recorded = scene.replace(meta={"cameras": cameras_to_meta(z_cams)})
    up = scene_up(recorded)
    assert up.source == "cameras" and np.allclose(up.vector, [0, 0, 1], atol=1e-5)
    assert scene_up(scene, estimate=False).source == "default"
    # A uniform cloud has no support plane: no confident estimate, the default stands.
    guess = estimate_up(cloud(n=3000))
    assert guess is None or guess.confidence < ESTIMATE_MIN_CONFIDENCE
    assert estimate_up(cloud(n=50)) is None  # too few splats to say
    # Flat but unsupported: a lone plane of splats with nothing on it has no up side.
    lone = cloud(n=3000)
    flat = lone.replace(means=lone.means * torch.tensor([1.0, 1.0, 0.0]))
    guess = estimate_up(flat)
    assert guess is None or guess.confidence < ESTIMATE_MIN_CONFIDENCE


def test_a_flat_object_on_a_stand_is_not_laid_down():
    """A real capture with no floor (PlayCanvas's guitar on its stand, from ../shared/data): the
    guitar's face is a dominant plane, but the mass lies behind it and nothing rests on it, so
    the estimate disagrees with itself and is not trusted: the file opens upright with -y (the
    estimate alone laid the guitar on its back)."""
    from fields import load_scene

    from .test_formats import GUITAR, shared

    scene = load_scene(shared(GUITAR))
    guess = estimate_up(scene)
    assert guess is not None and guess.confidence < ESTIMATE_MIN_CONFIDENCE, guess.evidence
    assert "agreement" in guess.evidence
    up = scene_up(scene)
    assert up.source == "default" and np.allclose(up.vector, [0.0, -1.0, 0.0])
