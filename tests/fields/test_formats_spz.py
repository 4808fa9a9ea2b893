"""SPZ writer (v2, v3, v4): round trips within quantisation, byte-for-byte agreement with
Niantic's packer (through splat-transform), interop both ways, and bomb files that must be
refused without allocating (run under an address-space limit, so a regression fails instead
of swapping)."""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from fields.formats import SceneFormatError, load_scene, save_scene
from fields.formats._spz import (
    FREE_BYTES,
    decoded_bytes,
    read_spz,
    write_spz,
)
from fields.scene import GaussianScene

REPO = Path(__file__).resolve().parents[2]

# Quantisation steps of SPZ as Niantic packs it (half a step is the largest rounding error).
POS_STEP = 1 / 4096  # 12 fractional bits
SCALE_STEP = 1 / 16
ALPHA_STEP = 1 / 255
DC_STEP = 1 / (255 * 0.15)
SH1_STEP = 8 / 128  # 5 bits: buckets of 8 byte values
SH_REST_STEP = 16 / 128  # 4 bits: buckets of 16


def spz_scene(n: int = 500, degree: int = 3, seed: int = 0) -> GaussianScene:
    """Random Gaussians inside SPZ's ranges (so only rounding, no clamping, is measured)."""
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    return GaussianScene(
        means=torch.randn(n, 3, generator=g) * 3,
        quats=torch.randn(n, 4, generator=g),
        scales=torch.rand(n, 3, generator=g) * 9 - 8,
        opacities=torch.randn(n, generator=g) * 2,
        sh=torch.cat(
            [
                torch.rand(n, 1, 3, generator=g) * 6 - 3,
                torch.rand(n, k - 1, 3, generator=g) * 1.8 - 0.9,
            ],
            dim=1,
        ),
    )


def unit_quats(q: torch.Tensor) -> torch.Tensor:
    q = q / q.norm(dim=1, keepdim=True)
    return torch.where(q[:, :1] < 0, -q, q)  # q and -q are one rotation


def max_errors(a: GaussianScene, b: GaussianScene) -> dict[str, float]:
    """Largest per-attribute differences (alpha in activated space, quats up to sign)."""
    qa, qb = unit_quats(a.quats), unit_quats(b.quats)
    q = torch.minimum((qa - qb).abs().amax(1), (qa + qb).abs().amax(1))
    out = {
        "position": (a.means - b.means).abs().max().item(),
        "scale": (a.scales - b.scales).abs().max().item(),
        "alpha": (torch.sigmoid(a.opacities) - torch.sigmoid(b.opacities)).abs().max().item(),
        "dc": (a.sh[:, 0] - b.sh[:, 0]).abs().max().item(),
        "quat": q.max().item(),
    }
    if a.sh.shape[1] > 1:
        out["sh1"] = (a.sh[:, 1:4] - b.sh[:, 1:4]).abs().max().item()
    if a.sh.shape[1] > 4:
        out["sh_rest"] = (a.sh[:, 4:] - b.sh[:, 4:]).abs().max().item()
    return out


def assert_within_quantisation(
    got: GaussianScene, want: GaussianScene, version: int, extent: float = 1.0
) -> dict[str, float]:
    assert len(got) == len(want)
    assert got.sh.shape == want.sh.shape
    err = max_errors(got, want)
    eps = 1e-5
    assert err["position"] <= POS_STEP * extent / 2 + eps
    assert err["scale"] <= SCALE_STEP / 2 + eps
    assert err["alpha"] <= ALPHA_STEP / 2 + eps
    assert err["dc"] <= DC_STEP / 2 + eps
    assert err.get("sh1", 0.0) <= SH1_STEP / 2 + 1 / 256 + eps  # bucket half + byte rounding
    assert err.get("sh_rest", 0.0) <= SH_REST_STEP / 2 + 1 / 256 + eps
    if version >= 3:
        assert err["quat"] <= 2e-3  # 9-bit smallest three
    return err


def spz_bytes(scene: GaussianScene, version: int) -> bytes:
    buf = io.BytesIO()
    write_spz(buf, scene, version=version)
    return buf.getvalue()


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
@pytest.mark.parametrize("version", [2, 3, 4])
def test_round_trip_within_quantisation(tmp_path, version, degree):
    scene = spz_scene(n=700, degree=degree, seed=degree)
    data = spz_bytes(scene, version)
    assert data[:2] == b"\x1f\x8b" if version < 4 else data[:4] == b"NGSP"
    back = read_spz(tmp_path / "x.spz", data)
    assert_within_quantisation(back, scene, version)
    if version == 2:  # xyz on 8 bits, w rebuilt: compare what is stored
        qa, qb = unit_quats(back.quats), unit_quats(scene.quats)
        assert (qa[:, 1:] - qb[:, 1:]).abs().max() <= 2 / 255
    again = read_spz(tmp_path / "y.spz", spz_bytes(back, version))  # re-encoding is stable
    for a, b in zip(
        (again.means, again.scales, again.opacities, again.sh),
        (back.means, back.scales, back.opacities, back.sh),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_round_trip_through_save_and_load_scene(tmp_path):
    scene = spz_scene(n=50, degree=1)
    path = tmp_path / "s.spz"
    path.write_bytes(spz_bytes(scene, 3))
    assert_within_quantisation(load_scene(path), scene, 3)


def test_quantisation_matches_reference_formulas():
    """Known values: alpha 0.5 -> byte 128 (round half away from zero), scale -10 -> 0,
    colour dc 0 -> 128, SH +-0.2 (byte 154 / 102) -> 152 / 104 in the 8-wide degree-1
    buckets and 160 / 96 in the 16-wide buckets of higher bands, and the 180 degree turn
    about x (y, z negated) on positions."""
    scene = GaussianScene(
        means=torch.tensor([[1.0, 2.0, -3.0]]),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
        scales=torch.tensor([[-10.0, 0.0, 5.0]]),
        opacities=torch.tensor([0.0]),
        sh=torch.cat([torch.zeros(1, 1, 3), torch.full((1, 8, 3), 0.2)], 1),
    )
    raw = gzip.decompress(spz_bytes(scene, 3))
    assert raw[:16] == b"NGSP" + struct.pack("<IIBBBB", 3, 1, 2, 12, 0, 0)
    pos = np.frombuffer(raw, np.uint8, 9, 16).reshape(3, 3).astype(np.int64)
    fixed = pos[:, 0] | pos[:, 1] << 8 | pos[:, 2] << 16
    fixed = (fixed ^ 0x800000) - 0x800000
    assert fixed.tolist() == [4096, -8192, 12288]
    assert raw[25] == 128  # alpha
    assert list(raw[26:29]) == [128, 128, 128]  # colour
    assert list(raw[29:32]) == [0, 160, 240]  # scales
    sh = np.frombuffer(raw, np.uint8, 24, 36).reshape(8, 3)
    assert set(sh[:3].ravel().tolist()) == {152, 104}  # the turn flips some coefficients
    assert set(sh[3:].ravel().tolist()) == {160, 96}


def test_large_coordinates_use_fewer_fractional_bits(tmp_path):
    scene = spz_scene(n=20, degree=0)
    far = scene.replace(means=scene.means + torch.tensor([5000.0, 0.0, 0.0]))
    data = spz_bytes(far, 4)
    assert data[13] == 10  # 5003 * 2^10 < 2^23 <= 5003 * 2^11
    assert_within_quantisation(read_spz(tmp_path / "f.spz", data), far, 4, extent=4.0)


def test_writer_refuses_what_spz_cannot_hold():
    scene = spz_scene(n=4, degree=1)
    with pytest.raises(ValueError, match="version"):
        spz_bytes(scene, 5)
    with pytest.raises(ValueError, match="empty"):
        spz_bytes(scene.subset(torch.zeros(4, dtype=torch.bool)), 3)
    bad = scene.replace(means=scene.means.clone().index_fill_(0, torch.tensor([1]), float("nan")))
    with pytest.raises(ValueError, match="NaN"):
        spz_bytes(bad, 3)
    with pytest.raises(ValueError, match="24-bit"):
        spz_bytes(scene.replace(means=scene.means * 1e7), 3)


def test_writer_streams_large_scenes_in_chunks(tmp_path):
    """More Gaussians than one encode/decode chunk: the chunk seams must not show."""
    scene = spz_scene(n=(1 << 16) + 123, degree=1, seed=5)
    for version in (3, 4):
        back = read_spz(tmp_path / "big.spz", spz_bytes(scene, version))
        assert_within_quantisation(back, scene, version)


# ------------------------------------------------------------------- against splat-transform
def _payloads(data: bytes) -> list[bytes]:
    """The header and the raw attribute streams of a v3 (gzip) or v4 file."""
    import zstandard

    if data[:2] == b"\x1f\x8b":
        return [gzip.decompress(data)]
    n_streams, toc = struct.unpack_from("<BI", data, 15)
    off, out = toc + 16 * n_streams, [data[:32]]
    for i in range(n_streams):
        packed, _ = struct.unpack_from("<QQ", data, toc + 16 * i)
        out.append(zstandard.ZstdDecompressor().decompress(data[off : off + packed]))
        off += packed
    return out


@pytest.mark.parametrize("version", [3, 4])
def test_bytes_match_niantic_packer(tmp_path, splat_transform, version):
    """splat-transform packs with Niantic's own library (wasm): from the same PLY, our
    attribute bytes must be the same bytes (a stricter check than decoding both)."""
    scene = spz_scene(n=3000, degree=3, seed=1)
    save_scene(scene, tmp_path / "s.ply")
    splat_transform(tmp_path / "s.ply", "--spz-version", version, tmp_path / "theirs.spz")
    theirs = _payloads((tmp_path / "theirs.spz").read_bytes())
    ours = _payloads(spz_bytes(scene, version))
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        x, y = np.frombuffer(a, np.uint8).astype(int), np.frombuffer(b, np.uint8).astype(int)
        assert x.shape == y.shape
        differ = x != y
        # float rounding at exact .5 boundaries may differ by one byte value, rarely
        assert differ.mean() <= 1e-3 and (np.abs(x - y) <= 1).all()


@pytest.mark.parametrize("version", [2, 3, 4])
def test_splat_transform_reads_what_we_write(tmp_path, splat_transform, version):
    scene = spz_scene(n=1500, degree=3, seed=2)
    (tmp_path / "ours.spz").write_bytes(spz_bytes(scene, version))
    splat_transform(tmp_path / "ours.spz", tmp_path / "theirs.ply")
    back = load_scene(tmp_path / "theirs.ply")
    err = assert_within_quantisation(back, scene, version)
    print(f"ours v{version} -> splat-transform -> ply: {json.dumps(err)}")


@pytest.mark.parametrize("version", [3, 4])
def test_we_read_what_splat_transform_writes(tmp_path, splat_transform, version):
    scene = spz_scene(n=1500, degree=3, seed=3)
    save_scene(scene, tmp_path / "s.ply")
    splat_transform(tmp_path / "s.ply", "--spz-version", version, tmp_path / "theirs.spz")
    back = load_scene(tmp_path / "theirs.spz")
    err = assert_within_quantisation(back, scene, version)
    print(f"ply -> splat-transform v{version} -> ours: {json.dumps(err)}")


# -------------------------------------------------------------------------------- bombs
def zstd_rle_frame(size: int, byte: int = 0) -> bytes:
    """A zstd frame of `size` copies of `byte` made of 128 KiB RLE blocks (4 bytes each): the
    densest zstd there is (32768:1), built without a compressor."""
    block = 1 << 17
    out = [struct.pack("<IBB", 0xFD2FB528, 0x80, (17 - 10) << 3), struct.pack("<I", size)]
    left = size
    while left > 0:
        this = min(block, left)
        last = int(left == this)
        out.append(((this << 3) | (1 << 1) | last).to_bytes(3, "little") + bytes([byte]))
        left -= this
    return b"".join(out)


def v4_bomb(n: int, degree: int = 0) -> bytes:
    """A valid SPZ v4 file of `n` identical Gaussians, ~6 KB per 1M Gaussians (SH0)."""
    dim = {0: 0, 1: 3, 2: 8, 3: 15}[degree]
    sizes = [9 * n, n, 3 * n, 3 * n, 4 * n] + ([3 * dim * n] if degree else [])
    fill = [0, 200, 128, 100, 0, 128]
    frames = [zstd_rle_frame(s, b) for s, b in zip(sizes, fill, strict=False)]
    head = b"NGSP" + struct.pack("<IIBBBBI", 4, n, degree, 12, 0, len(frames), 32) + bytes(12)
    toc = b"".join(struct.pack("<QQ", len(f), s) for f, s in zip(frames, sizes, strict=True))
    return head + toc + b"".join(frames)


def gzip_bomb(n: int) -> bytes:
    """A valid gzip SPZ v3 of `n` SH0 Gaussians of zero bytes, deflated at the densest ratio
    (~1030:1): repeated fully-flushed blocks of one compressed MiB of zeros."""
    mib = 1 << 20
    header = b"NGSP" + struct.pack("<IIBBBB", 3, n, 0, 12, 0, 0)
    payload_len = 16 + 20 * n
    if payload_len <= 2 * mib:
        return gzip.compress(header + bytes(20 * n), compresslevel=9)
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = z.compress(header + bytes(mib - 16)) + z.flush(zlib.Z_FULL_FLUSH)
    piece = z.compress(bytes(mib)) + z.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(payload_len - mib, mib)
    body = [first, piece * whole, z.compress(bytes(rest)) + z.flush()]
    crc = zlib.crc32(header + bytes(mib - 16))
    zeros = bytes(mib)
    for _ in range(whole):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(bytes(rest), crc)
    gz_head = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return gz_head + b"".join(body) + struct.pack("<II", crc, payload_len & 0xFFFFFFFF)


def test_bomb_builders_make_valid_streams():
    import zstandard

    frame = zstd_rle_frame(300_000, 7)
    assert zstandard.ZstdDecompressor().decompress(frame) == bytes([7]) * 300_000
    small = gzip_bomb(100_000)
    raw = gzip.decompress(small)
    assert raw[:4] == b"NGSP" and len(raw) == 16 + 20 * 100_000


MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path
    from fields.formats import SceneFormatError, load_scene

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    headroom, paths = int(sys.argv[1]), sys.argv[2:]
    limit = status("VmSize") + headroom
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
    for path in paths:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM (the peak RSS) to the current RSS
        base = status("VmRSS")
        t = time.perf_counter()
        try:
            scene = load_scene(Path(path))
            result = {"ok": len(scene)}
            del scene
        except SceneFormatError as e:
            result = {"error": str(e)}
        except MemoryError as e:
            result = {"memory_error": repr(e)}
        result["seconds"] = time.perf_counter() - t
        result["peak_extra"] = status("VmHWM") - base
        print(json.dumps(result))
    """
)


def probe(*paths: Path, headroom: int = 1536 << 20) -> list[dict]:
    """Load each path in one fresh interpreter whose address space may grow by `headroom`
    bytes (RLIMIT_AS); per file: the outcome and how far the peak RSS rose."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(headroom), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.strip().splitlines()[-len(paths) :]]


def test_bombs_are_refused_before_allocating(tmp_path):
    """The issue's files: a 53 KB v4 declaring 90M Gaussians (reached 5.4 GB) and an 854 KB
    gzip declaring 45M (reached 6 GB). Both are valid streams, refused from the header."""
    files = {"v4-90M.spz": v4_bomb(90_000_000), "gzip-45M.spz": gzip_bomb(45_000_000)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    for name, result in zip(files, probe(*(tmp_path / n for n in files)), strict=True):
        print(f"{name} ({len(files[name])} bytes): {result}")
        assert "error" in result, result
        assert name in result["error"] and "expansion" in result["error"]
        assert result["peak_extra"] < 32 << 20  # nothing decoded


def test_chunked_decoding_peaks_near_the_decoded_size(tmp_path):
    """Valid 1M-Gaussian files of a few KB (v4, SH1) and ~20 KB (gzip, SH0) decode under the
    memory limit with a peak close to the decoded arrays (chunks go straight into them; no
    whole-stream buffers)."""
    n = 1_000_000
    (tmp_path / "v4.spz").write_bytes(v4_bomb(n, degree=1))
    (tmp_path / "gz.spz").write_bytes(gzip_bomb(n))
    results = probe(tmp_path / "v4.spz", tmp_path / "gz.spz")
    for result, degree in zip(results, (1, 0), strict=True):
        print(f"{n} SH{degree} Gaussians ({decoded_bytes(n, degree) >> 20} MiB): {result}")
        assert result.get("ok") == n, result
        assert result["peak_extra"] < 1.2 * decoded_bytes(n, degree) + (24 << 20), result


def test_decoding_budget_edge(tmp_path, monkeypatch):
    """A count at the budget (FREE_BYTES decoded, from a few KB) passes the header checks;
    one Gaussian more is refused."""
    import fields.formats._spz as spz

    n = FREE_BYTES // decoded_bytes(1, 0)
    monkeypatch.setattr(spz, "_decode", lambda *args: "decoded")
    assert read_spz(tmp_path / "edge.spz", v4_bomb(n)) == "decoded"
    with pytest.raises(SceneFormatError, match="expansion"):
        read_spz(tmp_path / "over.spz", v4_bomb(n + 1))
    with pytest.raises(SceneFormatError, match="expansion"):
        read_spz(tmp_path / "over.spz", gzip_bomb(n + 1))


def test_memory_error_becomes_scene_format_error(tmp_path, monkeypatch):
    import fields.formats._spz as spz

    def boom(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(spz, "build_scene", boom)
    with pytest.raises(SceneFormatError, match="not enough memory"):
        read_spz(tmp_path / "m.spz", spz_bytes(spz_scene(n=5, degree=0), 4))


V4_BAD = {
    "frame larger than toc": lambda d: _swap_frame(d, 1, zstd_rle_frame(8)),
    "frame smaller than toc": lambda d: _swap_frame(d, 1, zstd_rle_frame(2)),
    "trailing bytes": lambda d: d + b"\0",
    "toc sizes do not add up": lambda d: _toc(d, 0, packed=1),
}


def _frames(data: bytes) -> tuple[int, int, list[tuple[int, int]]]:
    n_streams, toc = struct.unpack_from("<BI", data, 15)
    off, out = toc + 16 * n_streams, []
    for i in range(n_streams):
        packed, _ = struct.unpack_from("<QQ", data, toc + 16 * i)
        out.append((off, packed))
        off += packed
    return n_streams, toc, out


def _swap_frame(data: bytes, index: int, frame: bytes) -> bytes:
    _, toc, frames = _frames(data)
    start, packed = frames[index]
    out = bytearray(data[:start] + frame + data[start + packed :])
    out[toc + 16 * index : toc + 16 * index + 8] = struct.pack("<Q", len(frame))
    return bytes(out)


def _toc(data: bytes, index: int, packed: int) -> bytes:
    _, toc, _ = _frames(data)
    out = bytearray(data)
    out[toc + 16 * index : toc + 16 * index + 8] = struct.pack("<Q", packed)
    return bytes(out)


@pytest.mark.parametrize("case", sorted(V4_BAD))
def test_inconsistent_v4_streams_are_refused(tmp_path, case):
    data = V4_BAD[case](spz_bytes(spz_scene(n=4, degree=0), 4))
    with pytest.raises(SceneFormatError, match=r"c\.spz: "):
        read_spz(tmp_path / "c.spz", data)
