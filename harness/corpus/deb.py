"""A Debian package's data.tar as a layer blob (pure: bytes in, bytes out).

A .deb is an ar archive (`!<arch>\\n`, then 60-byte member headers, each member padded to an
even length) holding debian-binary, control.tar.* and data.tar.*. containerd reads a layer as
tar, gzip or zstd, so data.tar keeps its compression when it is one of those and is
decompressed to a plain tar otherwise (xz, bzip2, lzma).
"""
from __future__ import annotations

import bz2
import lzma

MAGIC = b"!<arch>\n"
HEADER = 60
KEPT = {"": "", ".gz": ".gz", ".zst": ".zst"}   # data.tar suffix -> the blob's suffix
DECOMPRESS = {".xz": lambda b: lzma.decompress(b, lzma.FORMAT_XZ),
              ".lzma": lambda b: lzma.decompress(b, lzma.FORMAT_ALONE),
              ".bz2": bz2.decompress}


class DebError(ValueError):
    pass


def members(deb: bytes) -> list[tuple[str, bytes]]:
    """The ar members, in order, as (name, content)."""
    if not deb.startswith(MAGIC):
        raise DebError("not an ar archive (no !<arch> magic), so not a .deb")
    out, pos = [], len(MAGIC)
    while pos < len(deb):
        head = deb[pos:pos + HEADER]
        if len(head) < HEADER or head[58:60] != b"`\n":
            raise DebError(f"truncated or damaged ar member header at byte {pos}")
        name = head[:16].decode("ascii", "replace").rstrip(" ").rstrip("/")
        try:
            size = int(head[48:58].decode("ascii").strip() or "x")
        except ValueError:
            raise DebError(f"ar member {name!r} at byte {pos}: size field "
                           f"{head[48:58]!r} is not a decimal number") from None
        start = pos + HEADER
        if start + size > len(deb):
            raise DebError(f"ar member {name!r} claims {size} bytes but the file ends first")
        out.append((name, deb[start:start + size]))
        pos = start + size + (size & 1)
    return out


def data_tar(deb: bytes) -> tuple[str, bytes]:
    """(suffix of the blob: "", ".gz" or ".zst"; the blob) for the package's data.tar."""
    for name, content in members(deb):
        if not name.startswith("data.tar"):
            continue
        suffix = name[len("data.tar"):]
        if suffix in KEPT:
            return KEPT[suffix], content
        if suffix in DECOMPRESS:
            try:
                return "", DECOMPRESS[suffix](content)
            except (lzma.LZMAError, OSError, EOFError) as e:
                raise DebError(f"{name} does not decompress: {e}") from None
        raise DebError(f"{name}: unknown data.tar compression {suffix!r}")
    raise DebError("the .deb has no data.tar member")
