"""Pure ops on a selection of Gaussians. Each returns a new scene; the input is never modified.

Invariants every op keeps: Gaussians that are not selected are bit-identical and keep their
order; extras (labels, features, ...) stay aligned with their Gaussians.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from fields import GaussianScene
from fields.scene import rgb_to_sh, sh_to_rgb


def check_mask(scene: GaussianScene, mask: Tensor) -> Tensor:
    """Validate a selection: a bool tensor [N] on the scene's device."""
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
        raise TypeError(f"a selection mask must be bool, got {mask.dtype}")
    if mask.shape != (len(scene),):
        raise ValueError(
            f"selection mask has shape {tuple(mask.shape)}, scene has {len(scene)} Gaussians"
        )
    return mask.to(scene.device)


def delete(scene: GaussianScene, mask: Tensor) -> GaussianScene:
    """Remove the selected Gaussians; the rest keep their order."""
    return scene.subset(~check_mask(scene, mask))


def isolate(scene: GaussianScene, mask: Tensor) -> GaussianScene:
    """Hide everything but the selection (bool extra `hidden`); nothing is removed."""
    return scene.with_extras(hidden=~check_mask(scene, mask))


def unhide(scene: GaussianScene) -> GaussianScene:
    return scene.with_extras(hidden=None)


def recolor(
    scene: GaussianScene,
    mask: Tensor,
    rgb: Tensor | Sequence[float],  # [3] in [0,1]
    *,
    mode: str = "replace",
    strength: float = 1.0,
) -> GaussianScene:
    """Recolour the selection.

    mode "replace": blend the base colour towards `rgb` and fade view-dependent SH by the same
    amount (a new material); "tint": multiply the base colour by `rgb` (keeps shading variation).
    `strength` in [0,1] blends between the old and the new colour."""
    if mode not in ("replace", "tint"):
        raise ValueError(f"recolor mode must be 'replace' or 'tint', got {mode!r}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"recolor strength must be in [0, 1], got {strength}")
    mask = check_mask(scene, mask)
    target_rgb = torch.as_tensor(rgb, dtype=scene.sh.dtype, device=scene.device)
    if target_rgb.shape != (3,):
        raise ValueError(f"recolor expects an RGB triple, got shape {tuple(target_rgb.shape)}")
    if not bool(((target_rgb >= 0) & (target_rgb <= 1)).all()):
        raise ValueError("recolor RGB values must be in [0, 1]")
    old = sh_to_rgb(scene.sh[mask, 0])  # [M,3]
    target = target_rgb.expand_as(old) if mode == "replace" else old * target_rgb
    sh = scene.sh.clone()
    sh[mask, 0] = rgb_to_sh(old + strength * (target - old))
    if mode == "replace" and sh.shape[1] > 1:
        sh[mask, 1:] = sh[mask, 1:] * (1.0 - strength)
    return scene.replace(sh=sh)


def transform(
    scene: GaussianScene,
    mask: Tensor,
    T: Tensor,  # [4,4] similarity in world frame (rotation * uniform scale | translation)
) -> GaussianScene:
    """Move/rotate/scale the selection by `T` (about the world origin: compose a pivot into T).
    Means, rotations, scales and SH move together; extras travel unchanged."""
    mask = check_mask(scene, mask)
    moved = scene.subset(mask).transform(T)
    means, quats, scales, sh = (
        t.clone() for t in (scene.means, scene.quats, scene.scales, scene.sh)
    )
    means[mask], quats[mask], scales[mask], sh[mask] = (
        moved.means,
        moved.quats,
        moved.scales,
        moved.sh,
    )
    return scene.replace(means=means, quats=quats, scales=scales, sh=sh)


def duplicate(scene: GaussianScene, mask: Tensor, T: Tensor | None = None) -> GaussianScene:
    """Append copies of the selection (optionally transformed by `T`) after all existing
    Gaussians; the copies are `result.subset(range(len(scene), len(result)))`."""
    copies = scene.subset(check_mask(scene, mask))
    if T is not None:
        copies = copies.transform(T)
    return GaussianScene.concat([scene, copies])


def pivot_transform(
    pivot: Tensor,  # [3] world point that stays fixed
    R: Tensor | None = None,  # [3,3] rotation
    scale: float = 1.0,
    translation: Tensor | None = None,  # [3]
) -> Tensor:
    """[4,4] similarity: rotate and scale about `pivot`, then translate."""
    p = torch.as_tensor(pivot, dtype=torch.float64)
    A = torch.eye(3, dtype=torch.float64) if R is None else torch.as_tensor(R, dtype=torch.float64)
    A = A * float(scale)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = A
    T[:3, 3] = p - A @ p
    if translation is not None:
        T[:3, 3] += torch.as_tensor(translation, dtype=torch.float64)
    return T
