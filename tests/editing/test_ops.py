import math

import pytest
import torch

from editing import delete, duplicate, isolate, pivot_transform, recolor, transform, unhide
from fields.scene import quat_to_rotmat, sh_to_rgb


def assert_unselected_identical(before, after, mask):
    keep = ~mask
    for a, b in [
        (before.means, after.means),
        (before.quats, after.quats),
        (before.scales, after.scales),
        (before.opacities, after.opacities),
        (before.sh, after.sh),
    ]:
        assert torch.equal(a[keep], b[keep])
    for k, v in before.extras.items():
        assert torch.equal(v, after.extras[k])


def test_delete_keeps_order_and_extras(scene):
    mask = scene.extras["label"] == 2
    out = delete(scene, mask)
    assert len(out) == len(scene) - int(mask.sum())
    assert torch.equal(out.means, scene.means[~mask])
    assert torch.equal(out.extras["feature"], scene.extras["feature"][~mask])
    assert len(scene) == 200  # input untouched


def test_mask_validation(scene):
    with pytest.raises(TypeError):
        delete(scene, torch.zeros(len(scene)))
    with pytest.raises(ValueError, match="200 Gaussians"):
        delete(scene, torch.zeros(3, dtype=torch.bool))


def test_isolate_and_unhide(scene):
    mask = scene.extras["label"] == 0
    iso = isolate(scene, mask)
    assert torch.equal(iso.extras["hidden"], ~mask) and len(iso) == len(scene)
    assert "hidden" not in unhide(iso).extras


def test_recolor_replace_and_tint(scene):
    mask = scene.extras["label"] == 1
    red = recolor(scene, mask, (1.0, 0.0, 0.0))
    assert torch.allclose(
        sh_to_rgb(red.sh[mask, 0]), torch.tensor([1.0, 0, 0]).expand(int(mask.sum()), 3), atol=1e-6
    )
    assert torch.equal(red.sh[mask, 1:], torch.zeros_like(red.sh[mask, 1:]))
    assert_unselected_identical(scene, red, mask)
    half = recolor(scene, mask, (1.0, 0.0, 0.0), strength=0.5)
    old = sh_to_rgb(scene.sh[mask, 0])
    assert torch.allclose(
        sh_to_rgb(half.sh[mask, 0]), 0.5 * old + 0.5 * torch.tensor([1.0, 0, 0]), atol=1e-5
    )
    tint = recolor(scene, mask, (0.5, 1.0, 1.0), mode="tint")
    new = sh_to_rgb(tint.sh[mask, 0])
    assert torch.allclose(new[:, 0], old[:, 0] * 0.5, atol=1e-5) and torch.allclose(
        new[:, 1:], old[:, 1:], atol=1e-5
    )
    with pytest.raises(ValueError):
        recolor(scene, mask, (2.0, 0, 0))
    with pytest.raises(ValueError):
        recolor(scene, mask, (1.0, 0, 0), mode="paint")


def test_transform_about_pivot(scene):
    mask = scene.extras["label"] == 3
    pivot = scene.means[mask].mean(0).double()
    ang = math.radians(90)
    Rz = torch.tensor(
        [[math.cos(ang), -math.sin(ang), 0], [math.sin(ang), math.cos(ang), 0], [0, 0, 1.0]],
        dtype=torch.float64,
    )
    T = pivot_transform(pivot, Rz, scale=2.0, translation=torch.tensor([0, 0, 0.5]))
    out = transform(scene, mask, T)
    expect = (
        (scene.means[mask].double() - pivot) @ Rz.T * 2
        + pivot
        + torch.tensor([0, 0, 0.5], dtype=torch.float64)
    )
    assert torch.allclose(out.means[mask].double(), expect, atol=1e-5)
    assert torch.allclose(out.scales[mask], scene.scales[mask] + math.log(2.0), atol=1e-6)
    Rnew = quat_to_rotmat(out.quats[mask].double())
    assert torch.allclose(Rnew, Rz @ quat_to_rotmat(scene.quats[mask].double()), atol=1e-5)
    assert not torch.equal(out.sh[mask, 1:], scene.sh[mask, 1:])  # degree-1 SH rotated
    assert_unselected_identical(scene, out, mask)


def test_duplicate_appends_copies(scene):
    mask = scene.extras["label"] == 0
    T = pivot_transform(torch.zeros(3), translation=torch.tensor([1.0, 0, 0]))
    out = duplicate(scene, mask, T)
    n, m = len(scene), int(mask.sum())
    assert len(out) == n + m
    assert out.subset(torch.arange(n)).allclose(scene)
    copies = out.subset(torch.arange(n, n + m))
    assert torch.allclose(copies.means, scene.means[mask] + torch.tensor([1.0, 0, 0]), atol=1e-6)
    assert torch.equal(copies.extras["label"], scene.extras["label"][mask])
    assert torch.equal(copies.extras["feature"], scene.extras["feature"][mask])
