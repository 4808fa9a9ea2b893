"""Benchmark the CPU render path: `render(..., backend="cpu")` at 512x512.

For N in {100k, 500k} Gaussians and channels {RGB, RGB + 16 features}: forward (no grad),
forward with autograd, backward, the split into projection vs kernel, and the pure-torch tiled
reference (`_reference.render_reference(rasterizer="tiled")`) on the same scene in the same run,
with ratios. The scene: Gaussians on the surfaces of a ground plane, a wall, spheres, a box, a
torus and a cylinder, flat discs aligned with the surface, SH degree 3, 3-sigma footprints of ~1-20
px, opacities U(0.2, 1), from a fixed seed.

    python benchmarks/render.py [--quick] [--out results.json] [--threads 2] [--omp-spin]

OpenMP waiting: unless OMP_WAIT_POLICY is set (or --omp-spin is given), this sets it to PASSIVE
before torch loads. On cores shared with other work, libgomp's default spin-waiting makes each of
the many small parallel ops of a torch-side projection wait for a descheduled peer thread: we
measured the old torch 500k projection at ~1 s (median 5 s) spinning vs ~0.15 s passive on 2 busy
cores. The compiled kernels (projection included) are one parallel region per step each.
"""

from __future__ import annotations

import os
import sys

if "--omp-spin" not in sys.argv:  # must happen before torch (libgomp) is loaded
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import math
from typing import Any

import torch
from _common import emit, ensure_repo_on_path, machine_info, timeit
from torch import Tensor

ensure_repo_on_path()

from fields import Camera, GaussianScene, render  # noqa: E402
from fields.rendering._cpu import rasterize_cpu  # noqa: E402
from fields.rendering._project import Intrinsics  # noqa: E402
from fields.rendering._project_cpu import project_cpu  # noqa: E402
from fields.rendering._reference import render_reference  # noqa: E402
from fields.scene import rgb_to_sh, rotmat_to_quat  # noqa: E402

SIZE = 512


# ---------------------------------------------------------------------- synthetic scene
def _frame(normals: Tensor, g: torch.Generator) -> Tensor:
    """[N,3,3] rotations whose third column is the normal, random spin about it."""
    n = torch.nn.functional.normalize(normals, dim=-1)
    r = torch.randn(n.shape, generator=g)
    t1 = torch.nn.functional.normalize(r - (r * n).sum(-1, keepdim=True) * n, dim=-1)
    t2 = torch.linalg.cross(n, t1)
    return torch.stack([t1, t2, n], dim=-1)


def _plane(n: int, origin, u, v, normal, g) -> tuple[Tensor, Tensor]:
    a, b = torch.rand(n, 1, generator=g), torch.rand(n, 1, generator=g)
    p = torch.tensor(origin) + a * torch.tensor(u) + b * torch.tensor(v)
    return p, torch.tensor(normal).expand(n, 3)


def _sphere(n: int, center, radius: float, g) -> tuple[Tensor, Tensor]:
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return torch.tensor(center) + radius * d, d


def _box(n: int, center, half: float, g) -> tuple[Tensor, Tensor]:
    face = torch.randint(0, 6, (n,), generator=g)
    axis, sign = face // 2, (face % 2).float() * 2 - 1
    p = (torch.rand(n, 3, generator=g) * 2 - 1) * half
    nrm = torch.zeros(n, 3)
    nrm[torch.arange(n), axis] = sign
    p[torch.arange(n), axis] = sign * half
    return torch.tensor(center) + p, nrm


def _torus(n: int, center, big: float, small: float, g) -> tuple[Tensor, Tensor]:
    u = torch.rand(4 * n, generator=g) * 2 * math.pi
    v = torch.rand(4 * n, generator=g) * 2 * math.pi
    keep = torch.rand(4 * n, generator=g) < (big + small * torch.cos(v)) / (big + small)
    u, v = u[keep][:n], v[keep][:n]
    ring = torch.stack([torch.cos(u), torch.sin(u), torch.zeros_like(u)], -1)
    nrm = torch.cos(v)[:, None] * ring + torch.sin(v)[:, None] * torch.tensor([0.0, 0.0, 1.0])
    return torch.tensor(center) + big * ring + small * nrm, nrm


def _cylinder(n: int, base, radius: float, height: float, g) -> tuple[Tensor, Tensor]:
    a = torch.rand(n, generator=g) * 2 * math.pi
    h = torch.rand(n, 1, generator=g) * height
    nrm = torch.stack([torch.cos(a), torch.sin(a), torch.zeros_like(a)], -1)
    return torch.tensor(base) + radius * nrm + h * torch.tensor([0.0, 0.0, 1.0]), nrm


def surface_scene(n: int, seed: int = 0, sh_degree: int = 3) -> GaussianScene:
    """`n` Gaussians on a small z-up tabletop world (ground, wall, 3 spheres, box, torus, cylinder)."""
    g = torch.Generator().manual_seed(seed)
    shapes = [  # (sampler, weight ~ area x detail, base rgb)
        (
            lambda k: _plane(k, (-4.0, -3.0, 0.0), (8.0, 0, 0), (0, 8.0, 0), (0, 0, 1.0), g),
            40,
            (0.55, 0.5, 0.45),
        ),
        (
            lambda k: _plane(k, (-4.0, 5.0, 0.0), (8.0, 0, 0), (0, 0, 3.0), (0, -1.0, 0), g),
            14,
            (0.7, 0.72, 0.8),
        ),
        (lambda k: _sphere(k, (-1.5, 1.0, 0.7), 0.7, g), 10, (0.8, 0.2, 0.2)),
        (lambda k: _sphere(k, (1.4, 0.5, 0.5), 0.5, g), 6, (0.2, 0.7, 0.3)),
        (lambda k: _sphere(k, (0.2, 2.5, 0.9), 0.9, g), 12, (0.2, 0.3, 0.8)),
        (lambda k: _box(k, (1.9, 2.7, 0.6), 0.6, g), 9, (0.85, 0.75, 0.3)),
        (lambda k: _torus(k, (-0.3, -0.6, 0.25), 0.55, 0.22, g), 5, (0.6, 0.3, 0.7)),
        (lambda k: _cylinder(k, (-2.4, 3.0, 0.0), 0.35, 2.0, g), 5, (0.9, 0.9, 0.9)),
    ]
    w = torch.tensor([s[1] for s in shapes], dtype=torch.float64)
    counts = torch.distributions.Multinomial(n, probs=w / w.sum()).sample().long().tolist()
    means, normals, rgb = [], [], []
    for (sampler, _, base), k in zip(shapes, counts, strict=True):
        if k == 0:
            continue
        p, nrm = sampler(k)
        means.append(p)
        normals.append(nrm)
        tex = 0.15 * torch.sin(3.0 * p).prod(-1, keepdim=True)  # smooth texture
        rgb.append((torch.tensor(base) + tex + 0.05 * torch.randn(k, 3, generator=g)).clamp(0, 1))
    means_t, normals_t, rgb_t = torch.cat(means), torch.cat(normals), torch.cat(rgb)
    quats = rotmat_to_quat(_frame(normals_t, g))
    sigma = torch.exp(torch.empty(n).uniform_(math.log(0.004), math.log(0.05), generator=g))
    aniso = torch.empty(n).uniform_(0.3, 1.0, generator=g)
    flat = torch.empty(n).uniform_(0.05, 0.2, generator=g)
    scales = torch.stack([sigma, sigma * aniso, sigma * flat], -1)
    opac = torch.empty(n).uniform_(0.2, 1.0, generator=g)
    k = (sh_degree + 1) ** 2
    sh = 0.03 * torch.randn(n, k, 3, generator=g)
    sh[:, 0] = rgb_to_sh(rgb_t)
    return GaussianScene(means_t, quats, torch.log(scales), torch.logit(opac), sh)


def bench_camera(size: int = SIZE) -> Camera:
    f = 0.5 * size / math.tan(math.radians(55.0) / 2)
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    return Camera.look_at((0.0, -5.5, 2.4), (0.0, 1.2, 0.6), (0.0, 0.0, 1.0), K, size, size)


# ---------------------------------------------------------------------- measurements
def _leaves(scene: GaussianScene, features: torch.Tensor | None):
    scene = scene.detach()
    for t in (scene.means, scene.quats, scene.scales, scene.opacities, scene.sh):
        t.requires_grad_(True)
    if features is not None:
        features = features.detach().requires_grad_(True)
    return scene, features


def _loss(out, w_rgb: torch.Tensor, w_feat: torch.Tensor | None) -> torch.Tensor:
    loss = (out.rgb * w_rgb).sum() + out.depth.mean() + out.alpha.mean()
    if w_feat is not None:
        loss = loss + (out.features * w_feat).sum()
    return loss


def bench_case(
    scene: GaussianScene, cam: Camera, n_feat: int, repeat: int, ref_repeat: int
) -> dict[str, Any]:
    g = torch.Generator().manual_seed(1)
    n = len(scene)
    features = torch.randn(n, n_feat, generator=g) if n_feat else None
    w_rgb = torch.rand(cam.height, cam.width, 3, generator=g)
    w_feat = torch.rand(cam.height, cam.width, n_feat, generator=g) if n_feat else None
    intr = Intrinsics(cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height)
    res: dict[str, Any] = {
        "n_gaussians": n,
        "channels": 3 + n_feat,
        "width": cam.width,
        "height": cam.height,
    }

    def proj(s: GaussianScene, f: torch.Tensor | None):
        return project_cpu(
            s.means, s.quats, s.scales, s.opacities, s.sh, cam.viewmat, intr,
            near=0.01, far=1e10, eps2d=0.3, sh_degree=s.sh_degree, features=f, campos=cam.center,
        )  # fmt: skip

    def kernel(sp):
        return rasterize_cpu(
            sp.means2d,
            sp.conics,
            sp.opacities,
            sp.colors,
            sp.depths,
            sp.radii,
            cam.width,
            cam.height,
        )

    # -- inference: no autograd
    with torch.no_grad():
        res["forward_nograd"] = timeit(
            lambda: render(scene, cam, backend="cpu", features=features), repeat=repeat
        )
        res["projection_forward_nograd"] = timeit(lambda: proj(scene, features), repeat=repeat)
        sp0 = proj(scene, features)
        res["kernel_forward_nograd"] = timeit(lambda: kernel(sp0), repeat=repeat)
        res["visible_gaussians"] = int((sp0.radii > 0).all(-1).sum())

    # -- training step: forward with autograd, backward
    ls, lf = _leaves(scene, features)

    leaves = [ls.means, ls.quats, ls.scales, ls.opacities, ls.sh] + ([lf] if lf is not None else [])

    def fwd():
        for t in leaves:  # as an optimizer's zero_grad(set_to_none=True) would
            t.grad = None
        return _loss(render(ls, cam, backend="cpu", features=lf), w_rgb, w_feat)

    res["forward_grad"] = timeit(fwd, repeat=repeat)
    res["backward"] = timeit(lambda loss: loss.backward(), setup=fwd, repeat=repeat)
    res["forward_backward"] = timeit(lambda: fwd().backward(), repeat=repeat)

    # -- projection vs kernel with autograd, split at the splats
    def split_fwd():
        sp = proj(ls, lf)
        cut = [
            t.detach().requires_grad_(True)
            for t in (sp.means2d, sp.conics, sp.opacities, sp.colors)
        ]
        return sp, cut

    res["projection_forward_grad"] = timeit(lambda: proj(ls, lf), repeat=repeat)

    def kernel_bwd(state):
        sp, cut = state
        out, alpha = rasterize_cpu(*cut, sp.depths, sp.radii, cam.width, cam.height)
        ((out[..., :3] * w_rgb).sum() + alpha.mean() + (out[..., 3:] ** 2).mean()).backward()
        return sp, cut

    res["kernel_forward_backward"] = timeit(kernel_bwd, setup=split_fwd, repeat=repeat)

    def proj_bwd_setup():
        for t in leaves:
            t.grad = None
        return kernel_bwd(split_fwd())

    def proj_bwd(state):
        sp, cut = state
        torch.autograd.backward(
            [sp.means2d, sp.conics, sp.opacities, sp.colors], [c.grad for c in cut]
        )

    res["projection_backward"] = timeit(proj_bwd, setup=proj_bwd_setup, repeat=repeat)

    # -- the pure-torch tiled reference, same scene, same run
    with torch.no_grad():
        res["reference_tiled_forward"] = timeit(
            lambda: render_reference(
                scene, cam, features=features, rasterizer="tiled", dtype=torch.float32
            ),
            warmup=0,
            repeat=ref_repeat,
        )
    fwd_ms = res["forward_nograd"]["median_ms"]
    res["ratios"] = {
        "reference_tiled_over_forward": round(
            res["reference_tiled_forward"]["median_ms"] / fwd_ms, 1
        ),
        "projection_share_of_forward": round(
            res["projection_forward_nograd"]["median_ms"] / fwd_ms, 3
        ),
        "projection_share_of_backward": round(
            res["projection_backward"]["median_ms"] / res["backward"]["median_ms"], 3
        ),
    }
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 20k Gaussians, 128x128, 1 repeat"
    )
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--omp-spin", action="store_true", help="keep libgomp's default spin-waiting")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.quick:
        sizes, res_px, repeat, ref_repeat = [20_000], 128, 1, 1
    else:
        sizes, res_px, repeat, ref_repeat = [100_000, 500_000], SIZE, args.repeat, 1
    machine = machine_info()
    machine["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "unset (libgomp default)")
    cam = bench_camera(res_px)
    cases = []
    for n in sizes:
        scene = surface_scene(n)
        for n_feat in (0, 16):
            cases.append(bench_case(scene, cam, n_feat, repeat, ref_repeat))
    machine["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    emit(
        {
            "benchmark": "render_cpu",
            "machine": machine,
            "scene": "surface_scene(seed=0): ground, wall, 3 spheres, box, torus, cylinder; SH degree 3",
            "camera": {"width": cam.width, "height": cam.height, "fx": round(cam.fx, 2)},
            "timing": "ms over repeats after 1 warm-up run (reference: no warm-up)",
            "cases": cases,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
