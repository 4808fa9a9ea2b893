"""`ScoreDistiller`: a thin stateful wrapper around a latent diffusion model's parts that turns a
differentiable render into an SDS or DDS loss. Holds the UNet, VAE, text encoder and tokenizer,
caches prompt embeddings; all math lives in `_loss`."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._loss import (
    Anneal,
    cfg,
    eps_from_v,
    grad_to_loss,
    rgb_to_latent,
    sample_timesteps,
    sds_weight,
)

__all__ = ["DEFAULT_GUIDANCE", "DiffusionParts", "DistillationConfig", "ScoreDistiller"]

Method = Literal["sds", "dds"]

DEFAULT_GUIDANCE: dict[str, float] = {"sds": 100.0, "dds": 7.5}
"""Classifier-free guidance scale per method when `DistillationConfig.guidance_scale` is None:
SDS needs DreamFusion's very high guidance to give sharp, saturated results; DDS subtracts the
source branch, so the usual sampling scale (7.5, as in the DDS paper) suffices."""

_MAX_CACHED_PROMPTS = 64
_MAX_CACHED_SOURCES = 64


@dataclass(frozen=True)
class DistillationConfig:
    """How a `ScoreDistiller` turns renders into a score-distillation update."""

    guidance_scale: float | None = None
    """Classifier-free guidance scale; None: per method (`DEFAULT_GUIDANCE`: SDS 100, DDS 7.5).
    Few-step distilled models (SD-Turbo, LCM) are trained for low guidance: use 1-2 there. A
    scale of exactly 1 skips the unconditional branch (half the UNet batch)."""
    t_range: tuple[float, float] = (0.02, 0.98)
    """Range of timesteps sampled, as fractions of the model's train timesteps (0 < lo < hi <= 1)."""
    anneal: Anneal = "none"
    """How the top of `t_range` shrinks with `progress`: "none", "linear" or "sqrt" (fast early)."""
    anneal_to: float = 0.5
    """Top of the timestep range at progress 1 when annealing (within `t_range`)."""
    latent_mode: Literal["vae", "rgb"] = "vae"
    """"vae": encode renders with the VAE encoder, gradients through it (exact, costly);
    "rgb": a fixed linear RGB -> latent map on an 8x smaller image (cheap, approximate)."""
    resolution: int | None = 512
    """Renders are resized so their long side is this many pixels (multiple of 64) before
    encoding; SD 1.x/SD-Turbo: 512, SD 2.1: 768; tiny test models: 64. None: the model's own
    (`native_resolution`)."""
    half: bool | None = None
    """Run the model in float16; None: on CUDA only. Gradients are accumulated in float32."""

    def __post_init__(self) -> None:
        lo, hi = self.t_range
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"t_range must satisfy 0 <= lo < hi <= 1, got {self.t_range}")
        if self.anneal not in ("none", "linear", "sqrt"):
            raise ValueError(f"anneal must be 'none', 'linear' or 'sqrt', got {self.anneal!r}")
        if not lo <= self.anneal_to <= hi:
            raise ValueError(f"anneal_to={self.anneal_to} must lie within t_range {self.t_range}")
        if self.latent_mode not in ("vae", "rgb"):
            raise ValueError(f"latent_mode must be 'vae' or 'rgb', got {self.latent_mode!r}")
        if self.resolution is not None and (self.resolution < 64 or self.resolution % 64):
            raise ValueError(f"resolution must be a positive multiple of 64, got {self.resolution}")
        if self.guidance_scale is not None and not self.guidance_scale > 0:
            raise ValueError(f"guidance_scale must be positive, got {self.guidance_scale}")

    def guidance_for(self, method: Method) -> float:
        """The guidance scale `method` runs with."""
        return DEFAULT_GUIDANCE[method] if self.guidance_scale is None else self.guidance_scale


@dataclass
class DiffusionParts:
    """The pieces of a Stable-Diffusion-family model that score distillation needs.

    The modules follow diffusers/transformers call conventions, so real models plug in directly
    and test doubles only need the same call shapes."""

    unet: nn.Module
    """`unet(z_t [N,4,h,w], t [N], encoder_hidden_states=[N,L,D], return_dict=False)[0]`
    -> [N,4,h,w] (noise, or v with `prediction_type="v_prediction"`)."""
    text_encoder: nn.Module
    """`text_encoder(input_ids [N,L])[0]` -> [N,L,D] (CLIPTextModel)."""
    tokenizer: Any
    """`tokenizer(prompts, padding="max_length", max_length=..., truncation=True,
    return_tensors="pt").input_ids` -> [N,L]; `tokenizer.model_max_length` (CLIPTokenizer)."""
    alphas_cumprod: Tensor
    """[T] the noise schedule's alpha_bar_t over the train timesteps."""
    vae: nn.Module | None = None
    """`vae.encode(x [N,3,H,W] in [-1,1]).latent_dist.mean` -> [N,4,H/8,W/8] and
    `vae.config.scaling_factor` (AutoencoderKL); None: only latent_mode "rgb" works."""
    vae_scale_factor: int = 8
    """Pixels per latent cell along each side (SD: 8)."""
    prediction_type: str = "epsilon"
    """What the UNet predicts: "epsilon" or "v_prediction"."""
    model_id: str = "custom"
    """Where the parts came from (hub id or directory), for messages and metadata."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else worth keeping with the model (e.g. the scheduler config)."""


def _module_device(module: nn.Module) -> torch.device:
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


def _place(module: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move to `device`, cast floating weights to `dtype` (only when needed: diffusers warns on
    every cast), freeze and set eval mode."""
    tensors = [*module.parameters(), *module.buffers()]
    if any(t.device != device for t in tensors):
        module.to(device)
    if any(t.is_floating_point() and t.dtype != dtype for t in module.parameters()):
        module.to(dtype)
    module.eval().requires_grad_(False)


class ScoreDistiller:
    """SDS / DDS losses of renders under a text-conditioned latent diffusion model.

        distiller = load_distiller("stable-diffusion-v1-5/stable-diffusion-v1-5")
        loss = distiller.loss(render, "a red mug", progress=step / steps)   # render [B,3,H,W]
        loss.backward()   # render.grad is the SDS update pulled back through the encoder

    Args:
        parts: the model (`DiffusionParts`); its modules are moved to `device`, frozen and put in
            eval mode.
        config: guidance, timestep range/annealing, latent mode, resolution, precision.
        device: where the model runs; None: where the UNet already is.
    """

    def __init__(
        self,
        parts: DiffusionParts,
        config: DistillationConfig = DistillationConfig(),
        device: torch.device | str | None = None,
    ) -> None:
        if parts.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(
                f"unsupported prediction_type {parts.prediction_type!r} "
                "(score distillation needs 'epsilon' or 'v_prediction')"
            )
        if config.latent_mode == "vae" and parts.vae is None:
            raise ValueError(f"{parts.model_id} has no VAE; use latent_mode='rgb'")
        if config.resolution is None:
            config = dataclasses.replace(config, resolution=native_resolution(parts))
        self.device = torch.device(device) if device is not None else _module_device(parts.unet)
        half = config.half if config.half is not None else self.device.type == "cuda"
        self.dtype = torch.float16 if half else torch.float32
        for m in (parts.unet, parts.text_encoder, parts.vae):
            if m is not None:
                _place(m, self.device, self.dtype)
        self.parts = parts
        self.config = config
        self.alphas_cumprod = parts.alphas_cumprod.to(self.device, torch.float32)  # [T]
        self.last_timesteps: Tensor | None = None
        """[B] the timesteps the last `loss` call sampled (diagnostics and tests)."""
        self._embeddings: dict[str, Tensor] = {}
        self._source_cache: dict[str, Tensor] = {}

    @property
    def num_train_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    # ------------------------------------------------------------------------------ prompts
    @torch.no_grad()
    def embed(self, prompt: str) -> Tensor:  # [1,L,D]
        """Text-encoder hidden states of `prompt` (cached; "" is the unconditional prompt)."""
        if not isinstance(prompt, str):
            raise ValueError(f"a prompt must be a str, got {type(prompt).__name__}")
        emb = self._embeddings.get(prompt)
        if emb is None:
            tok = self.parts.tokenizer
            enc = tok(
                [prompt],
                padding="max_length",
                max_length=tok.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            kw = {}
            if getattr(getattr(self.parts.text_encoder, "config", None), "use_attention_mask", 0):
                kw["attention_mask"] = enc.attention_mask.to(self.device)  # as diffusers does
            emb = self.parts.text_encoder(enc.input_ids.to(self.device), **kw)[0].to(self.dtype)
            if len(self._embeddings) >= _MAX_CACHED_PROMPTS:
                self._embeddings.pop(next(iter(self._embeddings)))
            self._embeddings[prompt] = emb
        return emb

    # ------------------------------------------------------------------------------ latents
    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Pixel size (H, W) renders of `height` x `width` are resized to before encoding: long
        side `config.resolution`, aspect kept, both sides multiples of 64."""
        res = self.config.resolution
        scale = res / max(height, width)
        h = max(64, round(height * scale / 64) * 64)
        w = max(64, round(width * scale / 64) * 64)
        return h, w

    def encode(self, images: Tensor) -> Tensor:  # [B,3,H,W] in [0,1] -> [B,4,h,w] float32
        """Latents of `images` (differentiable): the VAE posterior mean times its scaling factor,
        or the linear RGB map (`latent_mode="rgb"`)."""
        size = self.input_size(images.shape[-2], images.shape[-1])
        if self.config.latent_mode == "rgb":
            f = self.parts.vae_scale_factor
            return rgb_to_latent(images.float(), (size[0] // f, size[1] // f))
        x = images
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = (x * 2.0 - 1.0).to(self.dtype)
        vae = self.parts.vae
        z = vae.encode(x).latent_dist.mean  # type: ignore[union-attr]
        vcfg = vae.config  # type: ignore[union-attr]
        shift = getattr(vcfg, "shift_factor", None) or 0.0
        return ((z.float() - shift) * vcfg.scaling_factor).float()

    @torch.no_grad()
    def source_latents(self, images: Tensor) -> Tensor:  # [B,3,H,W] -> [B,4,h,w] float32
        """`encode` without gradients, remembered by content: DDS edits revisit a fixed set of
        views of the unedited scene, so each source render is encoded once (VAE mode only; a
        content hash costs ~1 ms per 512² image, an encode hundreds)."""
        if self.config.latent_mode == "rgb":
            return self.encode(images.to(self.device))
        x = images.detach()
        key = hashlib.blake2b(
            x.float().cpu().contiguous().numpy().tobytes(), digest_size=16
        ).hexdigest() + str(tuple(x.shape))
        z = self._source_cache.get(key)
        if z is None:
            z = self.encode(x.to(self.device))
            if len(self._source_cache) >= _MAX_CACHED_SOURCES:
                self._source_cache.pop(next(iter(self._source_cache)))
            self._source_cache[key] = z
        return z

    # ---------------------------------------------------------------------------------- UNet
    @torch.no_grad()
    def predict_noise(
        self,
        z_t: Tensor,  # [B,4,h,w] noisy latents
        t: Tensor,  # [B] int timesteps
        prompt: str,
        guidance_scale: float,
    ) -> Tensor:  # [B,4,h,w] float32
        """The guided noise prediction eps_hat(z_t, t, prompt)."""
        return self._predict([(z_t, prompt)], t, guidance_scale)[0]

    def _predict(self, branches: list[tuple[Tensor, str]], t: Tensor, scale: float) -> list[Tensor]:
        """Guided noise predictions for several (z_t [B,4,h,w], prompt) branches that share the
        timesteps `t` [B], in ONE UNet batch (row order: per branch [uncond], cond)."""
        b = t.shape[0]
        use_uncond = scale != 1.0
        xs, embs = [], []
        for z_t, prompt in branches:
            if use_uncond:
                xs.append(z_t)
                embs.append(self.embed("").expand(b, -1, -1))
            xs.append(z_t)
            embs.append(self.embed(prompt).expand(b, -1, -1))
        x = torch.cat(xs).to(self.dtype)
        tt = t.repeat(len(xs))
        with torch.no_grad():
            out = self.parts.unet(x, tt, encoder_hidden_states=torch.cat(embs), return_dict=False)
        out = out[0].float()
        if self.parts.prediction_type == "v_prediction":
            out = eps_from_v(out, x.float(), self.alphas_cumprod[tt])
        chunks = out.split(b)
        per = 2 if use_uncond else 1
        return [
            cfg(chunks[i * per], chunks[i * per + 1], scale) if use_uncond else chunks[i]
            for i in range(len(branches))
        ]

    # ---------------------------------------------------------------------------------- loss
    def loss(
        self,
        images: Tensor,  # [B,3,H,W] in [0,1], requires grad (a render)
        prompt: str,
        *,
        method: Method = "sds",
        source_images: Tensor | None = None,  # [B,3,H,W] in [0,1], unedited render (DDS)
        source_prompt: str | None = None,
        progress: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:  # scalar
        """A scalar whose gradient w.r.t. `images` is the SDS or DDS update divided by the
        batch size B, pulled back through the encoder (latent-space gradient `update / B`); its
        value is 0.5 |update|^2 / B, a noisy progress signal only.

        SDS: `w(t) (eps_hat(z_t, prompt) - eps)`. DDS: `w(t) (eps_hat(z_t, prompt) -
        eps_hat(z_src_t, source_prompt))` with the same `t` and `eps` in both branches, where
        `z_src` encodes `source_images` (the same view rendered from the unedited scene) and
        `source_prompt` describes it ("" or None: unconditional). `progress` in [0,1] drives
        timestep annealing; `generator` makes the timesteps and noise reproducible."""
        if method not in ("sds", "dds"):
            raise ValueError(f"method must be 'sds' or 'dds', got {method!r}")
        _check_images(images, "images")
        if method == "dds":
            if source_images is None:
                raise ValueError("DDS needs source_images: the unedited render of the same view")
            _check_images(source_images, "source_images")
            if source_images.shape != images.shape:
                raise ValueError(
                    f"source_images {tuple(source_images.shape)} and images "
                    f"{tuple(images.shape)} must have the same shape"
                )
        scale = self.config.guidance_for(method)
        b = images.shape[0]
        z = self.encode(images.to(self.device))  # [B,4,h,w], carries the graph
        t = sample_timesteps(
            b,
            self.num_train_timesteps,
            self.config.t_range,
            anneal=self.config.anneal,
            progress=progress,
            anneal_to=self.config.anneal_to,
            generator=generator,
        ).to(self.device)
        self.last_timesteps = t
        gen_device = generator.device if generator is not None else self.device
        noise = torch.randn(z.shape, generator=generator, device=gen_device).to(self.device)
        a = self.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        with torch.no_grad():
            z_t = a.sqrt() * z.detach() + (1.0 - a).sqrt() * noise
            if method == "sds":
                (eps_hat,) = self._predict([(z_t, prompt)], t, scale)
                grad = sds_weight(self.alphas_cumprod[t]) * (eps_hat - noise)
            else:
                z_src = self.source_latents(source_images)  # type: ignore[arg-type]
                z_src_t = a.sqrt() * z_src + (1.0 - a).sqrt() * noise
                eps_tgt, eps_src = self._predict(
                    [(z_t, prompt), (z_src_t, source_prompt or "")], t, scale
                )
                grad = sds_weight(self.alphas_cumprod[t]) * (eps_tgt - eps_src)
        return grad_to_loss(z, grad)


def _check_images(images: Tensor, name: str) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a [B,3,H,W] tensor in [0,1], got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be floating point in [0,1], got {images.dtype}")


def native_resolution(parts: DiffusionParts) -> int:
    """Pixels the model was trained at (UNet sample size x VAE downsampling: SD 1.5 512, SD 2.1
    768, the tiny test pipeline 64), rounded to a multiple of 64; 512 when unknown."""
    size = getattr(getattr(parts.unet, "config", None), "sample_size", None)
    if isinstance(size, (tuple, list)):
        size = max(size)
    if not isinstance(size, int) or size <= 0:
        return 512
    blocks = getattr(getattr(parts.vae, "config", None), "block_out_channels", None)
    factor = 2 ** (len(blocks) - 1) if blocks else 8
    return max(64, round(size * factor / 64) * 64)
