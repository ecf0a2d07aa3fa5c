"""compression.py: Go's gzip header, trailers, zstd checksum, and decompression by magic."""
from __future__ import annotations

import gzip
import os
import struct
import zlib

import pytest
import zstandard

from harness.reference import compression as c

DATA = os.urandom(3000) + bytes(20000) + b"tail"


def test_gzip_go_header_and_trailer():
    blob = c.compress(DATA, c.OCI_TAR_GZIP)
    assert c.gzip_header(blob) == bytes.fromhex("1f8b08000000000000ff")
    assert c.gzip_trailer(blob) == (zlib.crc32(DATA), len(DATA)) == c.expected_gzip_trailer(DATA)
    assert gzip.decompress(blob) == DATA == c.decompress(blob)


def test_zstd_frame_has_checksum_and_content_size():
    blob = c.compress(DATA, c.OCI_TAR_ZSTD)
    assert blob[:4] == c.ZSTD_MAGIC
    params = zstandard.get_frame_parameters(blob)
    assert params.has_checksum and params.content_size == len(DATA)
    assert c.zstd_frame_checksum(blob) == struct.unpack("<I", blob[-4:])[0]
    assert c.decompress(blob) == DATA


def test_zstd_checksum_is_verified():
    blob = bytearray(c.compress(DATA, c.OCI_TAR_ZSTD))
    blob[-1] ^= 0xFF
    with pytest.raises(zstandard.ZstdError):
        c.decompress(bytes(blob))


def test_zstd_without_checksum():
    blob = zstandard.ZstdCompressor(write_checksum=False).compress(DATA)
    assert c.zstd_frame_checksum(blob) is None
    assert c.decompress(blob) == DATA


def test_zstd_skippable_frame_then_data():
    skippable = struct.pack("<II", 0x184D2A5A, 3) + b"abc"
    blob = skippable + c.compress(b"x" * 100, c.OCI_TAR_ZSTD)
    assert c.detect(blob) == c.ZSTD
    assert c.decompress(blob) == b"x" * 100


def test_detect_and_passthrough():
    assert c.detect(b"\x1f\x8b\x08rest") == c.GZIP
    assert c.detect(b"\x1f\x8b\x07rest") == c.UNCOMPRESSED
    assert c.detect(struct.pack("<I", 0x184D2A50)) == c.UNCOMPRESSED      # skippable needs 8 bytes
    assert c.detect(bytes(1024)) == c.UNCOMPRESSED
    assert c.decompress(bytes(1024)) == bytes(1024)
    assert c.compress(DATA, c.OCI_TAR) == DATA


def test_multi_member_gzip():
    blob = c.gzip_compress(b"one") + c.gzip_compress(b"two")
    assert c.decompress(blob) == b"onetwo"


def test_unknown_media_type():
    with pytest.raises(ValueError):
        c.compress(b"", "application/vnd.docker.image.rootfs.diff.tar.gzip")


@pytest.mark.parametrize("kind", ["tar", "gzip", "zstd"])
def test_decompress_to_writes_bounded_chunks(kind):
    """Zeros inflate ~1000:1, and a plain 8 GiB tar is one mmap: no write may hold more than
    one chunk, so a spool spills to disk instead of growing in memory."""
    raw = bytes(40 << 20) + b"end"
    blob = {"tar": raw, "gzip": gzip.compress(raw), "zstd": zstandard.ZstdCompressor().compress(raw)}[kind]
    writes = []
    c.decompress_to(blob, writes.append, chunk=1 << 20)
    assert b"".join(writes) == raw
    assert max(map(len, writes)) <= 1 << 20


@pytest.mark.parametrize("mt", [c.OCI_TAR, c.OCI_TAR_GZIP, c.OCI_TAR_ZSTD])
def test_streamed_compression_is_the_same_however_the_payload_is_cut(mt):
    """compress_to (Compare of a large layer reads its spool in pieces) writes compress()'s bytes
    for any cut of the payload, including past zstd's 128 KiB block and a 1-byte cut."""
    data = (DATA * 60)[: (1 << 20) + 7]
    whole = c.compress(data, mt)
    for size in (1 << 20, 4096, 777):
        out = []
        c.compress_to((data[i:i + size] for i in range(0, len(data), size)), len(data), mt,
                      out.append)
        assert b"".join(out) == whole, size
    out = []
    c.compress_to((DATA[i:i + 1] for i in range(300)), 300, mt, out.append)
    assert b"".join(out) == c.compress(DATA[:300], mt)
    assert c.decompress(whole) == data
