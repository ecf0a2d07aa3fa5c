"""harness/reference/erofs_superblock.py: which superblock fields vary between two mkfs.erofs runs,
checked against real mkfs.erofs runs a clock tick apart."""
from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest

from harness.reference import apply as ref_apply
from harness.reference import erofs_superblock as sb
from harness.reference.mediatypes import OCI_LAYER, SwitchSet

from test_reference_apply import fixture, needs_mkfs, sha

V210, V242 = SwitchSet.for_version("2.1.0"), SwitchSet.for_version("2.4.2")


@pytest.mark.parametrize("opts, uuid_from_differ, names", [
    ((), True, ["checksum", "build_time", "build_time_nsec"]),
    ((), False, ["checksum", "build_time", "build_time_nsec", "uuid"]),
    (("-T0", "--mkfs-time"), True, []),
    (("-T0",), False, ["checksum", "uuid"]),
    (("-U", "clear"), False, ["checksum", "build_time", "build_time_nsec"]),
    (("-T0", "-Uclear"), False, []),
])
def test_varying_fields(opts, uuid_from_differ, names):
    assert [f.name for f in sb.varying_fields(opts, uuid_from_differ)] == names


def test_masked_zeroes_only_the_named_bytes():
    image = bytes(range(256)) * 16
    out = sb.masked(image, (sb.BUILD_TIME, sb.UUID))
    changed = [i for i in range(len(image)) if image[i] != out[i]]
    assert changed == [i for i in range(len(image)) if image[i] != 0 and
                       (1048 <= i < 1056 or 1072 <= i < 1088)]
    assert sb.masked(b"short", (sb.UUID,)) == b"short"


def _apply_twice(profile, opts, tmp_path):
    blob = fixture("ustar.tar")
    desc = {"mediaType": OCI_LAYER, "digest": sha(blob), "size": len(blob)}
    images = []
    for i in range(2):
        d = tmp_path / str(i)
        d.mkdir()
        out = ref_apply.apply(blob, desc, str(d), profile, opts)
        assert out.error is None, out.error
        images.append(Path(out.layer_path).read_bytes())
        time.sleep(0.01)     # a different build_time_nsec at least
    return images


@needs_mkfs
@pytest.mark.parametrize("profile, uuid_from_differ", [(V242, True), (V210, False)])
def test_default_options_differ_exactly_in_the_varying_fields(profile, uuid_from_differ, tmp_path):
    a, b = _apply_twice(profile, (), tmp_path)
    fields = sb.varying_fields((), uuid_from_differ)
    assert a != b
    assert sb.masked(a, fields) == sb.masked(b, fields)
    # Each named clock/UUID field, left out of the mask, shows the difference again (build_time
    # counts seconds, so two runs a moment apart share it: it is the clock, checked below).
    for f in fields:
        if f not in (sb.CHECKSUM, sb.BUILD_TIME):
            assert sb.masked(a, [g for g in fields if g is not f]) != \
                sb.masked(b, [g for g in fields if g is not f]), f.name
    magic, = struct.unpack_from("<I", a, sb.SUPERBLOCK_OFFSET)
    assert magic == sb.MAGIC
    built, = struct.unpack_from("<Q", a, sb.SUPERBLOCK_OFFSET + sb.BUILD_TIME.offset)
    assert abs(built - time.time()) < 60


@needs_mkfs
def test_deterministic_options_need_no_mask(tmp_path):
    a, b = _apply_twice(V242, ("-T0", "--mkfs-time"), tmp_path)
    assert sb.varying_fields(("-T0", "--mkfs-time"), True) == ()
    assert a == b
