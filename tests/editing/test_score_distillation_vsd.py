"""Variational score distillation (ProlificDreamer) through tiny random diffusers UNets: the
update is `w(t) (eps_pretrained - eps_lora)`, the LoRA (hooks on the shared frozen UNet) trains
on the renders each call, the pretrained weights never change."""

import pytest
import torch

from editing.score_distillation import (
    DistillationConfig,
    ScoreDistiller,
    tiny_parts,
    toy_distiller,
)
from editing.score_distillation._lora import UNetLoRA, lora_target_names
from editing.score_distillation._loss import sample_timesteps, sds_weight

PROMPT = "a red mug"


def make(guidance=7.5, inpainting=False, **cfg):
    config = DistillationConfig(guidance_scale=guidance, resolution=64, **cfg)
    return ScoreDistiller(tiny_parts(inpainting=inpainting), config, device="cpu")


def rand_images(b=2, seed=0):
    return torch.rand(b, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def image_grad(d, image, seed=0, **kw):
    x = image.clone().requires_grad_(True)
    d.loss(x, PROMPT, generator=torch.Generator().manual_seed(seed), **kw).backward()
    return x.grad


def noisy_latents(d, image, seed):
    """The z_t, t that `d.loss(image, generator=manual_seed(seed))` draws, drawn again."""
    g = torch.Generator().manual_seed(seed)
    cfg = d.config
    with torch.no_grad():
        z = d.encode(image)
    t = sample_timesteps(
        len(image),
        d.num_train_timesteps,
        cfg.t_range,
        anneal=cfg.anneal,
        anneal_to=cfg.anneal_to,
        generator=g,
    )
    noise = torch.randn(z.shape, generator=g)
    a = d.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    return a.sqrt() * z + (1 - a).sqrt() * noise, t


def pulled_back(d, image, latent_grad):
    x = image.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(d.encode(x), x, grad_outputs=latent_grad)
    return g


def unet_out(d, seed=7):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, 4, 8, 8, generator=g)
    with torch.no_grad():
        return d.parts.unet(z, torch.tensor([100, 700]), d.embed(PROMPT).expand(2, -1, -1))[0]


def test_first_vsd_update_is_guided_minus_conditional_and_the_lora_trains():
    # a fresh LoRA model equals the pretrained one, so the first update is w(t)(eps_cfg - eps_c)
    d = make(guidance=7.5)
    image = rand_images()
    base_state = {k: v.clone() for k, v in d.parts.unet.state_dict().items()}
    base_out = unet_out(d)
    got = image_grad(d, image, method="vsd", seed=1)
    z_t, t = noisy_latents(d, image, seed=1)
    assert torch.equal(t, d.last_timesteps)
    eps_cfg = d.predict_noise(z_t, t, PROMPT, 7.5)
    d.vsd_lora.remove()  # predict with the pretrained conditional branch only
    eps_c = d.predict_noise(z_t, t, PROMPT, 1.0)
    want = pulled_back(d, image, sds_weight(d.alphas_cumprod[t]) * (eps_cfg - eps_c) / 2)
    assert got.abs().sum() > 0
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)

    d = make(guidance=7.5)
    ref = UNetLoRA(d.parts.unet, 4)  # what the distiller's LoRA starts as (same seed)
    init = {k: v.detach().clone() for k, v in ref.state_dict().items()}
    ref.remove()
    for seed in range(2):  # the B factors move at step 1, the A factors from step 2
        image_grad(d, image, method="vsd", seed=seed)
    lora = d.vsd_lora
    assert lora.num_layers == len(lora_target_names(d.parts.unet)) == 48
    for k, v in lora.state_dict().items():  # the camera embedding only trains with cameras
        assert torch.equal(v, init[k]) == k.startswith("camera_embedding"), k
    assert all(p.dtype == torch.float32 for p in lora.parameters())
    # the pretrained UNet: same weights, same modules, same output when the LoRA is off
    state = d.parts.unet.state_dict()
    assert state.keys() == base_state.keys()
    assert all(torch.equal(state[k], base_state[k]) for k in state)
    assert not any(p.requires_grad for p in d.parts.unet.parameters())
    torch.testing.assert_close(unet_out(d), base_out, rtol=0, atol=0)
    with lora.active():
        assert not torch.allclose(unet_out(d), base_out)  # the LoRA model has moved
    assert d.last_vsd_lora_loss is not None and torch.isfinite(d.last_vsd_lora_loss)


def test_vsd_update_differs_from_sds():
    d = make(guidance=7.5)
    image = rand_images()
    sds = image_grad(d, image, method="sds", seed=3)
    vsd = image_grad(d, image, method="vsd", seed=3)
    assert torch.isfinite(vsd).all() and vsd.abs().sum() > 0
    assert (vsd - sds).abs().sum() > 0.1 * sds.abs().sum()


def test_vsd_without_guidance_starts_at_zero_then_moves():
    # guidance 1: eps_pretrained is the conditional branch, which the fresh LoRA model equals
    d = make(guidance=1.0)
    image = rand_images()
    first = image_grad(d, image, method="vsd", seed=0)
    assert torch.equal(first, torch.zeros_like(first))
    second = image_grad(d, image, method="vsd", seed=0)  # same t and noise, trained LoRA
    assert second.abs().sum() > 0


def lora_loss(d, z_t, t, noise):
    """The LoRA model's noise-prediction MSE at z_t [N,4,h,w], t [N]."""
    with d.vsd_lora.active():
        return ((d.predict_noise(z_t, t, PROMPT, 1.0) - noise) ** 2).mean()


def test_vsd_lora_step_is_a_descent_step_on_the_diffusion_loss():
    # the LoRA is trained to predict the noise of the detached render latents at a FRESH
    # timestep (drawn after the update's t and noise); one Adam step lowers that batch's loss
    d = make(guidance=7.5)
    image = rand_images()
    image_grad(d, image, method="vsd", seed=0)  # creates the LoRA
    for seed in (1, 2):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            z0 = d.encode(image)
        sample_timesteps(2, d.num_train_timesteps, d.config.t_range, generator=g)  # update's t
        torch.randn(z0.shape, generator=g)  # update's noise
        t = sample_timesteps(2, d.num_train_timesteps, d.config.t_range, generator=g)
        noise = torch.randn(z0.shape, generator=g)
        a = d.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise

        before = lora_loss(d, z_t, t, noise)
        image_grad(d, image, method="vsd", seed=seed)
        torch.testing.assert_close(d.last_vsd_lora_loss, before, rtol=1e-4, atol=1e-6)
        assert lora_loss(d, z_t, t, noise) < before


def test_camera_is_a_class_embedding_of_the_lora_model():
    d = make(guidance=7.5, vsd_lr=1e-2)
    image = rand_images()
    cams = torch.eye(4).expand(2, 4, 4).clone()
    cams[:, :3, 3] = torch.tensor([[0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    for seed in range(3):
        image_grad(d, image, method="vsd", camera=cams.flatten(1), seed=seed)
    emb = d.vsd_lora.camera_embedding
    assert emb is not None and emb[2].weight.abs().sum() > 0  # left its zero start
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([400])
    outs = []
    for cam in (cams[:1].flatten(1), cams[1:].flatten(1), None):
        with d.vsd_lora.active(cam):
            outs.append(d.predict_noise(z, t, PROMPT, 1.0))
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[0], outs[2])
    # [B,4,4] is accepted as well, and a batch of one camera is repeated
    image_grad(d, image, method="vsd", camera=cams)
    image_grad(d, image, method="vsd", camera=cams[:1].flatten(1))
    for bad in (torch.zeros(2, 12), torch.zeros(3, 16), torch.zeros(2, 3, 4)):
        with pytest.raises(ValueError, match=r"\[B,16\] = \[2,16\]"):
            image_grad(d, image, method="vsd", camera=bad)
    with pytest.raises(ValueError, match="non-finite"):
        image_grad(d, image, method="vsd", camera=torch.full((2, 16), float("nan")))


def test_reset_vsd_detaches_the_lora():
    d = make(guidance=7.5)
    base_out = unet_out(d)
    image_grad(d, rand_images(), method="vsd")
    first = d.vsd_lora
    d.reset_vsd()
    assert d.vsd_lora is None and d.last_vsd_lora_loss is None
    with first.active():  # detached: its hooks no longer run
        torch.testing.assert_close(unet_out(d), base_out, rtol=0, atol=0)
    image_grad(d, rand_images(), method="vsd")
    assert d.vsd_lora is not None and d.vsd_lora is not first


def test_vsd_with_an_inpainting_unet_and_a_mask():
    d = make(guidance=7.5, inpainting=True)
    seen = []
    d.parts.unet.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape)))
    image = rand_images()
    mask = torch.zeros(2, 1, 64, 64)
    mask[..., 8:40, 16:56] = 1
    grad = image_grad(d, image, method="vsd", inpaint_mask=mask)
    # pretrained [uncond, cond], LoRA cond, LoRA training: all with the 9 channels
    assert seen == [(4, 9, 8, 8), (2, 9, 8, 8), (2, 9, 8, 8)]
    outside = (mask == 0).expand_as(grad)
    assert torch.equal(grad[outside], torch.zeros_like(grad[outside]))
    assert grad.abs().sum() > 0


def test_vsd_bad_inputs():
    d = toy_distiller(torch.rand(3, 16, 16), "red")
    assert not d.supports_vsd
    with pytest.raises(ValueError, match="attention projections"):
        d.loss(torch.rand(1, 3, 16, 16), "red", method="vsd")
    assert make().supports_vsd
    for kw in ({"vsd_lora_rank": 0}, {"vsd_lr": 0.0}, {"vsd_lora_rank": 2.5}):
        with pytest.raises(ValueError, match="vsd_"):
            DistillationConfig(**kw)
    with pytest.raises(ValueError, match="method must be one of sds, dds, vsd"):
        make().loss(torch.rand(1, 3, 64, 64), PROMPT, method="csd")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_vsd_fp16_on_cuda():
    d = ScoreDistiller(tiny_parts(), DistillationConfig(resolution=64), device="cuda")
    assert d.dtype == torch.float16
    image = torch.rand(2, 3, 64, 64, device="cuda", requires_grad=True)
    for seed in range(3):
        image.grad = None
        g = torch.Generator(device="cuda").manual_seed(seed)
        d.loss(image, PROMPT, method="vsd", camera=torch.eye(4).flatten()[None], generator=g)
        d.loss(image, PROMPT, method="vsd", generator=g).backward()
        assert image.grad.dtype == torch.float32 and torch.isfinite(image.grad).all()
    assert all(
        p.dtype == torch.float32 and torch.isfinite(p).all() for p in d.vsd_lora.parameters()
    )
    assert torch.isfinite(d.last_vsd_lora_loss)
