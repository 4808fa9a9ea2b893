"""The views a run trains on and scores on, with the training images held in memory."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from ..camera import Camera
from ..datasets import Dataset


@dataclass(frozen=True)
class Splits:
    """Which views train and which are held out (indices into the dataset)."""

    train: list[int]
    test: list[int]
    rule: str  # how they were chosen, for the sidecar and the report


def choose_splits(ds: Dataset, eval_every: int) -> Splits:
    """`eval_every == 0`: train on every view. A dataset whose files define splits (Blender
    nerf_synthetic, nerfstudio `*_filenames`): its "train" views train, its "test" (else "val")
    views score. Otherwise every `eval_every`-th view is held out (3DGS `llffhold`)."""
    n = len(ds)
    if eval_every == 0:
        return Splits(list(range(n)), [], "all views train")
    if ds.splits:
        labels = _view_splits(ds)
        held = "test" if "test" in ds.splits else "val" if "val" in ds.splits else None
        train = [i for i in range(n) if labels[i] == "train"]
        if train and held is not None:
            test = [i for i in range(n) if labels[i] == held]
            return Splits(train, test, f"the dataset's '{'train'}' / '{held}' splits")
    test = [i for i in range(n) if i % eval_every == 0]
    train = [i for i in range(n) if i % eval_every != 0]
    if not train:
        raise ValueError(
            f"holding out every {eval_every}th view leaves none of the {n} views to train on; "
            "use --eval-every 0 to train on all of them"
        )
    return Splits(train, test, f"every {eval_every}th view held out")


def _view_splits(ds: Dataset) -> list[str | None]:
    out: list[str | None] = [None] * len(ds)
    for name in ds.splits:
        sub = ds.split(name)
        names = set(sub.names)
        for i, v in enumerate(ds.names):
            if v in names and out[i] is None:
                out[i] = name
    return out


class TrainImages:
    """Views decoded once: cameras and RGBA images [H,W,4] per view, as uint8 for training (8
    bits is what the files hold; it keeps big captures in memory) or float32 (`exact`, scoring). `target(i, bg)` composites one
    over a background the way the renders are."""

    def __init__(
        self, ds: Dataset, indices: list[int], *, check: bool = True, exact: bool = False
    ) -> None:
        if not indices:
            raise ValueError("no training views")
        self.cameras: list[Camera] = []
        self._rgba: list[Tensor] = []
        self.names: list[str] = []
        black: list[str] = []
        for i in indices:
            camera, rgba = ds.load_rgba(i)
            self.cameras.append(camera)
            self.names.append(ds.names[i])
            u8 = (rgba.clamp(0, 1) * 255.0).round().to(torch.uint8)
            if int(u8[..., :3].max()) == 0:  # nothing but black (or nothing at all)
                black.append(ds.names[i])
            self._rgba.append(rgba.float().contiguous() if exact else u8)
        self.has_alpha = any(bool((self._alpha(t) < 1).any()) for t in self._rgba)
        if not check:
            return
        if len(black) == len(indices):
            raise ValueError(
                f"all {len(indices)} training images in {ds.root} are black: nothing to learn "
                f"from (first: {black[0]!r}); check the image files and their exposure"
            )
        if black:
            warnings.warn(
                f"{len(black)} of {len(indices)} training images are entirely black "
                f"(e.g. {black[0]!r}); they will teach the scene black",
                UserWarning,
                stacklevel=2,
            )

    def __len__(self) -> int:
        return len(self._rgba)

    @staticmethod
    def _alpha(t: Tensor) -> Tensor:
        return t[..., 3].float() / 255.0 if t.dtype == torch.uint8 else t[..., 3]

    def target(self, i: int, background: Tensor) -> Tensor:
        """View i's image [H,W,3] float32 over `background` [3]."""
        t = self._rgba[i]
        rgba = t.float() / 255.0 if t.dtype == torch.uint8 else t
        a = rgba[..., 3:]
        return rgba[..., :3] * a + (1.0 - a) * background
