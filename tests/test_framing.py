"""The reference's compressed blob against Go's: header bytes, members, frames (verdict.py)."""
import zlib

import zstandard

from harness.reference import compression
from harness.result import Outcome
from harness.verdict import _gzip_members, _zstd_frames, framing_problems

TAR = b"layer tar bytes " * 5000
GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
ZST = "application/vnd.oci.image.layer.v1.tar+zstd"


def go_gzip(data: bytes) -> bytes:
    """What Go's gzip.Writer at the default level writes around a deflate stream."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (bytes.fromhex("1f8b08000000000000ff") + c.compress(data) + c.flush()
            + zlib.crc32(data).to_bytes(4, "little") + len(data).to_bytes(4, "little"))


def pair(mt, go_blob, ref_blob):
    return (Outcome("go-erofs", mt, tar=TAR, blob=go_blob),
            Outcome("ref", mt, tar=TAR, blob=ref_blob))


def test_reference_gzip_header_matches_go():
    assert framing_problems(*pair(GZ, go_gzip(TAR), compression.gzip_compress(TAR))) == []


def test_level_and_os_byte_are_named(monkeypatch):
    monkeypatch.setattr(compression, "GO_GZIP_LEVEL", 9)
    monkeypatch.setattr(compression, "GO_OS_UNKNOWN", 3)
    (text,) = framing_problems(*pair(GZ, go_gzip(TAR), compression.gzip_compress(TAR)))
    assert "XFL 0x00 vs 0x02" in text and "OS 0xff vs 0x03" in text


def test_extra_gzip_member_is_found():
    ref = compression.gzip_compress(TAR[:100]) + compression.gzip_compress(TAR[100:])
    probs = framing_problems(*pair(GZ, go_gzip(TAR), ref))
    assert any("gzip members: go-erofs 1 vs ref 2" in p for p in probs)
    assert _gzip_members(ref[:-20]) == 1 and _gzip_members(b"") == 0


def test_zstd_frames_from_headers():
    ref = compression.zstd_compress(TAR)
    assert _zstd_frames(ref) == [{"frame": "zstd", "checksum": True, "dict_id": 0}]
    no_sum = zstandard.ZstdCompressor(write_checksum=False).compress(TAR)
    probs = framing_problems(*pair(ZST, ref, no_sum))
    assert probs and "zstd framing" in probs[0] and "'checksum': False" in probs[0]
    skip = (0x184D2A50).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    assert _zstd_frames(skip + ref)[0] == {"frame": "skippable"}
