"""LoRA on a diffusers UNet, `peft`-free, two ways:

* `fuse_unet_lora`: fuse a LoRA file (few-step distillations such as LCM-LoRA or Hyper-SD, or
  any style LoRA) into the weights: `W += scale * (alpha / rank) * B @ A`. diffusers' own
  `load_lora_weights` needs `peft`; fusing by hand needs only diffusers' key conversion
  (`lora_state_dict` reads diffusers, peft and kohya/A1111 files), and a fused UNet costs nothing
  extra per step. Text-encoder LoRAs are refused rather than half applied.
* `UNetLoRA`: a trainable LoRA (VSD's "LoRA'd copy of the UNet") attached to the attention
  projections by forward hooks. The UNet's modules, weights and state dict stay as they were:
  the same frozen weights serve as the pretrained model (LoRA off, the default) and as the LoRA
  model (inside `with lora.active(...)`), so the copy costs only the LoRA factors.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["LORA_TARGETS", "UNetLoRA", "fuse_unet_lora", "lora_target_names"]

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
"""The attention projections a trainable `UNetLoRA` adapts (diffusers `Attention` names)."""

CAMERA_DIM = 16
"""A camera condition is a flattened 4x4 camera-to-world matrix (ProlificDreamer's choice)."""


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


def lora_target_names(unet: nn.Module) -> list[str]:
    """Names of `unet`'s Linear attention projections (`LORA_TARGETS`), in module order."""
    return [
        name
        for name, mod in unet.named_modules()
        if isinstance(mod, nn.Linear) and any(name.endswith("." + t) for t in LORA_TARGETS)
    ]


class UNetLoRA(nn.Module):
    """Trainable rank-`rank` LoRA factors for every attention projection of a frozen `unet`, plus
    (when the UNet has diffusers' `time_embedding`) a camera embedding added to the timestep
    embedding as a class embedding would be (`TimestepEmbedding(16, D)`, as ProlificDreamer).

    While inactive (the default) the UNet computes exactly what it did before; inside
    `with lora.active(camera):` each projection returns `W x + B A x` and the camera rows are
    embedded. `B` and the camera embedding's output layer start at zero, so a fresh LoRA model
    equals the pretrained one. The factors are float32 whatever the UNet's dtype.

    Args:
        unet: a diffusers-style UNet whose attention projections are `nn.Linear` modules named
            `to_q`, `to_k`, `to_v`, `to_out.0`.
        rank: LoRA rank (alpha = rank: the update is exactly `B A`).
        seed: seeds the `A` factors (kaiming-uniform like `nn.Linear`) and the camera MLP.
    """

    def __init__(self, unet: nn.Module, rank: int = 4, *, seed: int = 0) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        names = lora_target_names(unet)
        if not names:
            raise ValueError(
                "this UNet has no attention projections (Linear to_q/to_k/to_v/to_out.0) to "
                "attach a LoRA to"
            )
        device = next(iter(unet.parameters())).device
        gen = torch.Generator().manual_seed(seed)
        self.rank = rank
        self.down = nn.ParameterDict()  # A [r, in]
        self.up = nn.ParameterDict()  # B [out, r]
        self._handles: list[Any] = []
        self._active = False
        self._camera: Tensor | None = None  # [N,16] while active
        for name in names:
            layer = unet.get_submodule(name)
            key = name.replace(".", "__")
            a = torch.empty(rank, layer.in_features)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=gen)
            self.down[key] = nn.Parameter(a.to(device))
            self.up[key] = nn.Parameter(torch.zeros(layer.out_features, rank, device=device))
            self._handles.append(layer.register_forward_hook(self._projection_hook(key)))
        self.camera_embedding: nn.Sequential | None = None
        temb = getattr(unet, "time_embedding", None)
        out_dim = getattr(getattr(temb, "linear_2", None), "out_features", None)
        if isinstance(temb, nn.Module) and isinstance(out_dim, int):
            first, last = nn.Linear(CAMERA_DIM, out_dim), nn.Linear(out_dim, out_dim)
            nn.init.kaiming_uniform_(first.weight, a=math.sqrt(5), generator=gen)
            nn.init.zeros_(first.bias)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.camera_embedding = nn.Sequential(first, nn.SiLU(), last).to(device)
            self._handles.append(temb.register_forward_hook(self._time_embedding_hook))

    @property
    def num_layers(self) -> int:
        """Attention projections adapted."""
        return len(self.down)

    def _projection_hook(self, key: str) -> Any:
        def hook(_: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> Tensor | None:
            if not self._active:
                return None
            a, b = self.down[key], self.up[key]
            delta = (inputs[0].to(a.dtype) @ a.T) @ b.T
            return out + delta.to(out.dtype)

        return hook

    def _time_embedding_hook(
        self, _: nn.Module, __: tuple[Tensor, ...], emb: Tensor
    ) -> Tensor | None:
        if not self._active or self._camera is None or self.camera_embedding is None:
            return None
        if self._camera.shape[0] != emb.shape[0]:
            raise ValueError(
                f"camera rows ({self._camera.shape[0]}) do not match the UNet batch "
                f"({emb.shape[0]})"
            )
        return emb + self.camera_embedding(self._camera).to(emb.dtype)

    @contextlib.contextmanager
    def active(self, camera: Tensor | None = None) -> Iterator[None]:  # camera [N,16]
        """Run the UNet as the LoRA model inside the block: projections adapted, and the camera
        rows (one per UNet batch row; None: no camera term) embedded with the timestep."""
        self._active, self._camera = True, camera
        try:
            yield
        finally:
            self._active, self._camera = False, None

    def remove(self) -> None:
        """Detach from the UNet for good (it computes the pretrained model again)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
