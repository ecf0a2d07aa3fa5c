"""harness/reference/streams.py and apply_file(): the streamed Apply gives exactly what apply()
of the same bytes gives (descriptor, error, stage, layer.erofs), in bounded memory."""
from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import zstandard

from harness.reference import streams
from harness.reference.apply import DecompressError, apply, apply_file, decompress_stream
from harness.reference.mediatypes import OCI_LAYER, SwitchSet

from test_reference_apply import DECODE, REPRO, desc, needs_mkfs

V242 = SwitchSet.for_version("2.4.2")
ROOT = Path(__file__).resolve().parents[1]


def chunks_of(blob: bytes):
    return list(streams.iter_stream(streams.Source(io.BytesIO(blob))))


@pytest.mark.parametrize("name,blob,length,error,header", DECODE, ids=[d[0] for d in DECODE])
def test_streamed_chunks_join_to_the_whole_decode(name, blob, length, error, header):
    got = []
    try:
        for c in streams.iter_stream(streams.Source(io.BytesIO(blob))):
            got.append(c)
    except DecompressError as e:
        assert (e.message, e.header) == (error, header)
    else:
        assert error is None
    assert len(b"".join(got)) == length


def test_rle_zstd_is_handed_on_in_bounded_chunks():
    data = bytes(64 << 20)                       # 64 MiB of zeros: RLE blocks, ~2 KiB of zstd
    blob = zstandard.ZstdCompressor().compress(data)
    assert len(blob) < 64 << 10
    sizes = [len(c) for c in chunks_of(blob)]
    assert sum(sizes) == len(data) and max(sizes) <= streams.OUT


def test_highly_compressed_gzip_is_handed_on_in_bounded_chunks():
    blob = gzip.compress(bytes(64 << 20), compresslevel=9, mtime=0)
    sizes = [len(c) for c in chunks_of(blob)]
    assert sum(sizes) == 64 << 20 and max(sizes) <= streams.OUT


def test_truncated_gzip_beyond_the_hold_back_gives_gos_partial_output():
    data = b"".join(b"line %d of a compressible layer\n" % i for i in range(120_000))  # 3.8 MB
    body = zlib.compressobj(6, zlib.DEFLATED, -15)
    raw = body.compress(data) + body.flush()
    blob = gzip.compress(b"", mtime=0)[:10] + raw[:len(raw) // 2]     # header + half the body
    with pytest.raises(DecompressError) as e:
        decompress_stream(blob)
    assert e.value.message == "unexpected EOF"
    partial = e.value.partial
    assert len(partial) > streams.HOLD and data.startswith(partial)   # a prefix, past the hold


def test_zstd_corruption_late_in_a_frame_keeps_what_decoded_before():
    data = os.urandom(300_000) + bytes(1 << 20)
    blob = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(data))
    blob[-1] ^= 0xFF                                                  # the content checksum
    with pytest.raises(DecompressError) as e:
        decompress_stream(bytes(blob))
    assert e.value.message == "CRC check failed" and e.value.partial == data


@needs_mkfs
@pytest.mark.parametrize("name,blob,length,error,header", DECODE, ids=[d[0] for d in DECODE])
@pytest.mark.parametrize("media_type", [OCI_LAYER + "+gzip", OCI_LAYER + "+zstd",
                                        "application/vnd.erofs.layer.v1+zstd"])
def test_apply_file_equals_apply(tmp_path, name, blob, length, error, header, media_type):
    blob_path = tmp_path / "blob"
    blob_path.write_bytes(blob)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    d = desc(media_type, blob)
    one = apply(blob, d, str(tmp_path / "a"), V242, REPRO)
    two = apply_file(str(blob_path), d, str(tmp_path / "b"), V242, REPRO)
    assert (one.descriptor, one.error, one.stage, one.argv and one.argv[:-1]) == \
        (two.descriptor, two.error, two.stage, two.argv and two.argv[:-1])
    images = [p / "layer.erofs" for p in (tmp_path / "a", tmp_path / "b")]
    assert [p.exists() for p in images][0] == [p.exists() for p in images][1]
    if images[0].exists() and not one.error:
        assert images[0].read_bytes() == images[1].read_bytes()


PEAK = """
import sys
from harness.reference.apply import apply_file
from harness.reference.mediatypes import SwitchSet
out = apply_file(sys.argv[1], {"mediaType": sys.argv[2], "digest": "sha256:x", "size": 0},
                 sys.argv[3], SwitchSet.for_version("2.4.2"), mkfs=sys.argv[4])
assert out.ok, out.error
# VmHWM: this process image's peak (ru_maxrss would carry the forking pytest worker's size)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(out.descriptor["size"], hwm // 1024)
"""


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_peak_memory_is_bounded_whatever_the_stream_size(tmp_path, kind):
    """512 MiB of decoded stream (a few MiB of blob) through apply_file: the reference's peak
    RSS stays under 64 MiB (the old whole-blob code needed > 1 GiB here)."""
    size = 512 << 20
    blob = tmp_path / "blob"
    with open(blob, "wb") as f:
        if kind == "gzip":
            with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=1, mtime=0) as g:
                for _ in range(size >> 20):
                    g.write(bytes(1 << 20))
        else:
            with zstandard.ZstdCompressor().stream_writer(f, closefd=False) as w:
                for _ in range(size >> 20):
                    w.write(bytes(1 << 20))
    sink = tmp_path / "sink-mkfs"
    sink.write_text("#!/bin/sh\nexec cat >/dev/null\n")
    sink.chmod(0o755)
    mt = OCI_LAYER + ("+gzip" if kind == "gzip" else "+zstd")
    p = subprocess.run([sys.executable, "-c", PEAK, str(blob), mt, str(tmp_path), str(sink)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    streamed, peak_mib = map(int, p.stdout.split())
    assert streamed == size
    assert peak_mib < 64, f"peak RSS {peak_mib} MiB"
