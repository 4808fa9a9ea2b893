"""Inpainting masks for score distillation: checking a mask, pulling the update back only inside
it (masked SDS), and the extra UNet input of 9-channel inpainting models.

A mask is `[B,1,H,W]` in [0,1] at the render's size, 1 = the region to (re)generate. Two things
use it:

* every UNet: the latent-space update is multiplied by the mask averaged down to the latent grid
  (a soft mask scales the update), and the render's pixel gradient is cut where the mask is 0 (a
  straight-through product whose forward value is the render unchanged), so those pixels get
  exactly zero gradient even though the VAE encoder's receptive field spans several latent
  cells and a latent cell on the border is partly outside;
* a 9-channel inpainting UNet (`unet.config.in_channels == 9`: `stable-diffusion-v1-5/
  stable-diffusion-inpainting`, `stabilityai/stable-diffusion-2-inpainting`): the UNet input is
  `[z_t, mask_latent, masked_image_latents]` as diffusers' `StableDiffusionInpaintPipeline`
  builds it (see `inpaint_condition_inputs`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "INPAINT_IN_CHANNELS",
    "check_inpaint_mask",
    "inpaint_condition_inputs",
    "is_inpainting_unet",
    "latent_mask",
    "masked_gradient",
]

INPAINT_IN_CHANNELS = 9
"""UNet input channels of SD inpainting models: 4 noisy latent + 1 mask + 4 masked-image latent."""


def is_inpainting_unet(unet: nn.Module) -> bool:
    """Whether `unet` is a 9-channel inpainting UNet (diffusers `config.in_channels == 9`)."""
    return getattr(getattr(unet, "config", None), "in_channels", 4) == INPAINT_IN_CHANNELS


def check_inpaint_mask(mask: object, images: Tensor) -> Tensor:  # -> [B,1,H,W] float32
    """`mask` as float32 `[B,1,H,W]` on `images`' device (a batch of 1 is repeated to B);
    ValueError naming the expected shape when it is not a `[B,1,H,W]` (or `[1,1,H,W]`) tensor of
    `images` [B,3,H,W]'s size with values in [0,1]."""
    b, _, h, w = images.shape
    want = f"[B,1,H,W] = [{b},1,{h},{w}] (or [1,1,{h},{w}]) in [0,1], 1 = regenerate"
    if not isinstance(mask, Tensor):
        raise ValueError(f"inpaint_mask must be a {want} tensor, got {type(mask).__name__}")
    if mask.ndim != 4 or mask.shape[1] != 1 or tuple(mask.shape[-2:]) != (h, w):
        raise ValueError(f"inpaint_mask must be {want}, got {tuple(mask.shape)}")
    if mask.shape[0] not in (1, b):
        raise ValueError(f"inpaint_mask must be {want}, got batch {mask.shape[0]}")
    if not (mask.dtype == torch.bool or mask.is_floating_point()):
        raise ValueError(f"inpaint_mask must be bool or floating point, got {mask.dtype}")
    m = mask.detach().to(device=images.device, dtype=torch.float32)
    if not bool(((m >= 0) & (m <= 1)).all()):
        raise ValueError("inpaint_mask values must lie in [0, 1] (1 = regenerate)")
    return m.expand(b, 1, h, w)


def latent_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:  # [B,1,H,W] -> [B,1,h,w]
    """The soft mask on the latent grid: the area average of each cell's pixels when shrinking
    (a cell half inside the region gets half the update), bilinear when growing."""
    if mask.shape[-2] >= size[0] and mask.shape[-1] >= size[1]:
        return F.interpolate(mask, size=size, mode="area")
    return F.interpolate(mask, size=size, mode="bilinear", align_corners=False)


def masked_gradient(images: Tensor, mask: Tensor) -> Tensor:  # [B,3,H,W], [B,1,H,W]
    """`images` unchanged in value, but no gradient reaches the pixels where `mask` is 0."""
    keep = (mask > 0).to(images.dtype)
    return images * keep + images.detach() * (1.0 - keep)


def inpaint_condition_inputs(
    images: Tensor,  # [B,3,H,W] in [0,1] at the UNet's input size, detached
    mask: Tensor | None,  # [B,1,H,W] in [0,1] at the same size; None: all ones
) -> tuple[Tensor, Tensor]:  # [B,3,H,W] masked image in [0,1], [B,1,H,W] binary mask
    """What diffusers' inpainting pipeline feeds a 9-channel UNet besides z_t, before encoding
    and resizing: the mask binarised at 0.5 (`mask >= 0.5` regenerates; the caller resizes it to
    the latent grid with nearest sampling) and the masked image `init_image * (mask < 0.5)` in
    the VAE's [-1,1] range, i.e. the hole is 0 there = mid-grey (0.5) in [0,1]."""
    b, _, h, w = images.shape
    if mask is None:
        m = torch.ones(b, 1, h, w, device=images.device, dtype=torch.float32)
    else:
        m = (mask.float() >= 0.5).float()
    masked = torch.where(m > 0.5, torch.full_like(images, 0.5), images)
    return masked, m
