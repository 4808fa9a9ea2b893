"""Insert an object into a scene: a bundled asset (mug, can, ball, book — `assets/objects/`) or
any object scene file, resting on a support at a free spot, or grown from text inside a box.

The support is found by a language query (--on "table" with --features), a bool mask
(--on-selection MASK.npy) or around a point (--at X,Y,Z: the free spot nearest it). Its top
plane is fitted, a spot whose footprint is clear of every other Gaussian is chosen, and the
object is dropped so it rests on the plane (metric: the asset's size is kept, times --scale).
Writes OUT (the input is never touched) and, with --features, the updated feature field next to
it (OUT's stem + .features.safetensors) so `scenelab query` finds the new object by its name.

Text-to-3D: --text "a red apple" --box cx,cy,cz,sx,sy,sz --model DIFFUSERS_MODEL_OR_DIR
[--steps N] [--init ellipsoid|box|ASSET] [--no-densify] [--method sds|vsd] [--no-support] grows
an object in the box with score distillation (slow on a CPU) from a shape prior, densifying as
it goes, and rests it on the support under the box.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

HELP = "insert an object (asset on a support, or text-to-3D in a box); writes a new scene"

FEATURE_SUFFIX = ".features.safetensors"


def _floats(n: int):
    def parse(text: str) -> list[float]:
        try:
            values = [float(x) for x in text.replace(" ", "").split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {n} comma-separated numbers") from None
        if len(values) != n or not all(math.isfinite(v) for v in values):
            raise argparse.ArgumentTypeError(f"expected {n} comma-separated numbers, got {text!r}")
        return values

    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scene", type=Path, help="scene to insert into (never modified)")
    what = p.add_argument_group("what to insert")
    what.add_argument(
        "--asset", default=None, help="bundled object name (mug, can, ball, book) or a scene file"
    )
    what.add_argument("--name", default=None, help="label name of the inserted object")
    what.add_argument("--text", default=None, help="text-to-3D prompt (with --box and --model)")
    what.add_argument(
        "--box", type=_floats(6), default=None, help="text-to-3D box: cx,cy,cz,sx,sy,sz"
    )
    what.add_argument("--model", default=None, help="diffusers model id or folder (text-to-3D)")
    what.add_argument("--steps", type=int, default=300, help="text-to-3D optimisation steps")
    what.add_argument(
        "--init",
        default="ellipsoid",
        help="text-to-3D start shape fitted to the box: 'ellipsoid' (flat splats on the "
        "inscribed ellipsoid), 'box' (a uniform cloud) or an asset (bundled name or "
        "object scene file) whose shape is scaled into the box",
    )
    what.add_argument(
        "--no-densify",
        action="store_true",
        help="text-to-3D: keep the initial Gaussian count (no clone/split/prune while optimising)",
    )
    what.add_argument(
        "--method",
        choices=("sds", "vsd"),
        default=None,
        help="text-to-3D score distillation: sds, or vsd (ProlificDreamer, trains a LoRA of the "
        "UNet; slower); default vsd on CUDA when the model supports it, else sds",
    )
    what.add_argument(
        "--no-support",
        action="store_true",
        help="text-to-3D: leave the object where it grew instead of resting it on the support "
        "under the box",
    )
    where = p.add_argument_group("where")
    where.add_argument("--on", default=None, help="support by language query (needs --features)")
    where.add_argument("--on-selection", type=Path, default=None, help="support: bool [N] .npy")
    where.add_argument("--at", type=_floats(3), default=None, help="X,Y,Z: the spot nearest it")
    where.add_argument("--yaw", type=float, default=0.0, help="rotation about up, degrees")
    where.add_argument("--scale", type=float, default=1.0, help="uniform scale of the asset")
    where.add_argument("--seed", type=int, default=0, help="seed of the spot search / text-to-3D")
    p.add_argument("--features", type=Path, default=None, help="feature field of SCENE")
    p.add_argument("--out", type=Path, required=True, help="output scene (.ply)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def resolve_asset(text: str) -> Path:
    """A bundled object's name or a scene file path -> the file."""
    from assets import OBJECTS_DIR
    from editing.insertion import AssetNotFoundError

    path = Path(text).expanduser()
    if path.is_file():
        return path
    bundled = OBJECTS_DIR / f"{text}.ply"
    if bundled.is_file():
        return bundled
    names = sorted(q.stem for q in OBJECTS_DIR.glob("*.ply"))
    raise AssetNotFoundError(
        f"no asset {text!r}: not a file, and not a bundled object ({', '.join(names)})"
    )


def features_path(out: Path) -> Path:
    return out.with_name(out.name.split(".")[0] + FEATURE_SUFFIX)


def run(args: argparse.Namespace) -> int:

    import editing
    from fields import load_scene, save_scene
    from fields.features import TextQuery, build_text_encoder

    from ._features import load_field_for

    if (args.asset is None) == (args.text is None):
        raise ValueError("give exactly one of --asset NAME|PATH or --text PROMPT")
    if args.out.resolve() == args.scene.resolve():
        raise ValueError("--out must differ from the input scene (the input is never modified)")
    feat_out = features_path(args.out) if args.features is not None else None
    for path in (args.out, feat_out):
        if path is not None and path.exists() and not args.overwrite:
            raise FileExistsError(f"{path} exists (pass --overwrite to replace it)")
    if not args.scene.is_file():
        raise FileNotFoundError(f"scene {args.scene} does not exist")
    scene = load_scene(args.scene)
    field = encode = None
    if args.features is not None:
        field = load_field_for(args.features, args.scene, scene, "insert")
        scene = field.attach(scene)
        space = editing.semantics.text_space(field)
        try:
            encode = build_text_encoder(space, field.teachers)
        except KeyError as e:
            raise ValueError(e.args[0]) from None

    if args.text is not None:
        new_scene, mask, name, report = _text_to_3d(args, scene)
    else:
        obj = editing.load_asset(resolve_asset(args.asset))
        support, near = _support(args, scene, field, encode)
        placement = editing.place_object(
            scene,
            obj,
            support,
            name=args.name,
            at=near,
            yaw=math.radians(args.yaw),
            scale=args.scale,
            seed=args.seed,
        )
        new_scene, mask, name = placement.scene, placement.mask, placement.name
        pos = ", ".join(f"{x:.4f}" for x in placement.spot)
        report = (
            f"placed {name!r} ({int(mask.sum()):,} Gaussians, label {placement.label}) at "
            f"({pos}), gap {placement.gap * 1000:.2f} mm above the support plane"
        )

    new_field = None
    if field is not None:
        new_field = editing.semantics.update_field(field, new_scene, mask, name=name, encode=encode)
        new_scene = new_scene.with_extras(feature=None)  # features live next to the scene
    save_scene(new_scene, args.out, overwrite=args.overwrite)
    print(report)
    print(f"{len(new_scene):,} Gaussians -> {args.out}")
    if new_field is not None and feat_out is not None:
        from fields.features import scene_hash

        new_field.scene_hash = scene_hash(args.out)
        new_field.save(feat_out, overwrite=args.overwrite)
        found = TextQuery(new_field, encode).query(name).mask
        iou = int((found & mask).sum()) / max(1, int((found | mask).sum()))
        print(f"features -> {feat_out} (query {name!r} finds the object: IoU {iou:.2f})")
    return 0


def _support(args, scene, field, encode):
    """(support mask [N] bool or None, near point [3] or None) from --on / --on-selection /
    --at (None: the Gaussians around --at)."""
    import numpy as np
    import torch

    from fields.features import TextQuery

    from ._features import require_match

    given = [x for x in (args.on, args.on_selection) if x is not None]
    if len(given) > 1:
        raise ValueError("give one of --on TEXT and --on-selection MASK.npy")
    near = None if args.at is None else np.asarray(args.at, dtype=np.float64)
    if args.on is not None:
        if field is None:
            raise ValueError("--on needs --features (a feature field of the scene)")
        tq = TextQuery(field, encode, features=scene.extras["feature"])
        mask = require_match(tq.query(args.on), args.on).cpu()
        return mask, near
    if args.on_selection is not None:
        mask = torch.from_numpy(np.load(args.on_selection, allow_pickle=False))
        if mask.dtype != torch.bool or mask.shape != (len(scene),):
            raise ValueError(
                f"{args.on_selection}: expected a bool mask of shape ({len(scene)},), got "
                f"{mask.dtype} {tuple(mask.shape)}"
            )
        return mask, near
    if near is None:
        raise ValueError(
            "say where: --on TEXT (with --features), --on-selection MASK.npy or --at X,Y,Z"
        )
    return None, near  # place_object takes the Gaussians around --at as the support


def _text_to_3d(args, scene):
    import numpy as np

    import editing

    if args.box is None or args.model is None:
        raise ValueError("--text needs --box cx,cy,cz,sx,sy,sz and --model")
    try:
        from editing.score_distillation import load_distiller
    except ImportError as e:
        raise ValueError(f"text-to-3D needs editing.score_distillation ({e})") from None
    init = args.init
    if init not in ("ellipsoid", "box"):
        init = str(resolve_asset(init))  # before the (slow) model load: a typo fails fast
    distiller = load_distiller(args.model)
    box = (np.asarray(args.box[:3]), np.asarray(args.box[3:]))
    config = editing.TextTo3DConfig(
        steps=args.steps,
        seed=args.seed,
        init=init,
        densify=not args.no_densify,
        method=args.method,
        on_support=not args.no_support,
    )

    def on_step(step: int, total: int, loss: float) -> None:
        if step == total or step % max(1, total // 20) == 0:
            print(f"text-to-3D [{step}/{total}] loss {loss:.4f}", file=sys.stderr)

    new_scene, mask = editing.text_to_3d(
        scene, box, distiller, args.text, config, name=args.name, on_step=on_step
    )
    name = args.name or args.text
    record = new_scene.meta["inserted"][-1]
    report = (
        f"grew {name!r} ({int(mask.sum()):,} Gaussians, {record['method']}, init "
        f"{args.init}) in the box at {args.box[:3]}: {record['support_note']}"
    )
    return new_scene, mask, name, report
