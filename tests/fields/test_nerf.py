"""fields.nerf: the compiled hash encoding and ray marcher against plain torch, the renderer
against a slow per-ray quadrature, the occupancy grid's culling against that reference, and
.nerf files (round trip, bad files)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fields import Camera, SceneFormatError
from fields.features import FeatureField
from fields.nerf import (
    MarchSettings,
    NerfField,
    NerfModelConfig,
    NerfScene,
    SceneBox,
    camera_rays,
    grid_layout,
    hash_encode,
    hash_encode_reference,
    load_nerf,
    march_rays,
    ray_bounds,
    render_nerf,
    save_nerf,
)
from fields.nerf._march import march_rays_reference

SMALL = NerfModelConfig(levels=6, log2_table=12, base_res=4, max_res=48, occupancy_res=24)


def _kernel_built() -> bool:
    try:
        from fields import _nerf_cpu  # noqa: F401
    except ImportError:
        return False
    return True


needs_kernel = pytest.mark.skipif(not _kernel_built(), reason="fields._nerf_cpu not built")


# ---------------------------------------------------------------------- hash encoding
def test_grid_layout_dense_then_hashed():
    lay = grid_layout(6, 12, 4, 48)
    assert lay.resolutions[0] == 4 and lay.resolutions[-1] == 48
    assert list(lay.resolutions) == sorted(lay.resolutions)
    # (4+1)^3 = 125 rows fit a 4096-row table: dense; 48^3 does not: hashed
    assert lay.hashed[0] is False and lay.hashed[-1] is True
    assert lay.sizes[0] == 125 and lay.sizes[-1] == 4096
    assert lay.offsets[1] == 125 and lay.rows == sum(lay.sizes)
    with pytest.raises(ValueError, match="hash grid"):
        grid_layout(0, 12, 4, 48)


def test_reference_encoding_is_trilinear_on_a_dense_level():
    # One dense level of resolution 2: features are a trilinear blend of the 27 corner rows.
    lay = grid_layout(1, 12, 2, 2)
    table = torch.randn(lay.rows, 3, dtype=torch.float64)
    x = torch.tensor([[0.3, 0.7, 0.1]], dtype=torch.float64)
    p = x[0] * 2
    i0 = p.floor().long()
    f = p - i0
    expect = torch.zeros(3, dtype=torch.float64)
    for c in range(8):
        o = torch.tensor([(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1])
        w = torch.where(o.bool(), f, 1 - f).prod()
        ijk = i0 + o
        expect += w * table[int(ijk[0] + 3 * (ijk[1] + 3 * ijk[2]))]
    out = hash_encode_reference(x, table, lay)
    torch.testing.assert_close(out[0], expect)


@needs_kernel
@pytest.mark.parametrize("F", [1, 2, 4])
def test_kernel_encoding_matches_reference(F):
    g = torch.Generator().manual_seed(F)
    lay = grid_layout(7, 11, 3, 100)
    table = (torch.rand(lay.rows, F, generator=g) * 2 - 1).requires_grad_()
    x = torch.rand(3000, 3, generator=g)
    x[:7] = 1.0  # far faces
    x[7:14] = 0.0
    x[14, 0] = 1 - 1e-7
    up = torch.randn(3000, 7 * F, generator=g)
    ref = hash_encode_reference(x, table, lay)
    (ref * up).sum().backward()
    g_ref = table.grad.clone()
    table.grad = None
    out = hash_encode(x, table, lay)
    assert out.shape == (3000, 7 * F)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    (out * up).sum().backward()
    torch.testing.assert_close(table.grad, g_ref, atol=1e-4, rtol=1e-5)
    # deterministic backward: the same gradient bit for bit
    first = table.grad.clone()
    table.grad = None
    (hash_encode(x, table, lay) * up).sum().backward()
    assert torch.equal(table.grad, first)


# ---------------------------------------------------------------------- marching
def _rays(n: int, seed: int, box: SceneBox) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c = torch.tensor(box.center)
    o = c + torch.randn(n, 3, generator=g) * 0.2 * box.radius
    o = o + torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * 3 * box.radius
    target = c + (torch.rand(n, 3, generator=g) - 0.5) * box.radius
    d = torch.nn.functional.normalize(target - o, dim=-1)
    return o, d


def test_ray_bounds_match_slab_intersection():
    box = SceneBox((0.5, -0.2, 1.0), 2.0)
    o = torch.tensor([[0.5, -0.2, -9.0], [10.0, 10.0, 10.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    t0, t1 = ray_bounds(box, o, d)
    assert t0[0].item() == pytest.approx(8.0) and t1[0].item() == pytest.approx(12.0)
    assert t1[1] <= t0[1]  # misses


@needs_kernel
@pytest.mark.parametrize("mode", ["box", "contract"])
def test_kernel_marcher_matches_reference(mode):
    box = SceneBox((0.1, 0.2, -0.3), 1.3, mode)
    g = torch.Generator().manual_seed(1)
    occ = torch.rand(16, 16, 16, generator=g) < 0.3
    o, d = _rays(300, 2, box)
    st = MarchSettings.for_box(box, steps_across=64)
    st = MarchSettings(st.dt, st.cone, st.dt_max, max_samples_per_ray=40)
    a = march_rays(box, occ, o, d, st)
    t0, t1 = ray_bounds(box, o, d)
    b = march_rays_reference(box, occ, o, d, st, t0, t1)
    assert len(a.t) > 500
    assert torch.equal(a.ray_ids, b.ray_ids)
    torch.testing.assert_close(a.t, b.t, atol=2e-4, rtol=1e-5)
    torch.testing.assert_close(a.delta, b.delta, atol=2e-4, rtol=1e-5)
    # ray-major, t increasing within a ray, at most max_samples_per_ray each
    assert bool((a.ray_ids[1:] >= a.ray_ids[:-1]).all())
    same = a.ray_ids[1:] == a.ray_ids[:-1]
    assert bool((a.t[1:][same] > a.t[:-1][same]).all())
    assert int(torch.bincount(a.ray_ids).max()) <= 40


def test_empty_grid_gives_no_samples_and_background():
    scene = NerfScene.create(SMALL, SceneBox((0, 0, 0), 1.0))
    scene.occupancy[:] = False
    o, d = _rays(10, 0, scene.box)
    out = scene.render_rays(o, d, torch.tensor([0.2, 0.4, 0.6]))
    assert out.n_samples == 0
    torch.testing.assert_close(out.rgb, torch.tensor([0.2, 0.4, 0.6]).expand(10, 3))
    assert float(out.opacity.abs().max()) == 0.0


# ---------------------------------------------------------------------- rendering
def _dense_field(seed: int = 0) -> NerfField:
    """A random field with real density (opacity builds up within the box)."""
    torch.manual_seed(seed)
    f = NerfField(SMALL, SceneBox((0.0, 0.0, 0.0), 1.0))
    with torch.no_grad():
        f.table.uniform_(-1, 1)
        f.density_mlp[-1].bias[0] = 2.0
    return f


def _reference_ray(
    field: NerfField, o: torch.Tensor, d: torch.Tensor, t0: float, t1: float, dt: float, bg
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """One ray, one sample at a time, float64 compositing: (rgb, opacity, t[k], w[k])."""
    ts = []
    t = t0
    while t + 0.5 * dt < t1:
        ts.append(t + 0.5 * dt)
        t += dt
    if not ts:
        return np.asarray(bg, np.float64), 0.0, np.zeros(0), np.zeros(0)
    tt = torch.tensor(ts)
    pts = o[None] + tt[:, None] * d[None]
    with torch.no_grad():
        sigma, geo = field.density(pts.float())
        rgb = field.color(geo, d[None].expand(len(ts), 3).float())
    T, acc, ws = 1.0, np.zeros(3), []
    for k in range(len(ts)):
        a = 1.0 - math.exp(-float(sigma[k]) * dt)
        w = T * a
        acc += w * rgb[k].double().numpy()
        ws.append(w)
        T *= 1.0 - a
    opacity = 1.0 - T
    return acc + T * np.asarray(bg, np.float64), opacity, np.asarray(ts), np.asarray(ws)


def test_renderer_matches_per_ray_reference():
    field = _dense_field()
    scene = NerfScene(field)  # every cell occupied: nothing culled
    o, d = _rays(40, 3, scene.box)
    bg = (0.1, 0.5, 0.9)
    with torch.no_grad():
        out = scene.render_rays(o, d, torch.tensor(bg))
    t0, t1 = ray_bounds(scene.box, o, d)
    opac = []
    for r in range(40):
        rgb, opacity, _, _ = _reference_ray(
            field, o[r].double(), d[r].double(), float(t0[r]), float(t1[r]), scene.march.dt, bg
        )
        np.testing.assert_allclose(out.rgb[r].numpy(), rgb, atol=2e-4)
        assert float(out.opacity[r]) == pytest.approx(opacity, abs=2e-4)
        opac.append(opacity)
    assert max(opac) > 0.5  # the field is not empty: the test compares real compositing


def test_training_render_is_differentiable_and_equals_viewing_render():
    field = _dense_field(1)
    scene = NerfScene(field)
    o, d = _rays(64, 4, scene.box)
    bg = torch.tensor([1.0, 1.0, 1.0])
    out = scene.render_rays(o, d, bg)  # grad enabled: every sample
    out.rgb.sum().backward()
    assert field.table.grad is not None and float(field.table.grad.abs().sum()) > 0
    with torch.no_grad():
        view = scene.render_rays(o, d, bg)  # early-stopped colours
    torch.testing.assert_close(view.rgb, out.rgb.detach(), atol=2e-4, rtol=0)


def test_camera_render_depth_is_camera_z():
    # A field that is a wall: density only beyond world z > 0.3 (camera looks along +z).
    field = _dense_field(2)
    with torch.no_grad():
        field.density_mlp[-1].bias[0] = 8.0
    scene = NerfScene(field)
    K = torch.tensor([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]])
    cam = Camera(
        K,
        torch.eye(4) @ torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3.0], [0, 0, 0, 1]]),
        16,
        16,
    )
    out = render_nerf(scene, cam)
    assert out.rgb.shape == (16, 16, 3) and out.depth.shape == (16, 16, 1)
    # dense from the box's front face at z = -1, i.e. camera z = 2: depth just beyond it
    assert float(out.alpha.min()) > 0.99
    assert 2.0 <= float(out.depth.min()) and float(out.depth.max()) < 2.3
    _, dirs, zpt = camera_rays(cam)
    assert torch.allclose(zpt, dirs @ torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)


class _BallField(NerfField):
    """Analytic density: sigma inside a ball (sharp edge), zero elsewhere; grey colour."""

    def __init__(self, center, radius, sigma, thin=False):
        super().__init__(SMALL, SceneBox((0.0, 0.0, 0.0), 1.0))
        self.c = torch.tensor(center)
        self.r = radius
        self.s = sigma
        self.thin = thin

    def density(self, x):
        dist = (x - self.c).norm(dim=-1)
        inside = (dist - self.r).abs() < 0.02 if self.thin else dist < self.r
        sigma = torch.where(inside, torch.full_like(dist, self.s), torch.zeros_like(dist))
        return sigma, torch.zeros(len(x), SMALL.geo_features)


@pytest.mark.parametrize("thin", [False, True])
def test_occupancy_never_culls_weight_the_reference_sees(thin):
    field = _BallField((0.2, -0.1, 0.05), 0.35, 400.0 if thin else 30.0, thin=thin)
    scene = NerfScene(field)
    frac = scene.refresh_occupancy(full=True, gen=torch.Generator().manual_seed(0))
    assert 0.0 < frac < 0.5  # the grid does skip space
    occ = scene.occupancy
    G = occ.shape[0]
    o, d = _rays(200, 5, scene.box)
    t0, t1 = ray_bounds(scene.box, o, d)
    worst = 0.0
    carried = 0
    for r in range(200):
        _, opacity, ts, ws = _reference_ray(
            field,
            o[r].double(),
            d[r].double(),
            float(t0[r]),
            float(t1[r]),
            scene.march.dt / 4,
            (1, 1, 1),
        )
        if len(ts) == 0:
            continue
        carried += opacity > 0.1
        pts = o[r][None] + torch.tensor(ts, dtype=torch.float32)[:, None] * d[r][None]
        u, _ = scene.box.to_unit(pts)
        c = (u * G).floor().long().clamp(0, G - 1)
        culled = ~occ[c[:, 2], c[:, 1], c[:, 0]]
        worst = max(worst, float(ws[culled.numpy()].sum()))
    assert carried > 20
    assert worst < 1e-3
    # and the culled render equals the uncut one
    full = NerfScene(field)
    with torch.no_grad():
        a = scene.render_rays(o, d, torch.ones(3))
        b = full.render_rays(o, d, torch.ones(3))
    torch.testing.assert_close(a.rgb, b.rgb, atol=2e-3, rtol=0)
    assert a.n_samples < b.n_samples / 2


# ---------------------------------------------------------------------- files
def _small_scene() -> NerfScene:
    scene = NerfScene(_dense_field(3), meta={"up": "+z", "cameras": []})
    scene.refresh_occupancy(full=True, samples_per_cell=2)
    return scene


def test_save_load_round_trip_with_feature_branch(tmp_path):
    scene = _small_scene()
    scene.field.add_feature_branch(4)
    scene.feature_field = FeatureField(
        torch.zeros(0, 4), {"clip": torch.randn(7, 2)}, levels=("whole", "part")
    )
    path = save_nerf(scene, tmp_path / "s.nerf")
    back = load_nerf(path)
    assert back.meta == scene.meta and back.box == scene.box
    assert torch.equal(back.occupancy, scene.occupancy)
    assert back.feature_field is not None and back.feature_field.levels == ("whole", "part")
    torch.testing.assert_close(back.feature_field.heads["clip"], scene.feature_field.heads["clip"])
    o, d = _rays(30, 6, scene.box)
    with torch.no_grad():
        a = scene.render_rays(o, d, torch.ones(3), features=True)
        b = back.render_rays(o, d, torch.ones(3), features=True)
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.features, b.features)
    with pytest.raises(FileExistsError):
        save_nerf(scene, path)
    save_nerf(scene, path, overwrite=True)


def test_bad_nerf_files_get_clear_errors(tmp_path):
    good = save_nerf(_small_scene(), tmp_path / "good.nerf").read_bytes()
    with pytest.raises(FileNotFoundError):
        load_nerf(tmp_path / "missing.nerf")
    with pytest.raises(SceneFormatError, match="not a regular file"):
        load_nerf(tmp_path)
    cases = {
        "empty.nerf": (b"", "too short"),
        "huge_header.nerf": ((10**12).to_bytes(8, "little") + b"{}", "header length"),
        "not_json.nerf": ((4).to_bytes(8, "little") + b"\xff\xfe{{", "not JSON"),
        "other.nerf": ((2).to_bytes(8, "little") + b"{}", "format=scenelab-nerf"),
        "truncated.nerf": (good[: len(good) // 2], "cannot be read"),
    }
    for name, (data, msg) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(SceneFormatError, match=msg):
            load_nerf(p)
    # a newer version, and NaN weights
    from safetensors.torch import load, save

    n = int.from_bytes(good[:8], "little")
    import json

    header = json.loads(good[8 : 8 + n])
    tensors = load(good)
    meta = header["__metadata__"]
    p = tmp_path / "v9.nerf"
    p.write_bytes(save(tensors, metadata={**meta, "version": "9"}))
    with pytest.raises(SceneFormatError, match="version"):
        load_nerf(p)
    bad = dict(tensors)
    bad["table"] = bad["table"].clone()
    bad["table"][0, 0] = float("nan")
    p = tmp_path / "nan.nerf"
    p.write_bytes(save(bad, metadata=meta))
    with pytest.raises(SceneFormatError, match="NaN"):
        load_nerf(p)
    wrong = dict(tensors)
    wrong["table"] = wrong["table"][:10]
    p = tmp_path / "shape.nerf"
    p.write_bytes(save(wrong, metadata=meta))
    with pytest.raises(SceneFormatError, match="do not match"):
        load_nerf(p)
