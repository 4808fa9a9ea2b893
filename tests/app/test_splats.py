"""Scene -> viser splat buffer: same bytes as viser's own packing, colour-only updates reuse the
geometry, selection highlight and hidden Gaussians."""

import numpy as np
import torch
from viser import GaussianSplatHandle

import editing
from app.viewer._splats import (
    HIGHLIGHT,
    SplatBuffer,
    covariances,
    display_colors,
    pack_geometry,
    pack_rgba,
    turbo,
    unpack,
)
from fields.scene import quat_to_rotmat


def viser_buffer(centers, covs, rgbs, opacities):
    """The buffer viser's own packing (used by add_gaussian_splats / set_gaussians) produces."""
    buf = np.zeros((len(centers), 8), np.uint32)
    GaussianSplatHandle._pack_centers(buf, centers)
    GaussianSplatHandle._pack_covariances(buf, covs)
    GaussianSplatHandle._pack_rgba(buf, rgbs=rgbs, opacities=opacities)
    return buf


def test_covariances_match_a_float64_reference(scene):
    cov = covariances(scene.quats, scene.scales).double()
    R = quat_to_rotmat(scene.quats.double())
    S = torch.diag_embed(torch.exp(scene.scales.double()))
    ref = R @ S @ S @ R.transpose(1, 2)
    assert torch.allclose(cov, ref, rtol=1e-4, atol=1e-9)


def test_packed_buffer_has_viser_layout(scene):
    geo = pack_geometry(scene)
    rgb = (np.arange(len(scene) * 3).reshape(-1, 3) % 256).astype(np.uint8)
    alpha = (np.arange(len(scene)) % 256).astype(np.uint8)
    geo[:, 7] = pack_rgba(rgb, alpha)
    cov = covariances(scene.quats, scene.scales).numpy()
    ref = viser_buffer(scene.means.numpy(), cov, rgb, alpha[:, None])
    # Centres and colours byte for byte; covariances to float16 precision (computed entry-wise).
    assert np.array_equal(geo[:, [0, 1, 2, 3, 7]], ref[:, [0, 1, 2, 3, 7]])
    ours, theirs = unpack(geo), unpack(ref)
    assert np.allclose(ours["covariances"], theirs["covariances"], rtol=2e-3, atol=1e-9)
    assert np.allclose(ours["covariances"], cov, rtol=2e-3, atol=1e-7)
    assert np.array_equal(ours["rgb"], rgb) and np.array_equal(ours["alpha"], alpha)


def test_colours_come_from_sh_dc_and_opacity_from_logits(scene):
    frame = SplatBuffer().build(scene)
    parts = unpack(frame.buffer)
    expect_rgb = np.round(scene.colors.clamp(0, 1).numpy() * 255)
    assert np.abs(parts["rgb"].astype(int) - expect_rgb).max() <= 1
    expect_a = np.round(torch.sigmoid(scene.opacities).numpy() * 255)
    assert np.abs(parts["alpha"].astype(int) - expect_a).max() <= 1


def test_recolour_and_selection_reuse_packed_geometry(scene):
    buf = SplatBuffer()
    buf.build(scene)
    assert buf.geometry_packs == 1
    sel = scene.extras["label"] == 1
    f1 = buf.build(scene, sel)
    recoloured = editing.recolor(scene, sel, (0.0, 1.0, 0.0))
    f2 = buf.build(recoloured, sel, mode="rgb")
    assert buf.geometry_packs == 1  # colour-only changes never re-pack geometry
    hl = np.round(np.asarray(HIGHLIGHT) * 255)
    rgb1 = unpack(f1.buffer)["rgb"].astype(int)
    assert np.all(
        np.abs(rgb1[sel.numpy()] - hl).max(1) < np.abs(rgb1[~sel.numpy()] - hl).max(1).min() + 1
    )
    rgb2 = unpack(f2.buffer)["rgb"]
    assert not np.array_equal(rgb1[sel.numpy()], rgb2[sel.numpy()])
    assert np.array_equal(rgb1[~sel.numpy()], rgb2[~sel.numpy()])
    shift = editing.pivot_transform(torch.zeros(3), translation=torch.tensor([0.5, 0.0, 0.0]))
    moved = editing.transform(scene, sel, shift)
    buf.build(moved)
    assert buf.geometry_packs == 2


def test_hidden_gaussians_are_left_out(scene):
    sel = scene.extras["label"] == 2
    frame = SplatBuffer().build(editing.isolate(scene, sel))
    assert frame.count == int(sel.sum())
    assert np.array_equal(frame.shown, np.flatnonzero(sel.numpy()))
    assert np.allclose(unpack(frame.buffer)["centers"], scene.means[sel].numpy())


def test_display_modes():
    rgb = np.full((4, 3), 0.5, np.float32)
    sel = np.array([True, False, True, False])
    shown = display_colors(rgb, sel, "selection")
    assert np.allclose(shown[sel], HIGHLIGHT) and np.all(shown[~sel] < 0.5)
    vals = display_colors(rgb, None, "values", np.array([0.0, 1.0, 2.0, 3.0]))
    assert np.allclose(vals[0], turbo(np.array(0.0))) and np.allclose(vals[3], turbo(np.array(1.0)))
    assert not np.allclose(turbo(np.array(0.0)), turbo(np.array(1.0)))


def test_derived_geometry_equals_a_full_pack(scene):
    """Delete, duplicate and transform reuse packed rows; the result is what a full pack gives."""
    red = scene.extras["label"] == 1
    buf = SplatBuffer()
    buf.build(scene)
    shift = editing.pivot_transform(torch.zeros(3), translation=torch.tensor([0.0, 0.3, 0.0]))
    cases = []
    deleted = editing.delete(scene, red)
    buf.derive(scene, deleted, index=~red)
    cases.append(deleted)
    moved = editing.transform(scene, red, shift)
    buf.derive(scene, moved, changed=red)
    cases.append(moved)
    dup = editing.duplicate(scene, red, shift)
    copies = torch.arange(len(dup)) >= len(scene)
    buf.derive(
        scene,
        dup,
        index=torch.cat([torch.arange(len(scene)), red.nonzero().squeeze(1)]),
        changed=copies,
    )
    cases.append(dup)
    for new in cases:
        buf.build(scene)  # the base is the current cache entry again
        frame = buf.build(new)
        assert np.array_equal(frame.buffer[:, :7], pack_geometry(new)[:, :7])
    assert buf.geometry_packs == 1  # only the first full pack
    assert buf.rows_packed == len(scene) + 2 * int(red.sum())


def test_undo_redo_hit_the_geometry_cache(scene):
    red = scene.extras["label"] == 1
    buf = SplatBuffer()
    buf.build(scene)
    deleted = editing.delete(scene, red)
    buf.build(deleted)
    packs = buf.geometry_packs
    for s in (scene, deleted, scene):
        buf.build(s)
    assert buf.geometry_packs == packs == 2


def test_thinned_sample_is_widened_and_stable_under_edits(scene):
    from app.viewer._splats import thin_out

    buf = SplatBuffer()
    full = buf.build(scene)
    frame = buf.build(scene, budget=1000)
    assert frame.thinned and frame.count == 1000
    rows = frame.shown
    parts, ref = unpack(frame.buffer), unpack(full.buffer)
    assert np.array_equal(parts["centers"], ref["centers"][rows])
    ratio = len(scene) / 1000
    assert np.allclose(parts["covariances"], ref["covariances"][rows] * ratio, rtol=2e-3, atol=1e-7)
    # Deleting Gaussians that were not sampled leaves the sample as it was.
    unsampled = torch.ones(len(scene), dtype=torch.bool)
    unsampled[torch.as_tensor(rows)] = False
    drop = unsampled & (torch.rand(len(scene), generator=torch.Generator().manual_seed(1)) < 0.5)
    after = buf.build(
        editing.delete(scene, drop), budget=1000 * (len(scene) - int(drop.sum())) // len(scene)
    )
    kept_centers = {tuple(c) for c in unpack(after.buffer)["centers"].round(6)}
    before_centers = {tuple(c) for c in parts["centers"].round(6)}
    assert len(kept_centers & before_centers) > 0.8 * len(kept_centers)
    same, _ = thin_out(full.buffer, len(scene))
    assert same is full.buffer
