"""Open a scene in the browser: a Gaussian scene's splats render client-side (no GPU needed on
the server), with selection, reversible edits, save/export and overlays; a NeRF (`SCENE.nerf`)
renders on the server and streams into the page (low resolution while the camera moves, refined
when it rests), with depth and relevancy overlays and "Convert to Gaussians". Serves on
127.0.0.1 only unless --host says otherwise; no public share link unless --share. Paths typed in
the GUI are confined to the current working directory.

A project file (`SCENE.scenelab`, written by the File panel's "Save project" or `scenelab
save-project`) reopens the whole session: history (undo works), selections, named selections,
feature field, grasps, camera bookmarks, up axis and display settings. The viewer autosaves the
session to a recovery folder ($SCENELAB_RECOVERY_DIR, default ~/.local/state/scenelab/recovery;
never next to your files) every few edits or seconds; after a crash the next `scenelab view` of
the same file offers to restore it (--recover)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._dataset_args import add_allow_outside

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
        "scene",
        type=Path,
        help="scene file (.ply, compressed .ply, .splat, .spz, .sog, .ksplat), a project "
        "(.scenelab) or a NeRF (.nerf)",
    )
    p.add_argument(
        "--no-preview",
        action="store_true",
        help="show nothing until the whole scene is loaded (by default a .ply of more than "
        "24,000 Gaussians shows a strided sample of itself while it loads)",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="dataset (COLMAP, transforms.json, Blender) for cameras, distilling features and "
        "the Train folder (train a scene from its photos while watching it)",
    )
    p.add_argument(
        "--up",
        default=None,
        metavar="SPEC",
        help="world up: +x, -x, +y, -y, +z, -z or x,y,z; write --up=-y for a negative one "
        "(default: the scene's, else its cameras' mean up, else estimated from its floor or "
        "table, else -y); the View panel changes it and can level the scene",
    )
    add_allow_outside(p)
    add_server_arguments(p)
    add_feature_arguments(p)
    add_autosave_arguments(p)


def add_autosave_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--autosave-edits",
        type=int,
        default=5,
        metavar="N",
        help="autosave the session to the recovery folder after this many unsaved edits",
    )
    p.add_argument(
        "--autosave-seconds",
        type=float,
        default=30.0,
        metavar="S",
        help="autosave this many seconds after an unsaved edit, however few",
    )
    p.add_argument(
        "--no-autosave",
        action="store_true",
        help="do not autosave (a crash then loses every unsaved edit)",
    )
    p.add_argument(
        "--recover",
        choices=("ask", "yes", "no"),
        default="ask",
        help="unsaved work a killed session left for this file: ask in the browser, restore it "
        "at start (yes), or discard it (no)",
    )


def serve(
    args: argparse.Namespace,
    load: Callable[[], dict],
    *,
    t0: float | None = None,
    setup: Callable[[Any], None] | None = None,
    preview: Callable[[Any], None] | None = None,
) -> int:
    """Start the server first (the browser can load the page meanwhile), then `preview(started)`
    (a first look at a large scene), then `load()` the scene (a dict of `ViewerApp` keyword
    arguments: scene, cameras, source, title), then `setup(app)` (extra panels), then block."""
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
        if preview is not None:
            preview(started)
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
    if args.autosave_edits < 1:
        raise ValueError(f"--autosave-edits must be at least 1, got {args.autosave_edits}")
    if not args.autosave_seconds > 0:
        raise ValueError(f"--autosave-seconds must be positive, got {args.autosave_seconds}")
    up = getattr(args, "up", None)
    if up is not None:
        from fields.conventions import parse_up

        try:
            parse_up(up)  # a bad --up fails before the scene loads
        except ValueError as e:
            raise ValueError(f"--up: {e}") from None

    suffix = args.scene.name.lower()
    nerf = suffix.endswith(".nerf")  # `fields.nerf.is_nerf_path`, without torch yet
    project_file = suffix.endswith(".scenelab")  # `editing.project.PROJECT_SUFFIX`
    if nerf and args.features is not None:
        raise ValueError(
            "--features is for Gaussian scenes: a NeRF carries its features in its feature "
            "branch (scenelab distill SCENE.nerf --data DATA)"
        )
    if project_file and args.features is not None:
        raise ValueError("--features: a project carries its own feature field")
    key = args.scene.resolve()  # what the recovery file is keyed by
    offer: list = []  # a recovery to ask about once the viewer is up
    restored: list = []

    def load() -> dict:
        from editing.project import discard_recovery, find_recovery, load_project, recovery_dir
        from fields import load_dataset, load_scene
        from fields.formats import clean_stale_temps

        for folder in (key.parent, recovery_dir()):  # temps a killed save left behind
            clean_stale_temps(folder)

        dataset = (
            load_dataset(args.data, allow_outside=args.allow_outside)
            if args.data is not None
            else None
        )
        kwargs: dict[str, Any] = {
            "cameras": dataset.cameras if dataset is not None else [],
            "dataset": dataset,
            "source": key,
            "up": up,
        }
        if nerf:
            from fields.nerf import load_nerf

            return {**kwargs, "scene": load_nerf(args.scene)}
        recovery = find_recovery(key)
        project = None
        if recovery is not None and args.recover == "yes":
            try:
                project = load_project(recovery.path)
            except ValueError as e:  # a damaged recovery file must not block the scene
                print(f"scenelab view: warning: cannot restore: {e}", file=sys.stderr)
            else:
                restored.append(recovery)
                print(
                    f"scenelab view: restored {recovery.edits} unsaved edit(s) from "
                    f"{_when(recovery.saved_at)} ({recovery.path})",
                    flush=True,
                )
        elif recovery is not None and args.recover == "no":
            discard_recovery(key)
            print("scenelab view: discarded the unsaved work of an earlier session", flush=True)
        elif recovery is not None:
            offer.append(recovery)
            print(
                f"scenelab view: unsaved work from {_when(recovery.saved_at)} "
                f"({recovery.edits} edits) found; the browser asks whether to restore it",
                flush=True,
            )
        if project is None and project_file:
            project = load_project(args.scene)
        if project is None:
            return {**kwargs, "scene": load_scene(args.scene)}
        if project.source:
            kwargs["source"] = Path(project.source)
        kwargs["title"] = args.scene.name
        return {
            **kwargs,
            "scene": project.history.current,
            "project": project,
            "project_path": key if project_file else None,
        }

    def first_look(started) -> None:
        """A strided sample of a large .ply on screen while the whole file loads."""
        if nerf or project_file or args.max_splats == 0 or args.no_preview:
            return
        from app.viewer import show_preview

        try:
            show_preview(started, args.scene, up=up)
        except Exception as e:  # a preview must never stop the real load (which reports)
            print(f"scenelab view: no preview ({type(e).__name__}: {e})", file=sys.stderr)

    def setup(viewer) -> None:
        if viewer.dataset is not None:  # --data: the Train folder trains on it
            from app.viewer import TrainPanel

            viewer.train_panel = TrainPanel(viewer, data=args.data, dataset=viewer.dataset)
        if viewer.nerf is not None:
            return
        if restored:
            viewer.unsaved_edits = max(1, restored[0].edits)
        if offer:  # first: autosave waits for the answer (it would replace what is offered)
            viewer.offer_recovery(offer[0])
        if not args.no_autosave:
            viewer.start_autosave(
                key, every_edits=args.autosave_edits, every_seconds=args.autosave_seconds
            )

    return serve(args, load, t0=t0, setup=setup, preview=first_look)


def _when(timestamp: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")
