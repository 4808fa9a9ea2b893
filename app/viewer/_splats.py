"""`GaussianScene` -> the splat buffer viser renders in the browser.

viser packs one Gaussian into 8 uint32 words (antimatter15's layout): centre xyz as float32, one
word reserved, the 6 upper-triangular covariance terms as float16, RGBA as 4 bytes. viser 1.1.1
renders one colour per splat (no SH), so view-dependent colour is baked on the server: given a
`view` camera, `build` evaluates the shown splats' SH toward its centre (`_sh_view`). We build
the buffer ourselves instead of going through `GaussianSplatHandle.set_gaussians`, so that a
colour-only change (recolour, selection highlight, value overlay, SH toward a new viewpoint)
reuses the packed geometry and costs one pass over the shown splats, and the whole update
reaches the client as a single buffer message.

Hidden Gaussians (`extras["hidden"]`, set by `editing.isolate`) are left out of the buffer;
`SplatFrame.shown` maps buffer rows back to scene indices. With a `budget`, at most that many
splats are sent: chosen by screen-space contribution from the `view` camera (`_lod`), or a
position-hashed sample when there is no camera; either way widened to cover the picture.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fields import Camera, GaussianScene
from fields.scene import quat_to_rotmat

from ._lod import SplatSizes, contribution, lod_priority, select, splat_sizes
from ._sh_view import view_colors

SPLATS_NODE = "/scene/splats"  # the viser scene node every splat buffer (and preview) goes to

# Selection highlight: amber, mixed 70% over the colour so the shading still shows.
HIGHLIGHT = (1.0, 0.75, 0.0)
HIGHLIGHT_MIX = 0.7

COLOR_MODES = ("rgb", "selection", "values")


def covariances(
    quats: Tensor,  # [N,4] wxyz, any norm
    log_scales: Tensor,  # [N,3]
) -> Tensor:  # [N,3,3]
    """World-space covariances R diag(s²) Rᵀ."""
    R = quat_to_rotmat(quats.float())
    s = torch.exp(log_scales.float())
    M = R * s[:, None, :]
    return M @ M.transpose(1, 2)


# Upper-triangular entries in viser's order: xx, xy, xz, yy, yz, zz.
_TRIU = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


def covariance_triu(
    quats: Tensor,  # [N,4] wxyz, any norm
    log_scales: Tensor,  # [N,3]
) -> Tensor:  # [N,6] float32
    """The 6 distinct entries of R diag(s²) Rᵀ, computed entry-wise: no [N,3,3] matmul, which is
    several times slower than six fused multiply-adds per Gaussian."""
    w, x, y, z = torch.nn.functional.normalize(quats.float(), dim=-1).unbind(-1)
    s2 = torch.exp(2.0 * log_scales.float())
    # Rows of the rotation matrix (same formula as fields.scene.quat_to_rotmat).
    r0 = (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y))
    r1 = (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x))
    r2 = (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y))
    rows = (r0, r1, r2)
    s0, s1, s2_ = s2.unbind(-1)
    out = torch.empty(quats.shape[0], 6, dtype=torch.float32)
    for k, (i, j) in enumerate(_TRIU):
        a, b = rows[i], rows[j]
        out[:, k] = a[0] * b[0] * s0 + a[1] * b[1] * s1 + a[2] * b[2] * s2_
    return out


def pack_geometry(
    scene: GaussianScene,
    rows: np.ndarray | None = None,  # [M] int: pack only these Gaussians (default: all)
) -> np.ndarray:  # [N or M,8] uint32, colour word zero
    """Centres and float16 covariance terms in viser's layout; the RGBA word is left at 0."""
    idx = None if rows is None else torch.from_numpy(np.asarray(rows, dtype=np.int64))
    n = len(scene) if idx is None else int(idx.shape[0])
    buf = np.zeros((n, 8), dtype=np.uint32)
    if n == 0:
        return buf
    with torch.no_grad():
        means, quats, scales = (
            t.detach().cpu() if idx is None else t.detach().cpu()[idx]
            for t in (scene.means, scene.quats, scene.scales)
        )
        triu = covariance_triu(quats, scales)
        # float16 overflows above 65504: clamp so that huge background splats stay finite.
        # torch converts to half several times faster than numpy's astype.
        triu16 = triu.clamp_(-65000.0, 65000.0).half().numpy()
        means = means.float().contiguous().numpy()
    buf[:, 0:3] = means.view(np.uint32)
    buf[:, 4:7] = triu16.view(np.uint32)
    return buf


def pack_rgba(
    rgb: np.ndarray,  # [N,3] float in [0,1] or uint8
    alpha: np.ndarray,  # [N] float in [0,1] or uint8
) -> np.ndarray:  # [N] uint32
    """One RGBA word per Gaussian (bytes r, g, b, a in memory order)."""
    n = rgb.shape[0]
    rgba = np.empty((n, 4), dtype=np.uint8)
    rgba[:, :3] = _to_u8(rgb)
    rgba[:, 3] = _to_u8(alpha)
    return rgba.view(np.uint32).reshape(n)


def _to_u8(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def base_colors(scene: GaussianScene) -> np.ndarray:  # [N,3] float32 in [0,1]
    with torch.no_grad():
        return scene.colors.detach().cpu().clamp(0.0, 1.0).numpy().astype(np.float32)


def base_alphas(scene: GaussianScene) -> np.ndarray:  # [N] float32
    with torch.no_grad():
        return torch.sigmoid(scene.opacities.detach().cpu().float()).numpy()


def hidden_mask(scene: GaussianScene) -> np.ndarray | None:  # [N] bool or None
    hidden = scene.extras.get("hidden")
    if hidden is None:
        return None
    h = hidden.detach().cpu().numpy().astype(bool).reshape(len(scene))
    return h if h.any() else None


def turbo(x: np.ndarray) -> np.ndarray:  # [...] in [0,1] -> [...,3] float32
    """Google's polynomial approximation of the Turbo colormap (no matplotlib needed)."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    x2 = x * x
    x3 = x2 * x
    x4 = x2 * x2
    x5 = x4 * x
    r = (
        0.13572138
        + 4.61539260 * x
        - 42.66032258 * x2
        + 132.13108234 * x3
        - 152.94239396 * x4
        + 59.28637943 * x5
    )
    g = (
        0.09140261
        + 2.19418839 * x
        + 4.84296658 * x2
        - 14.18503333 * x3
        + 4.27729857 * x4
        + 2.82956604 * x5
    )
    b = (
        0.10667330
        + 12.64194608 * x
        - 60.58204836 * x2
        + 110.36276771 * x3
        - 89.90310912 * x4
        + 27.34824973 * x5
    )
    return np.clip(np.stack([r, g, b], axis=-1), 0.0, 1.0).astype(np.float32)


def normalize_values(
    values: np.ndarray, lo: float | None = None, hi: float | None = None
) -> np.ndarray:
    """Map values to [0,1] by [lo, hi] (default: the 1st and 99th percentiles; NaN -> 0)."""
    v = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(v)
    if not finite.any():
        return np.zeros_like(v)
    if lo is None or hi is None:
        q_lo, q_hi = np.percentile(v[finite], [1.0, 99.0])
        lo = float(q_lo) if lo is None else lo
        hi = float(q_hi) if hi is None else hi
    span = hi - lo if hi > lo else 1.0
    return np.where(finite, np.clip((v - lo) / span, 0.0, 1.0), 0.0).astype(np.float32)


def display_colors(
    rgb: np.ndarray,  # [N,3] float
    selection: np.ndarray | None,  # [N] bool
    mode: str = "rgb",
    values: np.ndarray | None = None,  # [N] float, for mode "values"
) -> np.ndarray:  # [N,3] float32
    """What the browser shows for each Gaussian in colour mode `mode` (see `COLOR_MODES`)."""
    if mode not in COLOR_MODES:
        raise ValueError(f"unknown colour mode {mode!r}; expected one of {COLOR_MODES}")
    hl = np.asarray(HIGHLIGHT, dtype=np.float32)
    if mode == "values" and values is not None:
        out = turbo(normalize_values(values))
    elif mode == "selection":
        lum = rgb @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
        out = np.repeat((0.15 + 0.35 * lum)[:, None], 3, axis=1).astype(np.float32)
        if selection is not None and selection.any():
            out[selection] = hl
        return out
    else:
        out = rgb.astype(np.float32, copy=True)
    if selection is not None and selection.any():
        out[selection] = (1.0 - HIGHLIGHT_MIX) * out[selection] + HIGHLIGHT_MIX * hl
    return out


@dataclass
class SplatFrame:
    """One packed buffer and what it shows."""

    buffer: np.ndarray  # [M,8] uint32
    shown: np.ndarray | None  # [M] int64 scene indices, None when every Gaussian is shown
    thinned: bool = False  # a budgeted sample of the shown Gaussians
    view_colored: bool = False  # colours are SH evaluated toward the view camera
    widen: float = 1.0  # mean factor applied to the sample's covariances

    @property
    def count(self) -> int:
        return int(self.buffer.shape[0])


def hashed_sample(centers: np.ndarray, budget: int) -> np.ndarray:  # [M,3] -> [budget] rows
    """`budget` rows chosen by `lod_priority` (sorted): a uniform sample, stable under edits."""
    m = centers.shape[0]
    if budget >= m:
        return np.arange(m)
    prio = lod_priority(centers)
    return np.sort(np.argpartition(prio, budget)[:budget])


def widen(buffer: np.ndarray, factor: float | np.ndarray) -> None:
    """Scale the covariances of a packed buffer [M,8] by `factor` (a number or [M]), in place."""
    if buffer.shape[0] == 0 or (np.isscalar(factor) and factor == 1.0):
        return
    f = torch.as_tensor(np.asarray(factor, dtype=np.float32))
    f = f[:, None] if f.ndim == 1 else f
    # torch converts float16 several times faster than numpy's astype (62 -> ~8 ms at 200k).
    half = torch.from_numpy(np.ascontiguousarray(buffer[:, 4:7]).view(np.float16))  # [M,6]
    triu = half.float().mul_(f).clamp_(-65000.0, 65000.0)
    buffer[:, 4:7] = triu.half().numpy().view(np.uint32)


def thin_out(buffer: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep `budget` rows of a packed buffer (a position-hashed sample) and widen them so that
    the sample still covers the surfaces: for splats on surfaces, the area per splat grows by
    M/budget, so each covariance grows by the same factor. Returns (buffer, kept rows)."""
    m = buffer.shape[0]
    if budget >= m:
        return buffer, np.arange(m)
    rows = hashed_sample(buffer[:, 0:3].view(np.float32), budget)
    out = buffer[rows]
    widen(out, m / budget)
    return out, rows


_GeoKey = tuple[int, int, int]


@dataclass
class _Derivation:
    """`new` Gaussian i is `old` Gaussian index[i], except rows where `changed` is set."""

    old: _GeoKey
    index: Tensor | None  # [M] int64, None = same rows
    changed: Tensor | None  # [M] bool, rows to re-pack


def _geo_key(scene: GaussianScene) -> _GeoKey:
    return (id(scene.means), id(scene.quats), id(scene.scales))


class SplatBuffer:
    """Builds viser buffers for successive scenes, re-packing geometry only when it changed.

    Packed geometry is cached for the last few scene states (by tensor identity: scenes are
    immutable values and `History` hands back the very same tensors on undo/redo), so undo and
    redo never re-pack. An op can `derive` its result from its input (delete keeps rows,
    duplicate repeats rows, transform changes some rows); then only new rows are packed.

    `build` is not thread-safe (the viewer serialises pushes); `derive` may be called from any
    thread."""

    def __init__(self, cache_size: int = 4) -> None:
        self._cache: OrderedDict[_GeoKey, tuple[tuple[Tensor, ...], np.ndarray]] = OrderedDict()
        self._cache_size = cache_size
        self._derived: dict[_GeoKey, tuple[tuple[Tensor, ...], _Derivation]] = {}
        self._derived_lock = threading.Lock()
        self._color_key: tuple[Tensor, Tensor] | None = None
        self._rgb: np.ndarray | None = None
        self._alpha: np.ndarray | None = None
        self._sizes: tuple[tuple[Tensor, ...], SplatSizes] | None = None
        self.geometry_packs = 0  # full packs (tests and benchmarks read these)
        self.rows_packed = 0  # Gaussians packed, full or partial

    def derive(
        self,
        old: GaussianScene,
        new: GaussianScene,
        index: Tensor | None = None,  # [M] bool mask or int indices into old; None = same rows
        changed: Tensor | None = None,  # [M] bool: rows of `new` whose geometry differs
    ) -> None:
        """Declare how `new` relates to `old` so that its geometry can reuse `old`'s."""
        if index is not None:
            index = torch.as_tensor(index).cpu()
            index = index.nonzero().squeeze(1) if index.dtype == torch.bool else index.long()
        if changed is not None:
            changed = torch.as_tensor(changed).cpu().bool()
        tensors = (new.means, new.quats, new.scales)
        with self._derived_lock:
            # Keep only a few pending hints: they are consumed by the next build.
            if len(self._derived) > 8:
                self._derived.clear()
            self._derived[_geo_key(new)] = (tensors, _Derivation(_geo_key(old), index, changed))

    def _lookup(self, key: _GeoKey, tensors: tuple[Tensor, ...]) -> np.ndarray | None:
        hit = self._cache.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], tensors, strict=True)):
            self._cache.move_to_end(key)
            return hit[1]
        return None

    def geometry(self, scene: GaussianScene) -> np.ndarray:
        key, tensors = _geo_key(scene), (scene.means, scene.quats, scene.scales)
        geo = self._lookup(key, tensors)
        if geo is not None:
            return geo
        geo = self._from_derivation(scene, key, tensors)
        if geo is None and self._cache:
            # Same values under new tensor objects (e.g. a scene rebuilt by `replace`).
            last_tensors, last_geo = next(reversed(self._cache.values()))
            if all(
                a.shape == b.shape and torch.equal(a, b)
                for a, b in zip(last_tensors, tensors, strict=True)
            ):
                geo = last_geo
        if geo is None:
            geo = pack_geometry(scene)
            self.geometry_packs += 1
            self.rows_packed += len(scene)
        self._cache[key] = (tensors, geo)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return geo

    def _from_derivation(
        self, scene: GaussianScene, key: _GeoKey, tensors: tuple[Tensor, ...]
    ) -> np.ndarray | None:
        with self._derived_lock:
            entry = self._derived.pop(key, None)
        if entry is None or not all(a is b for a, b in zip(entry[0], tensors, strict=True)):
            return None
        d = entry[1]
        base = self._cache.get(d.old)
        if base is None:
            return None
        old_geo = base[1]
        geo = old_geo[d.index.numpy()] if d.index is not None else old_geo.copy()
        if geo.shape[0] != len(scene):
            return None
        if d.changed is not None and bool(d.changed.any()):
            rows = d.changed.nonzero().squeeze(1)
            geo[rows.numpy()] = pack_geometry(scene.subset(rows))
            self.rows_packed += int(rows.numel())
        return geo

    def colors(self, scene: GaussianScene) -> tuple[np.ndarray, np.ndarray]:
        key = (scene.sh, scene.opacities)
        same = self._color_key is not None and all(
            a is b for a, b in zip(self._color_key, key, strict=True)
        )
        if not same or self._rgb is None or self._alpha is None:
            self._rgb = base_colors(scene)
            self._alpha = base_alphas(scene)
        self._color_key = key
        return self._rgb, self._alpha

    def sizes(self, scene: GaussianScene) -> SplatSizes:
        """The camera-independent LOD terms of `scene` (cached for the last scene state)."""
        tensors = (scene.means, scene.scales, scene.opacities)
        hit = self._sizes
        if hit is None or not all(a is b for a, b in zip(hit[0], tensors, strict=True)):
            hit = (tensors, splat_sizes(scene))
            self._sizes = hit
        return hit[1]

    def build(
        self,
        scene: GaussianScene,
        selection: Tensor | np.ndarray | None = None,  # [N] bool
        mode: str = "rgb",
        values: Tensor | np.ndarray | None = None,  # [N] float
        budget: int | None = None,  # send at most this many splats (a widened sample)
        view: Camera | None = None,  # the camera to pick the sample for and to colour toward
        view_colour: bool = True,  # False: base (DC) colours even with a view and SH
    ) -> SplatFrame:
        """The buffer for `scene` as the browsers should show it (see the module docstring).

        With `view`, SH of degree ≥ 1 are evaluated toward its centre (modes "rgb" and
        "selection"; "values" ignores colour), and a budget keeps the splats that contribute
        most to its picture; without, base (DC) colours and a position-hashed sample."""
        n = len(scene)
        sel = _np_bool(selection, n)
        vals = None if values is None else _np_float(values, n)
        hidden = hidden_mask(scene)
        shown = None if hidden is None else np.flatnonzero(~hidden)
        count = n if shown is None else int(shown.shape[0])
        thinned, factor = False, 1.0
        if budget is not None and count > budget:
            sizes = self.sizes(scene)
            if view is not None:
                score = contribution(sizes, view, shown)
                kept, factor = select(score, sizes.u if shown is None else sizes.u[shown], budget)
            else:
                centers = sizes.centers if shown is None else sizes.centers[shown]
                kept = hashed_sample(centers, budget)
                factor = count / budget
            shown = kept if shown is None else shown[kept]
            thinned = True
        view_sh = view_colour and view is not None and scene.sh.shape[1] > 1 and mode != "values"
        rows_t = None if shown is None else torch.from_numpy(shown)
        if thinned:
            # A sample: pack and colour only its rows (a 3M scene's first push packs 24k), unless
            # the whole scene's geometry is at hand already.
            assert shown is not None and rows_t is not None
            geo = self._lookup(_geo_key(scene), (scene.means, scene.quats, scene.scales))
            if geo is not None:
                buf = geo[shown]
            else:
                buf = pack_geometry(scene, shown)
                self.rows_packed += int(shown.shape[0])
            with torch.no_grad():
                alpha = torch.sigmoid(scene.opacities.detach().cpu().float()[rows_t]).numpy()
            if view_sh:
                assert view is not None
                rgb_rows = view_colors(scene.means, scene.sh, view.center, rows=rows_t).numpy()
            else:  # base colours: the DC band seen from anywhere
                rgb_rows = view_colors(scene.means, scene.sh[:, :1], (0.0, 0.0, 0.0), rows=rows_t)
                rgb_rows = rgb_rows.clamp_(0.0, 1.0).numpy()
            if mode == "values" and vals is not None:  # the scale spans every value, not the
                # sample's
                rgb_all = np.zeros((n, 3), np.float32)  # (ignored by the "values" mode)
                shown_rgb = display_colors(rgb_all, sel, mode, vals)[shown]
            else:
                sel_rows = None if sel is None else sel[shown]
                shown_rgb = display_colors(rgb_rows, sel_rows, mode, None)
            buf[:, 7] = pack_rgba(shown_rgb, alpha)
        else:
            geo = self.geometry(scene)
            rgb, alpha = self.colors(scene)
            if view_sh:
                assert view is not None
                rgb_rows = view_colors(scene.means, scene.sh, view.center, rows=rows_t).numpy()
            else:
                rgb_rows = rgb if shown is None else rgb[shown]
            if shown is None:
                buf = geo.copy()
                buf[:, 7] = pack_rgba(display_colors(rgb_rows, sel, mode, vals), alpha)
            elif mode == "values":
                buf = geo[shown]
                buf[:, 7] = pack_rgba(display_colors(rgb, sel, mode, vals)[shown], alpha[shown])
            else:
                buf = geo[shown]
                sel_rows = None if sel is None else sel[shown]
                shown_rgb = display_colors(rgb_rows, sel_rows, mode, None)
                buf[:, 7] = pack_rgba(shown_rgb, alpha[shown])
        widen(buf, factor)
        mean_factor = float(np.mean(factor)) if thinned else 1.0
        return SplatFrame(buf, shown, thinned=thinned, view_colored=view_sh, widen=mean_factor)


def _np_bool(x: Tensor | np.ndarray | None, n: int) -> np.ndarray | None:
    if x is None:
        return None
    a = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    a = a.astype(bool).reshape(-1)
    if a.shape[0] != n:
        raise ValueError(f"selection has {a.shape[0]} entries for a scene of {n} Gaussians")
    return a


def _np_float(x: Tensor | np.ndarray, n: int) -> np.ndarray:
    a = x.detach().cpu().float().numpy() if isinstance(x, Tensor) else np.asarray(x, np.float32)
    a = a.reshape(-1)
    if a.shape[0] != n:
        raise ValueError(f"values have {a.shape[0]} entries for a scene of {n} Gaussians")
    return a


def unpack(buffer: np.ndarray) -> dict[str, np.ndarray]:
    """Decode a viser splat buffer (for tests and debugging): centers, covariances, rgb, alpha."""
    n = buffer.shape[0]
    centers = buffer[:, 0:3].copy().view(np.float32)
    triu = buffer[:, 4:7].copy().view(np.float16).astype(np.float32).reshape(n, 6)
    cov = np.empty((n, 3, 3), np.float32)
    idx = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    for k, (i, j) in enumerate(idx):
        cov[:, i, j] = triu[:, k]
        cov[:, j, i] = triu[:, k]
    rgba = buffer[:, 7:8].copy().view(np.uint8).reshape(n, 4)
    return {"centers": centers, "covariances": cov, "rgb": rgba[:, :3], "alpha": rgba[:, 3]}
