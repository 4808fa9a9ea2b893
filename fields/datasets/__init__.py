"""Posed image datasets: COLMAP models, nerfstudio / instant-ngp `transforms.json`, Blender
nerf_synthetic. Every loader returns a `Dataset` whose cameras are pinhole `fields.Camera`
(world-to-camera `viewmat`, OpenCV axes, pixel centres at +0.5) and whose images are float32
[H,W,3] in [0,1], decoded lazily on access.

Distorted lenses (COLMAP SIMPLE_RADIAL / RADIAL / OPENCV / FULL_OPENCV and the equidistant
fisheyes, nerfstudio OPENCV / OPENCV_FISHEYE coefficients) are undistorted on load with OpenCV:
the camera becomes the undistorted pinhole (new K, cropped to valid pixels) and images and maps
are resampled to it; `Dataset.distortion` keeps the original lens, `Dataset.undistorted` says
it happened. Lenses OpenCV cannot invert (FOV, thin-prism fisheyes) are warned about and used
as pinholes.

    ds = load_dataset("garden", downscale=4)
    camera, image = ds[0]
    camera, rgba = ds.load_rgba(0)      # float32 [H,W,4], straight alpha (random backgrounds)
    labels = ds.load_map("labels", 0)   # int64 [H,W] from labels/ next to images/
"""

from __future__ import annotations

from pathlib import Path

from ._blender import is_blender, load_blender
from ._colmap import find_model, load_colmap
from ._dataset import Dataset, Distortion
from ._errors import DatasetError
from ._transforms import load_transforms

__all__ = [
    "Dataset",
    "DatasetError",
    "Distortion",
    "load_blender",
    "load_colmap",
    "load_dataset",
    "load_transforms",
]


def load_dataset(
    path: str | Path,
    *,
    downscale: float = 1,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    split: str | None = None,
    allow_outside: bool = False,
) -> Dataset:
    """Load a dataset, detecting its format. Checked in this order:

    - a `.json` file: `transforms_<split>.json` -> Blender, anything else -> transforms.json;
    - a folder with `transforms.json` -> nerfstudio / instant-ngp (wins over a COLMAP model
      in the same folder, as nerfstudio's processed data has both);
    - a folder with `transforms_{train,val,test}.json` -> Blender nerf_synthetic;
    - a COLMAP model in the folder, `sparse/0/`, `sparse/` or `colmap/sparse/0/`.

    `downscale` (>= 1): cameras are `Camera.scaled(1/downscale)`, images area-resampled to
    them (a pre-downscaled `images_<n>/` folder is used when present). `background`: colour
    that RGBA images are composited over. `split`: "train" / "val" / "test" subset
    (see `Dataset.split`); None keeps every view. `allow_outside`: read files the dataset
    names outside its folder (`../x.png`, absolute paths, symlinks pointing out), which is
    refused with a `DatasetError` by default."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such dataset: {path}")
    opts = {"downscale": downscale, "background": background, "allow_outside": allow_outside}
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise DatasetError(path, "not a dataset: expected a folder or a .json file")
        if path.stem.removeprefix("transforms_") in ("train", "val", "test"):
            return load_blender(path, split=split, **opts)
        ds = load_transforms(path, **opts)
    elif (path / "transforms.json").is_file():
        ds = load_transforms(path, **opts)
    elif is_blender(path):
        return load_blender(path, split=split, **opts)
    elif find_model(path) is not None:
        ds = load_colmap(path, **opts)
    else:
        raise DatasetError(
            path,
            "no dataset found: expected transforms.json, transforms_train.json, or a COLMAP "
            "model (cameras/images .bin or .txt) here or in sparse/0/",
        )
    return ds if split is None else ds.split(split)
