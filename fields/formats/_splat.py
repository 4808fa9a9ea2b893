"""antimatter15 `.splat`: a bare array of 32-byte records, no header.

Record: position 3 x float32, scale 3 x float32 (linear standard deviations), RGBA 4 x uint8
(colour = SH DC term activated, A = activated opacity), rotation 4 x uint8 as (w, x, y, z),
each byte = q * 128 + 128 of the normalised quaternion. Little-endian. No SH bands, no extras.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ..scene import SH_C0, GaussianScene
from ._common import alpha_to_logit, build_scene, fail, rgb_to_dc

RECORD = np.dtype(
    [("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)]
)
assert RECORD.itemsize == 32


def read_splat(path: Path, data: bytes) -> GaussianScene:
    if len(data) % RECORD.itemsize:
        fail(path, f"size {len(data)} is not a multiple of the 32-byte .splat record")
    rec = np.frombuffer(data, dtype=RECORD)
    if len(rec) == 0:
        fail(path, "the file holds no Gaussians")
    scale = rec["scale"].astype(np.float64)
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        fail(path, "scales must be finite and positive")
    rgba = rec["rgba"].astype(np.float32) / 255.0
    quats = (rec["rot"].astype(np.float32) - 128.0) / 128.0
    # (128, 128, 128, 128) is no rotation at all; viewers draw it as the identity.
    quats[~(quats != 0).any(axis=1)] = (1.0, 0.0, 0.0, 0.0)
    return build_scene(
        path,
        means=rec["position"],
        quats=quats,
        scales=np.log(scale),
        opacities=alpha_to_logit(rgba[:, 3]),
        sh=rgb_to_dc(rgba[:, :3])[:, None, :],
    )


def write_splat(f: BinaryIO, scene: GaussianScene) -> None:
    """Write records in the scene's Gaussian order. antimatter15's converter sorts by size x
    opacity so a progressive download shows big splats first; we keep the order so Gaussian i
    of the file is Gaussian i of the scene (and its extras elsewhere stay aligned)."""
    dropped = [f"SH degree {scene.sh_degree} bands"] if scene.sh_degree else []
    dropped += [f"extra {k!r}" for k in scene.extras]
    dropped += ["meta"] if scene.meta else []
    if dropped:
        warnings.warn(
            f".splat cannot hold {', '.join(dropped)}; they are not written", stacklevel=3
        )
    s = scene.detach().to("cpu")
    means = s.means.numpy()
    scales = torch.exp(s.scales).numpy()
    for name, arr in {"means": means, "scales": scales, "quats": s.quats.numpy()}.items():
        if not np.isfinite(arr).all():
            raise ValueError(f"scene.{name} has NaN or infinite values")
    if not (scales > 0).all():
        raise ValueError("scene.scales underflow to 0 in float32; .splat stores linear scales")
    rgb = (s.sh[:, 0, :] * SH_C0 + 0.5).numpy()
    alpha = torch.sigmoid(s.opacities).numpy()
    q = torch.nn.functional.normalize(s.quats, dim=-1).numpy()
    rec = np.empty(len(s), RECORD)
    rec["position"] = means
    rec["scale"] = scales
    rec["rgba"][:, :3] = _to_u8(rgb * 255.0)
    rec["rgba"][:, 3] = _to_u8(alpha * 255.0)
    rec["rot"] = _to_u8(q * 128.0 + 128.0)
    f.write(rec.tobytes())


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.nan_to_num(x, nan=0.0)), 0, 255).astype(np.uint8)
