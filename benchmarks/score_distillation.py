"""Benchmark SDS and DDS steps (loss + backward to the render's pixels) per second.

CPU: the tiny random-weight pipeline (`make_tiny_pipeline`: UNet 32/64, VAE 32/32/64/64, CLIP
text 32 x 5 layers) at 256² and 512² renders, in "vae" (gradients through the encoder) and
"rgb" (linear RGB -> latent) latent modes, guidance on (two UNet rows per branch); DDS with
its source latents cached (steady state) and, in vae mode, re-encoded every step. Baseline in
the same run: one no-grad UNet forward of the same batch (what a step costs at least). Also the
cold path the editor's 10 s target is about: importing diffusers, writing the tiny pipeline to
disk (one-off), loading it with `load_distiller` and the first 64² DDS step; `edit_start_s` sums
all but the one-off write.

GPU (when CUDA is available; skipped otherwise): Stable Diffusion 1.5's architecture with random
weights (UNet 320/640/1280/1280, VAE 128-512, CLIP text 768 x 12) in float16 at 512² (and 256²):
steps/s and peak CUDA memory per configuration.

    python benchmarks/score_distillation.py [--threads 2] [--repeat 3] [--sizes 256,512]
                                            [--no-gpu] [--out results.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import argparse
import tempfile
import time
from typing import Any

import torch
from _common import emit, ensure_repo_on_path, machine_info, timeit

ensure_repo_on_path()

from editing.score_distillation import (  # noqa: E402
    DistillationConfig,
    ScoreDistiller,
    load_distiller,
    make_tiny_pipeline,
)
from editing.score_distillation._tiny import (  # noqa: E402
    parts_from_components,
    sd15_shaped_components,
    tiny_parts,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    distiller: ScoreDistiller,
    size: int,
    method: str,
    repeat: int,
    warmup: int = 1,
    fresh_source: bool = False,
) -> dict[str, Any]:
    """Median/min ms of one `loss(...).backward()` on a [1,3,size,size] render. DDS re-uses
    one source render (its latents are cached after the first step, as when an edit revisits
    its views) unless `fresh_source`, which encodes the source every step."""
    device = distiller.device
    gen = torch.Generator(device="cpu").manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=gen).to(device).requires_grad_(True)
    source = torch.rand(1, 3, size, size, generator=gen).to(device) if method == "dds" else None

    def step() -> None:
        image.grad = None
        if fresh_source:
            distiller._source_cache.clear()
        distiller.loss(
            image,
            "a red mug",
            method=method,
            source_images=source,
            source_prompt="a mug",
            generator=gen,
        ).backward()
        _sync(device)

    t = timeit(step, warmup=warmup, repeat=repeat)
    t["steps_per_s"] = round(1e3 / t["median_ms"], 2)
    return t


def time_unet_forward(distiller: ScoreDistiller, size: int, repeat: int) -> dict[str, Any]:
    """Baseline: one no-grad UNet forward of the batch an SDS step with CFG runs (2 rows)."""
    f = distiller.parts.vae_scale_factor
    res = distiller.input_size(size, size)
    z = torch.randn(2, 4, res[0] // f, res[1] // f, device=distiller.device, dtype=distiller.dtype)
    t = torch.full((2,), 500, device=distiller.device)
    emb = torch.cat([distiller.embed(""), distiller.embed("a red mug")])

    def fwd() -> None:
        with torch.no_grad():
            distiller.parts.unet(z, t, encoder_hidden_states=emb, return_dict=False)
        _sync(distiller.device)

    return timeit(fwd, warmup=1, repeat=repeat)


def bench(
    parts_fn: Any, device: torch.device, sizes: list[int], repeat: int, half: bool
) -> dict[str, Any]:
    parts = parts_fn()
    out: dict[str, Any] = {}
    for size in sizes:
        for mode in ("vae", "rgb"):
            cfg = DistillationConfig(resolution=size, latent_mode=mode, half=half)
            d = ScoreDistiller(parts, cfg, device=device)
            for method in ("sds", "dds"):
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                r = time_steps(d, size, method, repeat)
                if device.type == "cuda":
                    r["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                out[f"{method}_{mode}_{size}"] = r
            if mode == "vae":
                r = time_steps(d, size, "dds", repeat, fresh_source=True)
                out[f"dds_vae_{size}_uncached_source"] = r
        out[f"baseline_unet_forward_{size}"] = time_unet_forward(d, size, repeat)
    return out


def cold_start(tmp: str) -> dict[str, float]:
    """Seconds to write the tiny pipeline, load it from disk and run the first 64² DDS step."""
    t0 = time.perf_counter()
    path = make_tiny_pipeline(os.path.join(tmp, "tiny"))
    t1 = time.perf_counter()
    d = load_distiller(path, config=DistillationConfig(resolution=64), device="cpu")
    t2 = time.perf_counter()
    image = torch.rand(1, 3, 64, 64, requires_grad=True)
    d.loss(image, "a red mug", method="dds", source_images=image.detach()).backward()
    t3 = time.perf_counter()
    return {
        "make_tiny_pipeline_s": round(t1 - t0, 2),
        "load_distiller_s": round(t2 - t1, 2),
        "first_step_s": round(t3 - t2, 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", default="256,512", help="render sizes, comma-separated")
    ap.add_argument("--no-gpu", action="store_true", help="skip the CUDA branch")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    t0 = time.perf_counter()
    import diffusers.models  # noqa: F401 - timed: the first import is part of the cold start
    import transformers.models.clip  # noqa: F401

    import_s = time.perf_counter() - t0
    result: dict[str, Any] = {"benchmark": "score_distillation", "machine": machine_info()}
    with tempfile.TemporaryDirectory() as tmp:
        result["cold_start"] = {"import_diffusers_s": round(import_s, 2), **cold_start(tmp)}
    c = result["cold_start"]
    # what pressing Edit costs in a fresh process with the model already on disk
    c["edit_start_s"] = round(
        c["import_diffusers_s"] + c["load_distiller_s"] + c["first_step_s"], 2
    )

    cpu = torch.device("cpu")
    result["cpu_tiny"] = {
        "model": "tiny random (make_tiny_pipeline, seed 0), float32",
        "batch": 1,
        **bench(tiny_parts, cpu, sizes, args.repeat, half=False),
    }
    if torch.cuda.is_available() and not args.no_gpu:
        gpu = torch.device("cuda")
        result["gpu_sd15_shaped"] = {
            "model": "SD 1.5 architecture, random weights, float16",
            "device": torch.cuda.get_device_name(gpu),
            "batch": 1,
            **bench(
                lambda: parts_from_components(sd15_shaped_components(), "sd15-shaped"),
                gpu,
                sorted(set(sizes) | {512}),
                max(args.repeat, 5),
                half=True,
            ),
        }
    else:
        result["gpu_sd15_shaped"] = "skipped: no CUDA device" if not args.no_gpu else "skipped"
    emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
