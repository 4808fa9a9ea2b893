"""`Dataset`: posed views whose images load lazily (undistorted to pinholes where the lens
needs it), plus what every loader shares (image references, distortion records, the
missing-image and unsupported-lens warnings)."""

from __future__ import annotations

import math
import operator
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from torch import Tensor

from ..camera import Camera
from . import _images, _undistort
from ._errors import DatasetError

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
    """A view's lens model as stored in the dataset file, kept as a record: a `Dataset`
    undistorts the images of lenses OpenCV can invert (see `Dataset`), so its cameras are
    pinholes while this still says which lens took the photos.

    `model` is the COLMAP model name (or nerfstudio `camera_model`), `params` the coefficients
    by their usual names (k1, k2, p1, p2, ..., omega for FOV)."""

    model: str = "PINHOLE"
    params: dict[str, float] = field(default_factory=dict)

    @property
    def is_pinhole(self) -> bool:
        return self.model not in _FISHEYE_MODELS and all(v == 0.0 for v in self.params.values())

    @property
    def undistortable(self) -> bool:
        """Whether a `Dataset` undistorts images taken through this lens (False for pinholes:
        nothing to do; False for FOV and the thin-prism fisheyes: OpenCV cannot)."""
        return not self.is_pinhole and self._lens() is not None

    def _lens(self) -> _undistort.Lens | None:
        return None if self.is_pinhole else _undistort.lens_for(self.model, self.params)

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


def check_inside(path: Path, root: Path, *, source: Path, what: str) -> None:
    """DatasetError unless `path` (symlinks resolved) lies inside the folder `root`.

    Dataset files name the images to read; a name that leads elsewhere (`../x.png`, an
    absolute path, a symlink pointing out) would let a downloaded dataset read any file the
    user can. Loaders call this for every file a dataset names unless `allow_outside=True`."""
    real, base = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    if real.is_relative_to(base):
        return
    lexical = Path(os.path.normpath(path)).is_relative_to(os.path.normpath(root))
    how = f" (through a symlink, to {real})" if lexical else ""
    raise DatasetError(
        source,
        f"{what} {path} lies outside the dataset folder {root}{how}; refusing to read it. "
        "If you trust this dataset, pass allow_outside=True (CLI: --allow-outside)",
    )


def keep_existing(items: list[T], path_of: Callable[[T], Path], source: Path, what: str) -> list[T]:
    """Drop items whose image file is missing, with ONE warning; all missing is an error."""
    present = [path_of(item).is_file() for item in items]
    if all(present):
        return items
    missing = [path_of(item) for item, ok in zip(items, present, strict=True) if not ok]
    if not any(present):
        raise DatasetError(
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
    """ONE warning for views whose lens is not a pinhole and cannot be undistorted here."""
    distorted = [v for v in views if not v.distortion.is_pinhole and not v.distortion.undistortable]
    if not distorted:
        return
    d = distorted[0].distortion
    coeffs = ", ".join(f"{k}={v:g}" for k, v in d.params.items() if v != 0.0)
    warnings.warn(
        f"{source}: {len(distorted)} of {len(views)} views use a lens that scenelab cannot "
        f"undistort (e.g. {d.model} {coeffs or '(fisheye projection)'} for "
        f"{distorted[0].camera.name!r}); their images are used as pinholes, so they will not "
        "line up near the image borders. Undistort the images first (e.g. `colmap "
        "image_undistorter`); the coefficients are kept in Dataset.distortion.",
        UserWarning,
        stacklevel=3,
    )


class Dataset:
    """Posed views of one scene. `ds[i] -> (camera, image [H,W,3] float32 in [0,1])`.

    Construction does no image I/O: `cameras`, `image_paths`, `names` and `distortion` come
    from the dataset files. Images are decoded on access (`ds[i]`, iteration) and not cached.

    Lens distortion: views whose lens OpenCV can invert (COLMAP SIMPLE_RADIAL, RADIAL, OPENCV,
    FULL_OPENCV, OPENCV_FISHEYE, SIMPLE_RADIAL_FISHEYE, RADIAL_FISHEYE; nerfstudio OPENCV /
    OPENCV_FISHEYE coefficients) are undistorted on load, as gsplat's COLMAP parser does: the
    camera becomes the pinhole of `cv2.getOptimalNewCameraMatrix(alpha=0)` cropped to its valid
    region, so `cameras[i]` is a pinhole with a new K (and possibly a smaller size); `ds[i]`,
    `load_rgba` and `load_map` return undistorted pixels for it (bilinear for images, nearest
    for maps). Remap tables are computed once per distinct camera and kept (`undistorted` says
    whether any view was undistorted; `distortion` keeps the original lens records). Lenses
    OpenCV cannot invert (FOV, thin-prism fisheyes) are warned about by the loaders and used
    as pinholes.

    Resolution: `cameras[i]` is the calibrated (undistorted) camera scaled by 1/downscale
    (`Camera.scaled`). `ds[i]` always returns an image of exactly the size of the camera
    returned with it. When the file on disk has another size:
      - a uniform rescale of the calibrated size that is larger: the image is area-averaged
        (PIL box filter) down to `cameras[i]` (after undistorting at the file's resolution);
      - a uniform rescale that is smaller (a pre-downscaled `images_<n>/` folder that rounded
        down, or images stored below the calibration's resolution): the returned camera is
        the calibrated one scaled to the file's size, so it can differ from `cameras[i]`;
        images are never upsampled;
      - anything else (aspect ratio differs): `DatasetError` naming the file.
    With an integer `downscale=n`, `images_<n>/` next to the image folder is preferred per file.

    Containment: the loaders refuse image paths that lead outside the dataset folder (`..`,
    absolute paths, symlinks pointing out) with a `DatasetError`, and the dataset refuses
    pre-downscaled copies and per-view maps outside the folder holding the image folders;
    `allow_outside=True` lifts both for datasets you trust.
    """

    def __init__(
        self,
        views: Sequence[View],
        *,
        root: str | Path,
        downscale: float = 1,
        background: Sequence[float] = (1.0, 1.0, 1.0),
        points: Callable[[], tuple[Tensor, Tensor] | None] | None = None,
        allow_outside: bool = False,
    ) -> None:
        self._background = check_options(downscale, background)
        self._allow_outside = bool(allow_outside)
        self._views = list(views)
        self._downscale = float(downscale)
        self._factor = _integer_factor(downscale)
        self._points = points
        self.root = Path(root)
        self._lenses = [v.distortion._lens() for v in self._views]
        self._pinholes = self._undistorted_cameras()
        self._cameras = [
            c if self._downscale == 1 else c.scaled(1.0 / self._downscale) for c in self._pinholes
        ]
        self._paths = [self._pick_image(v.image) for v in self._views]
        self._maps = _undistort.MapCache()

    def _undistorted_cameras(self) -> list[Camera]:
        """Per view: the pinhole its images are delivered with at the calibrated resolution
        (the calibrated camera itself when no undistortion is needed)."""
        found: dict[tuple, tuple[Tensor, int, int]] = {}
        pinholes = []
        for view, lens in zip(self._views, self._lenses, strict=True):
            cam = view.camera
            if lens is None:
                pinholes.append(cam)
                continue
            key = (tuple(cam.K.flatten().tolist()), cam.width, cam.height, lens)
            if key not in found:
                try:
                    new = _undistort.undistorted_camera(cam, lens)
                except ValueError as e:
                    raise DatasetError(self.root, f"view {cam.name!r}: {e}") from e
                found[key] = (new.K, new.width, new.height)
            K, w, h = found[key]
            pinholes.append(Camera(K, cam.viewmat, w, h, cam.name))
        return pinholes

    def _pick_image(self, ref: ImageRef) -> Path:
        small = ref.downscaled(self._factor)
        if small is None or not small.is_file():
            return ref.path
        self._check_derived(small, ref, "pre-downscaled image")
        return small

    def _check_derived(self, path: Path, ref: ImageRef, what: str) -> None:
        """Files found next to a view's image (`images_<n>/`, per-view maps) must stay inside
        the folder that holds the image folders, as the image itself must."""
        if not self._allow_outside:
            check_inside(path, ref.base, source=path, what=what)

    # ------------------------------------------------------------------ sequence of views
    def __len__(self) -> int:
        return len(self._views)

    def __getitem__(self, i: int) -> tuple[Camera, Tensor]:
        i = self._index(i)
        rgb = _images.read_rgb(self._paths[i], self._background)
        camera, rgb = self._resample(i, rgb)
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

    def _target(self, i: int, file_w: int, file_h: int) -> tuple[Camera, Camera | None]:
        """For view `i` read from a `file_w x file_h` file: (the camera it is delivered with,
        the pinhole it is undistorted to at the file's own resolution, or None when the view
        needs no undistortion)."""
        calibrated, nominal = self._views[i].camera, self._cameras[i]
        if self._lenses[i] is None:
            return _images.fit_camera(calibrated, nominal, file_w, file_h, self._paths[i]), None
        _images.check_rescale(calibrated, file_w, file_h, self._paths[i])
        pinhole = self._pinholes[i]
        mid = _images.camera_at_size(
            pinhole,
            max(1, round(pinhole.width * file_w / calibrated.width)),
            max(1, round(pinhole.height * file_h / calibrated.height)),
        )
        if (mid.width, mid.height) == (nominal.width, nominal.height):
            return nominal, nominal
        if mid.width >= nominal.width and mid.height >= nominal.height:
            return nominal, mid
        return mid, mid

    def _resample(
        self,
        i: int,
        image: np.ndarray,  # [H,W,C] float32 as read from self._paths[i]
    ) -> tuple[Camera, np.ndarray]:  # (camera, [h,w,C] float32 matching it)
        """Undistort (bilinear, at the file's resolution) and area-resize an image to the
        camera view `i` is delivered with. Linear in the pixel values."""
        file_h, file_w = image.shape[:2]
        camera, mid = self._target(i, file_w, file_h)
        if mid is not None:
            src = _images.camera_at_size(self._views[i].camera, file_w, file_h)
            image = _undistort.remap_linear(image, self._maps.get(src, self._lenses[i], mid))
        return camera, _images.resize_area(image, camera.width, camera.height)

    # ------------------------------------------------------------------ facts (no image I/O)
    @property
    def cameras(self) -> list[Camera]:
        """Cameras at the requested resolution (see the class docstring for file-size rules);
        pinholes, undistorted where the lens needed it."""
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
        """Per-view lens models as stored in the file (the lens that took the photos, also for
        views whose images are undistorted on load; see `undistorted`)."""
        return [v.distortion for v in self._views]

    @property
    def undistorted(self) -> bool:
        """Whether any view's images are undistorted on load (its camera in `cameras` is then
        the undistorted pinhole, not the file's intrinsics). Per view:
        `ds.distortion[i].undistortable`."""
        return any(lens is not None for lens in self._lenses)

    @property
    def splits(self) -> tuple[str, ...]:
        """Split names recorded in the dataset files (Blender's transforms_<split>.json,
        nerfstudio's `<split>_filenames`); empty when the files define none."""
        return tuple(dict.fromkeys(v.split for v in self._views if v.split is not None))

    @property
    def downscale(self) -> float:
        return self._downscale

    @property
    def allow_outside(self) -> bool:
        """Whether files outside the dataset folder may be read (what the loader was given);
        pass it on when reloading the dataset (e.g. at another downscale)."""
        return self._allow_outside

    @property
    def background(self) -> Background:
        return self._background

    @property
    def has_alpha(self) -> bool:
        """Whether the images carry alpha (Blender RGBA renders, masked captures), judged from
        the first view's image header (no pixel decoding)."""
        return bool(self._paths) and _images.has_alpha(self._paths[0])

    # ------------------------------------------------------------------ RGBA
    def load_rgba(self, i: int) -> tuple[Camera, Tensor]:
        """View `i` with its alpha: (camera, float32 [H,W,4] in [0,1]), straight (not
        premultiplied) colour and alpha; alpha is 1 for images without one. Same camera and
        resampling as `ds[i]` (resampled premultiplied, so compositing the result over a
        background `bg`, `rgb * a + bg * (1 - a)`, gives `ds[i]` loaded with `bg`). For training
        with random backgrounds."""
        i = self._index(i)
        rgba = _images.read_rgba(self._paths[i])
        file_h, file_w = rgba.shape[:2]
        camera, mid = self._target(i, file_w, file_h)
        if mid is None and (camera.width, camera.height) == (file_w, file_h):
            return camera, _images.to_tensor(rgba)
        alpha = rgba[..., 3:]
        camera, out = self._resample(i, np.concatenate([rgba[..., :3] * alpha, alpha], axis=-1))
        alpha = np.clip(out[..., 3:], 0.0, 1.0)
        rgb = np.where(alpha > 0, out[..., :3] / np.maximum(alpha, 1e-12), 0.0)
        rgba = np.concatenate([np.clip(rgb, 0.0, 1.0), alpha], axis=-1).astype(np.float32)
        return camera, _images.to_tensor(rgba)

    # ------------------------------------------------------------------ per-view maps
    def has_map(self, name: str) -> bool:
        """Whether every view has a `name` map (e.g. `labels/` next to `images/`)."""
        return all(self._map_path(name, i) is not None for i in range(len(self)))

    def load_map(self, name: str, i: int) -> Tensor:
        """The per-view map `name` for view `i`, read from the folder `name` (or `name_<n>` when
        downscaling by an integer n) next to the image folder, same file name (or its stem +
        `.png`). Integer maps (label ids: uint8, 255 = background) -> int64 [H,W]; float maps
        (mode 'F') -> float32 [H,W]. Resampled with nearest neighbour (undistorted like the
        image when the view is) to the size of the image that `ds[i]` returns (reads that
        image's header, not its pixels), so map and image stay aligned."""
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
            raise DatasetError(
                path,
                f"map is {w}x{h} but the view's camera is {calibrated.width}x{calibrated.height}",
            )
        camera, _ = self._target(i, *_images.image_size(self._paths[i]))
        lens = self._lenses[i]
        if lens is None:
            values = _images.resize_nearest(values, camera.width, camera.height)
        else:
            src = _images.camera_at_size(calibrated, w, h)
            values = _undistort.remap_nearest(values, self._maps.get(src, lens, camera))
        return _images.to_tensor(values)

    def _map_path(self, name: str, i: int) -> Path | None:
        ref = self._views[i].image
        for path in ref.map_candidates(name, self._factor):
            if path.is_file():
                self._check_derived(path, ref, f"{name!r} map")
                return path
        return None

    # ------------------------------------------------------------------ 3D points
    def load_points(self) -> tuple[Tensor, Tensor] | None:
        """Sparse reconstruction points: (xyz float32 [P,3] world, rgb uint8 [P,3]), or None
        when the dataset has none (only COLMAP models carry them)."""
        return None if self._points is None else self._points()

    # ------------------------------------------------------------------ subsets
    def subset(self, indices: Sequence[int]) -> Dataset:
        """A dataset of the given views, in the given order (sharing this one's remap tables)."""
        picked = [self._views[self._index(i)] for i in indices]
        sub = Dataset(
            picked,
            root=self.root,
            downscale=self._downscale,
            background=self._background,
            points=self._points,
            allow_outside=self._allow_outside,
        )
        sub._maps = self._maps
        return sub

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
        undistorted = ", undistorted" if self.undistorted else ""
        return f"Dataset({str(self.root)!r}, {len(self)} views{size}{undistorted})"
