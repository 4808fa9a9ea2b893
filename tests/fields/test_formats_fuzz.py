"""Fuzzing the scene readers: any bytes give a valid scene or a `SceneFormatError`, quickly,
in bounded memory.

For every reader: random bytes behind each format's magic, and mutations of valid files
(truncation, flipped / inserted / deleted bytes, overwritten integers, edited PLY header lines,
mutated SPZ payloads re-compressed so the decoder behind the gzip / zstd layer is reached).
Seeds include what our own writers produce (SPZ v2/v3/v4, compressed PLY, SOG bundles and
meta.json) and the bomb shapes of the readers with a header count (SPZ gzip / zstd files
declaring far more Gaussians than they hold, valid streams of identical Gaussians at the
densest compression). A reader that raises anything else, lets an error through the loader's
safety net, runs longer than a few seconds, or runs out of memory fails the test: the whole
module runs under an address-space limit (RLIMIT_AS, current size + 2 GiB), and a
`SceneFormatError` that only reports running out of memory counts as a failure.

`SCENELAB_FUZZ_EXAMPLES=N` sets the examples per test (default 60); with
`SCENELAB_FUZZ_REPORT=path.json` the module writes how many inputs each test checked and how
they ended (scene / SceneFormatError).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gzip
import io
import json
import os
import resource
import signal
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fields.formats import UNEXPECTED, SceneFormatError, load_scene, save_scene
from fields.formats._compressed_ply import write_compressed
from fields.formats._sog import sog_files, write_sog_bundle
from fields.formats._spz import FREE_BYTES, decoded_bytes, write_spz
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
from tests.fields.test_formats_spz import zstd_rle_frame

try:  # H2's independent .ksplat writer (GaussianSplats3D's layout), when present
    from tests.fields.test_formats_sog import write_ksplat
except ImportError:  # pragma: no cover
    write_ksplat = None

EXAMPLES = int(os.environ.get("SCENELAB_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=2500,  # milliseconds per example; real work per example is a few ms
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


MEMORY_HEADROOM = 2 << 30  # address space the readers may add while this module runs
OUTCOMES: collections.Counter = collections.Counter()


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


@pytest.fixture(scope="module", autouse=True)
def memory_limit() -> Iterator[int]:
    """Run this module's tests with the address space capped at its size now + 2 GiB, so a
    reader that allocates what a header declares fails (MemoryError) instead of swapping;
    the previous limit is restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_size() + MEMORY_HEADROOM
    for bound in (soft, hard):
        if bound != resource.RLIM_INFINITY:
            limit = min(limit, bound)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture(scope="module", autouse=True)
def fuzz_report() -> Iterator[None]:
    OUTCOMES.clear()
    yield
    report = os.environ.get("SCENELAB_FUZZ_REPORT")
    if report:
        counts: dict[str, dict[str, int]] = {}
        for (test, outcome), k in sorted(OUTCOMES.items()):
            counts.setdefault(test, {})[outcome] = k
        Path(report).write_text(json.dumps({"examples_setting": EXAMPLES, "tests": counts}))


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def test_memory_limit_is_in_force(memory_limit):
    """The fixture's cap holds: allocating past it raises MemoryError here (the fuzz tests
    rely on it to catch readers that allocate what a header declares)."""
    assert resource.getrlimit(resource.RLIMIT_AS)[0] == memory_limit
    with pytest.raises(MemoryError):
        bytearray(MEMORY_HEADROOM + (1 << 30))


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


OUT_OF_MEMORY = ("out of memory", "not enough memory")


def _test_name() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]


def check(directory: Path, name: str, data: bytes) -> None:
    path = directory / name
    path.write_bytes(data)
    try:
        with time_limit(5.0), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "SH degree 4 is cut to 3"
            scene = load_scene(path)
    except SceneFormatError as e:
        assert UNEXPECTED not in str(e), f"an error slipped past the decoder: {e}"
        assert not any(m in str(e) for m in OUT_OF_MEMORY), f"a reader ran out of memory: {e}"
        assert str(path) in str(e)
        OUTCOMES[_test_name(), "SceneFormatError"] += 1
        return
    OUTCOMES[_test_name(), "scene"] += 1
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
    for name in ("minimal-v4.spz", "minimal-v3.spz", "minimal.ksplat"):
        if (FIXTURES / name).is_file():
            out["fixture_" + name] = (FIXTURES / name).read_bytes()  # real zstd / deflate frames
    # What our writers produce.
    for version in (2, 3, 4):
        for degree in (0, 1, 3):
            buf = io.BytesIO()
            write_spz(
                buf, random_scene(n=4, degree=degree, seed=degree, extras=False), version=version
            )
            out[f"spz_ours_v{version}_sh{degree}"] = buf.getvalue()
    buf = io.BytesIO()
    write_compressed(buf, random_scene(n=300, degree=3, extras=False).replace(meta={}))
    out["compressed_ours"] = buf.getvalue()  # two chunks, SH3
    buf = io.BytesIO()
    write_sog_bundle(buf, sog_seed_files())
    out["sog_bundle"] = buf.getvalue()
    if write_ksplat is not None:
        for level in (0, 1, 2):
            scene = random_scene(n=6, degree=level, seed=level, extras=False)
            out[f"ksplat_ours_{level}"] = write_ksplat(scene, level)[0]
    return out


@functools.cache
def sog_seed_files() -> dict[str, bytes]:
    """meta.json + WebP textures of a small SH1 scene, as `sog_files` writes them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "SOG cannot hold meta"
        return sog_files(random_scene(n=40, degree=1, extras=False), iterations=2)


PLY_SEEDS = ["inria", "inria_ascii", "inria_big", "compressed", "compressed_ours"]
SPZ_OURS = [f"spz_ours_v{v}_sh{d}" for v in (2, 3, 4) for d in (0, 1, 3)]
MAGICS = [
    b"",
    b"ply\n",
    b"ply\nformat binary_little_endian 1.0\nelement vertex 2\n",
    b"ply\nformat ascii 1.0\n",
    b"\x1f\x8b\x08\x00",
    b"NGSP\x02\x00\x00\x00",
    b"NGSP\x03\x00\x00\x00",
    b"NGSP\x04\x00\x00\x00",
    b"PK\x03\x04",
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
    ext=st.sampled_from([".ply", ".splat", ".spz", ".sog", ".ksplat", ".bin"]),
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


# ------------------------------------------------------------------ our writers' output
@FUZZ
@given(data=st.data(), seed=st.sampled_from(SPZ_OURS))
def test_spz_writer_output_mutations(fuzz_dir, data, seed):
    check(fuzz_dir, "ours.spz", data.draw(mutations(seeds()[seed])))


def _v4_parts(data: bytes) -> tuple[bytes, list[bytes]]:
    """(header + extensions, decompressed streams) of a v4 file we wrote."""
    import zstandard

    n_streams, toc = struct.unpack_from("<BI", data, 15)
    off, streams = toc + 16 * n_streams, []
    for i in range(n_streams):
        packed, _ = struct.unpack_from("<QQ", data, toc + 16 * i)
        streams.append(zstandard.ZstdDecompressor().decompress(data[off : off + packed]))
        off += packed
    return data[:toc], streams


def _v4_join(head: bytes, streams: list[bytes], sizes: list[int]) -> bytes:
    import zstandard

    frames = [zstandard.ZstdCompressor(level=1).compress(s) for s in streams]
    toc = b"".join(struct.pack("<QQ", len(f), n) for f, n in zip(frames, sizes, strict=True))
    return head + toc + b"".join(frames)


@FUZZ
@given(data=st.data(), seed=st.sampled_from(SPZ_OURS), toc_follows=st.booleans())
def test_spz_writer_payload_mutations(fuzz_dir, data, seed, toc_follows):
    """Mutate the decompressed bytes of our files and compress them again, so the decoder
    behind gzip / zstd sees them (for v4, with the TOC following the new sizes or not)."""
    raw = seeds()[seed]
    if raw[:2] == b"\x1f\x8b":
        check(fuzz_dir, "payload.spz", gzip.compress(data.draw(mutations(gzip.decompress(raw)))))
        return
    head, streams = _v4_parts(raw)
    i = data.draw(st.integers(0, len(streams) - 1))
    sizes = [len(s) for s in streams]
    streams[i] = data.draw(mutations(streams[i], start=0))
    if toc_follows:
        sizes[i] = len(streams[i])
    check(fuzz_dir, "streams.spz", _v4_join(head, streams, sizes))


BUDGET_N = FREE_BYTES // decoded_bytes(1, 0)
DECLARED = st.one_of(
    st.sampled_from(
        [
            1,
            2,
            255,
            4096,
            BUDGET_N,
            BUDGET_N + 1,
            10**7,
            45 * 10**6,
            9 * 10**7,
            2**31 - 1,
            2**32 - 1,
        ]
    ),
    st.integers(1, 50_000),
)


@FUZZ
@given(
    declared=DECLARED,
    held=st.one_of(st.just(None), st.integers(1, 50_000)),
    degree=st.integers(0, 4),
    fill=st.integers(0, 255),
    legacy=st.booleans(),
)
def test_spz_bomb_shapes(fuzz_dir, declared, held, degree, fill, legacy):
    """Valid-looking streams at the densest compression whose header declares `declared`
    Gaussians while they hold `held` (None: as many as declared, when that is small enough to
    build): refused or decoded, never an allocation the data cannot back."""
    held = declared if held is None and declared <= 50_000 else (held or 1)
    dim = {0: 0, 1: 3, 2: 8, 3: 15, 4: 24}[degree]
    if legacy:  # a v3 gzip stream holding `held` Gaussians of `fill` bytes
        header = b"NGSP" + struct.pack("<IIBBBB", 3, declared, degree, 12, 0, 0)
        body = bytes([fill]) * ((20 + 3 * dim) * held)
        check(fuzz_dir, "bomb.spz", gzip.compress(header + body, compresslevel=6))
        return
    sizes = [9 * held, held, 3 * held, 3 * held, 4 * held] + ([3 * dim * held] if dim else [])
    frames = [zstd_rle_frame(s, fill) for s in sizes]
    head = b"NGSP" + struct.pack("<IIBBBBI", 4, declared, degree, 12, 0, len(frames), 32)
    toc = b"".join(struct.pack("<QQ", len(f), s) for f, s in zip(frames, sizes, strict=True))
    check(fuzz_dir, "bomb.spz", head + bytes(12) + toc + b"".join(frames))


@FUZZ
@given(data=st.data())
def test_sog_bundle_byte_mutations(fuzz_dir, data):
    check(fuzz_dir, "mutated.sog", data.draw(mutations(seeds()["sog_bundle"])))


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, body in files.items():
            z.writestr(name, body)
    return buf.getvalue()


@st.composite
def meta_edits(draw, meta: bytes) -> bytes:
    """meta.json with one value replaced (JSON of any shape) or deleted, or its text mutated."""
    if draw(st.integers(0, 3)) == 0:
        return draw(mutations(meta, start=0))
    doc = json.loads(meta)
    target = doc
    steps = draw(st.lists(st.integers(0, 7), min_size=1, max_size=4))
    for step in steps[:-1]:
        keys = list(target) if isinstance(target, dict) else list(range(len(target)))
        if not keys or not isinstance(target[keys[step % len(keys)]], dict | list):
            break
        target = target[keys[step % len(keys)]]
    keys = list(target) if isinstance(target, dict) else list(range(len(target)))
    if keys:
        key = keys[steps[-1] % len(keys)]
        if draw(st.booleans()):
            target[key] = draw(JSON)
        else:
            del target[key]
    return json.dumps(doc).encode()


@FUZZ
@given(data=st.data())
def test_sog_member_mutations(fuzz_dir, data):
    """One member of our bundle edited (meta.json values, or a WebP's bytes), re-zipped."""
    files = dict(sog_seed_files())
    name = data.draw(st.sampled_from(sorted(files)))
    if name == "meta.json":
        files[name] = data.draw(meta_edits(files[name]))
    else:
        files[name] = data.draw(mutations(files[name]))
    if data.draw(st.integers(0, 3)) == 0:
        del files[data.draw(st.sampled_from(sorted(files)))]
    check(fuzz_dir, "member.sog", _zip(files))


@FUZZ
@given(data=st.data())
def test_sog_meta_json_edits(fuzz_dir, data):
    """Unbundled SOG: meta.json edited, its WebP files beside it."""
    folder = fuzz_dir / "sog-meta"
    folder.mkdir(exist_ok=True)
    files = sog_seed_files()
    for name, body in files.items():
        if name != "meta.json" and not (folder / name).exists():
            (folder / name).write_bytes(body)
    check(folder, "meta.json", data.draw(meta_edits(files["meta.json"])))


KSPLAT_SEEDS = ["fixture_minimal.ksplat", "ksplat_ours_0", "ksplat_ours_1", "ksplat_ours_2"]


@FUZZ
@given(data=st.data(), resize=st.booleans())
def test_ksplat_mutations(fuzz_dir, data, resize):
    names = [k for k in KSPLAT_SEEDS if k in seeds()]
    if not names:
        pytest.skip("no .ksplat seed (fixture or writer) available")
    seed = seeds()[data.draw(st.sampled_from(names))]
    check(fuzz_dir, "mutated.ksplat", data.draw(mutations(seed, resize=resize)))


SEED_NAMES = {  # seed -> the file name it is checked under
    "inria": "s.ply",
    "inria_ascii": "s.ply",
    "inria_big": "s.ply",
    "compressed": "s.ply",
    "compressed_ours": "s.ply",
    "splat": "s.splat",
    "spz_payload_v3": "s.spz",
    "spz_v4": "s.spz",
    "sog_bundle": "s.sog",
    **{k: "s.spz" for k in SPZ_OURS},
    **{k: "s.ksplat" for k in KSPLAT_SEEDS},
}


def test_seeds_are_valid_files(tmp_path):
    """Every seed the mutations start from loads as a scene (so mutations explore the
    decoders, not only their first check)."""
    for name, filename in SEED_NAMES.items():
        if name not in seeds():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = tmp_path / filename
            path.write_bytes(seeds()[name])
            assert len(load_scene(path)) > 0, name
    folder = tmp_path / "meta"
    folder.mkdir()
    for name, body in sog_seed_files().items():
        (folder / name).write_bytes(body)
    assert len(load_scene(folder / "meta.json")) == 40
