"""Fuzzing the scene readers: any bytes give a valid scene or a `SceneFormatError`, quickly.

For every reader: random bytes behind each format's magic, and mutations of valid files
(truncation, flipped / inserted / deleted bytes, overwritten integers, edited PLY header lines,
mutated SPZ payloads re-compressed so the decoder behind the gzip / zstd layer is reached).
A reader that raises anything else, lets an error through the loader's safety net, or runs
longer than a few seconds fails the test.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import json
import signal
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fields.formats import UNEXPECTED, SceneFormatError, load_scene, save_scene
from fields.scene import GaussianScene
from tests.fields.test_formats import (
    FIXTURES,
    inria_columns,
    pack_compressed,
    random_scene,
    raw_ply,
    spz_header,
    spz_sample,
    spz_v4,
)

FUZZ = settings(
    max_examples=60,
    deadline=2500,  # milliseconds per example; real work per example is a few ms
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def hung(signum, frame):
        raise TimeoutError(f"reader still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def check(directory: Path, name: str, data: bytes) -> None:
    path = directory / name
    path.write_bytes(data)
    try:
        with time_limit(5.0), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "SH degree 4 is cut to 3"
            scene = load_scene(path)
    except SceneFormatError as e:
        assert UNEXPECTED not in str(e), f"an error slipped past the decoder: {e}"
        assert str(path) in str(e)
        return
    assert isinstance(scene, GaussianScene) and len(scene) > 0
    for t in (scene.means, scene.quats, scene.scales, scene.opacities, scene.sh):
        assert torch.isfinite(t).all()


# ----------------------------------------------------------------------------- seed files
@functools.cache
def seeds() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scene = random_scene(n=5, degree=1)
        out["inria"] = save_scene(scene, Path(tmp) / "s.ply").read_bytes()  # extras, no sidecar
        out["inria_sidecar"] = (Path(tmp) / "s.ply.json").read_bytes()
        splat = random_scene(n=4, degree=0, extras=False).replace(meta={})
        out["splat"] = save_scene(splat, Path(tmp) / "s.splat").read_bytes()
    plain = random_scene(n=3, degree=2, extras=False)
    out["inria_ascii"] = raw_ply(inria_columns(plain), "ascii")
    wide = {k: v.astype(np.float64) for k, v in inria_columns(plain, normals=False).items()}
    out["inria_big"] = raw_ply(wide, "binary_big_endian")
    rng = np.random.default_rng(0)
    n = 260
    ply = pack_compressed(
        rng.normal(size=(n, 3)),
        rng.normal(size=(n, 4)),
        rng.normal(size=(n, 3)) - 3,
        rng.uniform(size=(n, 3)),
        rng.uniform(size=n),
        rng.uniform(-2, 2, (n, 9)),
    )
    buf = io.BytesIO()
    ply.write(buf)
    out["compressed"] = buf.getvalue()
    streams, _ = spz_sample(degree=1, n=3)
    out["spz_payload_v3"] = spz_header(3, 3, 1) + b"".join(streams)
    streams2 = list(streams)
    streams2[4] = bytes(9)
    out["spz_payload_v2"] = spz_header(2, 3, 1) + b"".join(streams2)
    out["spz_v4"] = spz_v4(3, 1, streams)
    for name in ("minimal-v4.spz", "minimal-v3.spz"):
        if (FIXTURES / name).is_file():
            out["fixture_" + name] = (FIXTURES / name).read_bytes()  # real zstd / deflate frames
    return out


PLY_SEEDS = ["inria", "inria_ascii", "inria_big", "compressed"]
MAGICS = [
    b"",
    b"ply\n",
    b"ply\nformat binary_little_endian 1.0\nelement vertex 2\n",
    b"ply\nformat ascii 1.0\n",
    b"\x1f\x8b\x08\x00",
    b"NGSP\x02\x00\x00\x00",
    b"NGSP\x03\x00\x00\x00",
    b"NGSP\x04\x00\x00\x00",
]
INTS = [0, 1, 2, 3, 4, 5, 9, 24, 31, 32, 255, 256, 257, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]


@st.composite
def mutations(draw, data: bytes, start: int = 0, resize: bool = True) -> bytes:
    """1-4 edits of `data`; `start` protects a prefix, `resize=False` keeps the length."""
    buf = bytearray(data)
    ops = ["truncate", "flip", "insert", "delete", "int"] if resize else ["flip", "int", "int"]
    for _ in range(draw(st.integers(1, 4))):
        if len(buf) <= start:
            break
        # Mostly keep the 4 magic bytes (other tests cover wrong magic); favour the header.
        lo = max(start, 4 if len(buf) > 4 and draw(st.integers(0, 9)) else 0)
        head = st.integers(lo, max(lo, min(len(buf), lo + 160) - 1))
        pos = min(draw(st.one_of(head, st.integers(lo, max(lo, len(buf) - 1)))), len(buf) - 1)
        op = draw(st.sampled_from(ops))
        if op == "truncate":
            del buf[pos:]
        elif op == "flip":
            buf[pos] ^= draw(st.integers(1, 255))
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 16))]
        else:
            width = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(st.sampled_from(INTS)) & ((1 << (8 * width)) - 1)
            width = min(width, len(buf) - pos) if not resize else width
            value = value & ((1 << (8 * width)) - 1)
            buf[pos : pos + width] = value.to_bytes(width, "little")
    return bytes(buf)


PLY_TYPES = [
    "char",
    "uchar",
    "short",
    "ushort",
    "int",
    "uint",
    "float",
    "double",
    "half",
    "int64",
    "list uchar float",
    "list int int",
]


@st.composite
def header_edits(draw, data: bytes) -> bytes:
    end = data.index(b"end_header\n")
    lines = [*data[:end].decode("ascii").split("\n")[:-1], "end_header"]
    body = data[end + len(b"end_header\n") :]
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["count", "type", "delete", "duplicate", "swap", "garbage"]))
        words = lines[i].split()
        if op == "count" and words[:1] == ["element"]:
            count = draw(
                st.one_of(
                    st.sampled_from([0, 1, 2, 255, 256, 257, 10**15, 2**64]), st.integers(0, 10**6)
                )
            )
            lines[i] = f"element {words[1]} {count}"
        elif op == "type" and words[:1] == ["property"]:
            lines[i] = f"property {draw(st.sampled_from(PLY_TYPES))} {words[-1]}"
        elif op == "delete":
            lines.pop(i)
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "garbage":
            lines[i] = draw(
                st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=24)
            )
    return ("\n".join(lines) + "\n").encode("utf-8") + body


# ----------------------------------------------------------------------------------- tests
@FUZZ
@given(
    prefix=st.sampled_from(MAGICS),
    body=st.binary(max_size=2048),
    ext=st.sampled_from([".ply", ".splat", ".spz", ".bin"]),
)
def test_random_bytes(fuzz_dir, prefix, body, ext):
    check(fuzz_dir, "random" + ext, prefix + body)


@FUZZ
@given(data=st.data(), seed=st.sampled_from(PLY_SEEDS))
def test_ply_byte_mutations(fuzz_dir, data, seed):
    check(fuzz_dir, "mutated.ply", data.draw(mutations(seeds()[seed])))


@FUZZ
@given(data=st.data(), seed=st.sampled_from(PLY_SEEDS))
def test_ply_body_mutations(fuzz_dir, data, seed):
    ply = seeds()[seed]
    body = ply.index(b"end_header\n") + len(b"end_header\n")
    check(
        fuzz_dir, "body.ply", data.draw(mutations(ply, start=body, resize=data.draw(st.booleans())))
    )


@FUZZ
@given(data=st.data(), seed=st.sampled_from(PLY_SEEDS))
def test_ply_header_edits(fuzz_dir, data, seed):
    check(fuzz_dir, "edited.ply", data.draw(header_edits(seeds()[seed])))


NAMES = [
    "vertex",
    "chunk",
    "sh",
    "face",
    "x",
    "y",
    "opacity",
    "f_rest_0",
    "packed_position",
    "min_x",
]
COUNTS = ["0", "1", "2", "256", "257", "-1", "1e3", "99999999999999999999"]
HEADER_LINE = st.one_of(
    st.tuples(st.just("element"), st.sampled_from(NAMES), st.sampled_from(COUNTS)),
    st.tuples(st.just("property"), st.sampled_from(PLY_TYPES), st.sampled_from(NAMES)),
    st.tuples(
        st.sampled_from(["comment", "format", "end_header"]), st.sampled_from(NAMES + COUNTS)
    ),
).map(" ".join)
ASCII_BODY = st.lists(st.sampled_from(["0", "1", "-2.5", "nan", "x", "\n", " "]), max_size=64)


@FUZZ
@given(
    fmt=st.sampled_from(["binary_little_endian", "binary_big_endian", "ascii"]),
    lines=st.lists(HEADER_LINE, max_size=12),
    body=st.one_of(st.binary(max_size=512), ASCII_BODY.map(lambda t: "".join(t).encode())),
)
def test_ply_random_headers(fuzz_dir, fmt, lines, body):
    header = "\n".join(["ply", f"format {fmt} 1.0", *lines, "end_header"]) + "\n"
    check(fuzz_dir, "grammar.ply", header.encode() + body)


@FUZZ
@given(data=st.data())
def test_splat_mutations(fuzz_dir, data):
    check(
        fuzz_dir,
        "mutated.splat",
        data.draw(mutations(seeds()["splat"], resize=data.draw(st.booleans()))),
    )


@FUZZ
@given(
    data=st.data(),
    version=st.sampled_from(["spz_payload_v2", "spz_payload_v3"]),
    zipped=st.booleans(),
)
def test_spz_legacy_payload_mutations(fuzz_dir, data, version, zipped):
    payload = data.draw(mutations(seeds()[version]))
    check(fuzz_dir, "payload.spz", gzip.compress(payload) if zipped else payload)


@FUZZ
@given(data=st.data(), version=st.sampled_from(["spz_payload_v2", "spz_payload_v3"]))
def test_spz_gzip_byte_mutations(fuzz_dir, data, version):
    check(fuzz_dir, "gzip.spz", data.draw(mutations(gzip.compress(seeds()[version]))))


@FUZZ
@given(data=st.data())
def test_spz_v4_mutations(fuzz_dir, data):
    names = [k for k in seeds() if k in ("spz_v4", "fixture_minimal-v4.spz")]
    check(fuzz_dir, "v4.spz", data.draw(mutations(seeds()[data.draw(st.sampled_from(names))])))


@FUZZ
@given(
    n=st.sampled_from([0, 1, 2, 3, 4, 2**31, 2**32 - 1]),
    degree=st.integers(0, 5),
    cut=st.lists(st.integers(0, 40), min_size=6, max_size=6),
    drop=st.integers(0, 6),
)
def test_spz_v4_inconsistent_streams(fuzz_dir, n, degree, cut, drop):
    streams, _ = spz_sample(degree=1, n=3)
    streams = [s[: len(s) - c] if c < len(s) else s for s, c in zip(streams, cut, strict=True)][
        : 6 - drop
    ]
    check(fuzz_dir, "v4s.spz", spz_v4(n, degree, streams))


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(data=st.data())
def test_sidecar_edits(fuzz_dir, data):
    ply = seeds()["inria"]
    doc = json.loads(seeds()["inria_sidecar"])
    target = doc
    path = data.draw(st.lists(st.integers(0, 7), min_size=1, max_size=4))
    for step in path[:-1]:  # walk into the document, then replace or drop one value
        keys = list(target) if isinstance(target, dict) else list(range(len(target)))
        if not keys or not isinstance(target[keys[step % len(keys)]], dict | list):
            break
        target = target[keys[step % len(keys)]]
    keys = list(target) if isinstance(target, dict) else list(range(len(target)))
    if keys:
        key = keys[path[-1] % len(keys)]
        if data.draw(st.booleans()):
            target[key] = data.draw(JSON)
        else:
            del target[key]
    (fuzz_dir / "sc.ply.json").write_text(json.dumps(doc))
    check(fuzz_dir, "sc.ply", ply)
