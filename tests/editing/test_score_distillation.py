"""Score distillation: SDS/DDS math against a toy denoiser with a known answer, and real steps
through a tiny random-weight diffusers pipeline saved and loaded from disk (no weights, no
network)."""

import json
import shutil

import pytest
import safetensors.torch
import torch

from app.cli import main
from editing.score_distillation import (
    DEFAULT_GUIDANCE,
    TOY_CONFIG,
    DistillationConfig,
    ScoreDistiller,
    load_distiller,
    make_tiny_pipeline,
    toy_distiller,
)
from editing.score_distillation._loss import (
    _LATENT_TO_RGB,
    anneal_t_max,
    eps_from_v,
    grad_to_loss,
    rgb_to_latent,
    sample_timesteps,
    sd_alphas_cumprod,
)
from fields.features import MissingWeightsError

RED = (0.9, 0.15, 0.1)
GREY = 0.5


def solid(rgb, size=16):
    return torch.tensor(rgb, dtype=torch.float32).reshape(3, 1, 1).expand(3, size, size).clone()


def optimise(distiller, image, steps=40, lr=0.05, seed=0, **loss_kw):
    """Adam on the pixels of `image` [1,3,H,W] under `distiller.loss`; returns the result."""
    x = image.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for i in range(steps):
        opt.zero_grad()
        distiller.loss(x, progress=i / steps, generator=gen, **loss_kw).backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
    return x.detach()


def expected_image_grad(distiller, image, latent_grad):
    """Pull a latent-space update back to pixels through the distiller's own encoder."""
    x = image.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(distiller.encode(x), x, grad_outputs=latent_grad)
    return g


def image_grad(distiller, image, **loss_kw):
    x = image.clone().requires_grad_(True)
    distiller.loss(x, **loss_kw).backward()
    return x.grad


# ------------------------------------------------------------------------------------ toy model
@pytest.mark.parametrize("latent_mode", ["rgb", "vae"])
def test_sds_moves_colours_to_the_target(latent_mode):
    target = solid(RED)
    d = toy_distiller(
        target,
        "a red mug",
        config=DistillationConfig(guidance_scale=1.0, latent_mode=latent_mode, resolution=64),
    )
    start = torch.full((1, 3, 16, 16), GREY)
    before = (start - target).abs().mean()
    out = optimise(d, start, prompt="a red mug")
    after = (out - target).abs().mean()
    assert after < before / 10, (before, after)


def test_sds_gradient_is_weighted_noise_residual():
    # toy: eps_hat - eps = sqrt(a/(1-a)) (z - Z), so w(t)(eps_hat - eps) = sqrt(a(1-a)) (z - Z);
    # a missing weighting, a sign flip or a stray noise term all break this equality
    target = solid(RED)
    d = toy_distiller(target, "red")
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    got = image_grad(d, image, prompt="red", generator=torch.Generator().manual_seed(2))
    a = d.alphas_cumprod[d.last_timesteps].reshape(-1, 1, 1, 1)
    with torch.no_grad():
        z, z_target = d.encode(image), d.encode(target[None])
    want = expected_image_grad(d, image, (a * (1 - a)).sqrt() * (z - z_target) / len(image))
    assert got.abs().max() > 0
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def test_dds_moves_the_render_by_the_prompt_difference():
    source, target = solid((GREY, GREY, GREY)), solid(RED)
    d = toy_distiller(target, "a red mug", source=source, source_prompt="a grey mug")
    render0 = source[None]
    before = (render0 - target).abs().mean()
    out = optimise(
        d,
        render0,
        prompt="a red mug",
        method="dds",
        source_images=render0,
        source_prompt="a grey mug",
    )
    assert (out - target).abs().mean() < before / 10


def test_dds_gradient_formula_and_noise_cancellation():
    # DDS = w(t)(eps_hat(z_t, y) - eps_hat(z_src_t, y_src)) = sqrt(a(1-a)) ((z - z_src) - (Z_y - Z_src))
    source, target = solid((0.3, 0.3, 0.3)), solid(RED)
    d = toy_distiller(target, "red", source=source, source_prompt="grey")
    g = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 16, 16, generator=g)
    src_render = torch.rand(1, 3, 16, 16, generator=g)
    got = image_grad(
        d,
        image,
        prompt="red",
        method="dds",
        source_images=src_render,
        source_prompt="grey",
        generator=torch.Generator().manual_seed(4),
    )
    a = d.alphas_cumprod[d.last_timesteps].reshape(-1, 1, 1, 1)
    with torch.no_grad():
        z, z_src = d.encode(image), d.encode(src_render)
        delta = d.encode(target[None]) - d.encode(source[None])
    want = expected_image_grad(d, image, (a * (1 - a)).sqrt() * ((z - z_src) - delta))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_dds_with_identical_prompts_and_images_leaves_the_render_unchanged():
    d = toy_distiller(solid(RED), "red", source=solid((GREY,) * 3), source_prompt="grey")
    render0 = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    grad = image_grad(
        d, render0, prompt="red", method="dds", source_images=render0, source_prompt="red"
    )
    assert torch.equal(grad, torch.zeros_like(grad))
    out = optimise(
        d,
        render0,
        steps=10,
        prompt="grey",
        method="dds",
        source_images=render0,
        source_prompt="grey",
    )
    assert torch.equal(out, render0)


def test_guidance_scale_is_honoured():
    # with an unconditional image U, CFG aims at U + s (T - U): the gradient says which s ran
    target, uncond = solid(RED), solid((0.2, 0.2, 0.2))
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    for scale in (1.0, 3.0):
        d = toy_distiller(
            target,
            "red",
            unconditional=uncond,
            config=DistillationConfig(guidance_scale=scale, latent_mode="rgb", resolution=64),
        )
        got = image_grad(d, image, prompt="red", generator=torch.Generator().manual_seed(7))
        a = d.alphas_cumprod[d.last_timesteps].reshape(-1, 1, 1, 1)
        with torch.no_grad():
            z, zt, zu = (d.encode(x) for x in (image, target[None], uncond[None]))
        want = expected_image_grad(d, image, (a * (1 - a)).sqrt() * (z - (zu + scale * (zt - zu))))
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_v_prediction_models_give_the_same_update():
    # wrap the toy so it predicts v = (eps - sqrt(1-a) z_t) / sqrt(a) instead of eps: the
    # distiller must convert back and produce the identical SDS gradient
    target = solid(RED)
    eps_model = toy_distiller(target, "red")
    v_model = toy_distiller(target, "red")
    toy_unet = v_model.parts.unet

    class VPrediction(torch.nn.Module):
        def forward(self, x, t, encoder_hidden_states, return_dict=False):
            (eps,) = toy_unet(x, t, encoder_hidden_states)
            a = toy_unet.alphas_cumprod[t].reshape(-1, 1, 1, 1)
            return ((eps - (1 - a).sqrt() * x) / a.sqrt(),)

    v_model.parts.unet = VPrediction()
    v_model.parts.prediction_type = "v_prediction"
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    kw = {"prompt": "red"}
    want = image_grad(eps_model, image, generator=torch.Generator().manual_seed(9), **kw)
    got = image_grad(v_model, image, generator=torch.Generator().manual_seed(9), **kw)
    assert got.abs().max() > 0
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)


def test_per_method_default_guidance():
    cfg = DistillationConfig()
    assert cfg.guidance_for("sds") == DEFAULT_GUIDANCE["sds"] == 100.0
    assert cfg.guidance_for("dds") == DEFAULT_GUIDANCE["dds"] == 7.5
    assert cfg.guidance_for("vsd") == DEFAULT_GUIDANCE["vsd"] == 7.5
    assert DistillationConfig(guidance_scale=2.0).guidance_for("sds") == 2.0


# ------------------------------------------------------------------------------ pure functions
def test_timesteps_stay_in_the_annealed_range():
    T = 1000
    g = torch.Generator().manual_seed(0)
    tops = []
    for progress in (0.0, 0.25, 0.5, 1.0):
        t = sample_timesteps(
            4000, T, (0.1, 0.9), anneal="linear", progress=progress, anneal_to=0.3, generator=g
        )
        t_max = anneal_t_max((0.1, 0.9), "linear", progress, 0.3)
        assert t.min() >= 100 and t.max() <= round(t_max * T)
        assert t.max() >= round(t_max * T) - 5  # the whole range is used
        tops.append(int(t.max()))
    assert tops == sorted(tops, reverse=True) and tops[0] > tops[-1] + 500
    assert anneal_t_max((0.1, 0.9), "sqrt", 0.25, 0.3) == pytest.approx(0.9 - 0.6 * 0.5)
    assert anneal_t_max((0.1, 0.9), "none", 1.0, 0.3) == 0.9
    with pytest.raises(ValueError, match="progress"):
        anneal_t_max((0.1, 0.9), "linear", 1.5, 0.3)


def test_distiller_samples_timesteps_from_its_config():
    cfg = DistillationConfig(
        guidance_scale=1.0,
        latent_mode="rgb",
        resolution=64,
        t_range=(0.2, 0.6),
        anneal="linear",
        anneal_to=0.3,
    )
    d = toy_distiller(solid(RED), "red", config=cfg)
    image = torch.rand(8, 3, 16, 16)
    seen = []
    for progress in (0.0, 1.0):
        for seed in range(5):
            d.loss(image, "red", progress=progress, generator=torch.Generator().manual_seed(seed))
            seen.append((progress, d.last_timesteps))
    early = torch.cat([t for p, t in seen if p == 0.0])
    late = torch.cat([t for p, t in seen if p == 1.0])
    assert early.min() >= 200 and early.max() <= 600 and early.max() > 300
    assert late.min() >= 200 and late.max() <= 300


def test_rgb_latent_map_inverts_the_latent_preview():
    image = torch.rand(2, 3, 32, 32)
    z = rgb_to_latent(image, (4, 4))  # [2,4,4,4]
    assert z.shape == (2, 4, 4, 4)
    back = torch.einsum("blhw,lc->bchw", z, torch.tensor(_LATENT_TO_RGB))
    small = torch.nn.functional.avg_pool2d(image, 8) * 2 - 1
    torch.testing.assert_close(back, small, rtol=1e-4, atol=1e-5)


def test_surrogate_loss_gradient_and_v_prediction():
    latents = torch.randn(3, 4, 5, 5, requires_grad=True)
    grad = torch.randn(3, 4, 5, 5)
    grad_to_loss(latents, grad).backward()
    torch.testing.assert_close(latents.grad, grad / 3)
    a = sd_alphas_cumprod()[torch.tensor([10, 500, 990])]
    x0, eps = torch.randn(2, 3, 4, 5, 5)
    ar = a.reshape(-1, 1, 1, 1)
    z_t = ar.sqrt() * x0 + (1 - ar).sqrt() * eps
    v = ar.sqrt() * eps - (1 - ar).sqrt() * x0
    torch.testing.assert_close(eps_from_v(v, z_t, a), eps, rtol=1e-4, atol=1e-5)


def test_bad_input_raises_clear_errors():
    for kw in (
        {"t_range": (0.5, 0.2)},
        {"resolution": 100},
        {"anneal": "cosine"},
        {"latent_mode": "pixels"},
        {"anneal_to": 0.99},
        {"guidance_scale": 0.0},
    ):
        with pytest.raises(ValueError):
            DistillationConfig(**kw)
    d = toy_distiller(solid(RED), "red")
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        d.loss(torch.rand(3, 16, 16), "red")
    with pytest.raises(ValueError, match="source_images"):
        d.loss(torch.rand(1, 3, 16, 16), "red", method="dds")
    with pytest.raises(ValueError, match="same shape"):
        d.loss(torch.rand(1, 3, 16, 16), "red", method="dds", source_images=torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="method"):
        d.loss(torch.rand(1, 3, 16, 16), "red", method="sdi")
    with pytest.raises(ValueError, match="target"):
        toy_distiller(torch.rand(4, 16, 16))


def test_input_size_keeps_aspect_in_multiples_of_64():
    d = toy_distiller(solid(RED), "red", config=DistillationConfig(resolution=512))
    assert d.input_size(240, 320) == (384, 512)
    assert d.input_size(512, 512) == (512, 512)
    assert d.input_size(10, 500) == (64, 512)
    assert TOY_CONFIG.resolution == 64


# ---------------------------------------------------------------------- tiny diffusers pipeline
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sd") / "tiny"
    assert main(["make-tiny-model", str(out), "--seed", "0"]) == 0
    return out


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_distiller(tiny_dir, config=DistillationConfig(resolution=64), device="cpu")


def test_tiny_pipeline_layout(tiny_dir, capsys):
    index = json.loads((tiny_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny_dir / part).is_dir()
    assert main(["make-tiny-model", str(tiny_dir)]) == 2  # refuses to overwrite
    assert "overwrite" in capsys.readouterr().err
    assert (tiny_dir / "unet" / "config.json").is_file()


def test_tiny_pipeline_is_a_stable_diffusion_pipeline(tiny_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_dir, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        "a red mug",
        num_inference_steps=2,
        height=64,
        width=64,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()


@pytest.mark.parametrize("method", ["sds", "dds"])
@pytest.mark.parametrize("latent_mode", ["vae", "rgb"])
def test_tiny_pipeline_runs_real_steps(tiny, method, latent_mode):
    d = ScoreDistiller(
        tiny.parts, DistillationConfig(resolution=64, latent_mode=latent_mode), device="cpu"
    )
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 64, 64, generator=g).requires_grad_(True)
    source = torch.rand(1, 3, 64, 64, generator=g) if method == "dds" else None
    loss = d.loss(
        image,
        "a red mug",
        method=method,
        source_images=source,
        source_prompt="a mug",
        generator=g,
    )
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    assert torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0


def test_tiny_dds_with_identical_prompts_and_images_is_exactly_zero(tiny):
    image = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    grad = image_grad(
        tiny, image, prompt="a mug", method="dds", source_images=image, source_prompt="a mug"
    )
    assert torch.equal(grad, torch.zeros_like(grad))
    # a different target prompt does move it: the zero above is not a dead graph
    grad = image_grad(
        tiny, image, prompt="a red mug", method="dds", source_images=image, source_prompt="a mug"
    )
    assert grad.abs().sum() > 0


def test_tiny_source_latents_are_encoded_once_per_content(tiny):
    g = torch.Generator().manual_seed(2)
    source = torch.rand(1, 3, 64, 64, generator=g)
    z = tiny.source_latents(source)
    torch.testing.assert_close(z, tiny.encode(source).detach(), rtol=0, atol=0)
    assert tiny.source_latents(source.clone()) is z  # same content: no second encode
    other = source.clone()
    other[0, 0, 0, 0] += 0.25
    z2 = tiny.source_latents(other)
    assert z2 is not z and not torch.equal(z2, z)


def test_tiny_prompt_embeddings_are_cached_and_prompt_dependent(tiny):
    a, b = tiny.embed("a red mug"), tiny.embed("a blue mug")
    assert a.shape == (1, 77, 32) and not torch.equal(a, b)
    assert tiny.embed("a red mug") is a


def test_tiny_pipeline_seed_is_reproducible(tiny_dir, tmp_path):
    again = make_tiny_pipeline(tmp_path / "again", seed=0)
    other = make_tiny_pipeline(tmp_path / "other", seed=1)
    name = "unet/diffusion_pytorch_model.safetensors"
    assert (again / name).read_bytes() == (tiny_dir / name).read_bytes()
    assert (other / name).read_bytes() != (tiny_dir / name).read_bytes()
    with pytest.raises(FileExistsError):
        make_tiny_pipeline(other, seed=2)
    make_tiny_pipeline(other, seed=0, overwrite=True)
    assert (other / name).read_bytes() == (tiny_dir / name).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "other"]  # no temp leftovers


# --------------------------------------------------------------------------------------- LoRA
LIN = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"  # Linear 64 -> 64
CONV = "down_blocks.0.resnets.0.conv1"  # Conv2d 32 -> 32, 3x3


def lora_factors(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(4, 64, generator=g),  # A (down) of LIN
        torch.randn(64, 4, generator=g),  # B (up)
        torch.randn(4, 32, 3, 3, generator=g),  # A of CONV
        torch.randn(32, 4, 1, 1, generator=g),  # B
    )


def kohya(name):
    return "lora_unet_" + name.replace(".", "_")


@pytest.mark.parametrize("fmt", ["peft", "kohya"])
def test_lora_is_fused_into_the_unet(tiny_dir, tmp_path, fmt):
    a1, b1, a2, b2 = lora_factors()
    if fmt == "peft":  # diffusers' own format; alpha = rank, so the update is scale * B A
        state = {
            f"unet.{LIN}.lora_A.weight": a1,
            f"unet.{LIN}.lora_B.weight": b1,
            f"unet.{CONV}.lora_A.weight": a2,
            f"unet.{CONV}.lora_B.weight": b2,
        }
        scale, factor = 0.5, 0.5
    else:  # A1111 / kohya with alpha 2 at rank 4: the update is alpha / rank * B A
        state = {}
        for name, a, b in ((LIN, a1, b1), (CONV, a2, b2)):
            state[f"{kohya(name)}.lora_down.weight"] = a
            state[f"{kohya(name)}.lora_up.weight"] = b
            state[f"{kohya(name)}.alpha"] = torch.tensor(2.0)
        scale, factor = 1.0, 0.5
    path = tmp_path / "lora.safetensors"
    safetensors.torch.save_file(state, str(path))
    cfg = DistillationConfig(resolution=64)
    base = load_distiller(tiny_dir, config=cfg, device="cpu").parts.unet
    fused = load_distiller(tiny_dir, config=cfg, device="cpu", lora=path, lora_scale=scale)
    unet = fused.parts.unet
    w_lin = base.get_submodule(LIN).weight + factor * b1 @ a1
    torch.testing.assert_close(unet.get_submodule(LIN).weight, w_lin)
    w_conv = base.get_submodule(CONV).weight
    w_conv = w_conv + factor * (b2.flatten(1) @ a2.flatten(1)).reshape(w_conv.shape)
    torch.testing.assert_close(unet.get_submodule(CONV).weight, w_conv)
    untouched = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k"
    assert torch.equal(unet.get_submodule(untouched).weight, base.get_submodule(untouched).weight)
    assert "LoRA" in fused.parts.model_id


def test_lora_errors(tiny_dir, tmp_path):
    cfg = DistillationConfig(resolution=64)
    with pytest.raises(MissingWeightsError, match="does not exist"):
        load_distiller(tiny_dir, config=cfg, device="cpu", lora=tmp_path / "none.safetensors")
    a1, b1, _, _ = lora_factors()
    bad = tmp_path / "bad.safetensors"
    safetensors.torch.save_file(
        {"unet.no_such.layer.lora_A.weight": a1, "unet.no_such.layer.lora_B.weight": b1}, str(bad)
    )
    with pytest.raises(ValueError, match="does not exist in this UNet"):
        load_distiller(tiny_dir, config=cfg, device="cpu", lora=bad)
    te = tmp_path / "te.safetensors"
    safetensors.torch.save_file(
        {
            f"unet.{LIN}.lora_A.weight": a1,
            f"unet.{LIN}.lora_B.weight": b1,
            "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": a1[
                :, :32
            ].contiguous(),
            "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight": b1[
                :32
            ].clone(),
        },
        str(te),
    )
    with pytest.raises(ValueError, match="only UNet LoRAs"):
        load_distiller(tiny_dir, config=cfg, device="cpu", lora=te)


# ---------------------------------------------------------------------------- missing weights
def test_missing_model_folder_says_what_to_do(tmp_path):
    with pytest.raises(MissingWeightsError, match="make-tiny-model"):
        load_distiller(tmp_path / "nowhere" / "model")


def test_folder_that_is_not_a_pipeline(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(ValueError, match="not a Stable Diffusion pipeline folder"):
        load_distiller(tmp_path)


def test_hub_id_loads_offline_from_the_hf_cache(tiny_dir, tmp_path, monkeypatch):
    # the layout huggingface_hub downloads into: models--org--name/{refs/main, snapshots/REV/}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "hub" / "models--scenelab-tests--tiny-sd"
    rev = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_dir, repo / "snapshots" / rev)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    d = load_distiller(
        "scenelab-tests/tiny-sd",
        config=DistillationConfig(resolution=64),
        device="cpu",
        cache_dir=tmp_path / "hub",
    )
    assert d.parts.model_id == "scenelab-tests/tiny-sd"
    image = torch.rand(1, 3, 64, 64, requires_grad=True)
    d.loss(image, "a mug").backward()
    assert torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0
    with pytest.raises(MissingWeightsError, match="scenelab-tests/other"):
        load_distiller("scenelab-tests/other", device="cpu", cache_dir=tmp_path / "hub")


def test_unknown_hub_id_offline_says_what_to_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError) as e:
        load_distiller("scenelab-tests/no-such-model", device="cpu")
    msg = str(e.value)
    assert "scenelab-tests/no-such-model" in msg and "HF_HUB_OFFLINE" in msg
    assert "save_pretrained" in msg and "--model DIR" in msg


def test_unreachable_hub_fails_fast_without_retrying(monkeypatch):
    from editing.score_distillation import _pipeline

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")
    assert _pipeline._hub_reachable(timeout=1.0) is False  # nothing listens on port 9
    calls = []
    real = _pipeline._load_components

    def spy(model, **kw):
        calls.append(kw["local_files_only"])
        return real(model, **kw)

    monkeypatch.setattr(_pipeline, "_load_components", spy)
    with pytest.raises(MissingWeightsError, match="not reachable"):
        load_distiller("scenelab-tests/no-such-model", device="cpu")
    assert calls == [True]  # the cache was looked at, the network never


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tiny_pipeline_fp16_on_cuda(tiny_dir):
    d = load_distiller(tiny_dir, config=DistillationConfig(resolution=64), device="cuda")
    assert d.dtype == torch.float16
    image = torch.rand(1, 3, 64, 64, device="cuda", requires_grad=True)
    for method in ("sds", "dds"):
        image.grad = None
        d.loss(image, "a mug", method=method, source_images=image.detach().flip(-1)).backward()
        assert image.grad.dtype == torch.float32 and torch.isfinite(image.grad).all()
        assert image.grad.abs().sum() > 0
