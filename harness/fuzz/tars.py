"""Apply cases: random tars (Python's tarfile, random formats and fields), byte-level mutations
(truncation, trailing data, numeric fields re-encoded with a fixed checksum) and compression
framings, under a media type. Pure: the strategy draws bytes; the engine writes the file."""
from __future__ import annotations

import gzip
import io
import tarfile
from dataclasses import dataclass

import zstandard
from hypothesis import strategies as st

from ..scenario.model import OCI_TAR, OCI_TAR_GZIP, OCI_TAR_ZSTD
from .names import NAMES, XATTR_NAMES, ids, modes, mtimes

DOCKER_TAR_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
FORMATS = {"pax": tarfile.PAX_FORMAT, "gnu": tarfile.GNU_FORMAT, "ustar": tarfile.USTAR_FORMAT}
# (offset, width) of the numeric header fields
FIELDS = {"mode": (100, 8), "uid": (108, 8), "gid": (116, 8), "size": (124, 12), "mtime": (136, 12)}
APPLY_OPTIONS = ["-T0", "--mkfs-time"]   # as scenarios/apply/dialects.yaml: deterministic images


@dataclass(frozen=True)
class ApplyCaseData:
    blob: bytes
    media_type: str
    recipe: str                     # how the blob was made, for the finding's description

    def scenario(self, fixture: str) -> dict:
        """Scenario data with the blob at `fixture` (relative to the scenario file)."""
        return {"description": f"generated Apply case: {self.recipe}",
                "apply": {"mkfs_options": list(APPLY_OPTIONS),
                          "check": ["descriptor", "error", "image"],
                          "cases": [{"media_type": self.media_type, "blob": {"fixture": fixture}}]}}


@st.composite
def _member(draw, files: list[str], fmt: str) -> tuple[tarfile.TarInfo, bytes]:
    parent = draw(st.sampled_from(["", "d/", "./", "d/e/"]))
    name = parent + draw(st.sampled_from(NAMES + [".wh.a", ".wh..wh..opq", "a/"]))
    kinds = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE,
             tarfile.BLKTYPE] + ([tarfile.LNKTYPE] if files else [])
    ti = tarfile.TarInfo(name)
    ti.type = draw(st.sampled_from(kinds))
    ti.mode = draw(modes)
    ti.mtime = draw(mtimes.map(lambda m: float(m) if isinstance(m, str) else m))
    if fmt != "ustar":
        ti.uid, ti.gid = draw(ids), draw(ids)
    data = b""
    if ti.type == tarfile.REGTYPE:
        data = draw(st.one_of(st.just(b"x\n"), st.binary(max_size=700)))
        ti.size = len(data)
    elif ti.type == tarfile.SYMTYPE:
        ti.linkname = draw(st.sampled_from(["a", "../a", "/abs", "d/" + "l" * 120]))
    elif ti.type == tarfile.LNKTYPE:
        ti.linkname = draw(st.sampled_from(sorted(files)))
    elif ti.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        ti.devmajor, ti.devminor = draw(st.sampled_from([(1, 3), (0, 0), (4095, 1048575)]))
    if fmt == "pax" and draw(st.integers(0, 3)) == 0:
        ti.pax_headers = {"SCHILY.xattr." + draw(st.sampled_from(XATTR_NAMES)): "v"}
    return ti, data


def _tar(members, fmt: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=FORMATS[fmt], encoding="utf-8",
                      errors="surrogateescape") as tf:
        for ti, data in members:
            try:
                tf.addfile(ti, io.BytesIO(data) if ti.type == tarfile.REGTYPE else None)
            except ValueError:          # a field this format cannot hold: leave the member out
                continue
    return buf.getvalue()


def _reencode(blob: bytes, block: int, fieldname: str, style: str) -> bytes:
    """Rewrite one numeric field of the header at `block` and fix the checksum."""
    off = block * 512
    if off + 512 > len(blob) or not blob[off:off + 512].strip(b"\0"):
        return blob
    h = bytearray(blob[off:off + 512])
    start, width = FIELDS[fieldname]
    raw = h[start:start + width].split(b"\0")[0].strip(b" ")
    try:
        value = int(raw, 8) if raw and not raw[0] & 0x80 else None
    except ValueError:
        value = None
    if value is None:
        return blob
    if style == "base256":
        new = bytes([0x80]) + value.to_bytes(width - 1, "big")
    elif style == "spaces":
        new = f"{value:o}".rjust(width - 1).encode() + b" "
    else:  # no terminator
        new = f"{value:0{width}o}".encode()
        if len(new) > width:
            return blob
    h[start:start + width] = new
    h[148:156] = b" " * 8
    h[148:156] = f"{sum(h):06o}\0 ".encode()
    return blob[:off] + bytes(h) + blob[off + 512:]


@st.composite
def _mutated(draw, blob: bytes) -> tuple[bytes, list[str]]:
    notes = []
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["reencode", "trailing", "truncate"]))
        if kind == "reencode":
            block = draw(st.integers(0, max(0, len(blob) // 512 - 1)))
            f = draw(st.sampled_from(sorted(FIELDS)))
            style = draw(st.sampled_from(["base256", "spaces", "noterm"]))
            new = _reencode(blob, block, f, style)
            if new != blob:
                notes.append(f"{f} of block {block} as {style}")
            blob = new
        elif kind == "trailing":
            extra = draw(st.sampled_from([b"\0" * 512, b"\0" * 10240, b"garbage", b"\0" * 100]))
            blob += extra
            notes.append(f"{len(extra)} trailing bytes")
        else:
            at = draw(st.integers(0, len(blob)))
            notes.append(f"truncated at {at} of {len(blob)}")
            blob = blob[:at]
    return blob, notes


def _frame(blob: bytes, framing: str) -> bytes:
    if framing == "gzip":
        return gzip.compress(blob, mtime=0)
    if framing == "gzip-2-members":
        half = len(blob) // 2
        return gzip.compress(blob[:half], mtime=0) + gzip.compress(blob[half:], mtime=0)
    if framing == "zstd":
        return zstandard.ZstdCompressor().compress(blob)
    if framing == "zstd-2-frames":
        half, c = len(blob) // 2, zstandard.ZstdCompressor(write_content_size=False)
        return c.compress(blob[:half]) + c.compress(blob[half:])
    return blob


MATCHING = {"none": OCI_TAR, "gzip": OCI_TAR_GZIP, "gzip-2-members": OCI_TAR_GZIP,
            "zstd": OCI_TAR_ZSTD, "zstd-2-frames": OCI_TAR_ZSTD}


@st.composite
def apply_cases(draw) -> ApplyCaseData:
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    members, files = [], []
    for _ in range(draw(st.integers(0, 5))):
        ti, data = draw(_member(files, fmt))
        members.append((ti, data))
        if ti.type == tarfile.REGTYPE:
            files.append(ti.name)
    blob, notes = draw(_mutated(_tar(members, fmt)))
    framing = draw(st.sampled_from(sorted(MATCHING)))
    mt = draw(st.sampled_from([MATCHING[framing], MATCHING[framing], OCI_TAR, DOCKER_TAR_GZIP]))
    recipe = (f"{fmt} tar of {len(members)} member(s)" + "".join(f", {n}" for n in notes)
              + f", framing {framing}, media type {mt}")
    return ApplyCaseData(blob=_frame(blob, framing), media_type=mt, recipe=recipe)
