"""Scene file formats: round trips, known values of shared fixtures, bad input, atomic writes."""

from __future__ import annotations

import gzip
import json
import math
import os
import struct
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from fields.formats import SceneFormatError, load_scene, save_scene
from fields.scene import SH_C0, GaussianScene, quat_to_rotmat

# Third-party files live in ../shared/data beside the repository (never copied into it).
SHARED_DATA = Path(
    os.environ.get("SCENELAB_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
FIXTURES = SHARED_DATA / "formats"
GUITAR = SHARED_DATA / "guitar.compressed.ply"


def shared(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"shared fixture {path} is not available")
    return path


def random_scene(n: int = 40, degree: int = 2, seed: int = 0, extras: bool = True) -> GaussianScene:
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    ex = {}
    if extras:
        ex = {
            "label": torch.randint(0, 5, (n,), generator=g, dtype=torch.int32),
            "feature": torch.randn(n, 8, generator=g),
            "selected": torch.rand(n, generator=g) > 0.5,
        }
    return GaussianScene(
        means=torch.randn(n, 3, generator=g),
        quats=torch.randn(n, 4, generator=g),
        scales=torch.randn(n, 3, generator=g) - 3,
        opacities=torch.randn(n, generator=g) * 2,
        sh=torch.randn(n, k, 3, generator=g) * 0.5,
        extras=ex,
        meta={"label_names": ["table", "mug", "bowl"], "units": "m", "up_axis": "-y"},
    )


def assert_same_scene(a: GaussianScene, b: GaussianScene) -> None:
    assert a.allclose(b)  # bit-exact values
    for k, v in a.extras.items():
        assert b.extras[k].dtype == v.dtype, k
        assert b.extras[k].shape == v.shape, k


# ------------------------------------------------------------------------- hand-made PLY files
def raw_ply(
    columns: dict[str, np.ndarray], fmt: str = "binary_little_endian", element: str = "vertex"
) -> bytes:
    """A PLY file written by hand (not by our writer): any format, any property dtypes."""
    names = {
        "f2": "half",
        "f4": "float",
        "f8": "double",
        "i4": "int",
        "u1": "uchar",
        "u4": "uint",
        "i2": "short",
    }
    n = len(next(iter(columns.values())))
    head = ["ply", f"format {fmt} 1.0", f"element {element} {n}"]
    head += [f"property {names[a.dtype.str[1:]]} {k}" for k, a in columns.items()]
    body: bytes
    if fmt == "ascii":
        rows = zip(*[a.tolist() for a in columns.values()], strict=True)
        body = "".join(" ".join(repr(v) for v in r) + "\n" for r in rows).encode()
    else:
        order = "<" if fmt == "binary_little_endian" else ">"
        table = np.empty(n, [(k, order + a.dtype.str[1:]) for k, a in columns.items()])
        for k, a in columns.items():
            table[k] = a
        body = table.tobytes()
    return ("\n".join([*head, "end_header"]) + "\n").encode() + body


def inria_columns(scene: GaussianScene, normals: bool = True) -> dict[str, np.ndarray]:
    n, k = len(scene), scene.sh.shape[1]
    cols = {c: scene.means[:, i].numpy() for i, c in enumerate("xyz")}
    if normals:
        cols.update({c: np.zeros(n, np.float32) for c in ("nx", "ny", "nz")})
    cols.update({f"f_dc_{i}": scene.sh[:, 0, i].numpy() for i in range(3)})
    rest = scene.sh[:, 1:, :].permute(0, 2, 1).reshape(n, 3 * (k - 1)).numpy()
    cols.update({f"f_rest_{i}": rest[:, i] for i in range(rest.shape[1])})
    cols["opacity"] = scene.opacities.numpy()
    cols.update({f"scale_{i}": scene.scales[:, i].numpy() for i in range(3)})
    cols.update({f"rot_{i}": scene.quats[:, i].numpy() for i in range(4)})
    return cols


# ------------------------------------------------------------------------------ INRIA PLY
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_ply_round_trip_is_bit_exact(tmp_path, degree):
    scene = random_scene(degree=degree, seed=degree)
    path = save_scene(scene, tmp_path / "scene.ply")
    back = load_scene(path)
    assert_same_scene(scene, back)
    assert back.sh_degree == degree
    assert back.meta == scene.meta
    assert sorted(os.listdir(tmp_path)) == ["scene.ply", "scene.ply.json"]


def test_ply_layout_is_inria(tmp_path):
    plyfile = pytest.importorskip("plyfile")
    scene = random_scene(n=7, degree=3)
    save_scene(scene, tmp_path / "s.ply")
    v = plyfile.PlyData.read(str(tmp_path / "s.ply"))["vertex"].data
    names = list(v.dtype.names)
    rest = [f"f_rest_{i}" for i in range(45)]
    expect = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *rest, "opacity"]
    expect += ["scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert names[: len(expect)] == expect
    assert names[len(expect) :] == ["label", *[f"feature_{i}" for i in range(8)], "selected"]
    # f_rest is channel-major: 15 R coefficients, then 15 G, then 15 B
    np.testing.assert_array_equal(v["f_rest_0"], scene.sh[:, 1, 0].numpy())
    np.testing.assert_array_equal(v["f_rest_15"], scene.sh[:, 1, 1].numpy())
    np.testing.assert_array_equal(v["f_rest_44"], scene.sh[:, 15, 2].numpy())
    np.testing.assert_array_equal(v["rot_0"], scene.quats[:, 0].numpy())  # w first
    assert (v["nx"] == 0).all()
    assert v.dtype["label"] == np.dtype("<i4")
    assert v.dtype["selected"] == np.dtype("u1")
    assert v.dtype["feature_3"] == np.dtype("<f4")


def test_ply_round_trip_of_unusual_extras(tmp_path):
    n = 6
    g = torch.Generator().manual_seed(3)
    extras = {
        "id64": torch.arange(n, dtype=torch.int64) * 1000 - 2,
        "half": torch.randn(n, 2, generator=g).half(),
        "brain": torch.randn(n, generator=g).to(torch.bfloat16),
        "precise": torch.randn(n, generator=g, dtype=torch.float64),
        "grid": torch.randint(-100, 100, (n, 2, 3), generator=g, dtype=torch.int16),
        "one": torch.randn(n, 1, generator=g),
        "none": torch.zeros(n, 0),
        "u8": torch.randint(0, 255, (n,), generator=g, dtype=torch.uint8),
        "i8": torch.randint(-128, 127, (n,), generator=g, dtype=torch.int8),
    }
    scene = random_scene(n=n, degree=1, extras=False).with_extras(**extras)
    back = load_scene(save_scene(scene, tmp_path / "s.ply"))
    assert_same_scene(scene, back)


def test_ply_without_sidecar_infers_extras(tmp_path):
    scene = random_scene(n=12, degree=1)
    path = save_scene(scene, tmp_path / "s.ply")
    (tmp_path / "s.ply.json").unlink()
    back = load_scene(path)
    assert back.extras["label"].dtype == torch.int32
    assert torch.equal(back.extras["label"], scene.extras["label"])
    assert back.extras["feature"].shape == (12, 8)
    assert torch.equal(back.extras["feature"], scene.extras["feature"])
    # PLY has no bool: without the sidecar a selection comes back as its uint8 storage
    assert back.extras["selected"].dtype == torch.uint8
    assert torch.equal(back.extras["selected"].bool(), scene.extras["selected"])
    assert back.meta == {}


def test_stale_sidecar_is_ignored_with_a_warning(tmp_path):
    save_scene(random_scene(n=10), tmp_path / "a.ply")
    save_scene(random_scene(n=11), tmp_path / "b.ply")
    os.replace(tmp_path / "b.ply.json", tmp_path / "a.ply.json")
    with pytest.warns(UserWarning, match="stale"):
        back = load_scene(tmp_path / "a.ply")
    assert back.meta == {} and len(back) == 10


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"format": "other"}',
        b'{"format": "scenelab.scene-sidecar", "version": 99}',
        b"[" * 100000,
    ],
)
def test_malformed_sidecar_raises_naming_the_sidecar(tmp_path, content):
    path = save_scene(random_scene(n=5), tmp_path / "s.ply")
    (tmp_path / "s.ply.json").write_bytes(content)
    with pytest.raises(SceneFormatError, match=r"s\.ply\.json"):
        load_scene(path)


@pytest.mark.parametrize("fmt", ["binary_little_endian", "binary_big_endian", "ascii"])
@pytest.mark.parametrize("normals", [True, False])
def test_ply_read_formats_with_and_without_normals(tmp_path, fmt, normals):
    scene = random_scene(n=9, degree=2, extras=False)
    path = tmp_path / "s.ply"
    path.write_bytes(raw_ply(inria_columns(scene, normals), fmt))
    assert_same_scene(scene, load_scene(path))


@pytest.mark.parametrize("fmt", ["binary_little_endian", "binary_big_endian"])
@pytest.mark.parametrize("chunk_bytes", [1, 700, 1 << 22])
def test_ply_streams_in_chunks_bit_exact(tmp_path, monkeypatch, fmt, chunk_bytes):
    """Binary bodies are read in row chunks straight into the final arrays: every chunk size
    (one row at a time, a few rows with a partial last chunk, all at once) gives the same
    scene, for all-float rows (one block per chunk) and for mixed-type rows (per column)."""
    import fields.formats._plyfile as plyfile_module

    monkeypatch.setattr(plyfile_module, "CHUNK_BYTES", chunk_bytes)
    scene = random_scene(n=37, degree=3, extras=False)
    cols = inria_columns(scene)
    (tmp_path / "f.ply").write_bytes(raw_ply(cols, fmt))  # all float32
    assert_same_scene(scene, load_scene(tmp_path / "f.ply"))
    mixed = {**cols, "label": np.arange(37, dtype=np.int32), "w": np.arange(37.0)}  # + f8
    (tmp_path / "m.ply").write_bytes(raw_ply(mixed, fmt))
    back = load_scene(tmp_path / "m.ply")
    assert back.replace(extras={}).allclose(scene)
    assert back.extras["label"].tolist() == list(range(37))
    assert back.extras["w"].dtype == torch.float64 and back.extras["w"].tolist() == list(range(37))


@pytest.mark.parametrize("fmt", ["binary_little_endian", "binary_big_endian", "ascii"])
@pytest.mark.parametrize("chunk_bytes", [1, 700, 1 << 22])
@pytest.mark.parametrize("max_rows", [1, 10, 36])
def test_preview_is_every_kth_gaussian_of_the_file(tmp_path, monkeypatch, fmt, chunk_bytes,
                                                   max_rows):  # fmt: skip
    """`load_preview` reads rows 0, k, 2k, ... (k = ceil(N / max)) of an INRIA PLY, exactly the
    rows `load_scene` gives there, whatever the chunking (strides that start mid-chunk), with
    the sidecar's meta and no extras; its second value is the file's count."""
    import fields.formats._plyfile as plyfile_module
    from fields.formats import load_preview

    monkeypatch.setattr(plyfile_module, "CHUNK_BYTES", chunk_bytes)
    scene = random_scene(n=37, degree=3, extras=False)
    cols = {**inria_columns(scene), "label": np.arange(37, dtype=np.int32)}  # mixed-type rows
    path = tmp_path / "s.ply"
    path.write_bytes(raw_ply(cols, fmt))
    sample, total = load_preview(path, max_rows)
    k = -(-37 // max_rows)
    assert total == 37 and len(sample) == len(range(0, 37, k)) <= max_rows
    assert sample.allclose(load_scene(path).replace(extras={}).subset(torch.arange(0, 37, k)))
    assert sample.extras == {}
    (tmp_path / "s.ply.json").write_text('{"version": 1}')  # unreadable sidecar: no meta
    assert load_preview(path, max_rows)[0].meta == {}


def test_preview_only_for_large_inria_plys(tmp_path):
    from fields.formats import load_preview

    scene = random_scene(n=50, degree=1).replace(meta={"up": "+z"})
    path = save_scene(scene, tmp_path / "s.ply")
    assert load_preview(path, 50) is None  # small enough to load whole
    sample, total = load_preview(path, 20)
    assert total == 50 and len(sample) == 17 and sample.meta["up"] == "+z"
    assert sample.allclose(scene.replace(extras={}).subset(torch.arange(0, 50, 3)))
    for other in ("s.splat", "s.compressed.ply", "s.spz"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert load_preview(save_scene(scene, tmp_path / other), 20) is None
    (tmp_path / "bad.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 9")
    assert load_preview(tmp_path / "bad.ply", 2) is None  # load_scene reports what is wrong
    assert load_preview(tmp_path / "missing.ply", 2) is None


def test_ply_streaming_with_sidecar_extras(tmp_path, monkeypatch):
    import fields.formats._plyfile as plyfile_module

    monkeypatch.setattr(plyfile_module, "CHUNK_BYTES", 1000)
    scene = random_scene(n=100, degree=1).with_extras(
        half=torch.randn(100, 2, 2).half(), big=torch.arange(100) * 3
    )
    assert_same_scene(scene, load_scene(save_scene(scene, tmp_path / "s.ply")))


def test_point_cloud_reads_streamed_vertices(tmp_path, monkeypatch):
    import fields.formats._plyfile as plyfile_module
    from fields.formats import read_point_cloud

    monkeypatch.setattr(plyfile_module, "CHUNK_BYTES", 64)
    xyz = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    rgb = np.random.default_rng(1).integers(0, 256, (50, 3)).astype(np.uint8)
    cols = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    cols.update({"red": rgb[:, 0], "green": rgb[:, 1], "blue": rgb[:, 2]})
    (tmp_path / "pc.ply").write_bytes(raw_ply(cols))
    got_xyz, got_rgb = read_point_cloud(tmp_path / "pc.ply")
    assert (got_xyz == xyz).all() and (got_rgb == rgb).all()
    float_rgb = {**cols, **{k: cols[k].astype(np.float32) / 255 for k in ("red", "green", "blue")}}
    (tmp_path / "f.ply").write_bytes(raw_ply(float_rgb, "ascii"))
    assert (read_point_cloud(tmp_path / "f.ply")[1] == rgb).all()
    (tmp_path / "g.ply").write_bytes(raw_ply({k: cols[k] for k in "xyz"}))
    assert (read_point_cloud(tmp_path / "g.ply")[1] == 128).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_ply_accepts_double_and_half_properties(tmp_path, dtype):
    scene = random_scene(n=9, degree=1, extras=False)
    cols = {k: v.astype(dtype) for k, v in inria_columns(scene).items()}
    path = tmp_path / "s.ply"
    path.write_bytes(raw_ply(cols))
    back = load_scene(path)
    expect = {k: torch.from_numpy(v.astype(np.float32)) for k, v in cols.items()}
    assert torch.equal(back.means[:, 0], expect["x"])
    assert torch.equal(back.sh[:, 1, 1], expect["f_rest_3"])
    assert back.means.dtype == torch.float32


def test_ply_extra_properties_of_a_foreign_file(tmp_path):
    scene = random_scene(n=5, degree=0, extras=False)
    cols = inria_columns(scene)
    cols["label"] = np.arange(5, dtype=np.int32)
    cols.update({f"feature_{i}": np.full(5, i, np.float32) for i in range(3)})
    cols["red"] = np.arange(5, dtype=np.uint8)
    path = tmp_path / "s.ply"
    path.write_bytes(raw_ply(cols))
    back = load_scene(path)
    assert back.extras["label"].dtype == torch.int32
    assert back.extras["feature"].shape == (5, 3)
    assert torch.equal(back.extras["feature"][0], torch.tensor([0.0, 1.0, 2.0]))
    assert back.extras["red"].dtype == torch.uint8


# ---------------------------------------------------------------------------- bad PLY input
def _good_ply() -> bytes:
    return raw_ply(inria_columns(random_scene(n=4, degree=1, extras=False)))


def _edit_header(data: bytes, old: bytes, new: bytes) -> bytes:
    end = data.index(b"end_header")
    assert old in data[:end]
    return data[:end].replace(old, new, 1) + data[end:]


BAD_PLY = {
    "truncated": lambda d: d[:-7],
    "trailing bytes": lambda d: d + b"\0" * 10,
    "not ply": lambda d: b"plx" + d[3:],
    "no end_header": lambda d: d.replace(b"end_header", b"end_headex"),
    "missing property": lambda d: _edit_header(d, b"property float opacity\n", b""),
    "integer position": lambda d: _edit_header(d, b"property float x\n", b"property int x\n"),
    "list property": lambda d: _edit_header(
        d, b"property float x\n", b"property list uchar float x\n"
    ),
    "absurd count": lambda d: _edit_header(
        d, b"element vertex 4", b"element vertex 1000000000000000"
    ),
    "zero gaussians": lambda d: _edit_header(d, b"element vertex 4", b"element vertex 0")[
        : d.index(b"end_header") + 11
    ],
    "count too small": lambda d: _edit_header(d, b"element vertex 4", b"element vertex 3"),
    "bad format": lambda d: _edit_header(
        d, b"binary_little_endian 1.0", b"binary_middle_endian 1.0"
    ),
    "bad count": lambda d: _edit_header(d, b"element vertex 4", b"element vertex -4"),
    "unknown type": lambda d: _edit_header(d, b"property float y", b"property quad y"),
    "sh count 12": lambda d: _edit_header(
        d,
        b"property float f_rest_8\n",
        b"property float f_rest_8\nproperty float f_rest_9\nproperty float f_rest_10\nproperty float f_rest_11\n",
    ),
    "f_rest gap": lambda d: _edit_header(d, b"property float f_rest_8", b"property float f_rest_9"),
    "duplicate property": lambda d: _edit_header(d, b"property float y", b"property float x"),
    "binary garbage header": lambda d: b"ply\n\xff\xfe\nend_header\n",
}


@pytest.mark.parametrize("case", sorted(BAD_PLY))
def test_bad_ply_raises_scene_format_error(tmp_path, case):
    path = tmp_path / "bad.ply"
    path.write_bytes(BAD_PLY[case](_good_ply()))
    t = time.perf_counter()
    with pytest.raises(SceneFormatError, match=r"bad\.ply: ") as err:
        load_scene(path)
    assert time.perf_counter() - t < 10.0  # a hang guard, not a speed target
    assert "unexpected" not in str(err.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e300])
def test_ply_non_finite_values_raise(tmp_path, value):
    cols = {
        k: v.astype(np.float64) for k, v in inria_columns(random_scene(n=4, extras=False)).items()
    }
    cols["scale_1"][2] = value
    path = tmp_path / "nan.ply"
    path.write_bytes(raw_ply(cols))
    with pytest.raises(SceneFormatError, match=r"scale.*1 Gaussian"):
        load_scene(path)


def test_ascii_ply_with_a_word_raises(tmp_path):
    data = raw_ply(inria_columns(random_scene(n=3, extras=False)), "ascii")
    path = tmp_path / "a.ply"
    path.write_bytes(
        data.replace(b"\n0.", b"\nzero", 1) if b"\n0." in data else data[:-3] + b"xyz\n"
    )
    with pytest.raises(SceneFormatError):
        load_scene(path)


# --------------------------------------------------------------------------------- .splat
def test_splat_round_trip_within_quantisation(tmp_path):
    scene = random_scene(n=200, degree=0, extras=False).replace(meta={})
    back = load_scene(save_scene(scene, tmp_path / "s.splat"))
    assert torch.equal(back.means, scene.means)
    torch.testing.assert_close(back.activated_scales(), scene.activated_scales(), rtol=1e-6, atol=0)
    rgb = (scene.sh[:, 0] * SH_C0 + 0.5).clamp(0, 1)
    assert (back.colors - rgb).abs().max() <= 0.5 / 255 + 1e-6
    alpha = scene.activated_opacities()
    assert (back.activated_opacities() - alpha).abs().max() <= 0.5 / 255 + 1e-6
    q0, q1 = scene.normalized_quats, back.normalized_quats
    dot = (q0 * q1).sum(-1).abs()
    # each byte is within 1/256 of q * 128 + 128 (1/128 where +1 clips to 255)
    assert (1 - dot).max() < 1e-3
    raw = (back.quats - q0 * 1.0).abs()
    assert raw.max() <= 1 / 128 + 1e-6
    assert [f for f in os.listdir(tmp_path)] == ["s.splat"]


def test_splat_requantisation_is_stable(tmp_path):
    first = save_scene(
        random_scene(n=300, degree=0, extras=False).replace(meta={}), tmp_path / "a.splat"
    )
    again = save_scene(load_scene(first), tmp_path / "b.splat")
    a = np.frombuffer(first.read_bytes(), np.uint8).reshape(-1, 32)
    b = np.frombuffer(again.read_bytes(), np.uint8).reshape(-1, 32)
    assert np.array_equal(a[:, :28], b[:, :28])  # position, scale, RGBA: identical bytes
    # rotation bytes hold q*128+128 of a unit q; decoding is not exactly unit, so a byte may move by one
    assert np.abs(a[:, 28:].astype(int) - b[:, 28:]).max() <= 1


def test_splat_writer_warns_about_what_it_drops(tmp_path):
    with pytest.warns(UserWarning, match=r"SH degree 2.*'label'.*meta"):
        save_scene(random_scene(n=3, degree=2), tmp_path / "s.splat")
    assert (tmp_path / "s.splat").stat().st_size == 3 * 32


def test_minimal_splat_fixture_known_values():
    s = load_scene(shared(FIXTURES / "minimal.splat"))
    assert len(s) == 4 and s.sh_degree == 0
    # splat-transform's create-fixtures.mjs: a 2x2 grid at y=0, spacing 1, offset by -1
    expect = torch.tensor([[-1.0, 0, -1], [0, 0, -1], [-1, 0, 0], [0, 0, 0]])
    assert torch.equal(s.means, expect)
    torch.testing.assert_close(s.activated_scales(), torch.full((4, 3), 0.1), rtol=1e-6, atol=0)
    # r = round((gx+1)/3*255), g = round((gz+1)/3*255), b = 128, a = 230
    rgb = torch.tensor([[85, 85, 128], [170, 85, 128], [85, 170, 128], [170, 170, 128]]) / 255
    torch.testing.assert_close(s.colors, rgb.float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        s.activated_opacities(), torch.full((4,), 230 / 255), atol=1e-6, rtol=0
    )
    # rotation bytes (128, 128, 128, 255) are (w, x, y, z): a half turn about z (the fixture's
    # comment calls it the identity, reading the bytes as xyzw; for round splats it is the same)
    assert torch.equal(s.quats, torch.tensor([[0.0, 0, 0, 127 / 128]]).expand(4, 4))


@pytest.mark.parametrize("size", [0, 31, 33])
def test_bad_splat_sizes(tmp_path, size):
    path = tmp_path / "s.splat"
    path.write_bytes(b"\1" * size)
    with pytest.raises(SceneFormatError, match=r"s\.splat"):
        load_scene(path)


def test_splat_non_positive_scale_raises(tmp_path):
    rec = bytearray(
        struct.pack("<6f", 0, 0, 0, 0.1, -0.1, 0.1) + bytes([1, 2, 3, 4, 128, 128, 128, 255])
    )
    path = tmp_path / "s.splat"
    path.write_bytes(bytes(rec))
    with pytest.raises(SceneFormatError, match="scale"):
        load_scene(path)


# ------------------------------------------------------------------------------------ .spz
def fixed24(v: np.ndarray, frac_bits: int) -> bytes:
    q = np.round(np.asarray(v, np.float64) * (1 << frac_bits)).astype(np.int64) & 0xFFFFFF
    return np.stack([q & 0xFF, (q >> 8) & 0xFF, q >> 16], -1).astype(np.uint8).tobytes()


def smallest_three(xyzw: np.ndarray) -> bytes:
    """Niantic's v3 quaternion packing, written from the spec for the tests."""
    out = []
    for q in np.asarray(xyzw, np.float64):
        q = q / np.linalg.norm(q)
        big = int(np.argmax(np.abs(q)))
        if q[big] < 0:
            q = -q
        comp = big
        for i in range(4):
            if i != big:
                mag = int(511 * abs(q[i]) / math.sqrt(0.5) + 0.5)
                comp = (comp << 10) | (int(q[i] < 0) << 9) | mag
        out.append(struct.pack("<I", comp))
    return b"".join(out)


def spz_header(version: int, n: int, degree: int, frac_bits: int = 12, flags: int = 0) -> bytes:
    return b"NGSP" + struct.pack("<IIBBBB", version, n, degree, frac_bits, flags, 0)


def zstd_raw(data: bytes) -> bytes:
    """One zstd frame holding a raw (stored) block: valid zstd without a compressor."""
    assert len(data) < 1 << 21
    return (
        struct.pack("<IBI", 0xFD2FB528, 0xA0, len(data))
        + ((len(data) << 3) | 1).to_bytes(3, "little")
        + data
    )


def spz_v4(
    n: int, degree: int, streams: list[bytes], frac_bits: int = 12, extension: bytes = b""
) -> bytes:
    frames = [zstd_raw(s) for s in streams]
    head = b"NGSP" + struct.pack(
        "<IIBBBBI", 4, n, degree, frac_bits, 2 if extension else 0, len(frames), 32 + len(extension)
    )
    head += b"\0" * 12 + extension
    toc = b"".join(struct.pack("<QQ", len(f), len(s)) for f, s in zip(frames, streams, strict=True))
    return head + toc + b"".join(frames)


def spz_sample(degree: int = 1, n: int = 3, seed: int = 0):
    """Attribute streams with known RUB values: (streams for v3/v4, expected RUB scene)."""
    rng = np.random.default_rng(seed)
    dim = {0: 0, 1: 3, 2: 8, 3: 15, 4: 24}[degree]
    pos = np.round(rng.normal(size=(n, 3)) * 4096) / 4096
    alpha = rng.integers(1, 255, n).astype(np.uint8)
    color = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    scale = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    xyzw = rng.normal(size=(n, 4))
    sh = rng.integers(0, 256, (n, dim, 3)).astype(np.uint8)
    streams = [
        fixed24(pos, 12),
        alpha.tobytes(),
        color.tobytes(),
        scale.tobytes(),
        smallest_three(xyzw),
        sh.tobytes(),
    ]
    q = xyzw / np.linalg.norm(xyzw, axis=1, keepdims=True)
    a = alpha / 255.0
    expect = GaussianScene(
        means=torch.tensor(pos, dtype=torch.float32),
        quats=torch.tensor(q[:, [3, 0, 1, 2]], dtype=torch.float32),
        scales=torch.tensor(scale / 16.0 - 10.0, dtype=torch.float32),
        opacities=torch.tensor(np.log(a / (1 - a)), dtype=torch.float32),
        sh=torch.tensor(
            np.concatenate(
                [((color / 255.0 - 0.5) / 0.15)[:, None], (sh[:, : min(dim, 15)] - 128.0) / 128.0],
                1,
            ),
            dtype=torch.float32,
        ),
    )
    return streams, expect


RUB_TO_RDF = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))  # half turn about x


def assert_spz_decodes(scene: GaussianScene, expect_rub: GaussianScene, quat_tol: float) -> None:
    expect = expect_rub.transform(RUB_TO_RDF)  # independent: rotates SH with fields._sh
    torch.testing.assert_close(scene.means, expect.means, atol=1e-6, rtol=0)
    torch.testing.assert_close(scene.scales, expect.scales, atol=1e-5, rtol=0)
    torch.testing.assert_close(scene.opacities, expect.opacities, atol=1e-5, rtol=0)
    torch.testing.assert_close(scene.sh, expect.sh, atol=1e-5, rtol=0)
    # transform() composes the turn onto each rotation (R' = F R); Niantic's converter conjugates
    # it (R' = F R F, i.e. w, x, -y, -z). F is diagonal, so both give the same covariance.
    niantic = expect_rub.normalized_quats * torch.tensor([1.0, 1.0, -1.0, -1.0])
    dot = (scene.normalized_quats * niantic).sum(-1).abs()
    assert (1 - dot).max() < quat_tol
    decoded_rub = expect_rub.replace(quats=scene.quats * torch.tensor([1.0, 1.0, -1.0, -1.0]))
    torch.testing.assert_close(covariance(scene), covariance(decoded_rub.transform(RUB_TO_RDF)))


def covariance(s: GaussianScene) -> torch.Tensor:
    R = quat_to_rotmat(s.quats)
    return R @ torch.diag_embed(s.activated_scales() ** 2) @ R.transpose(-1, -2)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_spz_v3_and_v4_decode_known_values(tmp_path, degree):
    streams, expect = spz_sample(degree)
    n = len(expect)
    body = b"".join(streams)
    (tmp_path / "a.spz").write_bytes(gzip.compress(spz_header(3, n, degree) + body))
    (tmp_path / "b.spz").write_bytes(spz_v4(n, degree, streams if degree else streams[:5]))
    a, b = load_scene(tmp_path / "a.spz"), load_scene(tmp_path / "b.spz")
    assert_spz_decodes(a, expect, quat_tol=1e-5)
    assert_same_scene(a, b)


def test_spz_v2_rotation_and_degree_4_cut(tmp_path):
    streams, expect = spz_sample(degree=4, n=5)
    xyz = expect.quats[:, 1:] * torch.where(expect.quats[:, :1] < 0, -1.0, 1.0)  # w >= 0 implied
    streams[4] = np.clip(np.round((xyz.numpy() + 1) * 127.5), 0, 255).astype(np.uint8).tobytes()
    (tmp_path / "a.spz").write_bytes(gzip.compress(spz_header(2, 5, 4) + b"".join(streams)))
    with pytest.warns(UserWarning, match="degree 4"):
        scene = load_scene(tmp_path / "a.spz")
    assert scene.sh_degree == 3
    assert_spz_decodes(scene, expect, quat_tol=1e-3)


def test_spz_smallest_three_known_words(tmp_path):
    # 0xC0000000: largest = w, the rest 0 -> identity. 0x800001FF: largest = z (index 2), then
    # x = y = 0 and w = +511/511 / sqrt(2) in the lowest bits -> (x, y, z, w) = (0, 0, .707, .707),
    # a quarter turn about z in RUB, which is (w, x, y, z) = (.707, 0, 0, -.707) in RDF.
    streams = [
        b"\0" * 18,
        b"\xe6" * 2,
        b"\x80" * 6,
        b"\x7b" * 6,
        struct.pack("<II", 0xC0000000, 0x800001FF),
    ]
    (tmp_path / "q.spz").write_bytes(spz_v4(2, 0, streams))
    q = load_scene(tmp_path / "q.spz").quats
    torch.testing.assert_close(q[0], torch.tensor([1.0, 0, 0, 0]))
    torch.testing.assert_close(q[1], torch.tensor([math.sqrt(0.5), 0, 0, -math.sqrt(0.5)]))


def test_spz_v4_header_extensions_are_skipped(tmp_path):
    streams, expect = spz_sample(degree=0)
    ext = struct.pack("<II", 0xADBE0002, 4) + b"\xde\xad\xfa\xce"
    (tmp_path / "e.spz").write_bytes(spz_v4(len(expect), 0, streams[:5], extension=ext))
    assert_spz_decodes(load_scene(tmp_path / "e.spz"), expect, quat_tol=1e-5)


def test_spz_fixtures_agree_with_each_other_and_with_splat():
    splat = load_scene(shared(FIXTURES / "minimal.splat"))
    raw, v2, v3, v4 = (
        load_scene(shared(FIXTURES / f"minimal-{v}.spz")) for v in ("raw", "v2", "v3", "v4")
    )
    assert_same_scene(raw, v2)  # the same payload, gzipped or not
    assert_same_scene(v3, v4)  # written by @adobe/spz from the same cloud (RDF input)
    # v3 / v4 are the splat grid within SPZ quantisation
    assert torch.equal(v4.means, splat.means)
    torch.testing.assert_close(v4.activated_scales(), splat.activated_scales(), rtol=0.01, atol=0)
    torch.testing.assert_close(
        v4.colors, splat.colors, atol=0.5 / 255 / 0.15 * SH_C0 + 1e-6, rtol=0
    )
    torch.testing.assert_close(
        v4.activated_opacities(), splat.activated_opacities(), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(v4.quats, torch.tensor([[1.0, 0, 0, 0]]).expand(4, 4))
    # the values splat-transform's formats.test.mjs checks on minimal-v4.spz
    assert abs(v4.scales[0, 0] - math.log(0.1)) < 0.05
    assert abs(v4.opacities[0] - math.log(0.9 / 0.1)) < 0.08
    assert abs(v4.sh[0, 0, 0] - (1 / 3 - 0.5) / SH_C0) < 0.04
    assert abs(v4.sh[0, 0, 1] - (1 / 3 - 0.5) / SH_C0) < 0.04
    assert abs(v4.sh[0, 0, 2]) < 0.04
    # minimal-raw / -v2 were hand-packed (a "historical non-spec fixture" upstream): RDF values
    # stored without the turn into SPZ's RUB axes and colour bytes stored as plain RGB. So they
    # match the grid in x and y, mirror it in z, and their colours decode differently.
    assert torch.equal(v2.means[:, :2], splat.means[:, :2])
    assert torch.equal(v2.means[:, 2], -splat.means[:, 2])
    torch.testing.assert_close(v2.scales, v4.scales)
    torch.testing.assert_close(v2.opacities, v4.opacities)
    rgb_bytes = torch.tensor(
        [[85, 85, 128], [170, 85, 128], [85, 170, 128], [170, 170, 128]]
    ).float()
    torch.testing.assert_close(v2.sh[:, 0], (rgb_bytes / 255 - 0.5) / 0.15)


BAD_SPZ = {
    "not gzip": lambda: b"\x1f\x8b" + b"\x00" * 30,
    "gzip of text": lambda: gzip.compress(b"hello world, not a splat"),
    "truncated gzip": lambda: gzip.compress(spz_header(3, 3, 1) + b"".join(spz_sample(1)[0]))[:-20],
    "short payload": lambda: gzip.compress(spz_header(3, 4, 1) + b"".join(spz_sample(1)[0])),
    "long payload": lambda: gzip.compress(spz_header(3, 2, 1) + b"".join(spz_sample(1)[0])),
    "version 1": lambda: gzip.compress(spz_header(1, 3, 0) + b"\0" * 100),
    "version 9": lambda: gzip.compress(spz_header(9, 3, 0) + b"\0" * 100),
    "raw version 7": lambda: spz_header(7, 3, 0) + b"\0" * 100,
    "degree 5": lambda: gzip.compress(spz_header(3, 3, 5) + b"\0" * 1000),
    "zero gaussians": lambda: gzip.compress(spz_header(3, 0, 0)),
    "absurd count": lambda: gzip.compress(spz_header(3, 4_000_000_000, 0) + b"\0" * 64),
    "bomb-sized count": lambda: gzip.compress(spz_header(3, 10_000_000, 0) + b"\0" * 100),
    "v4 stream count": lambda: _v4_edit(15, 4),
    "v4 toc past end": lambda: _v4_edit(16, 10_000, size=4),
    "v4 wrong size": lambda: _v4_edit(8, 4, size=4),
    "v4 bad zstd": lambda: spz_v4(3, 1, spz_sample(1)[0])[:-30] + b"\x01" * 30,
    "v4 truncated": lambda: spz_v4(3, 1, spz_sample(1)[0])[:-5],
    "v4 short header": lambda: spz_v4(3, 1, spz_sample(1)[0])[:20],
    "nan-free garbage": lambda: b"NGSP",
}


def _v4_edit(offset: int, value: int, size: int = 1) -> bytes:
    data = bytearray(spz_v4(3, 1, spz_sample(1)[0]))
    data[offset : offset + size] = value.to_bytes(size, "little")
    return bytes(data)


@pytest.mark.parametrize("case", sorted(BAD_SPZ))
def test_bad_spz_raises_scene_format_error(tmp_path, case):
    path = tmp_path / "bad.spz"
    path.write_bytes(BAD_SPZ[case]())
    t = time.perf_counter()
    with pytest.raises(SceneFormatError, match=r"bad\.spz: ") as err:
        load_scene(path)
    assert time.perf_counter() - t < 10.0  # a hang guard, not a speed target
    assert "unexpected" not in str(err.value)


# ------------------------------------------------------------------------ compressed PLY
def pack_compressed(
    means: np.ndarray,
    wxyz: np.ndarray,
    log_scales: np.ndarray,
    rgb: np.ndarray,
    alpha: np.ndarray,
    rest: np.ndarray | None,
):
    """A PlayCanvas compressed PLY written from the format description with plyfile."""
    plyfile = pytest.importorskip("plyfile")
    n = len(means)
    chunks = -(-n // 256)
    unorm = lambda t, bits: np.round(np.clip(t, 0, 1) * ((1 << bits) - 1)).astype(np.uint32)  # noqa: E731
    chunk = np.zeros(
        chunks,
        [
            (k, "<f4")
            for k in [
                "min_x",
                "min_y",
                "min_z",
                "max_x",
                "max_y",
                "max_z",
                "min_scale_x",
                "min_scale_y",
                "min_scale_z",
                "max_scale_x",
                "max_scale_y",
                "max_scale_z",
                "min_r",
                "min_g",
                "min_b",
                "max_r",
                "max_g",
                "max_b",
            ]
        ],
    )
    packed = np.zeros(
        n,
        [
            ("packed_position", "<u4"),
            ("packed_rotation", "<u4"),
            ("packed_scale", "<u4"),
            ("packed_color", "<u4"),
        ],
    )
    for c in range(chunks):
        s = slice(c * 256, min(n, (c + 1) * 256))
        t = {}
        for name, v in (("", means[s]), ("scale_", log_scales[s]), ("rgb", rgb[s])):
            lo, hi = v.min(0).astype(np.float32), v.max(0).astype(np.float32)
            keys = ["r", "g", "b"] if name == "rgb" else [f"{name}{a}" for a in "xyz"]
            for i, k in enumerate(keys):
                chunk[c]["min_" + k], chunk[c]["max_" + k] = lo[i], hi[i]
            t[name] = (v - lo) / np.where(hi > lo, hi - lo, 1)
        packed["packed_position"][s] = (
            unorm(t[""][:, 0], 11) << 21 | unorm(t[""][:, 1], 10) << 11 | unorm(t[""][:, 2], 11)
        )
        packed["packed_scale"][s] = (
            unorm(t["scale_"][:, 0], 11) << 21
            | unorm(t["scale_"][:, 1], 10) << 11
            | unorm(t["scale_"][:, 2], 11)
        )
        rgba = np.concatenate([t["rgb"], alpha[s, None]], 1)
        packed["packed_color"][s] = (
            unorm(rgba[:, 0], 8) << 24
            | unorm(rgba[:, 1], 8) << 16
            | unorm(rgba[:, 2], 8) << 8
            | unorm(rgba[:, 3], 8)
        )
    q = wxyz / np.linalg.norm(wxyz, axis=1, keepdims=True)
    for i in range(n):
        big = int(np.argmax(np.abs(q[i])))
        qi = q[i] if q[i, big] >= 0 else -q[i]
        others = [qi[j] for j in range(4) if j != big]
        word = big
        for v in others:
            word = (word << 10) | int(unorm(v / math.sqrt(2) + 0.5, 10))
        packed["packed_rotation"][i] = word
    elements = [
        plyfile.PlyElement.describe(chunk, "chunk"),
        plyfile.PlyElement.describe(packed, "vertex"),
    ]
    if rest is not None:
        sh = np.zeros(n, [(f"f_rest_{i}", "u1") for i in range(rest.shape[1])])
        for i in range(rest.shape[1]):
            sh[f"f_rest_{i}"] = np.clip(np.round((rest[:, i] / 8 + 0.5) * 256 - 0.5), 0, 255)
        elements.append(plyfile.PlyElement.describe(sh, "sh"))
    return plyfile.PlyData(elements)


def test_compressed_ply_decodes_within_quantisation(tmp_path):
    rng = np.random.default_rng(1)
    n = 300  # two chunks, the second partial
    means = rng.normal(size=(n, 3)).astype(np.float32)
    wxyz = rng.normal(size=(n, 4))
    log_scales = rng.uniform(-6, -1, (n, 3)).astype(np.float32)
    rgb = rng.uniform(-0.2, 1.2, (n, 3)).astype(np.float32)
    alpha = rng.uniform(0.01, 0.99, n)
    rest = rng.uniform(-3, 3, (n, 24))
    pack_compressed(means, wxyz, log_scales, rgb, alpha, rest).write(str(tmp_path / "c.ply"))
    s = load_scene(tmp_path / "c.ply")
    assert len(s) == n and s.sh_degree == 2
    span = lambda v: torch.tensor(np.ptp(v, axis=0))  # noqa: E731  (upper bound of a chunk's span)
    step = torch.tensor([2047.0, 1023.0, 2047.0])
    assert ((s.means - torch.tensor(means)).abs() <= span(means) / step / 2 + 1e-5).all()
    assert ((s.scales - torch.tensor(log_scales)).abs() <= span(log_scales) / step / 2 + 1e-5).all()
    assert ((s.colors - torch.tensor(rgb).clamp_min(0)).abs() <= span(rgb) / 255 / 2 + 1e-5).all()
    assert (
        s.activated_opacities() - torch.tensor(alpha, dtype=torch.float32)
    ).abs().max() <= 0.5 / 255 + 1e-6
    q = torch.tensor(wxyz / np.linalg.norm(wxyz, axis=1, keepdims=True), dtype=torch.float32)
    assert (1 - (s.normalized_quats * q).sum(-1).abs()).max() < 1e-5
    inria_rest = torch.tensor(rest, dtype=torch.float32).reshape(n, 3, 8).permute(0, 2, 1)
    assert (s.sh[:, 1:] - inria_rest).abs().max() <= 8 / 256 / 2 + 1e-5


def test_compressed_ply_chunk_count_mismatch_raises(tmp_path):
    rng = np.random.default_rng(2)
    ply = pack_compressed(
        rng.normal(size=(10, 3)),
        rng.normal(size=(10, 4)),
        rng.normal(size=(10, 3)),
        rng.uniform(size=(10, 3)),
        rng.uniform(size=10),
        None,
    )
    ply["chunk"].data = np.concatenate([ply["chunk"].data] * 2)
    ply.write(str(tmp_path / "c.ply"))
    with pytest.raises(SceneFormatError, match="chunks"):
        load_scene(tmp_path / "c.ply")


def _reference_decode(
    chunk, vertex, i: int
) -> tuple[list[float], list[float], list[float], list[float], float]:
    """PlayCanvas' per-splat decode, transcribed one Gaussian at a time in plain Python."""
    c = chunk[i // 256]
    un = lambda v, bits: (v & ((1 << bits) - 1)) / ((1 << bits) - 1)  # noqa: E731
    lerp = lambda a, b, t: a * (1 - t) + b * t  # noqa: E731
    p, r, s, col = (
        int(vertex[k][i])
        for k in ("packed_position", "packed_rotation", "packed_scale", "packed_color")
    )
    pos = [
        lerp(c[f"min_{a}"], c[f"max_{a}"], un(p >> sh, b))
        for a, sh, b in (("x", 21, 11), ("y", 11, 10), ("z", 0, 11))
    ]
    scl = [
        lerp(c[f"min_scale_{a}"], c[f"max_scale_{a}"], un(s >> sh, b))
        for a, sh, b in (("x", 21, 11), ("y", 11, 10), ("z", 0, 11))
    ]
    abc = [(un(r >> sh, 10) - 0.5) * math.sqrt(2) for sh in (20, 10, 0)]
    m = math.sqrt(max(0.0, 1 - sum(v * v for v in abc)))
    quat = abc[:]
    quat.insert(r >> 30, m)
    rgb = [
        lerp(c[f"min_{k}"], c[f"max_{k}"], un(col >> sh, 8))
        for k, sh in (("r", 24), ("g", 16), ("b", 8))
    ]
    return pos, scl, quat, rgb, un(col, 8)


def test_guitar_compressed_ply():
    plyfile = pytest.importorskip("plyfile")
    path = shared(GUITAR)
    load_scene(path)  # warm caches, so the timing below measures decoding
    t = time.perf_counter()
    s = load_scene(path)
    seconds = time.perf_counter() - t
    raw = plyfile.PlyData.read(str(path))
    chunk, vertex = raw["chunk"].data, raw["vertex"].data
    assert len(s) == len(vertex) == 90854
    assert len(chunk) * 256 >= len(s) > (len(chunk) - 1) * 256
    assert s.sh_degree == 0
    assert seconds < 1.0
    for t_ in (s.means, s.quats, s.scales, s.opacities, s.sh):
        assert torch.isfinite(t_).all()
    torch.testing.assert_close(s.quats.norm(dim=1), torch.ones(len(s)), atol=2e-3, rtol=0)
    assert s.opacities.abs().max() <= math.log(1019) + 1e-4  # alpha clamped into its 8-bit cell
    lo = torch.tensor([chunk[f"min_{a}"].min() for a in "xyz"])
    hi = torch.tensor([chunk[f"max_{a}"].max() for a in "xyz"])
    bmin, bmax = s.bounds()
    assert (bmin >= lo - 1e-5).all() and (bmax <= hi + 1e-5).all()
    assert ((bmax - bmin) > 0.1).all() and ((bmax - bmin) < 10).all()
    assert (s.scales.exp() < 1).all()
    colors = s.colors
    for i in [*np.random.default_rng(0).choice(len(s), 64, replace=False).tolist(), 0, len(s) - 1]:
        pos, scl, quat, rgb, a = _reference_decode(chunk, vertex, i)
        torch.testing.assert_close(
            s.means[i], torch.tensor(pos, dtype=torch.float32), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            s.scales[i], torch.tensor(scl, dtype=torch.float32), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            s.quats[i], torch.tensor(quat, dtype=torch.float32), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            colors[i], torch.tensor(rgb, dtype=torch.float32).clamp_min(0), atol=1e-5, rtol=0
        )
        a = min(max(a, 0.25 / 255), 1 - 0.25 / 255)
        assert abs(float(s.opacities[i]) - math.log(a / (1 - a))) < 1e-4


# ---------------------------------------------------------------------- dispatch and writes
def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_scene(tmp_path / "nope.ply")


@pytest.mark.parametrize("name", ["x.ply", "x.spz", "x.obj"])
def test_wrong_content_for_extension(tmp_path, name):
    (tmp_path / name).write_bytes(b"\x00" * 64)
    with pytest.raises(SceneFormatError, match=name.replace(".", r"\.")):
        load_scene(tmp_path / name)


def test_overwrite_false_protects_an_existing_file(tmp_path):
    path = tmp_path / "s.ply"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        save_scene(random_scene(n=3), path)
    assert path.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["s.ply"]
    save_scene(random_scene(n=3), path, overwrite=True)
    assert len(load_scene(path)) == 3


def test_failed_write_leaves_old_files_and_no_temp_files(tmp_path, monkeypatch):
    import fields.formats as formats

    path = save_scene(random_scene(n=3, seed=1), tmp_path / "s.ply")
    before = {p: (tmp_path / p).read_bytes() for p in os.listdir(tmp_path)}

    def broken(f, *args, **kwargs):
        f.write(b"ply\nhalf a file")
        raise OSError("disk full")

    monkeypatch.setattr(formats, "write_ply", broken)
    with pytest.raises(OSError, match="disk full"):
        save_scene(random_scene(n=5, seed=2), path, overwrite=True)
    assert {p: (tmp_path / p).read_bytes() for p in os.listdir(tmp_path)} == before


@pytest.mark.parametrize(
    "change, match",
    [
        (
            lambda s: s.replace(
                means=s.means.clone().index_fill_(0, torch.tensor([1]), float("nan"))
            ),
            "NaN",
        ),
        (lambda s: s.with_extras(opacity=torch.zeros(len(s))), "opacity"),
        (lambda s: s.with_extras(scale=torch.zeros(len(s), 3)), "scale_0"),
        (lambda s: s.with_extras(f_rest_77=torch.zeros(len(s))), "f_rest_77"),
        (lambda s: s.with_extras(**{"two words": torch.zeros(len(s))}), "printable"),
        (lambda s: s.with_extras(big=torch.full((len(s),), 2**40)), "int32"),
        (lambda s: s.with_extras(z=torch.zeros(len(s), dtype=torch.complex64)), "dtype"),
        (lambda s: s.with_meta(when=object()), "JSON"),
        (lambda s: s.with_meta(bad=float("nan")), "JSON"),
        (lambda s: s.subset(torch.zeros(len(s), dtype=torch.bool)), "empty"),
    ],
)
def test_unsavable_scenes_raise_before_writing(tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        save_scene(change(random_scene(n=4)), tmp_path / "s.ply")
    assert os.listdir(tmp_path) == []


def test_unknown_write_format(tmp_path):
    with pytest.raises(ValueError, match="format"):
        save_scene(random_scene(n=2), tmp_path / "s.obj")
    path = save_scene(random_scene(n=2), tmp_path / "s.obj", format="ply")
    assert len(load_scene(path)) == 2


def test_save_accepts_gpu_free_views_and_returns_path(tmp_path):
    scene = random_scene(n=4)
    view = scene.replace(means=scene.means.t().contiguous().t())  # non-contiguous input
    path = save_scene(view, str(tmp_path / "s.ply"))
    assert isinstance(path, Path)
    assert_same_scene(scene, load_scene(path))


def test_sidecar_content(tmp_path):
    save_scene(random_scene(n=4), tmp_path / "s.ply")
    doc = json.loads((tmp_path / "s.ply.json").read_text())
    assert doc["format"] == "scenelab.scene-sidecar" and doc["version"] == 1
    assert doc["num_gaussians"] == 4 and doc["sh_degree"] == 2
    assert doc["meta"]["label_names"] == ["table", "mug", "bowl"]
    extras = {e["name"]: e for e in doc["extras"]}
    assert extras["selected"] == {
        "name": "selected",
        "dtype": "bool",
        "shape": [],
        "properties": ["selected"],
    }
    assert extras["feature"]["shape"] == [8] and extras["feature"]["properties"][7] == "feature_7"


def test_no_warnings_on_plain_round_trip(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_scene(save_scene(random_scene(n=4), tmp_path / "s.ply"))
