"""Load a Stable-Diffusion-family model (hub id or a folder saved with `save_pretrained`) into a
`ScoreDistiller`: only the UNet, VAE, text encoder, tokenizer and the noise schedule are read
(no safety checker, no image encoder), in float16 on CUDA.

Nothing is downloaded unless the Hugging Face cache lacks the model and the hub is reachable:
the cache is tried first with `local_files_only=True`, so a populated cache works offline
without probing the network; with `HF_HUB_OFFLINE=1` (or `local_files_only=True`) the hub is
never contacted, and when its host does not answer within 2 s nothing is attempted either. A missing model raises `MissingWeightsError` saying what to fetch and where."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from fields.features import MissingWeightsError

from ._distiller import DiffusionParts, DistillationConfig, ScoreDistiller
from ._lora import fuse_unet_lora
from ._tiny import parts_from_components, quiet_hf

__all__ = ["KNOWN_LORAS", "KNOWN_MODELS", "load_distiller", "load_parts"]

KNOWN_MODELS: dict[str, str] = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "SD 1.5, 512 px, epsilon; SDS guidance 100",
    "stabilityai/stable-diffusion-2-1-base": "SD 2.1 base, 512 px, epsilon",
    "stabilityai/stable-diffusion-2-1": "SD 2.1, 768 px (resolution=768), v-prediction",
    "stabilityai/sd-turbo": "SD-Turbo (distilled SD 2.1), 512 px; use guidance_scale 1-2",
    "stable-diffusion-v1-5/stable-diffusion-inpainting": "SD 1.5 inpainting (the former "
    "runwayml/stable-diffusion-inpainting), 9-channel UNet, 512 px, epsilon; pass inpaint_mask",
    "stabilityai/stable-diffusion-2-inpainting": "SD 2 inpainting, 9-channel UNet, 512 px, "
    "epsilon; pass inpaint_mask",
}
"""Hub ids known to work, with what to set. Any SD-1.x/2.x-layout repo or folder works,
inpainting ones (9-channel UNet) included."""

KNOWN_LORAS: dict[str, str] = {
    "latent-consistency/lcm-lora-sdv1-5": "LCM-LoRA for SD 1.5 (pytorch_lora_weights.safetensors)",
    "ByteDance/Hyper-SD": "Hyper-SD; for SD 1.5 e.g. lora_weight_name="
    "'Hyper-SD15-1step-lora.safetensors'",
}
"""Few-step LoRAs for `load_distiller(..., lora=...)`; run them with guidance_scale ~1-2."""

_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")


def _looks_like_path(model: str) -> bool:
    """A folder, not a hub id: exists, starts like a path, or has more parts than org/name."""
    return (
        Path(model).expanduser().exists()
        or model.startswith((".", "~", "/", "\\"))
        or model.count("/") > 1
        or "\\" in model
    )


def _hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the hub's host accepts a TCP connection: without network, huggingface_hub would
    retry for ~20 s before giving up; this answers in at most `timeout`."""
    import socket
    from urllib.parse import urlparse

    try:
        from huggingface_hub.constants import ENDPOINT
    except ImportError:  # pragma: no cover
        ENDPOINT = "https://huggingface.co"
    url = urlparse(ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_cache() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except ImportError:  # pragma: no cover
        return "~/.cache/huggingface/hub"


def _missing_hint(
    model: str, error: BaseException, offline: bool, cache_dir: str | None = None
) -> str:
    return (
        f"could not load the diffusion model {model!r}: {error}\n"
        f"Either download it on a machine with internet access into the Hugging Face cache "
        f"(`hf download {model}`, or load it once with diffusers) and copy the cache "
        f"({cache_dir or _hub_cache()}) over, or save it to a folder with "
        f"`StableDiffusionPipeline.from_pretrained({model!r}).save_pretrained(DIR)` and pass "
        "--model DIR. For a weight-free smoke test, `scenelab make-tiny-model DIR` writes a "
        "tiny random model"
        + (
            " (offline: HF_HUB_OFFLINE is set, local_files_only was asked or the hub is not "
            "reachable, so nothing was downloaded)."
            if offline
            else "."
        )
    )


def _lora_hint(lora: str, weight_name: str | None, error: BaseException, offline: bool) -> str:
    file = weight_name or "pytorch_lora_weights.safetensors"
    return (
        f"could not load the LoRA {lora!r}: {error}\n"
        f"Download it on a machine with internet access (`hf download {lora} {file}`) and pass "
        "the .safetensors file's path, or copy the Hugging Face cache "
        f"({_hub_cache()}) over" + (" (offline: nothing was downloaded)." if offline else ".")
    )


def _load_components(
    model: str, *, dtype: torch.dtype, local_files_only: bool, cache_dir: str | None = None
) -> dict[str, Any]:
    kw: dict[str, Any] = {"local_files_only": local_files_only, "cache_dir": cache_dir}
    with quiet_hf():
        return _read_components(model, dtype=dtype, kw=kw)


def _read_components(model: str, *, dtype: torch.dtype, kw: dict[str, Any]) -> dict[str, Any]:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    scheduler_config = DDPMScheduler.load_config(model, subfolder="scheduler", **kw)
    keep = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
    return {
        # any SD scheduler config (PNDM, Euler, DDIM, ...) describes the same training schedule
        "scheduler": DDPMScheduler.from_config(keep),
        "tokenizer": CLIPTokenizer.from_pretrained(model, subfolder="tokenizer", **kw),
        "text_encoder": CLIPTextModel.from_pretrained(
            model, subfolder="text_encoder", dtype=dtype, **kw
        ),
        "unet": UNet2DConditionModel.from_pretrained(
            model, subfolder="unet", torch_dtype=dtype, **kw
        ),
        "vae": AutoencoderKL.from_pretrained(model, subfolder="vae", torch_dtype=dtype, **kw),
    }


def load_parts(
    model: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> DiffusionParts:
    """Read a model's UNet, VAE, CLIP text encoder, tokenizer and schedule.

    `model`: a hub id ("stable-diffusion-v1-5/stable-diffusion-v1-5", "stabilityai/sd-turbo";
    see `KNOWN_MODELS`) or a folder in diffusers' pipeline layout (`save_pretrained`; e.g. from
    `make_tiny_pipeline`). `local_files_only`: None tries the HF cache first and the hub only
    on a miss (never with HF_HUB_OFFLINE=1); True never contacts the hub. `cache_dir`: the
    Hugging Face hub cache to use (default: $HF_HUB_CACHE, ~/.cache/huggingface/hub)."""
    model = os.fspath(model)
    if not model.strip():
        raise ValueError("empty model id (pass a hub id or a pipeline folder)")
    if _looks_like_path(model):
        path = Path(model).expanduser()
        if not path.is_dir():
            raise MissingWeightsError(
                f"model folder {path} does not exist. Save a pipeline there with "
                "`StableDiffusionPipeline.from_pretrained(HUB_ID).save_pretrained(DIR)` or "
                f"`scenelab make-tiny-model {path}` (tiny random weights, for tests), or pass a "
                "hub id such as stable-diffusion-v1-5/stable-diffusion-v1-5"
            )
        missing = [c for c in _COMPONENTS if not (path / c).is_dir()]
        if missing:
            raise ValueError(
                f"{path} is not a Stable Diffusion pipeline folder: no {', '.join(missing)} "
                "sub-folder (expected the layout written by diffusers' save_pretrained)"
            )
        try:
            comps = _load_components(str(path), dtype=dtype, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read the pipeline: {e}") from e
        return parts_from_components(comps, model_id=str(path))

    offline = _offline() or local_files_only is True
    cache = None if cache_dir is None else os.fspath(cache_dir)
    try:
        comps = _load_components(model, dtype=dtype, local_files_only=True, cache_dir=cache)
    except (OSError, ValueError) as e:
        if offline or not _hub_reachable():
            raise MissingWeightsError(_missing_hint(model, e, True, cache)) from e
        try:
            comps = _load_components(model, dtype=dtype, local_files_only=False, cache_dir=cache)
        except (OSError, ValueError) as e2:
            raise MissingWeightsError(_missing_hint(model, e2, False, cache)) from e2
    return parts_from_components(comps, model_id=model)


def load_distiller(
    model: str | os.PathLike[str],
    *,
    config: DistillationConfig = DistillationConfig(),  # noqa: B008 - frozen dataclass
    device: torch.device | str | None = None,
    local_files_only: bool | None = None,
    lora: str | os.PathLike[str] | None = None,
    lora_scale: float = 1.0,
    lora_weight_name: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ScoreDistiller:
    """A `ScoreDistiller` for `model` (hub id or `save_pretrained` folder; see `load_parts`).

    `device`: None picks CUDA when available, else the CPU. Weights are loaded in float16 when
    `config.half` (default: on CUDA). `lora`: a UNet LoRA fused into the weights (a .safetensors
    file, or a folder / hub id with `lora_weight_name` picking the file), e.g. LCM-LoRA
    ("latent-consistency/lcm-lora-sdv1-5") or Hyper-SD ("ByteDance/Hyper-SD",
    "Hyper-SD15-1step-lora.safetensors"); few-step LoRAs want `guidance_scale` around 1-2.
    Raises `MissingWeightsError` when the model or LoRA is not on this machine and cannot be
    downloaded."""
    device = torch.device(
        device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    half = config.half if config.half is not None else device.type == "cuda"
    dtype = torch.float16 if half else torch.float32
    parts = load_parts(model, dtype=dtype, local_files_only=local_files_only, cache_dir=cache_dir)
    if lora is not None:
        _fuse_lora(parts, lora, lora_scale, lora_weight_name, local_files_only)
    return ScoreDistiller(parts, config, device=device)


def _fuse_lora(
    parts: DiffusionParts,
    lora: str | os.PathLike[str],
    scale: float,
    weight_name: str | None,
    local_files_only: bool | None,
) -> None:
    lora = os.fspath(lora)
    local = Path(lora).expanduser()
    if _looks_like_path(lora) and not local.exists():
        raise MissingWeightsError(f"LoRA file {local} does not exist")
    only = local.exists() or _offline() or local_files_only is True or not _hub_reachable()
    try:
        n = fuse_unet_lora(
            parts.unet, lora, scale=scale, weight_name=weight_name, local_files_only=True
        )
    except OSError as e:
        if only:
            raise MissingWeightsError(_lora_hint(lora, weight_name, e, True)) from e
        try:
            n = fuse_unet_lora(
                parts.unet, lora, scale=scale, weight_name=weight_name, local_files_only=False
            )
        except OSError as e2:
            raise MissingWeightsError(_lora_hint(lora, weight_name, e2, False)) from e2
    parts.model_id = f"{parts.model_id} + LoRA {lora} (x{scale:g}, {n} layers)"
