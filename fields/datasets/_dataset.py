"""`Dataset`: posed views whose images load lazily, plus what every loader shares (image
references, distortion records, the missing-image and distortion warnings)."""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from torch import Tensor

from ..camera import Camera
from ..errors import SceneFormatError
from . import _images

# Projection families that are not pinholes even with all coefficients zero.
_FISHEYE_MODELS = frozenset(
    {
        "OPENCV_FISHEYE",
        "SIMPLE_RADIAL_FISHEYE",
        "RADIAL_FISHEYE",
        "THIN_PRISM_FISHEYE",
        "RAD_TAN_THIN_PRISM_FISHEYE",
        "FISHEYE",
        "FISHEYE624",
    }
)

Background = tuple[float, float, float]
T = TypeVar("T")


@dataclass(frozen=True, eq=True)
class Distortion:
    """A view's lens model as stored in the dataset file. scenelab renders undistorted
    pinholes, so this is kept for reference (e.g. to undistort images first).

    `model` is the COLMAP model name (or nerfstudio `camera_model`), `params` the coefficients
    by their usual names (k1, k2, p1, p2, ..., omega for FOV)."""

    model: str = "PINHOLE"
    params: dict[str, float] = field(default_factory=dict)

    @property
    def is_pinhole(self) -> bool:
        return self.model not in _FISHEYE_MODELS and all(v == 0.0 for v in self.params.values())

    def __hash__(self) -> int:
        return hash((self.model, tuple(sorted(self.params.items()))))


@dataclass(frozen=True)
class ImageRef:
    """Where a view's image lives: `base / folder / name` (`folder` None: `base / name`).

    Keeping the folder separate is what lets us find the nerfstudio/COLMAP siblings:
    `base/<folder>_<n>/name` (pre-downscaled copies) and `base/<map>/name` (per-view maps)."""

    base: Path
    folder: str | None
    name: str

    @property
    def path(self) -> Path:
        return self.base / self.folder / self.name if self.folder else self.base / self.name

    def downscaled(self, factor: int) -> Path | None:
        if not self.folder or factor <= 1:
            return None
        return self.base / f"{self.folder}_{factor}" / self.name

    def map_candidates(self, map_name: str, factor: int) -> list[Path]:
        names = [self.name]
        png = str(Path(self.name).with_suffix(".png"))
        if png != self.name:
            names.append(png)
        folders = ([f"{map_name}_{factor}"] if factor > 1 else []) + [map_name]
        return [self.base / f / n for f in folders for n in names]


@dataclass(frozen=True)
class View:
    """One posed image as a loader found it: the camera at the file's calibrated resolution."""

    camera: Camera
    image: ImageRef
    distortion: Distortion = field(default_factory=Distortion)
    split: str | None = None


def _integer_factor(downscale: float) -> int:
    return int(downscale) if float(downscale).is_integer() else 0


def check_options(downscale: float, background: Sequence[float]) -> Background:
    if not (isinstance(downscale, int | float) and math.isfinite(downscale) and downscale >= 1):
        raise ValueError(f"downscale must be a finite number >= 1, got {downscale!r}")
    bg = tuple(float(c) for c in background)
    if len(bg) != 3 or not all(0.0 <= c <= 1.0 for c in bg):
        raise ValueError(f"background must be 3 floats in [0, 1], got {background!r}")
    return bg  # type: ignore[return-value]


def keep_existing(items: list[T], path_of: Callable[[T], Path], source: Path, what: str) -> list[T]:
    """Drop items whose image file is missing, with ONE warning; all missing is an error."""
    present = [path_of(item).is_file() for item in items]
    if all(present):
        return items
    missing = [path_of(item) for item, ok in zip(items, present, strict=True) if not ok]
    if not any(present):
        raise SceneFormatError(
            source, f"none of the {len(items)} image files exist (first: {missing[0]})"
        )
    first = ", ".join(str(p) for p in missing[:3])
    more = ", ..." if len(missing) > 3 else ""
    warnings.warn(
        f"{source}: skipped {len(missing)} of {len(items)} {what} whose image file is missing "
        f"({first}{more})",
        UserWarning,
        stacklevel=3,
    )
    return [item for item, ok in zip(items, present, strict=True) if ok]


def warn_distortion(views: list[View], source: Path) -> None:
    distorted = [v for v in views if not v.distortion.is_pinhole]
    if not distorted:
        return
    d = distorted[0].distortion
    coeffs = ", ".join(f"{k}={v:g}" for k, v in d.params.items() if v != 0.0)
    warnings.warn(
        f"{source}: {len(distorted)} of {len(views)} views use a non-pinhole lens "
        f"(e.g. {d.model} {coeffs or '(fisheye projection)'} for {distorted[0].camera.name!r}); "
        "scenelab renders undistorted pinholes, so these views will not line up near the image "
        "borders. Undistort the images first (e.g. `colmap image_undistorter`); the "
        "coefficients are kept in Dataset.distortion.",
        UserWarning,
        stacklevel=3,
    )


class Dataset:
    """Posed views of one scene. `ds[i] -> (camera, image [H,W,3] float32 in [0,1])`.

    Construction does no image I/O: `cameras`, `image_paths`, `names` and `distortion` come
    from the dataset files. Images are decoded on access (`ds[i]`, iteration) and not cached.

    Resolution: `cameras[i]` is the calibrated camera scaled by 1/downscale
    (`Camera.scaled`). `ds[i]` always returns an image of exactly the size of the camera
    returned with it. When the file on disk has another size:
      - a uniform rescale of the calibrated size that is larger: the image is area-averaged
        (PIL box filter) down to `cameras[i]`;
      - a uniform rescale that is smaller (a pre-downscaled `images_<n>/` folder that rounded
        down, or images stored below the calibration's resolution): the returned camera is
        the calibrated one scaled to the file's size, so it can differ from `cameras[i]`;
        images are never upsampled;
      - anything else (aspect ratio differs): `SceneFormatError` naming the file.
    With an integer `downscale=n`, `images_<n>/` next to the image folder is preferred per file.
    """

    def __init__(
        self,
        views: Sequence[View],
        *,
        root: str | Path,
        downscale: float = 1,
        background: Sequence[float] = (1.0, 1.0, 1.0),
        points: Callable[[], tuple[Tensor, Tensor] | None] | None = None,
    ) -> None:
        self._background = check_options(downscale, background)
        self._views = list(views)
        self._downscale = float(downscale)
        self._factor = _integer_factor(downscale)
        self._points = points
        self.root = Path(root)
        self._cameras = [
            v.camera if self._downscale == 1 else v.camera.scaled(1.0 / self._downscale)
            for v in self._views
        ]
        self._paths = [self._pick_image(v.image) for v in self._views]

    def _pick_image(self, ref: ImageRef) -> Path:
        small = ref.downscaled(self._factor)
        return small if small is not None and small.is_file() else ref.path

    # ------------------------------------------------------------------ sequence of views
    def __len__(self) -> int:
        return len(self._views)

    def __getitem__(self, i: int) -> tuple[Camera, Tensor]:
        i = self._index(i)
        path = self._paths[i]
        rgb = _images.read_rgb(path, self._background)
        camera = self._fit(i, rgb.shape[1], rgb.shape[0])
        rgb = _images.resize_area(rgb, camera.width, camera.height)
        return camera, _images.to_tensor(rgb)

    def __iter__(self) -> Iterator[tuple[Camera, Tensor]]:
        for i in range(len(self)):
            yield self[i]

    def _index(self, i: int) -> int:
        try:
            i = operator.index(i)
        except TypeError:
            raise TypeError(f"Dataset indices must be integers, got {type(i).__name__}") from None
        n = len(self._views)
        if not -n <= i < n:
            raise IndexError(f"view {i} out of range for a dataset of {n} views")
        return i % n

    def _fit(self, i: int, file_w: int, file_h: int) -> Camera:
        return _images.fit_camera(
            self._views[i].camera, self._cameras[i], file_w, file_h, self._paths[i]
        )

    # ------------------------------------------------------------------ facts (no image I/O)
    @property
    def cameras(self) -> list[Camera]:
        """Cameras at the requested resolution (see the class docstring for file-size rules)."""
        return list(self._cameras)

    @property
    def image_paths(self) -> list[Path]:
        """The file each view's image is read from (a pre-downscaled copy when one is used)."""
        return list(self._paths)

    @property
    def names(self) -> list[str]:
        return [v.camera.name for v in self._views]

    @property
    def distortion(self) -> list[Distortion]:
        """Per-view lens models as stored in the file; images are used as pinholes regardless."""
        return [v.distortion for v in self._views]

    @property
    def splits(self) -> tuple[str, ...]:
        """Split names recorded in the dataset files (Blender's transforms_<split>.json,
        nerfstudio's `<split>_filenames`); empty when the files define none."""
        return tuple(dict.fromkeys(v.split for v in self._views if v.split is not None))

    @property
    def downscale(self) -> float:
        return self._downscale

    @property
    def background(self) -> Background:
        return self._background

    # ------------------------------------------------------------------ per-view maps
    def has_map(self, name: str) -> bool:
        """Whether every view has a `name` map (e.g. `labels/` next to `images/`)."""
        return all(self._map_path(name, i) is not None for i in range(len(self)))

    def load_map(self, name: str, i: int) -> Tensor:
        """The per-view map `name` for view `i`, read from the folder `name` (or `name_<n>` when
        downscaling by an integer n) next to the image folder, same file name (or its stem +
        `.png`). Integer maps (label ids: uint8, 255 = background) -> int64 [H,W]; float maps
        (mode 'F') -> float32 [H,W]. Resized with nearest neighbour to the size of the image
        that `ds[i]` returns (reads that image's header, not its pixels)."""
        i = self._index(i)
        path = self._map_path(name, i)
        if path is None:
            tried = self._views[i].image.map_candidates(name, self._factor)
            raise FileNotFoundError(
                f"no {name!r} map for view {self.names[i]!r} (looked for {tried[0]})"
            )
        values = _images.read_map(path)
        calibrated = self._views[i].camera
        h, w = values.shape
        if not _images.is_uniform_rescale(calibrated.width, calibrated.height, w, h):
            raise SceneFormatError(
                path,
                f"map is {w}x{h} but the view's camera is {calibrated.width}x{calibrated.height}",
            )
        camera = self._fit(i, *_images.image_size(self._paths[i]))
        return _images.to_tensor(_images.resize_nearest(values, camera.width, camera.height))

    def _map_path(self, name: str, i: int) -> Path | None:
        for path in self._views[i].image.map_candidates(name, self._factor):
            if path.is_file():
                return path
        return None

    # ------------------------------------------------------------------ 3D points
    def load_points(self) -> tuple[Tensor, Tensor] | None:
        """Sparse reconstruction points: (xyz float32 [P,3] world, rgb uint8 [P,3]), or None
        when the dataset has none (only COLMAP models carry them)."""
        return None if self._points is None else self._points()

    # ------------------------------------------------------------------ subsets
    def subset(self, indices: Sequence[int]) -> Dataset:
        """A dataset of the given views, in the given order."""
        picked = [self._views[self._index(i)] for i in indices]
        return Dataset(
            picked,
            root=self.root,
            downscale=self._downscale,
            background=self._background,
            points=self._points,
        )

    def split(self, name: str, *, every: int = 8) -> Dataset:
        """The views of split `name`.

        When the files define splits (`splits` is not empty), exactly those views. Otherwise
        the usual hold-out (3DGS `llffhold`, gsplat `test_every`): views whose index is a
        multiple of `every` are "test" (alias "val"); the rest are "train"."""
        if self.splits:
            if name not in self.splits:
                raise ValueError(f"no split {name!r}; this dataset has {list(self.splits)}")
            return self.subset([i for i, v in enumerate(self._views) if v.split == name])
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if name == "train":
            return self.subset([i for i in range(len(self)) if i % every != 0])
        if name in ("test", "val"):
            return self.subset([i for i in range(len(self)) if i % every == 0])
        raise ValueError(f"unknown split {name!r}; use 'train', 'val' or 'test'")

    def __repr__(self) -> str:
        size = f", {self._cameras[0].width}x{self._cameras[0].height}" if self._cameras else ""
        return f"Dataset({str(self.root)!r}, {len(self)} views{size})"
