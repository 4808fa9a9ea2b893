"""A tiny random-weight Stable Diffusion pipeline built in code (no downloads), for tests, demos
and benchmarks: the component shapes of diffusers' own pipeline tests (`get_dummy_components`),
except a VAE with SD's 8x downsampling; a byte-level CLIP tokenizer whose vocabulary is written
here; SD's noise schedule. Native size 64 px (8x8 latents).

    make_tiny_pipeline("tiny-sd")        # then: scenelab edit ... --model tiny-sd
    make_tiny_pipeline("tiny-sd-inpaint", inpainting=True)   # 9-channel inpainting UNet

`sd15_shaped_components` builds the full-size SD 1.5 architecture with random weights instead
(benchmarks on a GPU)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ._distiller import DiffusionParts

__all__ = [
    "make_tiny_pipeline",
    "quiet_hf",
    "sd15_shaped_components",
    "tiny_components",
    "tiny_parts",
]

_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


@contextlib.contextmanager
def quiet_hf() -> Iterator[None]:
    """Silence diffusers/transformers chatter (progress bars, `accelerate` hints, deprecation
    notes about configs we write ourselves) while loading or saving; restores it afterwards."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    saved = [(m, m.get_verbosity(), m.is_progress_bar_enabled()) for m in (dlog, tlog)]
    for m, _, _ in saved:
        m.set_verbosity_error()
        m.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks")
            yield
    finally:
        for m, level, bar in saved:
            m.set_verbosity(level)
            if bar:
                m.enable_progress_bar()


def _byte_chars() -> list[str]:
    """GPT-2 / CLIP byte-level alphabet: one printable unicode character per byte value."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += range(ord("®"), ord("ÿ") + 1)
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs, strict=True))]


def tiny_tokenizer(model_max_length: int = 77) -> Any:
    """A CLIPTokenizer over single byte-level characters (+ end-of-word forms): 514 tokens, no
    merges. Any text tokenizes (one token per character)."""
    from transformers import CLIPTokenizer

    vocab = {_BOS: 0, _EOS: 1}
    for c in _byte_chars():
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


def _sd_scheduler() -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def tiny_components(seed: int = 0, *, inpainting: bool = False) -> dict[str, Any]:
    """Random tiny `unet`, `vae`, `text_encoder`, `tokenizer`, `scheduler` (diffusers/transformers
    objects, float32, CPU), seeded: the same seed gives the same weights. `inpainting`: the UNet
    takes 9 input channels (noisy latent, mask, masked-image latent) like SD-inpainting's."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=8,  # native 64 px (8x8 latents): the size tests and CPU previews use
        in_channels=9 if inpainting else 4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
    )
    torch.manual_seed(seed)
    # diffusers' test VAE has 2 levels (2x downsampling); 4 levels give SD's 8x latent grid, so
    # `resolution` and the "rgb" latent mode mean the same as on real models, and a 512 px
    # render is a 64x64 latent rather than 256x256 (whose mid-block attention would not fit)
    vae = AutoencoderKL(
        block_out_channels=[32, 32, 64, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        sample_size=64,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=5,
            vocab_size=1000,
        )
    )
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tiny_tokenizer(),
        "scheduler": _sd_scheduler(),
    }


def sd15_shaped_components(seed: int = 0) -> dict[str, Any]:
    """Stable Diffusion 1.5's architecture (UNet 320/640/1280/1280, 8 heads, cross-attention
    768; VAE 128/256/512/512; CLIP text 768 wide, 12 layers) with random weights: the real
    model's speed and memory, no download. Weights are float32 on the CPU."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        block_out_channels=[128, 256, 512, 512],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            vocab_size=49408,
            max_position_embeddings=77,
        )
    )
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tiny_tokenizer(),
        "scheduler": _sd_scheduler(),
    }


def parts_from_components(components: dict[str, Any], model_id: str = "custom") -> DiffusionParts:
    """`DiffusionParts` from diffusers pipeline components (`unet`, `vae`, `text_encoder`,
    `tokenizer`, `scheduler`)."""
    scheduler, vae = components["scheduler"], components.get("vae")
    return DiffusionParts(
        unet=components["unet"],
        text_encoder=components["text_encoder"],
        tokenizer=components["tokenizer"],
        alphas_cumprod=scheduler.alphas_cumprod.float(),
        vae=vae,
        vae_scale_factor=2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 8,
        prediction_type=scheduler.config.get("prediction_type", "epsilon"),
        model_id=model_id,
        extra={"scheduler_config": dict(scheduler.config)},
    )


def tiny_parts(seed: int = 0, *, inpainting: bool = False) -> DiffusionParts:
    """The tiny random pipeline in memory, as `DiffusionParts` (no disk round trip)."""
    kind = "tiny-random-inpainting" if inpainting else "tiny-random"
    return parts_from_components(
        tiny_components(seed, inpainting=inpainting), model_id=f"{kind}(seed={seed})"
    )


def make_tiny_pipeline(
    out_dir: Path | str, *, seed: int = 0, overwrite: bool = False, inpainting: bool = False
) -> Path:
    """Write the tiny random-weight Stable Diffusion pipeline to `out_dir` with diffusers'
    `save_pretrained` (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/; no
    safety checker): loadable by `load_distiller(out_dir)` and
    `StableDiffusionPipeline.from_pretrained(out_dir)`, offline. ~9 MB. `inpainting`: a
    9-channel inpainting UNet, saved as a `StableDiffusionInpaintPipeline` (the layout of
    `stable-diffusion-v1-5/stable-diffusion-inpainting`); same seed, same other weights.

    The folder is written next to `out_dir` and moved into place when complete. An existing
    non-empty `out_dir` raises `FileExistsError` unless `overwrite=True`. Returns `out_dir`."""
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out} already exists and is not empty; refusing to overwrite it "
            "(pass overwrite=True / --overwrite, or choose a new directory)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        with quiet_hf():
            cls = StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline
            pipe = cls(
                **tiny_components(seed, inpainting=inpainting),
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
            pipe.save_pretrained(tmp, safe_serialization=True)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
