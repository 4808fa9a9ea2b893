"""Score distillation on text-to-image diffusion models: SDS and DDS losses of differentiable
renders under Stable-Diffusion-family UNets (diffusers), plus weight-free doubles for tests.

    from editing.score_distillation import DistillationConfig, load_distiller

    distiller = load_distiller("stabilityai/sd-turbo", config=DistillationConfig(guidance_scale=1))
    loss = distiller.loss(render, "a red mug", method="dds",
                          source_images=render_before, source_prompt="a mug", progress=0.3)
    loss.backward()

    # inpainting: only the masked region (1 = regenerate) gets an update; 9-channel
    # SD-inpainting UNets also see the mask and the masked image
    loss = distiller.loss(render, "a wooden table", inpaint_mask=mask)   # mask [B,1,H,W]
    # VSD (ProlificDreamer): a LoRA of the UNet learns the renders' distribution as it goes
    loss = distiller.loss(render, "a red mug", method="vsd", camera=c2w.flatten(1))

`load_distiller` takes a hub id or a folder saved with `save_pretrained` (offline when the HF
cache has it); `make_tiny_pipeline` writes a tiny random-weight pipeline (tests, smoke runs;
`inpainting=True`: a 9-channel inpainting one);
`toy_distiller` is a test double whose denoiser points exactly at a known image. Few-step
LoRAs (LCM, Hyper-SD) are fused into the UNet with `load_distiller(..., lora=...)`.
"""

from ._distiller import DEFAULT_GUIDANCE, DiffusionParts, DistillationConfig, ScoreDistiller
from ._pipeline import KNOWN_LORAS, KNOWN_MODELS, load_distiller, load_parts
from ._tiny import make_tiny_pipeline, tiny_parts
from ._toy import TOY_CONFIG, toy_distiller

__all__ = [
    "DEFAULT_GUIDANCE",
    "KNOWN_LORAS",
    "KNOWN_MODELS",
    "TOY_CONFIG",
    "DiffusionParts",
    "DistillationConfig",
    "ScoreDistiller",
    "load_distiller",
    "load_parts",
    "make_tiny_pipeline",
    "tiny_parts",
    "toy_distiller",
]
