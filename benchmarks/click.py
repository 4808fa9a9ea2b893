"""Benchmark click segmentation in 3D on the demo world: click -> 3D selection on CPU.

The bundled demo (`assets/demo`, seed 0, ~145k Gaussians, 320x240 views) with a d=16 field and
segment-anything's full-size vit_b built with random weights (`sam_model_registry["vit_b"]`,
no checkpoint): at click time only its prompt encoder and mask decoder run, on the embedding
rendered from the field. Stages (median ms): render + decode of the 64x64 SAM embedding, SAM's
decoder, lifting (one render + backward), affinity growth, and the whole `segment_click`
(target <= 500 ms; model loading excluded); with `ClickSegmenter`, a first click on a view vs a
later click on the same view (target <= 100 ms) and a granularity regrow. Baseline in the same run: the image-encoder pass
that this design avoids (vit_b on the 1024x1024 input; `--skip-encoder` leaves it out).

The field stands in for a distilled one: each Gaussian gets its class's fixed random vector plus
noise (features of a distilled oracle field look like that); timings depend on N and d only.

    python benchmarks/click.py [--out results.json] [--threads 2] [--skip-encoder]
"""

from __future__ import annotations

import os
import sys

if "--omp-spin" not in sys.argv:  # must happen before torch (libgomp) is loaded; see render.py
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import time
from typing import Any

import torch
from _common import REPO_ROOT, emit, ensure_repo_on_path, machine_info, timeit

ensure_repo_on_path()

from fields import load_dataset, load_scene  # noqa: E402
from fields.features._io import FeatureField  # noqa: E402
from fields.features._sam import SamDecoder  # noqa: E402
from fields.features._segment import (  # noqa: E402
    ClickSegmenter,
    grow_by_affinity,
    lift_mask,
    sam_embedding_from_field,
    segment_click,
)


def label_field(labels: torch.Tensor, dim: int = 16, seed: int = 0) -> FeatureField:
    """A d-channel field shaped like a distilled oracle field, with a random 256 x d SAM head."""
    gen = torch.Generator().manual_seed(seed)
    classes = torch.randn(int(labels.max()) + 1, dim, generator=gen)
    features = classes[labels.long()] + 0.1 * torch.randn(len(labels), dim, generator=gen)
    return FeatureField(features, {"sam": torch.randn(256, dim, generator=gen) / dim**0.5})


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(REPO_ROOT / "assets" / "demo"))
    parser.add_argument("--view", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-encoder", action="store_true", help="do not time the baseline")
    parser.add_argument("--omp-spin", action="store_true", help="keep libgomp's spin-waiting")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    t0 = time.perf_counter()
    sam = sam_model_registry["vit_b"](checkpoint=None).eval().requires_grad_(False)
    load_s = time.perf_counter() - t0
    decoder = SamDecoder(sam)

    scene = load_scene(os.path.join(args.data, "scene.ply"))
    dataset = load_dataset(args.data)
    camera = dataset.cameras[args.view]
    label_map = dataset.load_map("labels", args.view)
    field = label_field(scene.extras["label"])
    # click on the pixel nearest the centroid of the largest object (not the table) in view
    ids, counts = torch.unique(label_map[(label_map != 255) & (label_map != 0)], return_counts=True)
    target = int(ids[counts.argmax()])
    vs, us = (label_map == target).nonzero(as_tuple=True)
    centre = torch.stack([us.float().mean(), vs.float().mean()])
    pick = ((torch.stack([us, vs], 1).float() - centre) ** 2).sum(1).argmin()
    click = [[float(us[pick]) + 0.5, float(vs[pick]) + 0.5]]

    embedding = sam_embedding_from_field(scene, field, camera, grid=decoder.grid)
    size = (camera.height, camera.width)
    mask2d = decoder(embedding, size, points=click, labels=[1]).masks[0]
    gt2d = label_map == target
    seed, w_in, _ = lift_mask(scene, camera, gt2d)

    stages = {
        "render_decode": timeit(
            lambda: sam_embedding_from_field(scene, field, camera, grid=decoder.grid),
            repeat=args.repeat,
        ),
        "decoder": timeit(
            lambda: decoder(embedding, size, points=click, labels=[1]), repeat=args.repeat
        ),
        "lift": timeit(lambda: lift_mask(scene, camera, mask2d), repeat=args.repeat),
        "growth": timeit(
            lambda: grow_by_affinity(field.features, seed, 0.5, weights=w_in, means=scene.means),
            repeat=args.repeat,
        ),
        "total": timeit(
            lambda: segment_click(scene, field, decoder, camera, points=click, labels=[1]),
            repeat=args.repeat,
        ),
    }
    # The predictor split (`ClickSegmenter`): the first click on a view pays for the view once
    # (embedding + visible Gaussians); later clicks on the same view pay only decoder + lift of
    # the visible Gaussians + growth; the granularity slider only regrows.
    seg = ClickSegmenter(scene, field, decoder)

    def first_click():
        seg.set_view(camera)
        return seg.predict(points=click, labels=[1])

    first_click()
    second = [click[0], [click[0][0] + 3.0, click[0][1] + 2.0]]
    stages["first_click"] = timeit(first_click, repeat=args.repeat)
    stages["later_click"] = timeit(
        lambda: seg.predict(points=second, labels=[1, 1]), repeat=args.repeat
    )
    stages["regrow"] = timeit(lambda: seg.regrow(0.6), repeat=args.repeat)
    result = segment_click(scene, field, decoder, camera, points=click, labels=[1])
    labels = scene.extras["label"].long()
    gt3d = labels == target
    grown = grow_by_affinity(field.features, seed, 0.5, weights=w_in, means=scene.means)
    out: dict[str, Any] = {
        "benchmark": "click",
        "machine": machine_info(),
        "num_gaussians": len(scene),
        "resolution": [camera.width, camera.height],
        "field_dim": field.dim,
        "sam": "vit_b, random weights (decoder only at click time)",
        "sam_build_s": round(load_s, 2),
        "click": click[0],
        "stages": stages,
        "target_total_ms": 500,
        "meets_target": stages["total"]["median_ms"] <= 500,
        "target_later_click_ms": 100,
        "later_click_meets_target": stages["later_click"]["median_ms"] <= 100,
        "selected": int(result.mask3d.sum()),
        "ground_truth_2d_mask": {
            "object": target,
            "seed_precision": float((seed & gt3d).sum() / seed.sum().clamp_min(1)),
            "iou_3d_all": float((grown & gt3d).sum() / (grown | gt3d).sum().clamp_min(1)),
        },
    }
    if not args.skip_encoder:
        x = torch.rand(1, 3, 1024, 1024)
        with torch.no_grad():
            enc = timeit(lambda: sam.image_encoder(x), warmup=0, repeat=1)
        out["baseline_image_encoder"] = enc
        out["ratio_encoder_to_click"] = round(enc["median_ms"] / stages["total"]["median_ms"], 1)
    emit(out, args.out)
    return out


if __name__ == "__main__":
    main()
