"""Pure math of score distillation: timestep sampling, classifier-free guidance, the SDS and DDS
updates and the surrogate loss that carries them.

Notation (DDPM): a clean latent `z`, noise `eps ~ N(0, I)`, timestep `t` with cumulative
`alpha_bar_t`; the noisy latent is `z_t = sqrt(alpha_bar_t) z + sqrt(1 - alpha_bar_t) eps`.

* SDS (DreamFusion, Poole et al. 2022): `grad_z = w(t) (eps_hat(z_t, y) - eps)`.
* DDS (Delta Denoising Score, Hertz et al. 2023): with the SAME `t` and `eps` for the edited
  latent `z` (target prompt `y`) and the unedited latent `z_src` (source prompt `y_src`),
  `grad_z = w(t) (eps_hat(z_t, y) - eps_hat(z_src_t, y_src))`. The noise and the image-agnostic
  part of SDS's error cancel, so identical images and prompts give exactly zero.

`w(t) = 1 - alpha_bar_t` (DreamFusion's weighting, as in threestudio).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "RGB_TO_LATENT",
    "anneal_t_max",
    "cfg",
    "eps_from_v",
    "grad_to_loss",
    "rgb_to_latent",
    "sample_timesteps",
    "sd_alphas_cumprod",
    "sds_weight",
]

Anneal = Literal["none", "linear", "sqrt"]

# Stable Diffusion 1.x/2.x latents (already multiplied by the VAE's 0.18215) -> RGB in [-1, 1],
# fitted by Keturn ("Decoding latents to RGB without upscaling") and used by threestudio and
# latent previews: rgb = latent @ LATENT_TO_RGB. Its pseudo-inverse maps RGB to the minimum-norm
# latent that decodes (linearly) to it: a cheap, encoder-free stand-in for the VAE.
_LATENT_TO_RGB = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
RGB_TO_LATENT = torch.linalg.pinv(torch.tensor(_LATENT_TO_RGB, dtype=torch.float64)).float()
"""[3,4]: RGB in [-1, 1] (channels last) -> Stable Diffusion latent, `z = rgb @ RGB_TO_LATENT`."""


def sd_alphas_cumprod(num_train_timesteps: int = 1000) -> Tensor:  # [T]
    """Stable Diffusion's "scaled_linear" schedule (beta 0.00085 -> 0.012): alpha_bar_t."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float()


def rgb_to_latent(images: Tensor, latent_size: tuple[int, int]) -> Tensor:
    """Cheap RGB -> latent: resize `images` [B,3,H,W] in [0,1] to `latent_size` (h, w; area
    average when shrinking) and
    apply the linear map `RGB_TO_LATENT`. Differentiable. Returns [B,4,h,w]."""
    if images.shape[-2] >= latent_size[0] and images.shape[-1] >= latent_size[1]:
        small = torch.nn.functional.interpolate(images, size=latent_size, mode="area")
    else:
        small = torch.nn.functional.interpolate(
            images, size=latent_size, mode="bilinear", align_corners=False
        )
    m = RGB_TO_LATENT.to(device=images.device, dtype=images.dtype)
    return torch.einsum("bchw,cl->blhw", small * 2.0 - 1.0, m)


def anneal_t_max(
    t_range: tuple[float, float], anneal: Anneal, progress: float, anneal_to: float
) -> float:
    """Upper end of the timestep range (fraction of the train timesteps) at `progress` in [0,1].

    "none": `t_range[1]` throughout; "linear": from `t_range[1]` down to `anneal_to` linearly in
    progress; "sqrt": the same but fast early (`sqrt(progress)`), as DreamTime-style schedules
    that settle coarse structure first and refine details longer."""
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    hi = t_range[1]
    if anneal == "none":
        return hi
    if anneal == "linear":
        f = progress
    elif anneal == "sqrt":
        f = math.sqrt(progress)
    else:
        raise ValueError(f"anneal must be 'none', 'linear' or 'sqrt', got {anneal!r}")
    return hi - (hi - anneal_to) * f


def sample_timesteps(
    batch: int,
    num_train_timesteps: int,
    t_range: tuple[float, float],
    *,
    anneal: Anneal = "none",
    progress: float = 0.0,
    anneal_to: float = 0.5,
    generator: torch.Generator | None = None,
) -> Tensor:  # [B] int64
    """Integer timesteps drawn uniformly from `[t_min, t_max(progress)]` (fractions of
    `num_train_timesteps`, both ends included), one per batch item, on `generator`'s device."""
    t_max = anneal_t_max(t_range, anneal, progress, anneal_to)
    lo = round(t_range[0] * num_train_timesteps)
    hi = max(lo, round(t_max * num_train_timesteps))
    hi = min(hi, num_train_timesteps - 1)
    lo = min(lo, hi)
    device = generator.device if generator is not None else None  # a CUDA generator works too
    return torch.randint(lo, hi + 1, (batch,), generator=generator, dtype=torch.long, device=device)


def sds_weight(alphas_cumprod_t: Tensor) -> Tensor:  # [B] -> [B,1,1,1]
    """DreamFusion's w(t) = 1 - alpha_bar_t, shaped to broadcast over latents."""
    return (1.0 - alphas_cumprod_t).reshape(-1, 1, 1, 1)


def cfg(eps_uncond: Tensor, eps_cond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance: `eps_u + scale (eps_c - eps_u)` (scale 1: the conditional)."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def eps_from_v(v: Tensor, z_t: Tensor, alphas_cumprod_t: Tensor) -> Tensor:
    """Noise prediction from a v-prediction model output (SD 2.x 768):
    `eps = sqrt(alpha_bar) v + sqrt(1 - alpha_bar) z_t`."""
    a = alphas_cumprod_t.reshape(-1, 1, 1, 1)
    return a.sqrt() * v + (1.0 - a).sqrt() * z_t


def grad_to_loss(latents: Tensor, grad: Tensor) -> Tensor:
    """A scalar whose gradient w.r.t. `latents` [B,C,h,w] is exactly `grad` / B.

    The standard trick: `target = (latents - grad).detach()`, `0.5 * ||latents - target||^2 / B`.
    Its value is `0.5 ||grad||^2 / B`, a (noisy) progress signal, not an objective."""
    grad = torch.nan_to_num(grad.float())
    latents = latents.float()
    target = (latents - grad).detach()
    return 0.5 * torch.nn.functional.mse_loss(latents, target, reduction="sum") / latents.shape[0]
