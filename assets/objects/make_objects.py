"""Build the bundled insertable objects (`assets/objects/*.ply`) reproducibly from the synthetic
catalogue: `python assets/objects/make_objects.py [--out DIR] [--overwrite]`.

Each object is a standalone `GaussianScene` in its own frame — the centre of its base at the
origin, z up, metres — with the int32 `label` extra (1 for every Gaussian) and `meta` holding its
name, units, up axis, label names and the catalogue parameters. Sampled with the same surface
samplers and splat shapes as `fields.synthetic` worlds, at a coarse spacing that keeps each file
small.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fields import GaussianScene, save_scene
from fields.scene import rotmat_to_quat
from fields.synthetic import CATALOGUE, PALETTE, WorldConfig
from fields.synthetic._world import _sample_model, _splats

OBJECTS_DIR = Path(__file__).resolve().parent
SPACING = 0.0035  # metres between neighbouring Gaussians
SEED = 0

# name -> (catalogue kind, colour name)
OBJECTS: dict[str, tuple[str, str]] = {
    "mug": ("mug", "blue"),
    "can": ("can", "red"),
    "ball": ("ball", "orange"),
    "book": ("book", "green"),
}


def build_object(name: str, *, spacing: float = SPACING, seed: int = SEED) -> GaussianScene:
    """The object `name` (a key of `OBJECTS`) as Gaussians in its own frame; deterministic in
    (name, spacing, seed)."""
    if name not in OBJECTS:
        raise ValueError(f"unknown object {name!r}; known: {sorted(OBJECTS)}")
    kind, color = OBJECTS[name]
    rng = np.random.default_rng([seed, sorted(OBJECTS).index(name)])
    model = CATALOGUE[kind](rng)
    config = replace(WorldConfig(), object_spacing=spacing)
    samples, _ = _sample_model(model, spacing, rng)
    materials = np.array([PALETTE[color], *model.secondary_colors])
    splats = _splats(
        samples, np.full(len(samples), spacing), materials[samples.material], 1, config, rng
    )
    lo, hi = (list(map(float, b)) for b in model.bounds)
    meta = {
        "name": name,
        "label_names": {"1": name},
        "units": "m",
        "up": [0, 0, 1],
        "object": {
            "kind": kind,
            "color_name": color,
            "params": {k: float(v) for k, v in model.params.items()},
            "bounds": [lo, hi],
            "footprint_radius": float(model.footprint_radius),
            "spacing": spacing,
            "seed": seed,
            "frame": "origin at the centre of the base, z up",
        },
    }
    return GaussianScene.from_activated(
        torch.from_numpy(splats["means"]).float(),
        rotmat_to_quat(torch.from_numpy(splats["rot"])).float(),
        torch.from_numpy(splats["scales"]).float(),
        torch.from_numpy(splats["opacities"]).float(),
        torch.from_numpy(splats["colors"]).float(),
        extras={"label": torch.from_numpy(splats["label"])},
        meta=meta,
    )


def write_objects(out_dir: str | Path = OBJECTS_DIR, *, overwrite: bool = False) -> list[Path]:
    """Write every object as `<out_dir>/<name>.ply` (+ its `.ply.json` sidecar)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [
        save_scene(build_object(name), out / f"{name}.ply", overwrite=overwrite) for name in OBJECTS
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=OBJECTS_DIR, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    args = p.parse_args()
    for path in write_objects(args.out, overwrite=args.overwrite):
        print(path)


if __name__ == "__main__":
    main()
