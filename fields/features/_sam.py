"""SAM teacher (the image-encoder embedding) and SAM's click decoder.

The teacher gives what segment-anything's `SamPredictor.set_image` computes: the image resized
so its long side is 1024 (`ResizeLongestSide`, on uint8 pixels as SAM was trained), normalised,
padded to a square and encoded to a [256, 64, 64] embedding. The teacher's map is the part of
that grid that covers the image (`image_grid`: 48x64 cells for a 480x640 view), cropped so the
map is a uniform rescale of the view: distillation renders the field at exactly that size, and
never learns SAM's padding.

`SamDecoder` is the cheap half: prompts (positive/negative points, a box, in the original
image's pixels) plus *any* embedding of the right shape -> masks at the original image size.
In scenelab that embedding is rendered from the distilled field and decoded, not computed by
the image encoder, so a click costs one small render and one decoder pass.

    teacher = SamTeacher("vit_b", "checkpoints/sam_vit_b_01ec64.pth", device="cuda")
    fmap = teacher(image, "frame_0001")                  # [48, 64, 256] for a 480x640 image
    decoder = teacher.decoder()
    pred = decoder(embedding, (H, W), points=[[120, 80]], labels=[1])
    pred.masks[0]                                        # best mask [H, W] bool
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._clip import MissingWeightsError, _file_stamp, _state_dict_hash
from ._teacher import register_teacher

__all__ = ["SAM_CHECKPOINT_URLS", "MaskPrediction", "SamDecoder", "SamTeacher", "image_grid"]

SAM_CHECKPOINT_URLS = {
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
}
SAM_CHECKPOINT_URLS["default"] = SAM_CHECKPOINT_URLS["vit_h"]


def _import_segment_anything() -> Any:
    try:
        import segment_anything
    except ImportError as e:  # pragma: no cover - segment-anything is a declared dependency
        raise ImportError(
            "the SAM teacher needs segment-anything: pip install 'segment-anything>=1.0'"
        ) from e
    return segment_anything


def _missing_checkpoint(model_type: str, checkpoint: str | os.PathLike[str] | None) -> str:
    url = SAM_CHECKPOINT_URLS.get(model_type, SAM_CHECKPOINT_URLS["vit_b"])
    what = (
        "no SAM checkpoint was given"
        if checkpoint is None
        else f"SAM checkpoint {checkpoint} does not exist"
    )
    return (
        f"{what}. Download the {model_type} weights ({url}), e.g. "
        f"`mkdir -p checkpoints && curl -L -o checkpoints/{url.rsplit('/', 1)[-1]} {url}`, and "
        f"pass the file with --sam-checkpoint checkpoints/{url.rsplit('/', 1)[-1]} "
        f"(official checkpoints: {', '.join(f'{k}: {v}' for k, v in SAM_CHECKPOINT_URLS.items() if k != 'default')})"
    )


def load_sam(
    model_type: str,
    checkpoint: str | os.PathLike[str] | None,
    *,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """Build `sam_model_registry[model_type]` and load `checkpoint` safely (weights_only)."""
    segment_anything = _import_segment_anything()
    registry = segment_anything.sam_model_registry
    if model_type not in registry:
        raise ValueError(f"unknown SAM model type {model_type!r}; known: {', '.join(registry)}")
    if checkpoint is None or not Path(checkpoint).expanduser().is_file():
        raise MissingWeightsError(_missing_checkpoint(model_type, checkpoint))
    path = Path(checkpoint).expanduser()
    sam = registry[model_type](checkpoint=None)  # the registry's own loader uses a bare torch.load
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable SAM checkpoint ({e})") from e
    if (
        isinstance(state_dict, dict)
        and "model" in state_dict
        and isinstance(state_dict["model"], dict)
    ):
        state_dict = state_dict["model"]
    try:
        sam.load_state_dict(state_dict)
    except RuntimeError as e:
        raise ValueError(
            f"{path}: does not fit SAM {model_type!r} (a checkpoint of another model type?): {e}"
        ) from e
    return sam.to(device).eval().requires_grad_(False)


def image_grid(height: int, width: int, grid: tuple[int, int] = (64, 64)) -> tuple[int, int]:
    """(rows, cols) of SAM's embedding grid that cover a `height` x `width` image.

    The image fills the top-left of SAM's padded square, so about H/L x W/L of the grid (L the
    long side). Sizes are rounded so the crop is exactly what `Camera.scaled(cols / W)` gives
    (`round(H * cols / W)` rows): the map is then a uniform rescale of the view, as distillation
    and rendering need. Cells mostly over padding are left out, and in rare portrait cases one
    or two bottom rows of image are too."""
    gh, gw = grid
    if width >= height:
        cols = gw
        return max(1, min(gh, round(height * (cols / width)))), cols
    cols = max(1, round(width * (gw / height)))
    while cols > 1 and round(height * (cols / width)) > gh:
        cols -= 1
    return max(1, min(gh, round(height * (cols / width)))), cols  # min: beyond 1:gh aspect


# ---------------------------------------------------------------------------------- teacher
class SamTeacher:
    """SAM's image-encoder embedding as a teacher map: the cells of its 64x64x256 grid (official
    models) that cover the image, e.g. [48, 64, 256] for a 480x640 view.

    Args:
        model_type: a key of segment-anything's `sam_model_registry` ("vit_h", "vit_l", "vit_b").
        checkpoint: the matching official .pth file (see `SAM_CHECKPOINT_URLS`).
        device: where the model runs.
    """

    space = "sam"

    def __init__(
        self,
        model_type: str = "vit_b",
        checkpoint: str | os.PathLike[str] | None = None,
        *,
        device: torch.device | str = "cpu",
    ) -> None:
        sam = load_sam(model_type, checkpoint, device=device)
        path = Path(checkpoint).expanduser()  # type: ignore[arg-type]
        weights = {"checkpoint": path.name, **_file_stamp(path)}
        self._setup(sam, model_type=model_type, weights=weights)

    @classmethod
    def from_model(
        cls, sam: nn.Module, *, model_type: str = "custom", weights: dict[str, Any] | None = None
    ) -> SamTeacher:
        """Wrap an already built `segment_anything.modeling.Sam` (tests, custom builds)."""
        self = cls.__new__(cls)
        if weights is None:
            weights = {"state_dict_sha256": _state_dict_hash(sam)}
        self._setup(sam.eval().requires_grad_(False), model_type=model_type, weights=weights)
        return self

    def _setup(self, sam: nn.Module, *, model_type: str, weights: dict[str, Any]) -> None:
        segment_anything = _import_segment_anything()
        self.model = sam
        self.model_type = model_type
        self.weights = dict(weights)
        self.img_size = int(sam.image_encoder.img_size)
        self.transform = segment_anything.utils.transforms.ResizeLongestSide(self.img_size)
        self.dim = int(sam.prompt_encoder.embed_dim)
        self.grid: tuple[int, int] = tuple(sam.prompt_encoder.image_embedding_size)  # type: ignore[assignment]
        self.name = f"sam-{model_type.replace('_', '-')}"

    @property
    def device(self) -> torch.device:
        return self.model.pixel_mean.device

    # -------------------------------------------------------------------------- protocol
    def config(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "weights": self.weights,
            "image_size": self.img_size,
            "grid": list(self.grid),
            "resize": "longest-side uint8 (PIL bilinear), pad bottom/right",
        }

    @torch.no_grad()
    def __call__(self, image: Tensor, view_name: str = "") -> Tensor:
        """`image` float [H,W,3] in [0,1] -> [rows, cols, dim]: the embedding cells that cover
        the image (`image_grid`), channel-last."""
        rows, cols = self.image_grid(*image.shape[:2])
        return self.embed(image)[:, :rows, :cols].permute(1, 2, 0).float().contiguous()

    @torch.no_grad()
    def embed(self, image: Tensor) -> Tensor:
        """The image-encoder embedding [dim, gh, gw] of `image` float [H,W,3] in [0,1]
        (equal to `SamPredictor.set_image(uint8 image).features[0]`)."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an image [H, W, 3], got shape {tuple(image.shape)}")
        pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        resized = self.transform.apply_image(pixels)  # SAM's own resize: PIL on uint8
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)[None].float()
        return self.model.image_encoder(self.model.preprocess(x))[0]

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Size of the image inside SAM's padded square input (long side = `img_size`)."""
        return self.transform.get_preprocess_shape(height, width, self.img_size)

    def image_grid(self, height: int, width: int) -> tuple[int, int]:
        """(rows, cols) of embedding cells that cover an image of this size (see `image_grid`)."""
        return image_grid(height, width, self.grid)

    def decoder(self) -> SamDecoder:
        return SamDecoder(self.model)


# ---------------------------------------------------------------------------------- decoder
@dataclass
class MaskPrediction:
    """Masks from one prompt, best first (by SAM's predicted IoU)."""

    masks: Tensor  # [K, H, W] bool, at the original image size
    scores: Tensor  # [K] predicted IoU
    logits: Tensor  # [K, gh*4, gw*4] low-resolution logits (SAM's mask input for a refinement)


class SamDecoder:
    """SAM's prompt encoder + mask decoder on a given embedding (no image encoder pass)."""

    def __init__(self, sam: nn.Module) -> None:
        segment_anything = _import_segment_anything()
        self.model = sam
        self.img_size = int(sam.image_encoder.img_size)
        self.transform = segment_anything.utils.transforms.ResizeLongestSide(self.img_size)
        self.grid: tuple[int, int] = tuple(sam.prompt_encoder.image_embedding_size)  # type: ignore[assignment]
        self.dim = int(sam.prompt_encoder.embed_dim)

    @property
    def device(self) -> torch.device:
        return self.model.pixel_mean.device

    @torch.no_grad()
    def __call__(
        self,
        embedding: Tensor,
        image_size: tuple[int, int],
        *,
        points: Tensor | np.ndarray | list | None = None,
        labels: Tensor | np.ndarray | list | None = None,
        box: Tensor | np.ndarray | list | None = None,
        mask_input: Tensor | None = None,
        multimask: bool | None = None,
    ) -> MaskPrediction:
        """Segment with prompts in the original image's pixel coordinates.

        Args:
            embedding: [dim, gh, gw] over SAM's padded square, or [dim, rows, cols] over only
                the cells that cover the image (`image_grid`, the teacher's map and what a
                field renders); the rest of the square, and NaN cells, count as 0.
            image_size: (H, W) of the original image; masks come back at this size.
            points: [P, 2] pixel (x, y); labels: [P], 1 = foreground, 0 = background.
            box: [4] (x0, y0, x1, y1) pixels.
            mask_input: [1, gh*4, gw*4] logits from a previous prediction, to refine it.
            multimask: three candidate masks (SAM's choice for one ambiguous click) or one;
                None: three for a single point without box, else one.
        """
        height, width = int(image_size[0]), int(image_size[1])
        embedding = self._square(embedding, height, width)
        coords = None
        if points is not None:
            pts = torch.as_tensor(points, dtype=torch.float32, device=self.device).reshape(-1, 2)
            if labels is None:
                raise ValueError("points need labels (1 = foreground, 0 = background)")
            lab = torch.as_tensor(labels, device=self.device).reshape(-1).to(torch.int)
            if lab.shape[0] != pts.shape[0]:
                raise ValueError(f"{pts.shape[0]} points but {lab.shape[0]} labels")
            coords = (self.transform.apply_coords_torch(pts, (height, width))[None], lab[None])
        boxes = None
        if box is not None:
            b = torch.as_tensor(box, dtype=torch.float32, device=self.device).reshape(1, 4)
            boxes = self.transform.apply_boxes_torch(b, (height, width))
        if coords is None and boxes is None and mask_input is None:
            raise ValueError("give at least one prompt: points, a box or a mask_input")
        if multimask is None:
            multimask = boxes is None and coords is not None and coords[0].shape[1] == 1
        masks_in = (
            None
            if mask_input is None
            else mask_input.to(self.device).reshape(1, 1, *mask_input.shape[-2:])
        )

        sam = self.model
        sparse, dense = sam.prompt_encoder(points=coords, boxes=boxes, masks=masks_in)
        low_res, iou = sam.mask_decoder(
            image_embeddings=embedding[None],
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        input_size = self.transform.get_preprocess_shape(height, width, self.img_size)
        logits = sam.postprocess_masks(low_res, input_size, (height, width))[0]
        order = torch.argsort(iou[0], descending=True)
        return MaskPrediction(
            masks=(logits[order] > sam.mask_threshold),
            scores=iou[0][order],
            logits=low_res[0][order],
        )

    def _square(self, embedding: Tensor, height: int, width: int) -> Tensor:
        """[dim, gh, gw] over the padded square; pads a valid-region-only embedding with 0."""
        if embedding.ndim != 3 or embedding.shape[0] != self.dim:
            raise ValueError(
                f"expected an embedding [{self.dim}, h, w], got shape {tuple(embedding.shape)}"
            )
        embedding = torch.nan_to_num(embedding.to(self.device, torch.float32), nan=0.0)
        gh, gw = self.grid
        rows, cols = embedding.shape[1:]
        if (rows, cols) == (gh, gw):
            return embedding
        valid = image_grid(height, width, self.grid)
        if (rows, cols) != valid:
            raise ValueError(
                f"embedding grid {rows}x{cols} is neither SAM's {gh}x{gw} nor the {valid[0]}x"
                f"{valid[1]} cells that cover a {height}x{width} image"
            )
        return F.pad(embedding, (0, gw - cols, 0, gh - rows))


# ---------------------------------------------------------------------------------- registry
def _build(
    dataset: Any,
    *,
    device: torch.device,
    model_type: str = "vit_b",
    checkpoint: str | None = None,
) -> SamTeacher:
    return SamTeacher(model_type, checkpoint, device=device)


register_teacher("sam", _build)
