"""The EROFS superblock fields that mkfs.erofs fills from the clock or from randomness, and how
to compare two images with exactly those fields blanked. Pure: bytes in, bytes out.

Layout: `struct erofs_super_block` (erofs-utils include/erofs_fs.h, Linux fs/erofs/erofs_fs.h),
1024 bytes into the image, little-endian.
"""
from __future__ import annotations

from dataclasses import dataclass

SUPERBLOCK_OFFSET = 1024
MAGIC = 0xE0F5E1E2


@dataclass(frozen=True)
class Field:
    name: str
    offset: int        # from the start of the superblock
    size: int
    why: str           # when mkfs makes it vary between two runs on the same input


CHECKSUM = Field("checksum", 4, 4, "crc32c of the superblock block, so it follows every field below")
BUILD_TIME = Field("build_time", 24, 8, "seconds of the clock when mkfs ran, unless -T gives it")
BUILD_TIME_NSEC = Field("build_time_nsec", 32, 4, "nanoseconds of that clock, unless -T gives it")
UUID = Field("uuid", 48, 16, "random, unless -U gives it (containerd passes -U from v2.1.4)")


def _has_option(opts, *prefixes) -> bool:
    return any(o.startswith(p) for o in opts for p in prefixes)


def varying_fields(mkfs_options, uuid_from_differ: bool) -> tuple[Field, ...]:
    """The fields two runs of the same mkfs.erofs argv may disagree on. `mkfs_options` are the
    configured options (argv elements); `uuid_from_differ` says the differ passes -U itself."""
    fields = []
    if not _has_option(mkfs_options, "-T"):
        fields += [BUILD_TIME, BUILD_TIME_NSEC]
    if not (uuid_from_differ or _has_option(mkfs_options, "-U")):
        fields.append(UUID)
    return tuple([CHECKSUM] + fields) if fields else ()


def masked(image: bytes, fields) -> bytes:
    """The image with `fields` zeroed; an image too short for a superblock is returned as is."""
    if not fields or len(image) < SUPERBLOCK_OFFSET + 128:
        return image
    b = bytearray(image)
    for f in fields:
        at = SUPERBLOCK_OFFSET + f.offset
        b[at:at + f.size] = bytes(f.size)
    return bytes(b)


def describe(fields) -> str:
    """One line per masked field, for a report."""
    return "\n".join(f"superblock.{f.name} (+{f.offset}, {f.size} bytes): {f.why}" for f in fields)
