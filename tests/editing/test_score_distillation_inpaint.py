"""Inpainting score distillation: masked SDS (the update only inside the mask) on the toy
denoiser and a tiny random diffusers UNet, and the 9-channel inpainting UNet path through a tiny
random inpainting pipeline saved and loaded from disk (checked against diffusers' own
`StableDiffusionInpaintPipeline` preprocessing)."""

import json

import pytest
import torch
import torch.nn.functional as F

from editing.score_distillation import (
    KNOWN_MODELS,
    DistillationConfig,
    ScoreDistiller,
    load_distiller,
    make_tiny_pipeline,
    tiny_parts,
    toy_distiller,
)
from fields.features import MissingWeightsError

RED = (0.9, 0.15, 0.1)


def solid(rgb, size=32):
    return torch.tensor(rgb, dtype=torch.float32).reshape(3, 1, 1).expand(3, size, size).clone()


def box_mask(b, h, w, rows, cols):
    m = torch.zeros(b, 1, h, w)
    m[..., rows[0] : rows[1], cols[0] : cols[1]] = 1.0
    return m


def image_grad(distiller, image, seed=0, **loss_kw):
    x = image.clone().requires_grad_(True)
    distiller.loss(x, generator=torch.Generator().manual_seed(seed), **loss_kw).backward()
    return x.grad


def unet_inputs(distiller):
    """Record every `sample` the distiller's UNet is called with."""
    seen = []
    distiller.parts.unet.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
    return seen


# ------------------------------------------------------------------------------ masked SDS
@pytest.mark.parametrize("latent_mode", ["rgb", "vae"])
def test_toy_masked_sds_is_zero_outside_and_unchanged_inside(latent_mode):
    d = toy_distiller(
        solid(RED),
        "red",
        config=DistillationConfig(guidance_scale=1.0, latent_mode=latent_mode, resolution=64),
    )
    # renders at the model size (64 px, 8 px latent cells) or below it (32 px: 4 px cells, the
    # "rgb" map area-pools); the mask is not aligned with the cells
    size = 32 if latent_mode == "rgb" else 64
    c = size // 8
    image = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    mask = box_mask(2, size, size, (c + 2, 6 * c + 3), (c - 1, 5 * c + 1))
    free = image_grad(d, image, prompt="red")
    masked = image_grad(d, image, prompt="red", inpaint_mask=mask)
    assert free.abs().min() > 0  # every pixel has a gradient without the mask
    outside = (mask == 0).expand_as(masked)
    assert torch.equal(masked[outside], torch.zeros_like(masked[outside]))
    # latent cells wholly inside the mask (rows 2..5, cols 1..4) keep the update
    inside = (..., slice(2 * c, 6 * c), slice(c, 5 * c))
    assert masked[inside].abs().min() > 0
    torch.testing.assert_close(masked[inside], free[inside], rtol=1e-5, atol=1e-8)
    # a soft mask scales the update: 0.5 everywhere halves it
    half = image_grad(d, image, prompt="red", inpaint_mask=torch.full((1, 1, size, size), 0.5))
    torch.testing.assert_close(half, 0.5 * free, rtol=1e-5, atol=1e-8)
    # a bool mask means the same as its 0/1 float
    as_bool = image_grad(d, image, prompt="red", inpaint_mask=mask.bool())
    assert torch.equal(as_bool, masked)


def test_toy_masked_optimisation_regenerates_only_the_hole():
    target = solid(RED)
    d = toy_distiller(target, "red")
    start = torch.full((1, 3, 32, 32), 0.5)
    mask = box_mask(1, 32, 32, (8, 24), (8, 24))
    x = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.05)
    gen = torch.Generator().manual_seed(0)
    for i in range(40):
        opt.zero_grad()
        d.loss(x, "red", inpaint_mask=mask, progress=i / 40, generator=gen).backward()
        opt.step()
    out = x.detach()
    inside, outside = mask.bool().expand_as(out), ~mask.bool().expand_as(out)
    assert torch.equal(out[outside], start[outside])  # untouched, bit for bit
    err = (out - target[None]).abs()
    assert err[inside].mean() < (start - target[None]).abs()[inside].mean() / 10


def test_tiny_unet_masked_sds_is_zero_outside_the_mask():
    # the VAE encoder's receptive field spans many latent cells: the pixel gradient is still cut
    d = ScoreDistiller(tiny_parts(), DistillationConfig(resolution=64), device="cpu")
    assert not d.inpainting
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    mask = box_mask(1, 64, 64, (13, 50), (20, 41))
    free = image_grad(d, image, prompt="a table")
    masked = image_grad(d, image, prompt="a table", inpaint_mask=mask)
    outside = (mask == 0).expand_as(masked)
    assert free[outside].abs().sum() > 0
    assert torch.equal(masked[outside], torch.zeros_like(masked[outside]))
    assert masked[~outside].abs().sum() > 0
    for method in ("dds", "vsd"):
        g = image_grad(
            d,
            image,
            prompt="a table",
            method=method,
            source_images=image.flip(-1),
            inpaint_mask=mask,
        )
        assert torch.equal(g[outside], torch.zeros_like(g[outside])) and g.abs().sum() > 0


def test_bad_masks_raise_naming_the_expected_shape():
    d = toy_distiller(solid(RED), "red")
    image = torch.rand(2, 3, 32, 32)
    for bad in (
        torch.ones(2, 32, 32),  # no channel axis
        torch.ones(2, 3, 32, 32),  # RGB
        torch.ones(2, 1, 16, 16),  # another size
        torch.ones(3, 1, 32, 32),  # another batch
    ):
        with pytest.raises(ValueError, match=r"\[B,1,H,W\] = \[2,1,32,32\]"):
            d.loss(image, "red", inpaint_mask=bad)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        d.loss(image, "red", inpaint_mask=torch.full((2, 1, 32, 32), 2.0))
    with pytest.raises(ValueError, match="bool or floating"):
        d.loss(image, "red", inpaint_mask=torch.ones(2, 1, 32, 32, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[B,1,H,W\]"):
        d.loss(image, "red", inpaint_mask=[[1.0]])


# ------------------------------------------------------------------ 9-channel inpainting UNet
@pytest.fixture(scope="module")
def inpaint_dir(tmp_path_factory):
    return make_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny-inpaint", inpainting=True)


@pytest.fixture(scope="module")
def inpainter(inpaint_dir):
    return load_distiller(
        inpaint_dir, config=DistillationConfig(resolution=64), device="cpu", local_files_only=True
    )


def test_tiny_inpainting_pipeline_layout(inpaint_dir, tmp_path):
    index = json.loads((inpaint_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionInpaintPipeline"
    unet = json.loads((inpaint_dir / "unet" / "config.json").read_text())
    assert unet["in_channels"] == 9 and unet["out_channels"] == 4
    plain = make_tiny_pipeline(tmp_path / "plain")
    name = "vae/diffusion_pytorch_model.safetensors"  # same seed: same VAE either way
    assert (plain / name).read_bytes() == (inpaint_dir / name).read_bytes()
    assert json.loads((plain / "unet" / "config.json").read_text())["in_channels"] == 4
    with pytest.raises(FileExistsError):
        make_tiny_pipeline(inpaint_dir, inpainting=True)


def test_inpainting_models_are_known_and_missing_ones_get_the_hint(monkeypatch, tmp_path):
    assert "stable-diffusion-v1-5/stable-diffusion-inpainting" in KNOWN_MODELS
    assert "stabilityai/stable-diffusion-2-inpainting" in KNOWN_MODELS
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="stable-diffusion-2-inpainting"):
        load_distiller("stabilityai/stable-diffusion-2-inpainting", cache_dir=tmp_path)


def test_nine_channel_path_runs_end_to_end(inpainter):
    d = inpainter
    assert d.inpainting
    seen = unet_inputs(d)
    g = torch.Generator().manual_seed(3)
    image = torch.rand(2, 3, 64, 64, generator=g)
    mask = box_mask(2, 64, 64, (16, 48), (8, 40))
    for method in ("sds", "dds"):
        seen.clear()
        grad = image_grad(
            d,
            image,
            prompt="a wooden table",
            method=method,
            source_images=image.flip(-1),
            inpaint_mask=mask,
        )
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
        outside = (mask == 0).expand_as(grad)
        assert torch.equal(grad[outside], torch.zeros_like(grad[outside]))
        (x,) = seen  # one UNet batch: [uncond, cond] (x 2 branches for DDS)
        assert x.shape == (2 * 2 * (2 if method == "dds" else 1), 9, 8, 8)
        lat_mask = F.interpolate(mask, size=(8, 8), mode="nearest")
        for rows in x.split(2):
            assert torch.equal(rows[:, 4:5], lat_mask)
    # without a mask the whole image is regenerated: mask channel all ones
    seen.clear()
    grad = image_grad(d, image, prompt="a wooden table")
    assert torch.equal(seen[0][:, 4:5], torch.ones(4, 1, 8, 8))
    assert (grad != 0).float().mean() > 0.9  # not masked


def test_nine_channel_conditioning_matches_diffusers_inpaint_pipeline(inpaint_dir, inpainter):
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline.from_pretrained(inpaint_dir, safety_checker=None)
    g = torch.Generator().manual_seed(4)
    image = torch.rand(2, 3, 64, 64, generator=g)
    mask = F.avg_pool2d(box_mask(2, 64, 64, (10, 37), (21, 60)), 5, 1, 2)  # soft edges
    got = inpainter.inpaint_condition(image, mask)  # [B,5,8,8]

    mask_condition = pipe.mask_processor.preprocess(mask, height=64, width=64)
    init_image = pipe.image_processor.preprocess(image, height=64, width=64)
    masked_image = init_image * (mask_condition < 0.5)
    with torch.no_grad():
        want_z = pipe.vae.encode(masked_image).latent_dist.mean * pipe.vae.config.scaling_factor
    want_mask = F.interpolate(mask_condition, size=(8, 8))
    torch.testing.assert_close(got[:, :1], want_mask)
    torch.testing.assert_close(got[:, 1:], want_z, rtol=1e-4, atol=1e-5)
    # the masked image hides what is inside the hole
    scribbled = image.clone()
    scribbled[mask.expand_as(image) >= 0.5] = 0.0
    assert torch.equal(inpainter.inpaint_condition(scribbled, mask), got)


def test_inpainting_unet_noise_prediction_without_mask(inpainter):
    z_t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([500])
    eps = inpainter.predict_noise(z_t, t, "a table", 1.0)
    cond = inpainter.inpaint_condition(torch.full((1, 3, 64, 64), 0.3))  # grey all the same
    assert torch.equal(eps, inpainter.predict_noise(z_t, t, "a table", 1.0, cond))
    assert eps.shape == (1, 4, 8, 8) and torch.isfinite(eps).all()
