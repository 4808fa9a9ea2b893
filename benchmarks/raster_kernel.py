"""Micro-benchmark of the CPU tile rasterizer kernel (`rasterize_cpu`) on screen-space inputs.

Synthetic splats shaped like a scene seen from a camera: most radii 1-20 px, a few large ones,
anisotropic, opacities ~U(0.1, 1), a spread of depths. Prints one JSON line per case with the
minimum over repeats (other processes may share the cores) of forward and backward wall time,
and of the process CPU time (all threads), which other processes disturb less.

    python benchmarks/raster_kernel.py [--n 100000 500000] [--channels 4 20] [--size 512]
                                       [--threads 2] [--omp-spin]

As benchmarks/render.py does, OMP_WAIT_POLICY defaults to PASSIVE here (set before torch loads
libgomp, which the extension shares): spin-waiting workers steal time from busy shared cores.
"""

from __future__ import annotations

import os
import sys

if "--omp-spin" not in sys.argv:  # must happen before torch (libgomp) is loaded
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import math
import platform
import time

import torch

from fields.rendering._cpu import _ext, rasterize_cpu

FIRST_CUT_MS = {100_000: (163.0, 226.0), 500_000: (559.0, 697.0)}  # ARCHITECTURE.md, 2 threads


def screen_splats(n: int, size: int, channels: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 2, generator=g) * (size * 1.1) - size * 0.05
    # Log-normal footprint, median sigma ~2 px (radius ~6 px); 1% large splats.
    sigma = torch.exp(torch.randn(n, generator=g) * 0.6 + math.log(2.0))
    large = torch.rand(n, generator=g) < 0.01
    sigma = torch.where(large, sigma * 8, sigma)
    aspect = 1 + 3 * torch.rand(n, generator=g)
    s = torch.stack([sigma, sigma / aspect], -1)
    th = torch.rand(n, generator=g) * math.pi
    cos, sin = torch.cos(th), torch.sin(th)
    rot = torch.stack([cos, -sin, sin, cos], -1).reshape(n, 2, 2)
    cov = rot @ torch.diag_embed(s * s) @ rot.transpose(1, 2) + 0.3 * torch.eye(2)
    det = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] ** 2
    conics = torch.stack([cov[:, 1, 1], -cov[:, 0, 1], cov[:, 0, 0]], -1) / det[:, None]
    mid = 0.5 * (cov[:, 0, 0] + cov[:, 1, 1])
    lam = mid + torch.sqrt((mid * mid - det).clamp_min(0.1))
    r = torch.ceil(3 * lam.sqrt()).int()
    radii = torch.stack([r, r], -1)
    opacities = torch.rand(n, generator=g) * 0.9 + 0.1
    colors = torch.rand(n, channels, generator=g)
    depths = torch.rand(n, generator=g) * 10 + 0.5
    return means, conics, opacities, colors, depths, radii


def bench(n: int, size: int, channels: int, repeats: int) -> dict:
    means, conics, opacities, colors, depths, radii = screen_splats(n, size, channels)
    params = [t.requires_grad_(True) for t in (means, conics, opacities, colors)]
    fwd, bwd, fwd_cpu, bwd_cpu = [], [], [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out, alpha = rasterize_cpu(*params, depths, radii, size, size)
        t1, c1 = time.perf_counter(), time.process_time()
        (out.sum() + alpha.sum()).backward()
        t2, c2 = time.perf_counter(), time.process_time()
        fwd.append((t1 - t0) * 1e3)
        bwd.append((t2 - t1) * 1e3)
        fwd_cpu.append((c1 - c0) * 1e3)
        bwd_cpu.append((c2 - c1) * 1e3)
        for p in params:
            p.grad = None
    pairs = int((radii > 0).all(-1).sum())
    result = {
        "bench": "raster_kernel",
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "simd": _ext.simd(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "n": n,
        "visible": pairs,
        "resolution": [size, size],
        "channels": channels,
        "fwd_ms": round(min(fwd), 1),
        "bwd_ms": round(min(bwd), 1),
        "fwd_ms_median": round(sorted(fwd)[len(fwd) // 2], 1),
        "bwd_ms_median": round(sorted(bwd)[len(bwd) // 2], 1),
        "fwd_cpu_ms": round(min(fwd_cpu), 1),
        "bwd_cpu_ms": round(min(bwd_cpu), 1),
        "mean_alpha": round(float(alpha.detach().mean()), 3),
    }
    if n in FIRST_CUT_MS:
        f0, b0 = FIRST_CUT_MS[n]
        result["fwd_vs_first_cut"] = round(min(fwd) / f0, 3)
        result["bwd_vs_first_cut"] = round(min(bwd) / b0, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 500_000])
    parser.add_argument("--channels", type=int, nargs="+", default=[4, 20])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--omp-spin", action="store_true", help="keep libgomp's spin-waiting")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for n in args.n:
        for c in args.channels:
            print(json.dumps(bench(n, args.size, c, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
