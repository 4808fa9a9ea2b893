"""CLIP teacher: dense MaskCLIP-style patch embeddings from an open_clip ViT.

A CLIP ViT is trained so that only its class token lands in the joint image-text space; the
patch tokens after the last block do not. MaskCLIP (Zhou et al., ECCV 2022) observed that the
*value* embeddings of the last attention block, sent through the same output projection,
`ln_post` and `proj`, are aligned with the text embeddings per patch. We follow the variant
used by F3RM and ClearCLIP: the last block contributes only its value path

    v = out_proj(W_v · ln_1(x) + b_v)          # no query/key attention, no spatial mixing
    feature = normalize(ln_post(v) @ proj)

dropping the last block's residual and MLP (the original MaskCLIP keeps both; F3RM and
ClearCLIP found dropping them gives cleaner maps). `residual=True` restores the original.

    teacher = ClipTeacher("ViT-B-16", "laion2b_s34b_b88k", device="cuda")
    fmap = teacher(image, "frame_0001")          # [h, w, 512], unit length per patch
    text = teacher.encode_text(["mug", "table"])  # [2, 512], unit length
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._teacher import register_teacher, register_text_encoder

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PRETRAINED",
    "PROMPT_TEMPLATE",
    "ClipTeacher",
    "MissingWeightsError",
    "pool_in_masks",
]

DEFAULT_MODEL = "ViT-B-16"
DEFAULT_PRETRAINED = "laion2b_s34b_b88k"
PROMPT_TEMPLATE = "a photo of a {}."
"""The single-prompt template of CLIP's zero-shot evaluation; `encode_text(template=None)` skips it."""

_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".ckpt")


class MissingWeightsError(FileNotFoundError):
    """Model weights are not on this machine (and could not be downloaded). The message says
    which file is needed, where to get it and which option points scenelab at it."""


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError as e:  # pragma: no cover - open_clip is a declared dependency
        raise ImportError(
            "the CLIP teacher needs open_clip: pip install 'open_clip_torch>=2.24'"
        ) from e
    return open_clip


# ---------------------------------------------------------------------------------- teacher
class ClipTeacher:
    """Dense CLIP features of an image: one unit vector per ViT patch, in CLIP's joint space.

    Args:
        model: open_clip architecture name ("ViT-B-16", "ViT-L-14", ...), or an
            "hf-hub:org/name" / "local-dir:/path" model id (then `pretrained` is ignored).
        pretrained: an open_clip pretrained tag ("laion2b_s34b_b88k", "openai"), an
            "hf-hub:org/name" id, or a local checkpoint file (open_clip_pytorch_model.bin,
            .safetensors, ...).
        device: where the model runs.
        image_size: input resolution. None: the model's training resolution on the short side,
            the long side scaled to keep the aspect ratio; an int: that on the short side; (H, W):
            exactly that. Sides are rounded to multiples of the patch size (see `input_size`).
        residual: keep the last block's residual and MLP (the original MaskCLIP path).
        cache_dir: where open_clip looks for / downloads weights (default: the HF cache).
    """

    space = "clip"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        pretrained: str | os.PathLike[str] | None = DEFAULT_PRETRAINED,
        *,
        device: torch.device | str = "cpu",
        image_size: int | tuple[int, int] | None = None,
        residual: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        clip_model, mean, std, tokenizer, weights = _load_open_clip(
            model, pretrained, cache_dir=cache_dir
        )
        self._setup(
            clip_model,
            mean=mean,
            std=std,
            tokenizer=tokenizer,
            model_id=model,
            weights=weights,
            device=device,
            image_size=image_size,
            residual=residual,
        )

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        tokenizer: Callable[[list[str]], Tensor],
        model_id: str = "custom",
        weights: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        image_size: int | tuple[int, int] | None = None,
        residual: bool = False,
    ) -> ClipTeacher:
        """Wrap an already built open_clip `CLIP` model (tests, or models built elsewhere).

        `weights` identifies the weights in `config()`; by default a hash of the state dict,
        so two wrappers of different weights never share a cache entry."""
        self = cls.__new__(cls)
        if weights is None:
            weights = {"state_dict_sha256": _state_dict_hash(model)}
        if device is None:
            device = next(model.parameters()).device
        self._setup(
            model,
            mean=mean,
            std=std,
            tokenizer=tokenizer,
            model_id=model_id,
            weights=weights,
            device=device,
            image_size=image_size,
            residual=residual,
        )
        return self

    def _setup(
        self,
        model: nn.Module,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        tokenizer: Callable[[list[str]], Tensor],
        model_id: str,
        weights: dict[str, Any],
        device: torch.device | str,
        image_size: int | tuple[int, int] | None,
        residual: bool,
    ) -> None:
        visual = getattr(model, "visual", None)
        _check_supported(visual)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.visual = visual
        self.tokenizer = tokenizer
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device).view(3, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device).view(3, 1, 1)
        self.model_id = model_id
        self.weights = dict(weights)
        self.image_size = image_size
        self.residual = bool(residual)
        self.patch_size: tuple[int, int] = tuple(visual.patch_size)  # type: ignore[assignment]
        self.native_size: tuple[int, int] = tuple(visual.image_size)  # type: ignore[assignment]
        self.dim = int(visual.output_dim)
        self.name = "clip-" + model_id.split(":")[-1].replace("/", "-").lower()

    # -------------------------------------------------------------------------- protocol
    def config(self) -> dict[str, Any]:
        return {
            "model": self.model_id,
            "weights": self.weights,
            "image_size": list(self.image_size)
            if isinstance(self.image_size, tuple)
            else self.image_size,
            "native_size": list(self.native_size),
            "patch_size": list(self.patch_size),
            "last_block": "value+residual+mlp" if self.residual else "value",
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
        }

    @torch.no_grad()
    def __call__(self, image: Tensor, view_name: str = "") -> Tensor:
        """`image` float [H,W,3] in [0,1] -> unit-length patch features [h, w, dim]."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an image [H, W, 3], got shape {tuple(image.shape)}")
        pixels = self.preprocess(image)
        return self.dense_features(pixels)[0]

    # -------------------------------------------------------------------------- pieces
    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The (H', W') an image of this size is resized to: multiples of the patch size, with
        the patch grid an exact `Camera.scaled(w / W)` of the view (`h = round(H * w / W)`),
        so distillation can render the field at the map's size."""
        ph, pw = self.patch_size
        if isinstance(self.image_size, tuple | list):
            th, tw = self.image_size
            return max(ph, round(th / ph) * ph), max(pw, round(tw / pw) * pw)
        short = self.image_size or min(self.native_size)
        cols = max(1, round(width * short / min(height, width) / pw))
        rows = max(1, round(height * (cols / width)))
        return rows * ph, cols * pw

    def preprocess(self, image: Tensor) -> Tensor:
        """[H,W,3] in [0,1] -> normalised [1,3,H',W'] at `input_size`."""
        x = image.to(self.device, torch.float32).permute(2, 0, 1)[None]
        size = self.input_size(*image.shape[:2])
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def dense_features(self, pixels: Tensor) -> Tensor:
        """Normalised pixels [B,3,H,W] (multiples of the patch size) -> [B, h, w, dim], unit length."""
        visual = self.visual
        x = visual.conv1(pixels.to(visual.conv1.weight.dtype))  # [B, C, h, w]
        batch, width, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)  # [B, h*w, C]
        cls = visual.class_embedding.to(x.dtype).view(1, 1, width).expand(batch, 1, width)
        x = torch.cat([cls, x], dim=1)
        x = x + _resize_pos_embed(visual.positional_embedding, visual.grid_size, (gh, gw)).to(
            x.dtype
        )
        x = visual.ln_pre(x)  # patch dropout is the identity in eval mode

        transformer = visual.transformer
        *blocks, last = transformer.resblocks
        batch_first = getattr(transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        for block in blocks:
            x = block(x)
        x = value_path(last, x, residual=self.residual)
        if not batch_first:
            x = x.transpose(0, 1)

        x = visual.ln_post(x[:, 1:])  # drop the class token
        if visual.proj is not None:
            x = x @ visual.proj
        return F.normalize(x.reshape(batch, gh, gw, -1).float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str], template: str | None = PROMPT_TEMPLATE) -> Tensor:
        """Unit-length text embeddings [T, dim] in the same space as the patch features."""
        if isinstance(texts, str):
            texts = [texts]
        prompts = [template.format(t) if template else t for t in texts]
        tokens = self.tokenizer(prompts).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)


def value_path(block: nn.Module, x: Tensor, *, residual: bool = False) -> Tensor:
    """The last block of a CLIP ViT with attention replaced by each token's own value.

    Equals the block with an attention matrix of identity: `ls_1(out_proj(v))` for
    `v = W_v ln_1(x) + b_v`; with `residual`, also the block's residual and MLP."""
    attn = block.attn
    dim = x.shape[-1]
    weight = attn.in_proj_weight[2 * dim :]
    bias = attn.in_proj_bias[2 * dim :] if attn.in_proj_bias is not None else None
    v = F.linear(block.ln_1(x), weight, bias)
    head_scale = getattr(attn, "head_scale", None)
    if head_scale is not None:  # open_clip's custom attention: per-head output scale
        heads = head_scale.shape[0]
        v = (v.unflatten(-1, (heads, -1)) * head_scale.view(heads, 1)).flatten(-2)
    v = getattr(attn, "ln_inner", nn.Identity())(v)
    v = attn.out_proj(v)
    v = getattr(block, "ln_attn", nn.Identity())(v)
    v = block.ls_1(v)
    if not residual:
        return v
    v = x + v
    return v + block.ls_2(block.mlp(block.ln_2(v)))


def _resize_pos_embed(pos: Tensor, grid: Sequence[int], size: tuple[int, int]) -> Tensor:
    """Learned positional embedding [1 + g0*g1, C] resampled to a (h, w) patch grid."""
    g0, g1 = int(grid[0]), int(grid[1])
    if (g0, g1) == tuple(size):
        return pos
    cls, patches = pos[:1], pos[1:]
    patches = patches.reshape(1, g0, g1, -1).permute(0, 3, 1, 2).float()
    patches = F.interpolate(
        patches, size=size, mode="bicubic", align_corners=False, antialias=True
    ).to(pos.dtype)
    return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(size[0] * size[1], -1)], dim=0)


def _check_supported(visual: Any) -> None:
    needed = ("conv1", "class_embedding", "positional_embedding", "transformer", "ln_post")
    if visual is None or not all(hasattr(visual, a) for a in needed):
        kind = type(visual).__name__ if visual is not None else "no visual tower"
        raise ValueError(
            f"the CLIP teacher needs an open_clip VisionTransformer image tower, got {kind} "
            "(ResNet and timm towers are not supported)"
        )
    if getattr(visual, "attn_pool", None) is not None:
        raise ValueError("the CLIP teacher does not support attentional-pooling towers (CoCa)")


def _state_dict_hash(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def pool_in_masks(features: Tensor, masks: Tensor) -> Tensor:
    """Average dense features inside each mask: features [h,w,D], masks [M,H,W] bool -> [M,D].

    Masks (any resolution, e.g. SAM's at image size) are area-resampled to the feature grid,
    so a patch counts by the fraction of it a mask covers. Results are unit length; a mask that
    is empty gives a row of NaN."""
    if features.ndim != 3 or masks.ndim != 3:
        raise ValueError(
            f"expected features [h,w,D] and masks [M,H,W], got {tuple(features.shape)} "
            f"and {tuple(masks.shape)}"
        )
    h, w, dim = features.shape
    weights = F.interpolate(
        masks[:, None].to(features.device, torch.float32), size=(h, w), mode="area"
    )
    weights = weights.flatten(1)  # [M, h*w]
    sums = weights @ features.reshape(h * w, dim).float()
    pooled = F.normalize(sums, dim=-1)
    return torch.where(weights.sum(1, keepdim=True) > 0, pooled, torch.nan)


# ---------------------------------------------------------------------------------- loading
def _load_open_clip(
    model: str,
    pretrained: str | os.PathLike[str] | None,
    *,
    cache_dir: str | os.PathLike[str] | None,
) -> tuple[nn.Module, Sequence[float], Sequence[float], Callable[[list[str]], Tensor], dict]:
    open_clip = _import_open_clip()
    pretrained = None if pretrained is None else os.fspath(pretrained)
    model_name, weights = model, {"pretrained": pretrained}
    if pretrained and pretrained.startswith(("hf-hub:", "local-dir:")):
        model_name, pretrained = pretrained, None
    has_schema = model_name.startswith(("hf-hub:", "local-dir:"))
    local_file = None
    if has_schema:
        weights, pretrained = {"pretrained": model_name}, None  # the id names its own weights
    else:
        arch = model_name.replace("/", "-")
        if arch not in open_clip.list_models():
            raise ValueError(
                f"unknown open_clip model {model!r}; known: {', '.join(open_clip.list_models())}"
            )
        if pretrained is not None:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            is_file = pretrained.endswith(_WEIGHT_SUFFIXES) or os.sep in pretrained
            if pretrained.lower().replace("-", "_") not in tags and not is_file:
                raise ValueError(
                    f"{pretrained!r} is not a pretrained tag of open_clip model {arch!r} "
                    f"(tags: {', '.join(tags) or 'none'}) nor a checkpoint file; pass one of the "
                    "tags, an hf-hub:org/name id, or the path of a downloaded checkpoint "
                    "(--clip-pretrained)"
                )
            if is_file:
                path = Path(pretrained).expanduser()
                if not path.is_file():
                    raise MissingWeightsError(
                        f"CLIP checkpoint {path} does not exist. Download the open_clip weights "
                        f"of {arch} (e.g. open_clip_pytorch_model.bin from its Hugging Face "
                        "repo) and pass the file with --clip-pretrained /path/to/file"
                    )
                weights = {
                    "pretrained": path.name,
                    "path": str(path.resolve()),
                    **_file_stamp(path),
                }
                pretrained = local_file = str(path)
    cache = None if cache_dir is None else os.fspath(cache_dir)

    def load() -> tuple[nn.Module, Any, Callable[[list[str]], Tensor]]:
        clip_model, _, preprocess = open_clip.create_model_and_transforms(
            model_name,
            pretrained=pretrained,
            cache_dir=cache,
            require_pretrained=pretrained is not None or has_schema,
        )
        return clip_model, preprocess, open_clip.get_tokenizer(model_name, cache_dir=cache)

    def missing(error: BaseException, reason: str | None) -> MissingWeightsError:
        return MissingWeightsError(_download_hint(open_clip, model_name, pretrained, error, reason))

    try:
        if local_file is not None or model_name.startswith("local-dir:"):
            clip_model, preprocess, tokenizer = load()  # nothing to download
        else:
            clip_model, preprocess, tokenizer = _load_cache_first(
                load, _weight_sources(open_clip, model_name, pretrained), cache, missing
            )
    except MissingWeightsError:
        raise
    except (RuntimeError, OSError, ValueError) as e:
        if local_file is not None:
            raise ValueError(
                f"{local_file}: not an open_clip checkpoint of {model_name!r} (wrong model for "
                f"this file?): {e}"
            ) from e
        raise missing(e, None) from e
    mean, std = _normalisation(preprocess)
    return clip_model, mean, std, tokenizer, weights


def _download_hint(
    open_clip: Any,
    model_name: str,
    pretrained: str | None,
    error: BaseException,
    offline_reason: str | None = None,
) -> str:
    source = model_name if pretrained is None else f"{model_name} / {pretrained}"
    repo, url = None, None
    filename = "open_clip_pytorch_model.bin or open_clip_model.safetensors"
    if model_name.startswith("hf-hub:"):
        repo = model_name[len("hf-hub:") :]
    elif pretrained:
        cfg = open_clip.get_pretrained_cfg(model_name.replace("/", "-"), pretrained) or {}
        if cfg.get("hf_hub"):
            # open_clip's form: "org/name/" (default file name) or "org/name/file.bin"
            repo, name = os.path.split(cfg["hf_hub"])
            filename = name or filename
        url = cfg.get("url")
    where = (
        f"https://huggingface.co/{repo} ({filename})" if repo else url or "its open_clip release"
    )
    if offline_reason is None and _offline():
        offline_reason = "HF_HUB_OFFLINE is set"
    return (
        f"could not load CLIP weights for {source}: {error}\n"
        f"Either download the checkpoint from {where} and pass it with "
        "--clip-pretrained /path/to/open_clip_pytorch_model.bin, or populate the Hugging Face "
        f"cache ({_hub_cache()}, or $HF_HOME) by loading the model once on a machine "
        "with internet access and copying the cache over; then set HF_HUB_OFFLINE=1 to run "
        "without network"
        + (f" ({offline_reason}, so nothing was downloaded)." if offline_reason else ".")
    )


# ---------------------------------------------------------------------------------- offline
# The policy of editing.score_distillation's model loading (fields cannot import editing): the
# cache first, without touching the network; a download only when the environment allows the
# network and the host answers a quick probe. Without it, open_clip's hf_hub_download retries
# for ~40 s before failing on a machine without network.
_PROBE_TIMEOUT = 1.5  # seconds; DNS included (the probe runs in a thread)
_HUB_OFFLINE_LOCK = threading.Lock()


def _offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) asks for no network at all."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def _hub_endpoint() -> str:
    try:
        from huggingface_hub.constants import ENDPOINT

        return str(ENDPOINT)
    except ImportError:  # pragma: no cover
        return "https://huggingface.co"


def _hub_cache() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except ImportError:  # pragma: no cover
        return "~/.cache/huggingface/hub"


def _host_reachable(url: str, timeout: float = _PROBE_TIMEOUT) -> bool:
    """Whether `url`'s host accepts a TCP connection within `timeout` seconds, name lookup
    included (a thread bounds it: `socket.create_connection`'s timeout does not cover DNS)."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme != "http" else 80)
    answer: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=probe, name="scenelab-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])


def _hub_reachable() -> bool:
    return _host_reachable(_hub_endpoint())


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """huggingface_hub in offline mode for the duration: cached files are used as they are,
    with no request to check them (the flag is read at call time)."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover
        yield
        return
    with _HUB_OFFLINE_LOCK:
        before = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            constants.HF_HUB_OFFLINE = before


def _weight_sources(
    open_clip: Any, model_name: str, pretrained: str | None
) -> list[tuple[str, str, tuple[str, ...]]]:
    """What open_clip will fetch for this model: ("hub", repo, alternative file names) — one of
    the names suffices — or ("url", url, (file in open_clip's download folder,))."""
    from open_clip.pretrained import has_hf_hub

    if model_name.startswith("hf-hub:"):
        repo = model_name[len("hf-hub:") :]
        weights = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
        return [("hub", repo, ("open_clip_config.json",)), ("hub", repo, weights)]
    if not pretrained:
        return []
    cfg = open_clip.get_pretrained_cfg(model_name.replace("/", "-"), pretrained) or {}
    if cfg.get("hf_hub") and has_hf_hub():
        repo, name = os.path.split(cfg["hf_hub"])
        name = name or "open_clip_pytorch_model.bin"
        names = [name]
        if name == "open_clip_pytorch_model.bin":
            names.insert(0, "open_clip_model.safetensors")
        elif name.endswith((".bin", ".pth")):
            names.insert(0, name[:-4] + ".safetensors")
        return [("hub", repo, tuple(names))]
    if cfg.get("url"):
        return [("url", cfg["url"], (os.path.basename(cfg["url"]),))]
    return []


def _is_cached(source: tuple[str, str, tuple[str, ...]], cache_dir: str | None) -> bool:
    kind, where, names = source
    if kind == "url":
        folder = cache_dir or os.path.expanduser("~/.cache/clip")
        return any(os.path.isfile(os.path.join(folder, n)) for n in names)
    from huggingface_hub import try_to_load_from_cache

    return any(
        isinstance(try_to_load_from_cache(where, n, cache_dir=cache_dir), str) for n in names
    )


def _load_cache_first(
    load: Callable[[], Any],
    sources: list[tuple[str, str, tuple[str, ...]]],
    cache_dir: str | None,
    missing: Callable[[BaseException, str | None], MissingWeightsError],
) -> Any:
    """`load()` from the cache alone when every source is cached; otherwise a download, but
    only when the network is allowed and the source's host answers at once — else `missing`
    is raised before any model is built (in well under the probe's 1.5 s)."""
    absent = [s for s in sources if not _is_cached(s, cache_dir)]
    if not absent:
        try:
            with _hub_offline():
                return load()
        except (RuntimeError, OSError, ValueError) as e:
            # Something the cache check did not foresee (a tokenizer, a config) is absent.
            if _offline():
                raise missing(e, "HF_HUB_OFFLINE is set") from e
            if not _hub_reachable():
                raise missing(e, f"{_hub_endpoint()} did not answer") from e
            return load()
    kind, where, names = absent[0]
    what = " or ".join(names)
    error = FileNotFoundError(
        f"{what} of {where} is not in the cache "
        + ("(~/.cache/clip)" if kind == "url" else f"({cache_dir or _hub_cache()})")
    )
    if _offline():
        raise missing(error, "HF_HUB_OFFLINE is set")
    url = where if kind == "url" else _hub_endpoint()
    if not _host_reachable(url):
        raise missing(error, f"{url.split('/')[2] if '//' in url else url} did not answer")
    return load()


def _normalisation(preprocess: Any) -> tuple[Sequence[float], Sequence[float]]:
    """The mean/std of an open_clip preprocessing pipeline (torchvision Compose)."""
    for t in getattr(preprocess, "transforms", []):
        if hasattr(t, "mean") and hasattr(t, "std"):
            return tuple(t.mean), tuple(t.std)
    open_clip = _import_open_clip()
    return open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD


def _file_stamp(path: Path) -> dict[str, Any]:
    """Size and modification time of a weights file, for cache keys (cheap, unlike hashing GBs)."""
    stat = path.stat()
    stamp = f"{stat.st_size}:{stat.st_mtime_ns}".encode()
    return {"size": stat.st_size, "stamp": hashlib.sha256(stamp).hexdigest()[:16]}


# ---------------------------------------------------------------------------------- registry
def _build(
    dataset: Any,
    *,
    device: torch.device,
    model: str = DEFAULT_MODEL,
    pretrained: str | None = DEFAULT_PRETRAINED,
    image_size: int | tuple[int, int] | None = None,
    residual: bool = False,
    cache_dir: str | None = None,
) -> ClipTeacher:
    return ClipTeacher(
        model,
        pretrained,
        device=device,
        image_size=image_size,
        residual=residual,
        cache_dir=cache_dir,
    )


def _text_encoder(record: dict[str, Any]) -> Callable[[list[str]], Tensor]:
    """CLIP's text side for a field distilled with the CLIP teacher `record` (its metadata)."""
    weights = record.get("weights", {})
    pretrained = weights.get("path") or weights.get("pretrained")
    if "state_dict_sha256" in weights and pretrained is None:
        raise MissingWeightsError(
            "this field was distilled with an in-memory CLIP model; load the same model and use "
            "ClipTeacher.from_model(...).encode_text"
        )
    return ClipTeacher(record["model"], pretrained).encode_text


register_teacher("clip", _build)
register_text_encoder("clip", _text_encoder)
