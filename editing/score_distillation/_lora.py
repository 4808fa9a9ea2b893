"""Fuse a UNet LoRA (few-step distillations such as LCM-LoRA or Hyper-SD, or any style LoRA)
into a diffusers UNet's weights: `W += scale * (alpha / rank) * B @ A`.

diffusers' own `load_lora_weights` needs `peft`; fusing by hand needs only diffusers' key
conversion (`lora_state_dict` reads diffusers, peft and kohya/A1111 files), and a fused UNet
costs nothing extra per step. Text-encoder LoRAs are refused rather than half applied."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["fuse_unet_lora"]


def _read_lora(
    lora: str | os.PathLike[str] | dict[str, Tensor],
    *,
    weight_name: str | None,
    local_files_only: bool | None,
) -> tuple[dict[str, Tensor], dict[str, float]]:
    from diffusers import StableDiffusionPipeline
    from diffusers.utils.state_dict_utils import convert_unet_state_dict_to_peft

    from ._tiny import quiet_hf

    src: Any = lora if isinstance(lora, dict) else os.fspath(lora)
    with quiet_hf():
        state, alphas = StableDiffusionPipeline.lora_state_dict(
            src, weight_name=weight_name, local_files_only=local_files_only
        )
    other = sorted({k.split(".", 1)[0] for k in state if not k.startswith("unet.")})
    if other:
        raise ValueError(
            f"this LoRA also changes {', '.join(other)}; only UNet LoRAs can be fused here"
        )
    unet_state = {k.removeprefix("unet."): v for k, v in state.items()}
    if unet_state and "lora_A" not in next(iter(unet_state)):
        unet_state = convert_unet_state_dict_to_peft(unet_state)
    unet_alphas = {}
    for k, v in (alphas or {}).items():
        # "<module>.alpha", or "<module>.processor.to_q_lora.down.weight.alpha" (kohya attention)
        key = k.removeprefix("unet.").removesuffix(".alpha")
        if key.endswith(".weight"):
            key = next(iter(convert_unet_state_dict_to_peft({key: None})))
        unet_alphas[key.split(".lora_A.")[0]] = float(v)
    return unet_state, unet_alphas


@torch.no_grad()
def fuse_unet_lora(
    unet: nn.Module,
    lora: str | os.PathLike[str] | dict[str, Tensor],
    *,
    scale: float = 1.0,
    weight_name: str | None = None,
    local_files_only: bool | None = None,
) -> int:
    """Add a LoRA's low-rank updates to `unet`'s Linear / Conv2d weights in place.

    `lora`: a .safetensors file, a folder or hub id holding one (`weight_name` picks the file),
    or a state dict (diffusers, peft or kohya keys). `scale` multiplies every update. Returns
    the number of layers changed; a LoRA that matches no layer raises `ValueError`."""
    state, alphas = _read_lora(lora, weight_name=weight_name, local_files_only=local_files_only)
    names = sorted(k.removesuffix(".lora_A.weight") for k in state if k.endswith(".lora_A.weight"))
    if not names:
        raise ValueError("no LoRA layers (lora_A / lora_down weights) found in this file")
    for name in names:
        try:
            layer = unet.get_submodule(name)
        except AttributeError:
            raise ValueError(f"LoRA layer {name!r} does not exist in this UNet") from None
        down, up = state[f"{name}.lora_A.weight"], state[f"{name}.lora_B.weight"]
        rank = down.shape[0]
        s = scale * alphas.get(name, rank) / rank
        w = layer.weight
        delta = up.flatten(1).to(torch.float32) @ down.flatten(1).to(torch.float32)  # [out, in*k*k]
        if isinstance(layer, nn.Conv2d) and delta.numel() == w.numel():
            delta = delta.reshape(w.shape)
        elif isinstance(layer, nn.Linear) and delta.shape == w.shape:
            pass
        else:
            raise ValueError(
                f"LoRA layer {name!r}: update {tuple(delta.shape)} does not fit weight "
                f"{tuple(w.shape)} of {type(layer).__name__}"
            )
        w.add_((s * delta).to(device=w.device, dtype=w.dtype))
        bias = state.get(f"{name}.lora_B.bias")
        if bias is not None and layer.bias is not None:
            layer.bias.add_((s * bias).to(device=w.device, dtype=w.dtype))
    return len(names)
