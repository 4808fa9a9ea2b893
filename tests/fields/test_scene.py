import math

import pytest
import torch

from fields._sh import eval_sh, rotate_sh, sh_basis
from fields.scene import (
    GaussianScene,
    quat_multiply,
    quat_to_rotmat,
    rgb_to_sh,
    rotmat_to_quat,
    sh_to_rgb,
)


def random_scene(n=50, degree=2, seed=0, extras=True):
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    ex = {}
    if extras:
        ex = {
            "label": torch.randint(0, 5, (n,), generator=g, dtype=torch.int32),
            "feature": torch.randn(n, 8, generator=g),
            "selected": torch.rand(n, generator=g) > 0.5,
        }
    return GaussianScene(
        means=torch.randn(n, 3, generator=g),
        quats=torch.randn(n, 4, generator=g),
        scales=torch.randn(n, 3, generator=g) - 3,
        opacities=torch.randn(n, generator=g),
        sh=torch.randn(n, k, 3, generator=g) * 0.3,
        extras=ex,
        meta={"label_names": {"0": "table"}},
    )


def random_rotation(seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(4, generator=g, dtype=torch.float64), dim=0)
    return quat_to_rotmat(q)


def test_len_and_repr():
    s = random_scene(17)
    assert len(s) == 17
    assert s.sh_degree == 2
    assert "N=17" in repr(s)


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"means": torch.zeros(3, 2)}, "means"),
        ({"quats": torch.zeros(3, 3)}, "quats"),
        ({"opacities": torch.zeros(4)}, "opacities"),
        ({"sh": torch.zeros(3, 5, 3)}, "SH"),
        ({"extras": {"label": torch.zeros(2)}}, "label"),
    ],
)
def test_shape_validation(kw, msg):
    base = dict(
        means=torch.zeros(3, 3),
        quats=torch.zeros(3, 4),
        scales=torch.zeros(3, 3),
        opacities=torch.zeros(3),
        sh=torch.zeros(3, 1, 3),
    )
    base.update(kw)
    with pytest.raises(ValueError, match=msg):
        GaussianScene(**base)


def test_subset_mask_and_index_keep_extras_aligned():
    s = random_scene(30)
    mask = s.extras["selected"]
    sub = s.subset(mask)
    assert len(sub) == int(mask.sum())
    assert torch.equal(sub.means, s.means[mask])
    assert torch.equal(sub.extras["feature"], s.extras["feature"][mask])
    idx = torch.tensor([5, 2, 2, 29])
    sub = s.subset(idx)
    assert torch.equal(sub.extras["label"], s.extras["label"][idx])
    assert torch.equal(sub.sh, s.sh[idx])
    with pytest.raises(IndexError):
        s.subset(torch.tensor([30]))
    with pytest.raises(ValueError):
        s.subset(torch.ones(29, dtype=torch.bool))


def test_scene_is_immutable_value():
    s = random_scene(5)
    before = s.means.clone()
    s.transform(torch.eye(4) * 2 + torch.diag(torch.tensor([0, 0, 0, -1.0])))
    s.with_extras(label=None)
    assert torch.equal(s.means, before)
    assert "label" in s.extras


def test_concat_pads_sh_and_fills_missing_extras():
    a = random_scene(4, degree=0, extras=False).with_extras(
        label=torch.arange(4, dtype=torch.int32)
    )
    b = random_scene(3, degree=2, seed=1, extras=False).with_extras(
        feature=torch.ones(3, 2), selected=torch.ones(3, dtype=torch.bool)
    )
    c = GaussianScene.concat([a, b])
    assert len(c) == 7 and c.sh_degree == 2
    assert torch.equal(c.sh[:4, 1:], torch.zeros(4, 8, 3))
    assert c.extras["label"].tolist() == [0, 1, 2, 3, -1, -1, -1]
    assert torch.equal(c.extras["feature"][:4], torch.zeros(4, 2))
    assert c.extras["selected"].tolist() == [False] * 4 + [True] * 3
    with pytest.raises(ValueError, match="trailing shape"):
        GaussianScene.concat([b, b.with_extras(feature=torch.ones(3, 5))])


def test_quaternion_helpers_roundtrip():
    for seed in range(10):
        R = random_rotation(seed)
        q = rotmat_to_quat(R)
        assert torch.allclose(quat_to_rotmat(q), R, atol=1e-12)
    q1 = torch.nn.functional.normalize(torch.randn(6, 4, dtype=torch.float64), dim=-1)
    q2 = torch.nn.functional.normalize(torch.randn(6, 4, dtype=torch.float64), dim=-1)
    assert torch.allclose(
        quat_to_rotmat(quat_multiply(q1, q2)), quat_to_rotmat(q1) @ quat_to_rotmat(q2), atol=1e-12
    )


def test_rgb_sh_roundtrip():
    rgb = torch.rand(10, 3)
    assert torch.allclose(sh_to_rgb(rgb_to_sh(rgb)), rgb, atol=1e-6)


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_sh_rotation_moves_colour_with_scene(degree):
    """f'(R d) == f(d) for every direction: the rotated field is the old one carried along."""
    g = torch.Generator().manual_seed(degree)
    sh = torch.randn(20, (degree + 1) ** 2, 3, generator=g, dtype=torch.float64)
    R = random_rotation(7 + degree)
    sh_rot = rotate_sh(sh, R)
    d = torch.nn.functional.normalize(torch.randn(20, 3, generator=g, dtype=torch.float64), dim=-1)
    basis = sh_basis(degree, d)
    basis_rot = sh_basis(degree, d @ R.T)
    f = torch.einsum("nk,nkc->nc", basis, sh)
    f_rot = torch.einsum("nk,nkc->nc", basis_rot, sh_rot)
    assert torch.allclose(f, f_rot, atol=1e-10)
    # The DC band is untouched and a rotation by identity is a no-op.
    assert torch.equal(sh_rot[:, 0], sh[:, 0])
    assert torch.allclose(rotate_sh(sh, torch.eye(3, dtype=torch.float64)), sh, atol=1e-12)


def test_sh_rotation_composes():
    sh = torch.randn(5, 16, 3, dtype=torch.float64)
    R1, R2 = random_rotation(1), random_rotation(2)
    assert torch.allclose(rotate_sh(rotate_sh(sh, R1), R2), rotate_sh(sh, R2 @ R1), atol=1e-10)


def test_similarity_transform():
    s = random_scene(40, degree=3)
    R = random_rotation(3)
    scale, t = 2.5, torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = scale * R
    T[:3, 3] = t
    out = s.transform(T)
    assert torch.allclose(out.means.double(), scale * s.means.double() @ R.T + t, atol=1e-5)
    assert torch.allclose(out.scales, s.scales + math.log(scale), atol=1e-6)

    # Covariance transforms as A Σ Aᵀ.
    def cov(sc):
        Rq = quat_to_rotmat(sc.quats.double())
        S = torch.diag_embed(torch.exp(2 * sc.scales.double()))
        return Rq @ S @ Rq.transpose(-1, -2)

    A = T[:3, :3]
    assert torch.allclose(cov(out), A @ cov(s) @ A.T, atol=1e-5, rtol=1e-4)
    # View-dependent colour follows the rotation.
    d = torch.nn.functional.normalize(torch.randn(40, 3, dtype=torch.float64), dim=-1)
    c_old = eval_sh(s.sh.double(), d)
    c_new = eval_sh(out.sh.double(), d @ R.T)
    assert torch.allclose(c_old, c_new, atol=1e-5)
    # Extras travel untouched.
    assert torch.equal(out.extras["label"], s.extras["label"])


def test_transform_rejects_shear_and_mirror():
    s = random_scene(3)
    shear = torch.eye(4)
    shear[0, 1] = 0.5
    with pytest.raises(ValueError, match="shear"):
        s.transform(shear)
    with pytest.raises(ValueError, match="shear"):
        s.transform(torch.diag(torch.tensor([-1.0, 1, 1, 1])))


def test_with_sh_degree_and_allclose():
    s = random_scene(6, degree=1)
    up = s.with_sh_degree(3)
    assert up.sh_degree == 3 and torch.equal(up.sh[:, :4], s.sh)
    assert up.with_sh_degree(1).allclose(s)
    assert not s.allclose(s.replace(means=s.means + 1e-3))
    assert s.allclose(s.replace(means=s.means + 1e-7), atol=1e-6)


def test_from_activated_roundtrip():
    n = 8
    colors = torch.rand(n, 3)
    s = GaussianScene.from_activated(
        torch.zeros(n, 3),
        torch.tensor([[1.0, 0, 0, 0]] * n),
        torch.full((n, 3), 0.01),
        torch.full((n,), 0.9),
        colors,
    )
    assert torch.allclose(s.colors, colors, atol=1e-6)
    assert torch.allclose(s.activated_opacities(), torch.full((n,), 0.9), atol=1e-6)
    assert torch.allclose(s.activated_scales(), torch.full((n, 3), 0.01), atol=1e-8)
