import numpy as np
import pytest
import torch

from editing import combine, grow, isolate, pick, pixel_ray, select_box, select_rect, select_sphere
from fields import Camera, GaussianScene
from fields.scene import quat_to_rotmat

from .conftest import make_scene

K = torch.tensor([[80.0, 0, 40], [0, 80.0, 30], [0, 0, 1]])


def cam():
    return Camera.look_at((0.0, -4.0, 0.5), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), K, 80, 60)


def first_hit_reference(scene, o, d, min_alpha):
    """Brute force: march the ray finely; first Gaussian whose alpha reaches min_alpha."""
    R = quat_to_rotmat(scene.quats.double())
    S = torch.exp(scene.scales.double())
    cov_inv = R @ torch.diag_embed(1 / S**2) @ R.transpose(-1, -2)
    ts = torch.linspace(0, 10, 20001, dtype=torch.float64)
    pts = o.double() + ts[:, None] * d.double()  # [T,3]
    best_t, best_i = np.inf, None
    opac = torch.sigmoid(scene.opacities.double())
    for i in range(len(scene)):
        x = pts - scene.means[i].double()
        m2 = torch.einsum("ti,ij,tj->t", x, cov_inv[i], x)
        a = opac[i] * torch.exp(-0.5 * m2)
        j = int(torch.argmax(a))
        if a[j] >= min_alpha and ts[j] < best_t:
            best_t, best_i = float(ts[j]), i
    return best_i


def test_pick_matches_brute_force_ray_march():
    scene = make_scene(60, seed=3)
    c = cam()
    hits = 0
    for u, v in [(40, 30), (30, 25), (50, 35), (20, 40), (60, 20), (44, 31)]:
        o, d = pixel_ray(c, u, v)
        ref = first_hit_reference(scene, o, d, 0.2)
        got = pick(scene, c, u, v, min_alpha=0.2)
        assert got == ref
        hits += got is not None
    assert hits >= 1  # the probe rays do hit something


def test_pick_nearest_and_hidden():
    # Two opaque Gaussians on the optical axis: the nearer one wins, unless hidden.
    scene = GaussianScene.from_activated(
        torch.tensor([[0.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),
        torch.tensor([[1.0, 0, 0, 0]] * 2),
        torch.full((2, 3), 0.1),
        torch.full((2,), 0.9),
        torch.rand(2, 3),
    )
    c = Camera.look_at((0.0, -4.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), K, 80, 60)
    assert pick(scene, c, 40, 30) == 1
    assert pick(isolate(scene, torch.tensor([True, False])), c, 40, 30) == 0
    assert pick(scene, c, 1, 1) is None


def test_rect_through_is_projection_inside_rect(scene):
    c = cam()
    mask = select_rect(scene, c, (50, 40, 20, 10), through=True)
    V = c.viewmat.double()
    pc = scene.means.double() @ V[:3, :3].T + V[:3, 3]
    ref = []
    for p in pc:
        u = 80 * p[0] / p[2] + 40
        v = 80 * p[1] / p[2] + 30
        ref.append(bool(p[2] > 0.01 and 20 <= u <= 50 and 10 <= v <= 40))
    assert mask.tolist() == ref and 0 < sum(ref) < len(scene)


def test_box_and_sphere(scene):
    T = torch.eye(4, dtype=torch.float64)
    a = 0.5
    T[:3, :3] = torch.tensor([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    T[:3, 3] = torch.tensor([0.1, 0.2, 0.0])
    half = torch.tensor([0.4, 0.2, 0.3], dtype=torch.float64)
    mask = select_box(scene, T, half)
    local = torch.linalg.solve(
        T, torch.cat([scene.means.double(), torch.ones(len(scene), 1, dtype=torch.float64)], 1).T
    ).T[:, :3]
    assert torch.equal(mask, (local.abs() <= half).all(-1))
    s = select_sphere(scene, (0.0, 0.0, 0.0), 0.5)
    assert torch.equal(s, scene.means.norm(dim=-1) <= 0.5) and 0 < int(s.sum()) < len(scene)


def test_grow_and_shrink_match_brute_force(scene):
    seed = select_sphere(scene, (0.0, 0.0, 0.0), 0.4)
    D = torch.cdist(scene.means.double(), scene.means.double())
    grown = grow(scene, seed, 0.2)
    ref = seed | (D[:, seed] <= 0.2).any(1)
    assert torch.equal(grown, ref) and int(grown.sum()) > int(seed.sum())
    shrunk = grow(scene, seed, -0.2)
    ref_s = seed & ~(D[:, ~seed] <= 0.2).any(1)
    assert torch.equal(shrunk, ref_s) and int(shrunk.sum()) < int(seed.sum())


def test_combine_modes():
    a = torch.tensor([True, True, False, False])
    b = torch.tensor([True, False, True, False])
    assert combine(a, b, "replace").tolist() == b.tolist()
    assert combine(a, b, "add").tolist() == [True, True, True, False]
    assert combine(a, b, "subtract").tolist() == [False, True, False, False]
    assert combine(a, b, "intersect").tolist() == [True, False, False, False]
    with pytest.raises(ValueError):
        combine(a, b, "xor")
