"""Blender nerf_synthetic scenes: `transforms_{train,val,test}.json` with `camera_angle_x`,
`file_path` like `./train/r_0` (no extension: `.png`), OpenGL camera-to-world matrices, and
800x800 RGBA images meant to be composited over a background colour."""

from __future__ import annotations

from pathlib import Path

from ._dataset import Dataset, check_options
from ._errors import DatasetError
from ._transforms import views_from_files

SPLITS = ("train", "val", "test")


def is_blender(path: Path) -> bool:
    return path.is_dir() and any((path / f"transforms_{s}.json").is_file() for s in SPLITS)


def load_blender(
    path: str | Path,
    *,
    split: str | None = None,
    downscale: float = 1,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    allow_outside: bool = False,
) -> Dataset:
    """A nerf_synthetic scene folder (or one of its `transforms_<split>.json`).

    `split=None` loads every split file present, tagging views so that `ds.split("test")`
    works; a named split reads only that file. The image size is not in the files: it is read
    from the first image's header (no decoding). Alpha is composited over `background`.
    Image paths must resolve inside the folder unless `allow_outside=True` (`DatasetError`)."""
    check_options(downscale, background)
    path = Path(path).absolute()
    if path.is_file():
        stem = path.stem.removeprefix("transforms_")
        if split is None and stem in SPLITS:
            split = stem
        path = path.parent
    if not path.is_dir():
        raise FileNotFoundError(f"no such dataset: {path}")
    wanted = SPLITS if split is None else (split,)
    files = [(path / f"transforms_{s}.json", s) for s in wanted]
    files = [(f, s) for f, s in files if f.is_file()]
    if not files:
        names = ", ".join(f"transforms_{s}.json" for s in wanted)
        raise DatasetError(path, f"no Blender split file ({names})")
    views = views_from_files(files, allow_outside=allow_outside)
    return Dataset(
        views,
        root=path,
        downscale=downscale,
        background=background,
        allow_outside=allow_outside,
    )
