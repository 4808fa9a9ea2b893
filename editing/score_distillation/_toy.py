"""A toy "diffusion model" with a known answer, for testing score distillation without weights.

Each prompt names a clean image. The toy UNet predicts exactly the noise that maps that image's
latent `Z(y)` to the noisy input, `eps_hat = (z_t - sqrt(a_t) Z(y)) / sqrt(1 - a_t)`, so

* SDS: `eps_hat - eps = sqrt(a_t) / sqrt(1 - a_t) (z - Z(y))`: the update pulls the render's
  latent straight towards the target's, whatever the noise;
* DDS: `eps_hat(z_t, y) - eps_hat(z_src_t, y_src) = sqrt(a_t)/sqrt(1 - a_t) ((z - z_src) -
  (Z(y) - Z(y_src)))`: the edit moves the render by the difference between the prompts' images,
  and is exactly zero for identical prompts and identical images.

`loss(..., inpaint_mask=m)` restricts the update to the mask (masked SDS) as with any model; the
toy UNet has 4 input channels and no attention layers, so no 9-channel path and no VSD.

The VAE is a fixed linear map (8x8 average pool, then the same 3 -> 4 matrix as the "rgb" latent
mode), so the "vae" path (resize, [-1,1], posterior mean, scaling) runs too.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._distiller import DiffusionParts, DistillationConfig, ScoreDistiller
from ._loss import RGB_TO_LATENT, sd_alphas_cumprod

__all__ = ["TOY_CONFIG", "toy_distiller"]

TOY_CONFIG = DistillationConfig(guidance_scale=1.0, latent_mode="rgb", resolution=64)
"""The toy's default: no guidance (the conditional prediction is exact), cheap latents, 64 px."""


class _ToyTokenizer:
    """Prompt -> one token id: its row in the toy's table (unknown prompts -> row 0)."""

    model_max_length = 1

    def __init__(self, prompts: list[str]) -> None:
        self.ids = {p: i for i, p in enumerate(prompts)}

    def __call__(self, prompts: list[str], **_: object) -> SimpleNamespace:
        ids = [self.ids.get(p, 0) for p in prompts]
        return SimpleNamespace(input_ids=torch.tensor(ids, dtype=torch.long)[:, None])  # [N,1]


class _ToyTextEncoder(nn.Module):
    """Token id -> one-hot "embedding" [N,1,K] selecting a row of the UNet's image table."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("eye", torch.eye(n))

    def forward(self, input_ids: Tensor) -> tuple[Tensor]:
        return (self.eye[input_ids],)


class _ToyVAE(nn.Module):
    """Linear "encoder": 8x8 average pool, [-1,1] RGB -> 4 latent channels."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("m", RGB_TO_LATENT.clone())  # [3,4]
        self.config = SimpleNamespace(scaling_factor=1.0, shift_factor=None)

    def encode(self, x: Tensor) -> SimpleNamespace:  # x [B,3,H,W] in [-1,1]
        mean = torch.einsum("bchw,cl->blhw", F.avg_pool2d(x, 8), self.m.to(x.dtype))
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean))


class _ToyUNet(nn.Module):
    """eps_hat(z_t, t, e) = (z_t - sqrt(a_t) Z(e)) / sqrt(1 - a_t), Z(e) = e . table."""

    def __init__(self, alphas_cumprod: Tensor) -> None:
        super().__init__()
        self.register_buffer("alphas_cumprod", alphas_cumprod.clone())  # [T]
        self.register_buffer("table", torch.zeros(0))  # [K,4,h,w], set once the encoder exists

    def forward(
        self, x: Tensor, t: Tensor, encoder_hidden_states: Tensor, return_dict: bool = False
    ) -> tuple[Tensor]:
        table = self.table.to(x.dtype)
        if table.shape[-2:] != x.shape[-2:]:
            table = F.interpolate(table, size=x.shape[-2:], mode="bilinear", align_corners=False)
        clean = torch.einsum("nk,kchw->nchw", encoder_hidden_states[:, 0].to(x.dtype), table)
        a = self.alphas_cumprod[t].to(x.dtype).reshape(-1, 1, 1, 1)
        return ((x - a.sqrt() * clean) / (1.0 - a).sqrt(),)


def _as_image(x: Tensor | float, like: Tensor | None, name: str) -> Tensor:  # -> [3,H,W]
    if not isinstance(x, Tensor):
        if like is None:
            raise ValueError(f"{name} must be an image tensor, got {type(x).__name__}")
        return torch.full_like(like, float(x))
    x = x.detach().float()
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"{name} must be a [3,H,W] (or [1,3,H,W]) image, got {tuple(x.shape)}")
    if like is None:
        return x
    if x.shape[-2:] != like.shape[-2:]:
        x = F.interpolate(x[None], size=like.shape[-2:], mode="bilinear", align_corners=False)[0]
    return x.to(like.device)


def toy_distiller(
    target: Tensor,  # [3,H,W] or [1,3,H,W] in [0,1]
    prompt: str | None = None,
    *,
    source: Tensor | None = None,  # [3,H,W] in [0,1]
    source_prompt: str = "",
    unconditional: Tensor | float = 0.5,
    config: DistillationConfig = TOY_CONFIG,
    device: torch.device | str = "cpu",
) -> ScoreDistiller:
    """A `ScoreDistiller` whose denoiser knows the answer: its noise prediction points exactly
    towards the clean image each prompt names (see the module doc).

    Prompt -> clean image: `prompt` -> `target` (prompt None: every prompt not named below);
    `source_prompt` -> `source` when given (DDS tests: the unedited render); "" ->
    `unconditional` (an image or a grey level). With the default `TOY_CONFIG` (guidance 1) SDS
    drives a render to `target`, and DDS from (`source`, `source_prompt`) to (render, `prompt`)
    moves the render by `target - source`. Renders should have `target`'s aspect ratio."""
    tgt = _as_image(target, None, "target")
    if not bool(((tgt >= 0) & (tgt <= 1)).all()):
        raise ValueError("target colours must be in [0, 1]")
    device = torch.device(device)
    tgt = tgt.to(device)
    images = {"": _as_image(unconditional, tgt, "unconditional")}
    if source is not None:
        images[source_prompt] = _as_image(source, tgt, "source")
    if prompt is not None:
        images[prompt] = tgt
    other = tgt if prompt is None else images[""]
    prompts = ["\0other", *images]
    table = torch.stack([other, *images.values()])  # [K,3,H,W]

    alphas = sd_alphas_cumprod()
    unet = _ToyUNet(alphas)
    parts = DiffusionParts(
        unet=unet,
        text_encoder=_ToyTextEncoder(len(prompts)),
        tokenizer=_ToyTokenizer(prompts),
        alphas_cumprod=alphas,
        vae=_ToyVAE(),
        model_id="toy",
    )
    distiller = ScoreDistiller(parts, config, device=device)
    with torch.no_grad():
        unet.table = distiller.encode(table.to(distiller.dtype)).to(distiller.dtype)
    return distiller
