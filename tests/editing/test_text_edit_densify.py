"""Densifying text edits (`TextEditConfig(densify=True)`, `editing._densify`): under a toy
denoiser that points at renders of a bigger green ball, the selected small red ball grows towards
it (alpha-mask IoU) where a non-densifying edit cannot, inside its margin box, and every other
Gaussian comes out bit-identical, first and in its order."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from editing._densify import GrowingObject, MarginBox, object_learning_rates
from editing.text_edit import (
    TextEditConfig,
    edit_views,
    grow_box,
    text_edit,
    text_edit_mask,
    text_edit_result,
)
from fields import GaussianScene, render

sd = pytest.importorskip("editing.score_distillation")

RED, BLUE, GREEN = (0.85, 0.1, 0.1), (0.1, 0.2, 0.85), (0.1, 0.8, 0.15)
SIZE = 64  # the toy's resolution


def ball(n: int, radius: float, centre, color, scale: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g)
    d = d / d.norm(dim=-1, keepdim=True) * radius * torch.rand(n, 1, generator=g) ** (1 / 3)
    means = torch.tensor(centre, dtype=torch.float32) + d
    quats = torch.randn(n, 4, generator=g)
    return means, quats, torch.full((n, 3), scale), torch.tensor(color).expand(n, 3)


def world() -> GaussianScene:
    """A small red ball (label 0, the selection) at the origin, a blue ball far away (label 1)
    and a few hidden Gaussians (label 2); extras label, feature, hidden."""
    parts = [
        ball(150, 0.08, (0.0, 0.0, 0.0), RED, 0.02, 0),
        ball(100, 0.1, (3.0, 0.0, 0.0), BLUE, 0.03, 1),
        ball(10, 0.05, (0.0, 2.0, 0.0), BLUE, 0.03, 2),
    ]
    n = sum(len(p[0]) for p in parts)
    labels = torch.cat(
        [torch.full((len(p[0]),), i, dtype=torch.int32) for i, p in enumerate(parts)]
    )
    return GaussianScene.from_activated(
        torch.cat([p[0] for p in parts]),
        torch.cat([p[1] for p in parts]),
        torch.cat([p[2] for p in parts]),
        torch.full((n,), 0.9),
        torch.cat([p[3] for p in parts]),
        extras={
            "label": labels,
            "feature": torch.randn(n, 4, generator=torch.Generator().manual_seed(3)),
            "hidden": labels == 2,
        },
        meta={"up": "+z", "units": "m"},
    )


def config(**changes) -> TextEditConfig:
    base = {
        "prompt": "a big green ball",
        "method": "sds",
        "size": SIZE,
        "views": 8,
        "steps": 60,
        "params": ("color", "opacity", "scale", "position"),
        "lr_position": 0.02,
        "grow_margin": 0.3,
        "densify_every": 10,
        "densify": True,
    }
    return TextEditConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def scene() -> GaussianScene:
    return world()


@pytest.fixture(scope="module")
def mask(scene) -> torch.Tensor:
    return scene.extras["label"] == 0


@pytest.fixture(scope="module")
def target(scene, mask):
    """(target scene: a green ball 1.5x the selection's radius, in its box; distiller)."""
    centre = 0.5 * (scene.means[mask].amin(0) + scene.means[mask].amax(0))
    m, q, s, c = ball(400, 0.12, tuple(centre.tolist()), GREEN, 0.02, 5)
    big = GaussianScene.from_activated(m, q, s, torch.full((400,), 0.9), c)
    cam = edit_views(scene, mask, config())[0]
    image = render(big, cam, background=torch.ones(3)).rgb.permute(2, 0, 1).clamp(0.0, 1.0)
    return big, sd.toy_distiller(image)


def mean_iou(a: GaussianScene, b: GaussianScene, cams) -> float:
    """Mean over `cams` of the IoU of the two scenes' alpha masks (alpha > 0.5)."""
    out = []
    for cam in cams:
        x = render(a, cam).alpha[..., 0] > 0.5
        y = render(b, cam).alpha[..., 0] > 0.5
        out.append(float((x & y).sum()) / max(1.0, float((x | y).sum())))
    return sum(out) / len(out)


@pytest.fixture(scope="module")
def grown(scene, mask, target):
    return text_edit_result(scene, mask, target[1], config())


# ---------------------------------------------------------------------- the contract
def test_densifying_edit_grows_towards_the_target_shape(scene, mask, target, grown):
    big, distiller = target
    cams = edit_views(scene, mask, config())
    before = mean_iou(scene.subset(mask), big, cams)
    flat = text_edit_result(scene, mask, distiller, config(densify=False))
    after_flat = mean_iou(flat.scene.subset(flat.mask), big, cams)
    after = mean_iou(grown.scene.subset(grown.mask), big, cams)
    assert after > before + 0.2, (before, after)
    assert after - before > after_flat - before + 0.2, (before, after_flat, after)
    assert int(grown.mask.sum()) > int(mask.sum()) and grown.born > 0
    # The same edit with densification switched off (threshold out of reach) covers less.
    still = text_edit_result(scene, mask, distiller, config(grad_threshold=1e9))
    assert len(still.scene) == len(scene) and still.born == 0
    assert after > mean_iou(still.scene.subset(still.mask), big, cams) + 0.01
    assert len(flat.scene) == len(scene)  # without densify the count never changes


def test_the_rest_is_bit_identical_and_first(scene, mask, grown):
    out, new = grown.scene, grown.mask
    n_rest = int((~mask).sum())
    assert not bool(new[:n_rest].any()) and bool(new[n_rest:].all())
    rest = scene.subset(~mask)
    for name in ("means", "quats", "scales", "opacities", "sh"):
        assert torch.equal(getattr(out, name)[:n_rest], getattr(rest, name)), name
    assert set(out.extras) == set(scene.extras)
    for k, v in scene.extras.items():
        assert torch.equal(out.extras[k][:n_rest], v[~mask]), k
        # The object's Gaussians carry the extras of the row they grew from.
        assert torch.equal(out.extras[k][new], v[grown.rows[new]]), k
    assert out.meta == scene.meta
    assert torch.equal(grown.rows[:n_rest], (~mask).nonzero().squeeze(1))
    assert bool(mask[grown.rows[new]].all())  # grown from the selection only
    assert torch.equal(text_edit_mask(scene, mask, out), new)


def test_means_stay_in_the_margin_box(scene, mask, grown):
    box = grow_box(scene, mask, config())
    means = grown.scene.means[grown.mask]
    assert bool(box.contains(means).all())
    # ... and the object used the room: it reaches beyond the selection's own box.
    lo, hi = scene.means[mask].amin(0), scene.means[mask].amax(0)
    assert bool(((means < lo - 1e-3) | (means > hi + 1e-3)).any())
    # A box with no margin keeps the object inside the selection's bounding box.
    tight = text_edit_result(
        scene, mask, sd.toy_distiller(torch.ones(3, SIZE, SIZE)), config(grow_margin=0.0, steps=20)
    )
    assert bool(
        grow_box(scene, mask, config(grow_margin=0.0)).contains(tight.scene.means[tight.mask]).all()
    )


def test_cap_and_pruning(scene, mask, target):
    res = text_edit_result(scene, mask, target[1], config(max_gaussians=1.3, prune_opacity=0.3))
    m = int(mask.sum())
    assert m < int(res.mask.sum()) <= math.ceil(1.3 * m)
    assert bool((res.scene.opacities[res.mask].sigmoid() >= 0.3).all())


def test_previews_stop_and_determinism(scene, mask, target):
    seen = []

    def on_step(step, steps, preview):
        if preview is not None:
            seen.append((step, len(preview)))
            n_rest = int((~mask).sum())
            assert torch.equal(preview.means[:n_rest], scene.means[~mask])

    calls = iter(range(1000))
    cfg = config(steps=40, preview_every=10)
    out = text_edit(
        scene, mask, target[1], cfg, on_step=on_step, should_stop=lambda: next(calls) >= 25
    )
    assert [s for s, _ in seen] == [1, 10, 20]
    assert len({n for _, n in seen}) > 1  # the count changed while it ran
    assert torch.equal(
        text_edit_mask(scene, mask, out)[: int((~mask).sum())],
        torch.zeros(int((~mask).sum()), dtype=torch.bool),
    )
    again = text_edit(scene, mask, target[1], cfg, should_stop=lambda: False)
    twice = text_edit(scene, mask, target[1], cfg)
    assert again.allclose(twice)


def test_anchor_weight_holds_the_object_in_place(scene, mask, target):
    cfg = config(steps=30, densify_every=1000)  # no densification: rows stay comparable
    free = text_edit_result(scene, mask, target[1], replace(cfg, anchor_weight=0.0))
    held = text_edit_result(scene, mask, target[1], replace(cfg, anchor_weight=1e4))
    orig = scene.means[mask]
    moved_free = (free.scene.means[free.mask] - orig).norm(dim=-1).mean()
    moved_held = (held.scene.means[held.mask] - orig).norm(dim=-1).mean()
    assert moved_held < 0.2 * moved_free


# ---------------------------------------------------------------------- text_edit_mask
def test_text_edit_mask_for_in_place_edits_and_foreign_results(scene, mask):
    edited = text_edit(
        scene, mask, sd.toy_distiller(torch.ones(3, SIZE, SIZE)), config(densify=False, steps=2)
    )
    assert torch.equal(text_edit_mask(scene, mask, edited), mask)
    other = scene.replace(means=scene.means + 1.0)
    with pytest.raises(ValueError, match="not a text edit"):
        text_edit_mask(scene, mask, other)


# ---------------------------------------------------------------------- densification parts
def grow_object(scene, mask, margin=0.3):
    index = mask.nonzero().squeeze(1)
    box = MarginBox.around(scene.means[mask], margin)
    lrs = object_learning_rates(0.05, 0.05, 0.01, 0.001, color=True)
    return GrowingObject(scene, index, lrs, box, radius=0.1)


def test_clone_and_split_track_parents_and_stay_in_the_box(scene, mask):
    obj = grow_object(scene, mask)
    k = len(obj)
    # Half the Gaussians made larger than the clone size: those split, the rest clone.
    with torch.no_grad():
        obj.params["scales"][: k // 2] += 1.0
    obj.reanchor()
    grad = torch.zeros(k, 2)
    grad[::3] = 1.0  # every third Gaussian has a high gradient
    obj.accumulate(grad, torch.ones(k, 2, dtype=torch.int32), (SIZE, SIZE), 1)
    high = torch.zeros(k, dtype=torch.bool)
    high[::3] = True
    big = torch.zeros(k, dtype=torch.bool)
    big[: k // 2] = True
    parents_before = obj.parents.clone()
    added = obj.densify(1.0, cap=10 * k, generator=torch.Generator().manual_seed(0))
    n_clone, n_split = int((high & ~big).sum()), int((high & big).sum())
    assert added == n_clone + n_split and len(obj) == k + added
    assert obj.born == n_clone + 2 * n_split
    # Survivors first in order (split parents gone), then clones, then split children.
    survivors = parents_before[~(high & big)]
    assert torch.equal(obj.parents[: len(survivors)], survivors)
    expect_new = torch.cat([parents_before[high & ~big], parents_before[high & big].repeat(2)])
    assert torch.equal(obj.parents[len(survivors) :], expect_new)
    assert bool(obj.box.contains(obj.params["means"].detach()).all())
    for t in obj.params.tensors.values():
        assert len(t) == len(obj)
    # Each new Gaussian is anchored at its birth state; survivors keep their anchors.
    assert float(obj.anchor_loss().detach()) == 0.0
    with torch.no_grad():
        obj.params["means"].add_(0.01)
    assert float(obj.anchor_loss().detach()) > 0
    obj.reanchor()
    assert float(obj.anchor_loss().detach()) == 0.0


def test_cap_limits_growth_to_the_highest_gradients(scene, mask):
    obj = grow_object(scene, mask)
    k = len(obj)
    grad = torch.linspace(0, 1, k)[:, None].expand(k, 2).contiguous()
    obj.accumulate(grad, torch.ones(k, 2, dtype=torch.int32), (SIZE, SIZE), 1)
    parents = obj.parents.clone()
    added = obj.densify(0.0, cap=k + 5, generator=torch.Generator().manual_seed(0))
    assert added == 5 and len(obj) == k + 5
    new = obj.parents[len(obj) - obj.born :]
    assert set(new.tolist()) == set(parents[-5:].tolist())  # grown from the five steepest


def test_prune_never_empties_the_object(scene, mask):
    obj = grow_object(scene, mask)
    with torch.no_grad():
        obj.params["opacities"].fill_(-10.0)
        obj.params["opacities"][7] = -9.0
    assert obj.prune(0.5) == len(scene.means[mask]) - 1
    assert len(obj) == 1 and int(obj.parents[0]) == int(mask.nonzero()[7])


def test_screen_region_covers_the_box_projection(scene, mask):
    box = MarginBox.around(scene.means[mask], 0.2)
    cam = edit_views(scene, mask, config())[0]
    region = box.screen_region(cam)[0]
    g = torch.Generator().manual_seed(0)
    pts = box.lo + torch.rand(2000, 3, generator=g) * (box.hi - box.lo)
    V = cam.viewmat.double()
    pc = pts.double() @ V[:3, :3].T + V[:3, 3]
    u = (cam.K[0, 0] * pc[:, 0] / pc[:, 2] + cam.K[0, 2]).long()
    v = (cam.K[1, 1] * pc[:, 1] / pc[:, 2] + cam.K[1, 2]).long()
    inside = (u >= 0) & (u < SIZE) & (v >= 0) & (v < SIZE)
    assert bool(region[v[inside], u[inside]].bool().all())
    assert 0 < float(region.mean()) < 1  # a rectangle, not the whole view


def test_margin_box_grows_flat_selections_upward():
    flat = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
    box = MarginBox.around(flat, 0.25)
    assert torch.allclose(box.lo, torch.tensor([-0.25, -0.25, -0.25]))
    assert torch.allclose(box.hi, torch.tensor([1.25, 0.75, 0.25]))
    assert bool(box.contains(box.clamp(torch.randn(50, 3) * 5)).all())


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"densify_every": 0}, "densify_every"),
        ({"densify_from": 0.8, "densify_until": 0.5}, "densify_from"),
        ({"densify_until": 1.5}, "densify_from"),
        ({"grad_threshold": -1.0}, "grad_threshold"),
        ({"grow_margin": float("nan")}, "grow_margin"),
        ({"anchor_weight": -0.1}, "anchor_weight"),
        ({"max_gaussians": 0.5}, "max_gaussians"),
        ({"prune_opacity": 1.0}, "prune_opacity"),
    ],
)
def test_bad_densify_settings_are_refused(change, match):
    with pytest.raises(ValueError, match=match):
        config(**change)


def test_empty_selection_is_refused(scene):
    with pytest.raises(ValueError, match="empty"):
        text_edit(scene, torch.zeros(len(scene), dtype=torch.bool), None, config())
