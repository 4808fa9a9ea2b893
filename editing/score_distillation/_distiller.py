"""`ScoreDistiller`: a thin stateful wrapper around a latent diffusion model's parts that turns a
differentiable render into an SDS, DDS or VSD loss, optionally restricted to an inpainting mask.
Holds the UNet, VAE, text encoder and tokenizer, caches prompt embeddings, and for VSD the
trainable LoRA of the UNet (`_lora.UNetLoRA`); the math lives in `_loss` and `_inpaint`."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._inpaint import (
    check_inpaint_mask,
    inpaint_condition_inputs,
    is_inpainting_unet,
    latent_mask,
    masked_gradient,
)
from ._lora import CAMERA_DIM, UNetLoRA, lora_target_names
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

Method = Literal["sds", "dds", "vsd"]
METHODS: tuple[str, ...] = ("sds", "dds", "vsd")

DEFAULT_GUIDANCE: dict[str, float] = {"sds": 100.0, "dds": 7.5, "vsd": 7.5}
"""Classifier-free guidance scale per method when `DistillationConfig.guidance_scale` is None:
SDS needs DreamFusion's very high guidance to give sharp, saturated results; DDS subtracts the
source branch and VSD the LoRA model's estimate, so the usual sampling scale (7.5, as in the
DDS and ProlificDreamer papers) suffices."""

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
    vsd_lora_rank: int = 4
    """VSD: rank of the LoRA on the UNet's attention projections that models the renders'
    distribution (ProlificDreamer uses 4)."""
    vsd_lr: float = 1e-3
    """VSD: Adam learning rate of that LoRA (one step per `loss` call; ProlificDreamer 1e-3)."""

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
        if not isinstance(self.vsd_lora_rank, int) or self.vsd_lora_rank < 1:
            raise ValueError(f"vsd_lora_rank must be an integer >= 1, got {self.vsd_lora_rank}")
        if not self.vsd_lr > 0:
            raise ValueError(f"vsd_lr must be positive, got {self.vsd_lr}")

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
    -> [N,4,h,w] (noise, or v with `prediction_type="v_prediction"`). A 9-channel inpainting
    UNet (`unet.config.in_channels == 9`) takes `[z_t, mask, masked_image_latents]` [N,9,h,w]."""
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
    """SDS / DDS / VSD losses of renders under a text-conditioned latent diffusion model.

        distiller = load_distiller("stable-diffusion-v1-5/stable-diffusion-v1-5")
        loss = distiller.loss(render, "a red mug", progress=step / steps)   # render [B,3,H,W]
        loss.backward()   # render.grad is the SDS update pulled back through the encoder

    With `inpaint_mask` [B,1,H,W] only the masked region is regenerated (masked SDS; 9-channel
    inpainting UNets also see the mask and the masked image). `method="vsd"` (ProlificDreamer)
    trains a LoRA of the UNet on the renders as it goes (`vsd_lora`; `reset_vsd` drops it).

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
        self.vsd_lora: UNetLoRA | None = None
        """VSD's trainable LoRA of the UNet (hooks on the shared frozen UNet), created by the
        first `method="vsd"` call; None before that and after `reset_vsd`."""
        self.last_vsd_lora_loss: Tensor | None = None
        """Scalar diffusion loss of the LoRA's last training step (diagnostics)."""
        self._vsd_optimizer: torch.optim.Optimizer | None = None
        self._embeddings: dict[str, Tensor] = {}
        self._source_cache: dict[str, Tensor] = {}

    @property
    def num_train_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    @property
    def inpainting(self) -> bool:
        """Whether the UNet is a 9-channel inpainting UNet (SD-inpainting)."""
        return is_inpainting_unet(self.parts.unet)

    @property
    def supports_vsd(self) -> bool:
        """Whether `method="vsd"` can run: the UNet has attention projections to attach a LoRA
        to (diffusers UNets do; the toy denoiser does not)."""
        return bool(lora_target_names(self.parts.unet))

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

    @torch.no_grad()
    def inpaint_condition(
        self,
        images: Tensor | None,  # [B,3,H,W] in [0,1]; None: a grey image (nothing kept)
        mask: Tensor | None = None,  # [B,1,H,W] in [0,1], 1 = regenerate; None: all ones
        *,
        latent_size: tuple[int, int] | None = None,  # (h, w) when images is None
        batch: int = 1,
    ) -> Tensor:  # [B,5,h,w] float32: binary latent mask, masked-image latents
        """The extra input channels of a 9-channel inpainting UNet, as diffusers'
        `StableDiffusionInpaintPipeline` builds them: the mask resized to the UNet input size,
        binarised at 0.5 and nearest-resized to the latent grid; the latents of the masked image
        (`init_image * (mask < 0.5)` in the VAE's [-1,1] range: the hole is mid-grey), encoded
        like a render (posterior mean times the scaling factor; cached by content). Detached."""
        if images is None:
            if latent_size is None:
                raise ValueError("inpaint_condition needs images or latent_size")
            f = self.parts.vae_scale_factor
            size = (latent_size[0] * f, latent_size[1] * f)
            x = torch.full((batch, 3, *size), 0.5, device=self.device)
        else:
            size = self.input_size(images.shape[-2], images.shape[-1])
            x = images.detach().to(self.device, torch.float32)
            if tuple(x.shape[-2:]) != size:
                x = F.interpolate(
                    x, size=size, mode="bilinear", align_corners=False, antialias=True
                )
        m = None
        if mask is not None:
            m = mask.detach().to(self.device, torch.float32)
            if tuple(m.shape[-2:]) != size:
                m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        masked, m_bin = inpaint_condition_inputs(x, m)
        z_masked = self.source_latents(masked)
        m_lat = F.interpolate(m_bin, size=z_masked.shape[-2:], mode="nearest")
        return torch.cat([m_lat, z_masked], dim=1)

    # ---------------------------------------------------------------------------------- UNet
    @torch.no_grad()
    def predict_noise(
        self,
        z_t: Tensor,  # [B,4,h,w] noisy latents
        t: Tensor,  # [B] int timesteps
        prompt: str,
        guidance_scale: float,
        conditioning: Tensor | None = None,  # [B,5,h,w] from `inpaint_condition`
    ) -> Tensor:  # [B,4,h,w] float32
        """The guided noise prediction eps_hat(z_t, t, prompt). An inpainting UNet gets
        `conditioning` (None: regenerate everything, `inpaint_condition(None, ...)`)."""
        if conditioning is None and self.inpainting:
            conditioning = self.inpaint_condition(
                None, latent_size=(z_t.shape[-2], z_t.shape[-1]), batch=z_t.shape[0]
            )
        return self._predict([(z_t, prompt, conditioning)], t, guidance_scale)[0]

    def _unet_eps(self, z_t: Tensor, cond: Tensor | None, t: Tensor, emb: Tensor) -> Tensor:
        """Noise prediction [N,4,h,w] float32 of the UNet as it is now (LoRA on or off) for
        z_t [N,4,h,w] (+ the inpainting channels cond [N,5,h,w]); autograd as the caller set."""
        x = z_t if cond is None else torch.cat([z_t, cond.to(z_t.dtype)], dim=1)
        out = self.parts.unet(x.to(self.dtype), t, encoder_hidden_states=emb, return_dict=False)
        out = out[0].float()
        if self.parts.prediction_type == "v_prediction":
            out = eps_from_v(out, z_t.float(), self.alphas_cumprod[t])
        return out

    def _predict(
        self, branches: list[tuple[Tensor, str, Tensor | None]], t: Tensor, scale: float
    ) -> list[Tensor]:
        """Guided noise predictions for several (z_t [B,4,h,w], prompt, inpainting channels
        [B,5,h,w] or None) branches that share the timesteps `t` [B], in ONE UNet batch (row
        order: per branch [uncond], cond)."""
        b = t.shape[0]
        use_uncond = scale != 1.0
        zs, conds, embs = [], [], []
        for z_t, prompt, cond in branches:
            for p in ("", prompt) if use_uncond else (prompt,):
                zs.append(z_t)
                conds.append(cond)
                embs.append(self.embed(p).expand(b, -1, -1))
        if any(c is not None for c in conds) and any(c is None for c in conds):
            raise ValueError("either every branch has inpainting channels or none does")
        cond = None if conds[0] is None else torch.cat(conds)  # type: ignore[arg-type]
        tt = t.repeat(len(zs))
        with torch.no_grad():
            out = self._unet_eps(torch.cat(zs), cond, tt, torch.cat(embs))
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
        inpaint_mask: Tensor | None = None,  # [B,1,H,W] in [0,1], 1 = regenerate
        camera: Tensor | None = None,  # [B,16] flattened c2w (or [B,4,4]), VSD only
        progress: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:  # scalar
        """A scalar whose gradient w.r.t. `images` is the SDS, DDS or VSD update divided by the
        batch size B, pulled back through the encoder (latent-space gradient `update / B`); its
        value is 0.5 |update|^2 / B, a noisy progress signal only.

        SDS: `w(t) (eps_hat(z_t, prompt) - eps)`. DDS: `w(t) (eps_hat(z_t, prompt) -
        eps_hat(z_src_t, source_prompt))` with the same `t` and `eps` in both branches, where
        `z_src` encodes `source_images` (the same view rendered from the unedited scene) and
        `source_prompt` describes it ("" or None: unconditional). VSD (ProlificDreamer):
        `w(t) (eps_hat(z_t, prompt) - eps_lora(z_t, prompt, camera))`, where `eps_lora` is the
        UNet with a LoRA (`vsd_lora`, rank `config.vsd_lora_rank`, created on the first VSD call)
        that is then trained one Adam step (`config.vsd_lr`) to denoise the detached latents at a
        fresh timestep: it models the distribution of the current renders. `camera` (flattened
        camera-to-world matrices) enters the LoRA model only, as a class embedding added to the
        timestep embedding; None: no camera term. Other methods ignore `camera`.

        `inpaint_mask` (1 = regenerate) restricts the update to the region: the latent update is
        multiplied by the mask averaged down to the latent grid (soft masks scale it) and pixels
        where the mask is 0 get exactly zero gradient. A 9-channel inpainting UNet also
        gets the binarised mask and the masked image's latents as diffusers' inpainting pipeline
        feeds them (`inpaint_condition`; DDS's source branch uses the source image's); such a
        UNet without a mask is given an all-ones mask (the whole image regenerated, nothing
        kept), and the update is not masked.

        `progress` in [0,1] drives timestep annealing; `generator` (on the CPU or the model's
        device) makes the timesteps and noise reproducible."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
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
        b = images.shape[0]
        mask = None if inpaint_mask is None else check_inpaint_mask(inpaint_mask, images)
        cam = None if camera is None else _check_camera(camera, b).to(self.device)
        if method == "vsd" and not self.supports_vsd:
            raise ValueError(
                f"VSD needs a UNet with attention projections (to_q/to_k/to_v/to_out) for its "
                f"LoRA; {self.parts.model_id} has none (use method='sds')"
            )
        scale = self.config.guidance_for(method)
        x = images.to(self.device)
        if mask is not None:
            mask = mask.to(self.device)
            x = masked_gradient(x, mask)
        z = self.encode(x)  # [B,4,h,w], carries the graph
        cond = cond_src = None  # [B,5,h,w] inpainting channels
        if self.inpainting:
            cond = self.inpaint_condition(images, mask)
            if method == "dds":
                cond_src = self.inpaint_condition(source_images, mask)
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
        noise = self._randn(z.shape, generator)
        a = self.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        w = sds_weight(self.alphas_cumprod[t])
        with torch.no_grad():
            z_t = a.sqrt() * z.detach() + (1.0 - a).sqrt() * noise
            if method == "sds":
                (eps_hat,) = self._predict([(z_t, prompt, cond)], t, scale)
                grad = w * (eps_hat - noise)
            elif method == "dds":
                z_src = self.source_latents(source_images)  # type: ignore[arg-type]
                z_src_t = a.sqrt() * z_src + (1.0 - a).sqrt() * noise
                eps_tgt, eps_src = self._predict(
                    [(z_t, prompt, cond), (z_src_t, source_prompt or "", cond_src)], t, scale
                )
                grad = w * (eps_tgt - eps_src)
            else:
                lora = self._vsd_lora()
                (eps_hat,) = self._predict([(z_t, prompt, cond)], t, scale)
                with lora.active(cam):
                    (eps_lora,) = self._predict([(z_t, prompt, cond)], t, 1.0)
                grad = w * (eps_hat - eps_lora)
            if mask is not None:
                grad = grad * latent_mask(mask, (z.shape[-2], z.shape[-1]))
        if method == "vsd":
            self._train_vsd_lora(z.detach(), prompt, cond, cam, generator)
        return grad_to_loss(z, grad)

    def _randn(self, shape: torch.Size, generator: torch.Generator | None) -> Tensor:
        gen_device = generator.device if generator is not None else self.device
        return torch.randn(shape, generator=generator, device=gen_device).to(self.device)

    # ----------------------------------------------------------------------------------- VSD
    def _vsd_lora(self) -> UNetLoRA:
        if self.vsd_lora is None:
            self.vsd_lora = UNetLoRA(self.parts.unet, self.config.vsd_lora_rank)
            self._vsd_optimizer = torch.optim.Adam(
                self.vsd_lora.parameters(), lr=self.config.vsd_lr
            )
        return self.vsd_lora

    def reset_vsd(self) -> None:
        """Detach and drop VSD's LoRA (a new object/scene starts from the pretrained model)."""
        if self.vsd_lora is not None:
            self.vsd_lora.remove()
        self.vsd_lora = None
        self._vsd_optimizer = None
        self.last_vsd_lora_loss = None

    def _train_vsd_lora(
        self,
        z0: Tensor,  # [B,4,h,w] detached clean latents of the renders
        prompt: str,
        cond: Tensor | None,  # [B,5,h,w] inpainting channels
        camera: Tensor | None,  # [B,16]
        generator: torch.Generator | None,
    ) -> None:
        """One Adam step of the LoRA model on the standard diffusion loss: predict the noise
        (or v) of `z0` noised at a fresh timestep from the whole (un-annealed) `t_range`."""
        lora, opt = self._vsd_lora(), self._vsd_optimizer
        assert opt is not None
        b = z0.shape[0]
        t = sample_timesteps(
            b, self.num_train_timesteps, self.config.t_range, generator=generator
        ).to(self.device)
        noise = self._randn(z0.shape, generator)
        a = self.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        z_t = a.sqrt() * z0 + (1.0 - a).sqrt() * noise
        target = noise
        if self.parts.prediction_type == "v_prediction":
            target = a.sqrt() * noise - (1.0 - a).sqrt() * z0
        emb = self.embed(prompt).expand(b, -1, -1)
        x = z_t if cond is None else torch.cat([z_t, cond], dim=1)
        with torch.enable_grad(), lora.active(camera):
            out = self.parts.unet(x.to(self.dtype), t, encoder_hidden_states=emb, return_dict=False)
            loss = F.mse_loss(out[0].float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.last_vsd_lora_loss = loss.detach()


def _check_camera(camera: object, batch: int) -> Tensor:  # -> [B,16] float32
    if not isinstance(camera, Tensor):
        raise ValueError(f"camera must be a [B,16] (or [B,4,4]) c2w tensor, got {type(camera)}")
    c = camera.detach().float()
    if c.ndim == 3 and tuple(c.shape[1:]) == (4, 4):
        c = c.reshape(c.shape[0], CAMERA_DIM)
    if c.ndim != 2 or c.shape[1] != CAMERA_DIM or c.shape[0] not in (1, batch):
        raise ValueError(
            f"camera must be [B,16] = [{batch},16] flattened camera-to-world matrices (or "
            f"[{batch},4,4]), got {tuple(camera.shape)}"
        )
    if not bool(torch.isfinite(c).all()):
        raise ValueError("camera has non-finite values")
    return c.expand(batch, CAMERA_DIM)


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
