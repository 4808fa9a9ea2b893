"""Open a scene in the browser: a Gaussian scene's splats render client-side (no GPU needed on
the server), with selection, reversible edits, save/export and overlays; a NeRF (`SCENE.nerf`)
renders on the server and streams into the page (low resolution while the camera moves, refined
when it rests), with depth and relevancy overlays and "Convert to Gaussians". Serves on
127.0.0.1 only unless --host says otherwise; no public share link unless --share. Paths typed in
the GUI are confined to the current working directory."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HELP = "open a scene in the browser viewer (select, edit, save)"

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by `view` and `demo`."""
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (0.0.0.0 exposes the viewer on the network)",
    )
    p.add_argument(
        "--port", type=int, default=8080, help="port; the next free one is used if taken"
    )
    p.add_argument(
        "--share", action="store_true", help="also request a public share URL from viser's service"
    )
    p.add_argument(
        "--overlay-size",
        type=int,
        default=192,
        help="long side of server-rendered overlays (128-256)",
    )
    p.add_argument(
        "--nerf-size",
        type=int,
        default=256,
        help="a NeRF's frames: long side in pixels once the camera rests (32-2048)",
    )
    p.add_argument(
        "--nerf-preview",
        type=int,
        default=64,
        help="a NeRF's frames: long side in pixels while the camera moves (16-256; lowered "
        "automatically when they render slowly)",
    )
    p.add_argument(
        "--no-cameras", action="store_true", help="do not draw the dataset's camera frustums"
    )
    p.add_argument(
        "--max-splats",
        type=_splat_count,
        default=None,
        metavar="N",
        help="splats sent to the browser: 'auto' (a widened sample until the browser proves it "
        "renders fast, then all), 0 for all, or at most N",
    )
    p.add_argument(
        "--edit-model",
        default=None,
        help="diffusers model for text edits and text-to-3D: a hub id or a folder saved with "
        "save_pretrained, e.g. one from `scenelab make-tiny-model` (default: Stable Diffusion "
        "1.5, whose weights must be in the HF cache)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=default_threads(),
        help="torch threads for edits and overlays (half the cores: the browser needs the rest, "
        "and oversubscribed threads spin instead of working)",
    )


def add_feature_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the feature panels (language query, click segmentation), shared by `view` and
    `demo`."""
    p.add_argument(
        "--features", type=Path, default=None, help="feature field (.safetensors) to load"
    )
    p.add_argument(
        "--sam-checkpoint",
        type=Path,
        default=None,
        help="SAM weights (official .pth) for click segmentation and the SAM teacher",
    )
    p.add_argument(
        "--sam-model",
        default=None,
        help="SAM architecture: vit_h, vit_l or vit_b (default: from the field or the file name)",
    )
    p.add_argument("--clip-model", default=None, help="open_clip model of the CLIP text encoder")
    p.add_argument(
        "--clip-pretrained", default=None, help="open_clip pretrained tag or local weights file"
    )


def feature_options(args: argparse.Namespace):
    """The `FeatureOptions` the feature-related arguments ask for."""
    from app.viewer._panel_features import FeatureOptions

    if args.features is not None and not args.features.is_file():
        raise FileNotFoundError(f"no feature field at {args.features}")
    options = FeatureOptions(
        features=args.features, sam_checkpoint=args.sam_checkpoint, sam_model=args.sam_model
    )
    options.lift_on_open = bool(getattr(args, "lift_on_open", False))
    if args.clip_model:
        options.clip_model = args.clip_model
    if args.clip_pretrained:
        options.clip_pretrained = args.clip_pretrained
    return options


def _splat_count(text: str) -> int | None:
    if text.strip().lower() == "auto":
        return None
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError("must be 'auto', 0 (all) or a positive count")
    return n


def default_threads() -> int:
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "scene", type=Path, help="scene file (.ply, compressed .ply, .splat, .spz, or a .nerf)"
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="dataset (COLMAP, transforms.json, Blender) for cameras, distilling features and "
        "the Train folder (train a scene from its photos while watching it)",
    )
    add_server_arguments(p)
    add_feature_arguments(p)


def serve(
    args: argparse.Namespace,
    load: Callable[[], dict],
    *,
    t0: float | None = None,
    setup: Callable[[Any], None] | None = None,
) -> int:
    """Start the server first (the browser can load the page meanwhile), then `load()` the scene
    (a dict of `ViewerApp` keyword arguments: scene, cameras, source, title), then `setup(app)`
    (extra panels), then block."""
    from app.viewer import ViewerConfig, start_server

    t0 = time.perf_counter() if t0 is None else t0
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    nerf_size = getattr(args, "nerf_size", 256)
    nerf_preview = getattr(args, "nerf_preview", 64)
    if not 32 <= nerf_size <= 2048:
        raise ValueError(f"--nerf-size must be in 32..2048 pixels, got {nerf_size}")
    if not 16 <= nerf_preview <= 256:
        raise ValueError(f"--nerf-preview must be in 16..256 pixels, got {nerf_preview}")
    config = ViewerConfig(
        host=args.host,
        port=args.port,
        share=args.share,
        overlay_size=args.overlay_size,
        show_cameras=not args.no_cameras,
        max_splats=args.max_splats,
        edit_model=args.edit_model,
        nerf_size=nerf_size,
        nerf_preview=min(nerf_preview, nerf_size),
    )
    started = start_server(config)
    if started.port_was_taken:
        print(
            f"scenelab: port {started.requested_port} on {args.host} is already in use; "
            f"serving on port {started.port} instead",
            file=sys.stderr,
        )
    print(f"scenelab viewer: {started.url}  (loading the scene…)", flush=True)
    if started.share_url:
        print(f"scenelab viewer: public share link {started.share_url}", flush=True)
    if args.host not in LOCAL_HOSTS:
        print(
            f"scenelab: warning: listening on {args.host}: anyone who can reach this port can "
            f"view, edit and save files under {Path.cwd()}",
            file=sys.stderr,
        )
    try:
        import torch

        from app.viewer import ViewerApp

        torch.set_num_threads(max(1, args.threads))
        kwargs = load()
        if hasattr(args, "features"):
            kwargs["features"] = feature_options(args)
        app = ViewerApp(config=config, server=started, **kwargs)
        if setup is not None:
            setup(app)
    except BaseException:
        started.server.stop()
        raise
    scene = kwargs["scene"]
    what = (
        f"{len(scene):,} Gaussians"
        if app.nerf is None
        else f"a NeRF ({100 * scene.occupied_fraction():.1f} % of its grid occupied)"
    )
    print(
        f"scenelab viewer: {app.url}  —  {what}, ready in "
        f"{time.perf_counter() - t0:.1f} s; Ctrl+C to stop",
        flush=True,
    )
    app.wait()
    return 0


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    if not args.scene.is_file():
        raise FileNotFoundError(f"no scene file at {args.scene}")
    if args.data is not None and not args.data.exists():
        raise FileNotFoundError(f"no dataset at {args.data}")

    nerf = args.scene.suffix.lower() == ".nerf"  # `fields.nerf.is_nerf_path`, without torch yet
    if nerf and args.features is not None:
        raise ValueError(
            "--features is for Gaussian scenes: a NeRF carries its features in its feature "
            "branch (scenelab distill SCENE.nerf --data DATA)"
        )

    def load() -> dict:
        from fields import load_dataset, load_scene

        if nerf:
            from fields.nerf import load_nerf

            scene = load_nerf(args.scene)
        else:
            scene = load_scene(args.scene)
        dataset = load_dataset(args.data) if args.data is not None else None
        return {
            "scene": scene,
            "cameras": dataset.cameras if dataset is not None else [],
            "dataset": dataset,
            "source": args.scene.resolve(),
        }

    def setup(viewer) -> None:
        if viewer.dataset is not None:  # --data: the Train folder trains on it
            from app.viewer import TrainPanel

            viewer.train_panel = TrainPanel(viewer, data=args.data, dataset=viewer.dataset)

    return serve(args, load, t0=t0, setup=setup)
