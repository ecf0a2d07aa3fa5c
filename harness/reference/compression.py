"""Layer compression for the three OCI media types (spec §4), and decompression by magic.

gzip: Go's ``compress/gzip`` header (``1f 8b 08 00 00000000 00 ff``: no name, mtime 0, XFL 0 at
the default level 6, OS 255) around a raw zlib deflate stream, then CRC32 and ISIZE. zstd:
python-zstandard with the content checksum on. The compressed bytes are not Go's (different
deflate / zstd encoders); what can be compared is the decompressed payload, the gzip header
(byte for byte, against Go's, in verdict.framing_problems) and trailer, the number of gzip
members and zstd frames, and the zstd frame checksum (verified by decompressing).

Decompression mirrors containerd's DetectCompression: gzip by ``1f 8b 08``, zstd by
``28 b5 2f fd`` or a skippable-frame magic (0x184D2A50..5F little-endian, with >= 8 bytes);
anything else passes through unchanged.
"""
from __future__ import annotations

import gzip as _gzip
import struct
import zlib

import zstandard

OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_TAR_GZIP = OCI_TAR + "+gzip"
OCI_TAR_ZSTD = OCI_TAR + "+zstd"

UNCOMPRESSED, GZIP, ZSTD = "uncompressed", "gzip", "zstd"
COMPRESSION_BY_MEDIA_TYPE = {OCI_TAR: UNCOMPRESSED, OCI_TAR_GZIP: GZIP, OCI_TAR_ZSTD: ZSTD}

GZIP_MAGIC = b"\x1f\x8b\x08"
GO_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"   # what gzip.NewWriter writes
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_SKIPPABLE_MASK, ZSTD_SKIPPABLE_START = 0xFFFFFFF0, 0x184D2A50
GO_GZIP_LEVEL = 6          # containerd: compress/gzip.NewWriter, DefaultCompression = flate level 6
ZSTD_LEVEL = 3             # klauspost SpeedDefault is roughly zstd level 3


def compression_for(media_type: str) -> str:
    try:
        return COMPRESSION_BY_MEDIA_TYPE[media_type]
    except KeyError:
        raise ValueError(f"no compression known for media type {media_type!r}") from None


GO_OS_UNKNOWN = 255       # gzip.Writer's Header.OS default


def go_gzip_header(level: int, os_byte: int = GO_OS_UNKNOWN) -> bytes:
    """The 10 bytes gzip.Writer writes with no Name/Comment/ModTime: XFL is 2 at level 9
    (BestCompression), 4 at level 1 (BestSpeed), else 0. Deriving XFL from the level, as Go
    does, makes the level visible in the header that the live check compares with Go's."""
    xfl = {9: 2, 1: 4}.get(level, 0)
    return GZIP_MAGIC + bytes([0, 0, 0, 0, 0, xfl, os_byte])


def gzip_compress(data: bytes) -> bytes:
    """One gzip member with Go's header bytes; the deflate body is zlib's, not Go's."""
    return compress(data, OCI_TAR_GZIP)


def zstd_compress(data: bytes) -> bytes:
    """One zstd frame with content size and checksum."""
    return compress(data, OCI_TAR_ZSTD)


def compress(data: bytes, media_type: str) -> bytes:
    if compression_for(media_type) == UNCOMPRESSED:
        return data
    out: list[bytes] = []
    compress_to([data], len(data), media_type, out.append)
    return b"".join(out)


def compress_to(chunks, size: int, media_type: str, write) -> None:
    """compress(), streamed: `chunks` yields the `size` bytes of the payload, and the output goes
    to write() as it is made, so a layer of any size needs memory for one chunk only. compress()
    is this with one chunk: the bytes are the same however the payload is cut."""
    kind = compression_for(media_type)
    if kind == GZIP:
        comp = zlib.compressobj(GO_GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        write(go_gzip_header(GO_GZIP_LEVEL, GO_OS_UNKNOWN))
        crc = length = 0
        for chunk in chunks:
            crc, length = zlib.crc32(chunk, crc), length + len(chunk)
            write(comp.compress(chunk))
        write(comp.flush())
        write(struct.pack("<II", crc, length & 0xFFFFFFFF))
    elif kind == ZSTD:
        # the pledged size goes into the frame header (content size), as a one-shot compress
        comp = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True,
                                        write_content_size=True).compressobj(size=size)
        for chunk in chunks:
            write(comp.compress(chunk))
        write(comp.flush())
    else:
        for chunk in chunks:
            write(chunk)


def detect(blob: bytes) -> str:
    """containerd's DetectCompression."""
    head = bytes(blob[:8])                  # blob may be an mmap, which has no startswith
    if head.startswith(GZIP_MAGIC):
        return GZIP
    if head.startswith(ZSTD_MAGIC):
        return ZSTD
    if len(blob) >= 8:
        (magic,) = struct.unpack_from("<I", blob)
        if magic & ZSTD_SKIPPABLE_MASK == ZSTD_SKIPPABLE_START:
            return ZSTD
    return UNCOMPRESSED


def decompress_to(blob, write, chunk: int = 1 << 20) -> None:
    """decompress(), streamed into write() in chunks of at most `chunk` bytes (for layers too
    large for memory: deflate can inflate 1 MiB into 1 GiB, so the output is bounded too)."""
    kind = detect(blob)
    if kind == GZIP:
        d = zlib.decompressobj(wbits=31)
        for i in range(0, len(blob), chunk):
            data = blob[i:i + chunk]
            while data:
                write(d.decompress(data, chunk))
                data = d.unconsumed_tail
        write(d.flush())
        if not d.eof:
            raise ValueError("gzip: unexpected end of stream")
        return
    if kind == ZSTD:
        reader = zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True)
        with reader:
            while data := reader.read(chunk):
                write(data)
        return
    for i in range(0, len(blob), chunk):
        write(blob[i:i + chunk])


def decompress(blob: bytes) -> bytes:
    """The payload of a blob, detected by magic. gzip members are CRC/ISIZE-checked; zstd frames
    are checksum-verified when they carry a checksum; skippable frames are skipped."""
    kind = detect(blob)
    if kind == GZIP:
        return _gzip.decompress(blob)
    if kind == ZSTD:
        reader = zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True)
        with reader:
            return reader.read()
    return blob


def gzip_header(blob: bytes) -> bytes:
    """The first 10 bytes (Go writes exactly GO_GZIP_HEADER)."""
    return blob[:10]


def gzip_trailer(blob: bytes) -> tuple[int, int]:
    """(CRC32, ISIZE) from the last 8 bytes of a single-member gzip blob."""
    if len(blob) < 18 or not blob.startswith(GZIP_MAGIC):
        raise ValueError("not a gzip blob")
    return struct.unpack("<II", blob[-8:])


def expected_gzip_trailer(data: bytes) -> tuple[int, int]:
    """What any gzip writer must put in the trailer for this payload."""
    return zlib.crc32(data), len(data) & 0xFFFFFFFF


def zstd_frame_checksum(blob: bytes) -> int | None:
    """The 4-byte content checksum (low 32 bits of XXH64) ending a single-frame zstd blob, or
    None when the frame has no checksum. Verify it by decompress(), which checks it."""
    if not blob.startswith(ZSTD_MAGIC):
        raise ValueError("not a zstd frame")
    if not zstandard.get_frame_parameters(blob).has_checksum:
        return None
    (value,) = struct.unpack("<I", blob[-4:])
    return value
