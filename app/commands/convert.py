"""Convert a scene between file formats and between scene kinds; the format follows each file's
extension.

Gaussians -> Gaussians: read .ply (INRIA or PlayCanvas compressed), .splat, .spz, .sog (bundled
SOG), meta.json (unbundled SOG) or .ksplat; write .ply (+ JSON sidecar), .compressed.ply
(PlayCanvas), .splat (degree-0 colour only), .spz (Niantic, `--spz-version`), .sog or meta.json
(SuperSplat's SOG, `--sog-iterations`). `--sh-degree K` lowers (or pads) the SH. The web formats
are quantised; the files they write read back in PlayCanvas's splat-transform and SuperSplat.

NeRF (.nerf) -> Gaussians (.ply/.splat) and Gaussians -> NeRF: progressive volume distillation
(`fields.nerf.nerf_to_gaussians` / `gaussians_to_nerf`): the source renders teacher views around
its recorded cameras and the student trains on them, within --time-budget. A NeRF with a feature
branch gives Gaussians whose feature field is written next to OUT (`<stem>.features.safetensors`);
a Gaussian scene with a feature field next to it (or --features) gives a NeRF with a feature
branch, so the converted scene still answers language queries.

Nothing is overwritten unasked (--overwrite), and the input is never touched."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HELP = (
    "convert a scene between formats (.ply, .compressed.ply, .splat, .spz, .sog, meta.json, "
    ".ksplat) and between NeRF and Gaussians"
)

# Names a file may end with (meta.json is a whole file name: unbundled SOG).
READABLE = (".ply", ".compressed.ply", ".splat", ".spz", ".sog", "meta.json", ".ksplat", ".nerf")
WRITABLE = (".ply", ".compressed.ply", ".splat", ".spz", ".sog", "meta.json", ".nerf")
# Options for one output format only.
FORMAT_OPTIONS = {"spz_version": (".spz",), "sog_iterations": (".sog", "meta.json")}
FEATURE_SUFFIX = ".features.safetensors"
# Options that only some conversions use (argparse leaves them unset when not given, so one
# given where it does nothing is an error instead of being silently ignored).
DISTIL_OPTIONS = ("time_budget", "steps", "views", "resolution", "seed", "device")
ONLY = {
    "gaussians->gaussians": {"sh_degree", *FORMAT_OPTIONS},
    "nerf->gaussians": {*DISTIL_OPTIONS, "max_gaussians", "sh_degree", *FORMAT_OPTIONS},
    "gaussians->nerf": {*DISTIL_OPTIONS, "nerf_preset", "features", "no_features"},
}
OPTIONAL = (
    "sh_degree",
    "max_gaussians",
    "nerf_preset",
    "features",
    "no_features",
    *FORMAT_OPTIONS,
    *DISTIL_OPTIONS,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS
    p.add_argument("input", type=Path, metavar="IN", help=f"scene to read ({', '.join(READABLE)})")
    p.add_argument(
        "output", type=Path, metavar="OUT", help=f"file to write ({', '.join(WRITABLE)})"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument(
        "--sh-degree",
        type=int,
        choices=[0, 1, 2, 3],
        default=S,
        help="SH degree of Gaussian output (default: the input's; NeRF -> Gaussians: 3)",
    )
    p.add_argument(
        "--spz-version",
        type=int,
        choices=[2, 3, 4],
        default=S,
        help="SPZ output: format version (default 3, read by every SPZ viewer; 4 is the zstd "
        "container splat-transform writes by default)",
    )
    p.add_argument(
        "--sog-iterations",
        type=int,
        default=S,
        metavar="N",
        help="SOG output: k-means rounds of the SH palette (more is closer to the source and "
        "slower; default 10)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=S,
        metavar="MIN",
        help="NeRF <-> Gaussians: minutes for the whole conversion, teacher renders included "
        "(default 5; with only --steps: no time limit)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=S,
        help="NeRF <-> Gaussians: most optimisation steps of the student, and of the fit of "
        "its feature branch (default 30000; 2000 for the feature branch)",
    )
    p.add_argument(
        "--views",
        type=int,
        default=S,
        help="NeRF <-> Gaussians: teacher views rendered for the student (default 150)",
    )
    p.add_argument(
        "--resolution",
        type=int,
        default=S,
        metavar="PX",
        help="NeRF <-> Gaussians: longer side of the teacher views in pixels (default 200)",
    )
    p.add_argument(
        "--max-gaussians",
        type=int,
        default=S,
        help="NeRF -> Gaussians: cap on the count (default 300000)",
    )
    p.add_argument(
        "--nerf-preset",
        choices=["base", "small"],
        default=S,
        help="Gaussians -> NeRF: NeRF size, as `scenelab train --nerf-preset` (default base)",
    )
    p.add_argument(
        "--features",
        type=Path,
        default=S,
        help="Gaussians -> NeRF: IN's feature field (default: IN's stem + "
        ".features.safetensors when it exists)",
    )
    p.add_argument(
        "--no-features",
        action="store_true",
        default=S,
        help="Gaussians -> NeRF: leave the feature field out even when IN has one",
    )
    p.add_argument(
        "--seed", type=int, default=S, help="NeRF <-> Gaussians: teacher views, init (default 0)"
    )
    p.add_argument(
        "--device", default=S, help="NeRF <-> Gaussians: auto, cpu or cuda (default auto)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress line on stderr")


def _ending(path: Path, allowed: tuple[str, ...]) -> str | None:
    """Which of `allowed` names `path` (the longest match: `.compressed.ply` before `.ply`)."""
    name = path.name.lower()
    hits = [a for a in allowed if (name == a if a == "meta.json" else name.endswith(a))]
    return max(hits, key=len) if hits else None


def _kind(path: Path, allowed: tuple[str, ...], role: str) -> str:
    ending = _ending(path, allowed)
    if ending is None:
        ext = path.suffix.lower()
        raise ValueError(
            f"{role} {path}: unknown extension {ext or '(none)'!r}; use one of {', '.join(allowed)}"
        )
    return "nerf" if ending == ".nerf" else "gaussians"


def _export_options(args: argparse.Namespace, dst: Path) -> Any:
    """`fields.formats.ExportOptions` from the options given; an option for another output
    format than OUT's is an error (it would do nothing)."""
    from fields.formats import ExportOptions

    changes: dict[str, Any] = {}
    for opt, endings in FORMAT_OPTIONS.items():
        if not hasattr(args, opt):
            continue
        if _ending(dst, endings) is None:
            raise ValueError(
                f"--{opt.replace('_', '-')}: only for {' / '.join(endings)} output, not {dst.name}"
            )
        changes[opt] = getattr(args, opt)
    if changes.get("sog_iterations", 1) < 1:
        raise ValueError("--sog-iterations must be at least 1")
    return ExportOptions(**changes)


def features_path(scene: Path) -> Path:
    """Where a scene's feature field lives: its stem + .features.safetensors."""
    return scene.with_name(scene.name.split(".")[0] + FEATURE_SUFFIX)


class _Progress:
    """One progress line on stderr from `(fraction, message)` reports."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.last = 0.0
        self.shown = False

    def __call__(self, fraction: float, message: str) -> None:
        now = time.perf_counter()
        if self.quiet or (now - self.last < 0.5 and fraction < 1.0):
            return
        self.last = now
        self.shown = True
        sys.stderr.write(f"\rconvert {100 * fraction:5.1f}% | {message}\x1b[K")
        sys.stderr.flush()

    def end(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _convert_config(args: argparse.Namespace) -> Any:
    """`fields.nerf.ConvertConfig` from the options given (its defaults for the rest)."""
    import dataclasses

    ConvertConfig = _nerf_api("ConvertConfig")
    cfg = ConvertConfig()
    changes: dict[str, Any] = {}
    if hasattr(args, "time_budget"):
        changes["time_budget_min"] = args.time_budget
    elif hasattr(args, "steps"):
        changes["time_budget_min"] = None  # steps alone decide, as in `scenelab train`
    for opt, name in (
        ("steps", "steps"),
        ("views", "views"),
        ("resolution", "resolution"),
        ("max_gaussians", "max_gaussians"),
        ("sh_degree", "sh_degree"),
        ("seed", "seed"),
    ):
        if hasattr(args, opt):
            changes[name] = getattr(args, opt)
    if hasattr(args, "steps"):
        changes["feature_steps"] = min(cfg.feature_steps, args.steps)
    if hasattr(args, "nerf_preset"):
        from .train import nerf_preset

        changes["nerf_model"] = nerf_preset(args.nerf_preset)["model"]
    return dataclasses.replace(cfg, **changes)


def _nerf_api(name: str) -> Any:
    """A name from `fields.nerf`'s conversion API, or a clear error where it is missing."""
    import fields.nerf as nerf

    try:
        return getattr(nerf, name)
    except AttributeError:
        raise ValueError(
            f"this scenelab has no fields.nerf.{name}: NeRF <-> Gaussian conversion is not "
            "available"
        ) from None


def run(args: argparse.Namespace) -> int:
    src: Path = args.input
    dst: Path = args.output
    src_kind = _kind(src, READABLE, "IN")
    dst_kind = _kind(dst, WRITABLE, "OUT")
    pair = f"{src_kind}->{dst_kind}"
    if pair == "nerf->nerf":
        raise ValueError("both files are NeRFs: there is nothing to convert (copy the file)")
    given = [o for o in OPTIONAL if hasattr(args, o)]
    wrong = [o for o in given if o not in ONLY[pair]]
    if wrong:
        opts = ", ".join("--" + o.replace("_", "-") for o in wrong)
        raise ValueError(
            f"{opts}: not used when converting {src_kind} to {dst_kind} ({src.name} -> {dst.name})"
        )
    if not src.exists():
        raise FileNotFoundError(f"no such scene: {src}")
    if not src.is_file():  # a folder, FIFO or device: never read (a FIFO would block)
        raise ValueError(f"IN {src} is not a regular file")
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"IN and OUT are the same file ({src}); write to another path")
    if dst.is_dir():
        raise ValueError(f"OUT {dst} is a folder; name the file to write")
    if dst.exists() and not args.overwrite:
        raise FileExistsError(f"{dst} exists (pass --overwrite to replace it)")
    if not dst.parent.is_dir():
        raise FileNotFoundError(f"the folder for OUT does not exist: {dst.parent}")
    options = _export_options(args, dst) if dst_kind == "gaussians" else None
    t0 = time.perf_counter()
    if pair == "gaussians->gaussians":
        facts = _gaussians_to_gaussians(args, src, dst, options)
    else:
        bar = _Progress(args.quiet)
        try:
            if pair == "nerf->gaussians":
                facts = _nerf_to_gaussians(args, src, dst, bar, options)
            else:
                facts = _gaussians_to_nerf(args, src, dst, bar)
        except KeyboardInterrupt:
            bar.end()
            print(f"scenelab convert: interrupted; {dst} not written", file=sys.stderr)
            return 130
        bar.end()
    summary = {
        "in": str(src),
        "out": str(dst),
        "from": src_kind,
        "to": dst_kind,
        "seconds": round(time.perf_counter() - t0, 1),
        **facts,
    }
    print(json.dumps(summary))
    return 0


def _gaussians_to_gaussians(
    args: argparse.Namespace, src: Path, dst: Path, options: Any
) -> dict[str, Any]:
    from fields import load_scene, save_scene

    scene = load_scene(src)
    if hasattr(args, "sh_degree") and args.sh_degree != scene.sh_degree:
        scene = scene.with_sh_degree(args.sh_degree)
    save_scene(scene, dst, overwrite=args.overwrite, options=options)
    if features_path(src).is_file() and not args.quiet:
        print(
            f"scenelab convert: note: the feature field next to {src.name} is not carried over "
            "(the format conversion changes the Gaussians it is bound to)",
            file=sys.stderr,
        )
    return {"gaussians": len(scene)}


def _device(args: argparse.Namespace) -> Any:
    from fields.training import resolve_device

    return resolve_device(getattr(args, "device", "auto"))


def _nerf_to_gaussians(
    args: argparse.Namespace, src: Path, dst: Path, bar: _Progress, options: Any
) -> dict[str, Any]:
    from fields import save_scene
    from fields.nerf import load_nerf

    convert = _nerf_api("nerf_to_gaussians")
    config = _convert_config(args)
    device = _device(args)
    nerf = load_nerf(src)
    feat_out = features_path(dst) if nerf.has_features else None
    if feat_out is not None and feat_out.exists() and not args.overwrite:
        raise FileExistsError(
            f"{feat_out} exists (the converted feature field goes there; pass --overwrite)"
        )
    gaussians = convert(nerf.to(device), config, on_progress=bar, device=device)
    gaussians = gaussians.detach().to("cpu")
    facts: dict[str, Any] = {"gaussians": len(gaussians)}
    if feat_out is not None:
        field = _nerf_api("converted_feature_field")(gaussians, nerf.to("cpu"))
        if field is not None:
            gaussians = gaussians.with_extras(feature=None)  # features live next to the scene
            save_scene(gaussians, dst, overwrite=args.overwrite, options=options)
            field.save(feat_out, overwrite=args.overwrite)
            facts["features"] = str(feat_out)
            return facts
    save_scene(gaussians, dst, overwrite=args.overwrite, options=options)
    return facts


def _gaussians_to_nerf(
    args: argparse.Namespace, src: Path, dst: Path, bar: _Progress
) -> dict[str, Any]:
    from fields import load_scene
    from fields.nerf import save_nerf

    from ._features import load_field_for

    convert = _nerf_api("gaussians_to_nerf")
    config = _convert_config(args)
    device = _device(args)
    scene = load_scene(src)
    field = None
    if not getattr(args, "no_features", False):
        given = getattr(args, "features", None)
        path = given if given is not None else features_path(src)
        if given is not None or path.is_file():
            field = load_field_for(path, src, scene, "convert")
    nerf = convert(scene, config, feature_field=field, on_progress=bar, device=device)
    save_nerf(nerf.to("cpu"), dst, overwrite=args.overwrite)
    return {
        "occupied": round(float(nerf.occupied_fraction()), 4),
        "features": None if field is None else str(path),
    }
