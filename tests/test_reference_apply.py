"""harness/reference/apply.py: the reference Apply. Pure parts (argv, UUID, error wording, Go's
decoders) are pinned; the mkfs parts run the real mkfs.erofs (skipped when it is missing).

Strings marked "Go:" were observed from containerd's own differ code (v2.1.0, v2.1.4, v2.2.9,
v2.3.0, v2.4.2) driven with a local content store, on the same blobs; see docs/apply.md."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest
import zstandard

from harness.reference.apply import (ApplyEngineError, DecompressError, _GoInflate, apply,
                                     convert_error, decompress_stream, default_mkfs_options,
                                     detect_compression, exit_status_text, layer_uuid,
                                     mkfs_argv)
from harness.reference.mediatypes import OCI_LAYER, SwitchSet

ROOT = Path(__file__).resolve().parents[1]
DIALECTS = ROOT / "fixtures" / "dialects"
MANIFEST = json.loads((DIALECTS / "MANIFEST.json").read_text())
EMPTY_DIGEST = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
V210, V214, V229, V230, V242 = (SwitchSet.for_version(v) for v in
                                ("2.1.0", "2.1.4", "2.2.9", "2.3.0", "2.4.2"))
REPRO = ["-T0", "--mkfs-time"]


def fixture(name: str) -> bytes:
    return (DIALECTS / name).read_bytes()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def desc(media_type: str, blob: bytes, **extra) -> dict:
    return {"mediaType": media_type, "digest": sha(blob), "size": len(blob), **extra}


def _mkfs_ok() -> bool:
    exe = shutil.which("mkfs.erofs")
    if not exe:
        return False
    p = subprocess.run([exe, "--help"], capture_output=True, text=True)
    return "--tar=" in p.stdout + p.stderr


needs_mkfs = pytest.mark.skipif(not _mkfs_ok(), reason="mkfs.erofs with --tar= is not installed")


# -- pure pieces -------------------------------------------------------------------------------
def test_layer_uuid_pinned():
    # Go: uuid.NewSHA1(uuid.NameSpaceURL, []byte("erofs:blobs/"+digest)) gives the same values.
    assert layer_uuid(EMPTY_DIGEST) == "0f8a237d-48ca-5305-ba9f-d2efb00fcd98"
    assert layer_uuid("") == "cafdb373-d128-5069-b597-0d89478aa786"


@pytest.mark.parametrize("data,want", [
    (b"\x1f\x8b\x08rest", "gzip"), (b"\x1f\x8b\x09", ""), (b"\x28\xb5\x2f\xfd", "zstd"),
    (bytes.fromhex("5f2a4d18") + b"\0" * 4, "zstd"), (bytes.fromhex("502a4d18") + b"\0" * 3, ""),
    (bytes.fromhex("602a4d18") + b"\0" * 4, ""), (b"", ""), (b"ustar", "")])
def test_detect_compression(data, want):
    assert detect_compression(data) == want


def test_default_mkfs_options():
    assert default_mkfs_options(REPRO, V242) == ["-b4096", *REPRO]
    assert default_mkfs_options(["-b512"], V242) == ["-b512"]
    assert default_mkfs_options(["-T0", "-bx"], V242) == ["-T0", "-bx"]
    assert default_mkfs_options(["--blobdev=x"], V242) == ["-b4096", "--blobdev=x"]
    assert default_mkfs_options(REPRO, V230) == REPRO


L = "/s/layer.erofs"
U = layer_uuid(EMPTY_DIGEST)
ARGV = [
    (V210, False, ["mkfs.erofs", "--tar=f", "--aufs", "--quiet", "-Enoinline_data", *REPRO, L]),
    (V214, False, ["mkfs.erofs", "--tar=f", "--aufs", "--quiet", "-Enoinline_data", *REPRO, "-U", U, L]),
    (V229, False, ["mkfs.erofs", "--tar=f", "--aufs", "--quiet", "-Enoinline_data", *REPRO, "-U", U, L]),
    (SwitchSet.for_version("2.3.3"), False,
     ["mkfs.erofs", "--tar=f", "--aufs", "--quiet", "-Enoinline_data", "-b4096", *REPRO, "-U", U, L]),
    (V229, True, ["mkfs.erofs", "--tar=i", "--aufs", "--quiet", *REPRO, L]),
    (V230, True, ["mkfs.erofs", "--tar=i", "--aufs", "--quiet", *REPRO, "-U", U, L]),
    (V242, True, ["mkfs.erofs", "--tar=i", "--aufs", "--quiet", "-b4096", *REPRO, "-U", U, L]),
]


@pytest.mark.parametrize("profile,tar_index,want", ARGV)
def test_mkfs_argv(profile, tar_index, want):
    assert mkfs_argv(L, REPRO, EMPTY_DIGEST, profile, tar_index=tar_index) == want


def test_mkfs_argv_no_shell_splitting_and_user_u_first():
    argv = mkfs_argv(L, ["-T0 --mkfs-time", "-U", "clear"], EMPTY_DIGEST, V242, mkfs="/x/mkfs")
    assert argv == ["/x/mkfs", "--tar=f", "--aufs", "--quiet", "-Enoinline_data", "-b4096",
                    "-T0 --mkfs-time", "-U", "clear", "-U", U, L]


def test_exit_status_text():
    assert exit_status_text(0) == "exit status 0"
    assert exit_status_text(1) == "exit status 1"
    assert exit_status_text(-9) == "signal: killed"
    assert exit_status_text(-11) == "signal: segmentation fault"
    assert exit_status_text(-6) == "signal: aborted"


def test_convert_error_wording():
    out = b"<E> erofs: invalid tar magic @ 0\n"
    assert convert_error(out, "exit status 1", V214) == \
        "failed to convert erofs: erofs apply failed: <E> erofs: invalid tar magic @ 0\n: exit status 1"
    assert convert_error(out, "exit status 1", V229) == \
        "failed to convert tar to erofs: erofs apply failed: <E> erofs: invalid tar magic @ 0\n: exit status 1"
    assert convert_error(b"\xff", "exit status 2", V242) == \
        "failed to convert tar to erofs: erofs apply failed: \ufffd: exit status 2"
    argv = mkfs_argv(L, REPRO, EMPTY_DIGEST, V230, tar_index=True)
    assert convert_error(b"", "exit status 1", V230, tar_index=True, argv=argv) == (
        "failed to generate tar index: tar index generation failed with command 'mkfs.erofs "
        f"--tar=i --aufs --quiet -T0 --mkfs-time -U {U} {L}': : exit status 1")


# -- Go's decoders (DecompressStream read to the end) --------------------------------------------
GZ = fixture("ustar.tar.gz")
ZS = fixture("ustar.tar.zst")
TAR = fixture("ustar.tar")
SKIP = bytes.fromhex("502a4d18") + (8).to_bytes(4, "little") + b"12345678"


def _flip(data: bytes, index: int, value: int) -> bytes:
    b = bytearray(data)
    b[index] = value
    return bytes(b)


# (blob, decoded length or None, Go's error, header-stage) — observed with containerd's
# compression.DecompressStream (v2.2.9 and v2.4.2 agree on all of these).
DECODE = [
    ("gz", GZ, 10240, None, False), ("gz-two-members", GZ + GZ, 20480, None, False),
    ("gz-truncated", GZ[:-20], 4883, "unexpected EOF", False),
    ("gz-truncated-trailer", GZ[:-3], 10240, "unexpected EOF", False),
    ("gz-one-zero-after", GZ + b"\0", 10240, "unexpected EOF", False),
    ("gz-zeros-after", GZ + b"\0" * 16, 10240, "gzip: invalid header", False),
    ("gz-garbage-after", GZ + b"garbage-after-member", 10240, "gzip: invalid header", False),
    ("gz-bad-crc", GZ[:-8] + bytes(4) + GZ[-4:], 10240, "gzip: invalid checksum", False),
    ("gz-bad-isize", GZ[:-4] + bytes(4), 10240, "gzip: invalid checksum", False),
    ("gz-5-bytes", GZ[:5], 0, "unexpected EOF", True),
    ("gz-header-only", GZ[:10], 0, "unexpected EOF", False),
    ("gz-bad-deflate", _flip(GZ, 20, GZ[20] ^ 0xFF), 0, "flate: corrupt input before offset 48", False),
    ("zst", ZS, 10240, None, False), ("zst-two-frames", ZS + ZS, 20480, None, False),
    ("zst-truncated", ZS[:-10], 0, "unexpected EOF", False),
    ("zst-garbage-after", ZS + b"garbage-after-frame!", 10240, "invalid input: magic number mismatch", False),
    ("zst-2-zeros-after", ZS + b"\0\0", 10240, "unexpected EOF", False),
    ("zst-4-zeros-after", ZS + b"\0" * 4, 10240, "invalid input: magic number mismatch", False),
    ("zst-skippable-first", SKIP + ZS, 10240, None, False),
    ("zst-skippable-last", ZS + SKIP, 10240, None, False),
    ("zst-skippable-only", SKIP, 0, None, False),
    ("zst-skippable-truncated", ZS + SKIP[:10], 10240, "unexpected EOF", False),
    ("zst-bad-checksum", _flip(ZS, len(ZS) - 1, ZS[-1] ^ 0xFF), 10240, "CRC check failed", False),
    ("raw", TAR, 10240, None, False), ("empty", b"", 0, None, False),
    ("gzip-magic-2-bytes", b"\x1f\x8b", 2, None, False), ("skippable-7-bytes", SKIP[:7], 7, None, False),
]


@pytest.mark.parametrize("name,blob,length,error,header", DECODE, ids=[d[0] for d in DECODE])
def test_decompress_stream_like_go(name, blob, length, error, header):
    if error is None:
        assert len(decompress_stream(blob)) == length
        return
    with pytest.raises(DecompressError) as e:
        decompress_stream(blob)
    assert (e.value.message, len(e.value.partial), e.value.header) == (error, length, header)


def test_gzip_reserved_flags_only_rejected_by_klauspost():
    blob = GZ[:3] + b"\xe0" + GZ[4:]
    assert len(decompress_stream(blob)) == 10240                     # Go stdlib: ignored
    with pytest.raises(DecompressError) as e:                        # v2.4+: klauspost
        decompress_stream(blob, reject_reserved_gzip_flags=True)
    assert (e.value.message, e.value.header) == ("gzip: invalid header", True)


def test_gzip_header_fields_are_skipped():
    named = gzip.compress(b"x", mtime=0)
    blob = named[:3] + b"\x08" + named[4:10] + b"name\0" + named[10:]
    assert decompress_stream(blob) == b"x"


def test_go_inflate_waits_for_the_end_of_block_code_length():
    body = GZ[10:-8]
    z = zlib.decompressobj(-15).decompress(body[:50])
    go = _GoInflate(body[:50])
    assert go.run() == "unexpected EOF"
    assert (len(z), len(go.out)) == (106, 105)       # Go's flate: 105 (observed)
    full = _GoInflate(body)
    assert full.run() is None and bytes(full.out) == TAR and full.pos == len(body)


def test_go_inflate_stored_and_fixed_blocks():
    data = bytes(range(256)) * 40
    for level, strategy in ((0, zlib.Z_DEFAULT_STRATEGY), (6, zlib.Z_FIXED)):
        c = zlib.compressobj(level, zlib.DEFLATED, -15, 9, strategy)
        body = c.compress(data) + c.flush()
        go = _GoInflate(body)
        assert go.run() is None and bytes(go.out) == data


def test_shared_compression_module_agrees_on_valid_streams():
    compression = pytest.importorskip("harness.reference.compression")
    for name in ("ustar.tar.gz", "ustar.tar.zst", "pax-longname.tar.gz", "empty-stream.tar.zst",
                 "ustar.tar"):
        blob = fixture(name)
        assert compression.decompress(blob) == decompress_stream(blob), name
    assert compression.decompress(SKIP + ZS) == decompress_stream(SKIP + ZS)


# -- apply() without mkfs ----------------------------------------------------------------------
def test_media_type_error_writes_nothing(tmp_path):
    out = apply(TAR, desc("application/vnd.erofs", TAR), str(tmp_path), V230)
    assert out.error == "unsupported media type: application/vnd.erofs"
    assert (out.stage, out.descriptor, out.layer_path, out.argv) == ("media-type", None, None, None)
    assert list(tmp_path.iterdir()) == []
    out = apply(TAR, desc("", TAR), str(tmp_path), V229)
    assert out.error == "currently unsupported media type: "


def test_native_copy_returns_the_descriptor_unchanged(tmp_path):
    blob = fixture("native-erofs.erofs")
    d = desc("application/vnd.erofs.layer.v1", blob, annotations={"a": "b"})
    out = apply(blob, d, str(tmp_path), V242)
    assert out.ok and out.descriptor == d and out.descriptor is not d and out.argv is None
    assert (tmp_path / "layer.erofs").read_bytes() == blob
    # the seed's '<x>.erofs+' and v2.2's '<x>.erofs' copy too, whatever the bytes are
    assert apply(b"junk", desc("foo.erofs+", b"junk"), str(tmp_path), V210).descriptor["mediaType"] == "foo.erofs+"
    assert (tmp_path / "layer.erofs").read_bytes() == b"junk"
    assert apply(b"j", desc("foo.erofs", b"j"), str(tmp_path), V229).ok


@pytest.mark.parametrize("blob_name", ["native-erofs.erofs.zst", "native-erofs.erofs.gz",
                                       "native-erofs.erofs"])
def test_native_zstd(tmp_path, blob_name):
    blob, image = fixture(blob_name), fixture("native-erofs.erofs")
    out = apply(blob, desc("application/vnd.erofs.layer.v1+zstd", blob), str(tmp_path), V230)
    assert out.ok and out.argv is None
    assert out.descriptor == {"mediaType": "application/vnd.erofs.layer.v1", "digest": sha(image),
                              "size": len(image)}
    assert (tmp_path / "layer.erofs").read_bytes() == image


def test_native_zstd_decoder_errors_are_returned_raw(tmp_path):
    blob = ZS + b"garbage-after-frame!"
    out = apply(blob, desc("application/vnd.erofs.layer.v1+zstd", blob), str(tmp_path), V242)
    assert out.error == "invalid input: magic number mismatch"          # Go: unwrapped
    assert (tmp_path / "layer.erofs").read_bytes() == TAR                # written before the error
    blob = GZ[:5]
    out = apply(blob, desc("application/vnd.erofs.layer.v1+zstd", blob), str(tmp_path), V242)
    assert out.error == ("failed to get stream processor for application/vnd.erofs.layer.v1+zstd: "
                         "unexpected EOF")                                  # Go
    assert out.stage == "processor"


def test_engine_error_when_mkfs_is_missing(tmp_path):
    with pytest.raises(ApplyEngineError, match="cannot run"):
        apply(TAR, desc(OCI_LAYER, TAR), str(tmp_path), V242, mkfs=str(tmp_path / "no-mkfs"))


def test_engine_error_on_timeout(tmp_path):
    slow = tmp_path / "slow-mkfs"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    with pytest.raises(ApplyEngineError, match="did not finish"):
        apply(TAR, desc(OCI_LAYER, TAR), str(tmp_path), V242, mkfs=str(slow), timeout=0.5)


def test_early_exit_of_mkfs_is_not_an_error(tmp_path):
    """Go ignores EPIPE on the stdin copy: a 'mkfs' that exits 0 without reading is fine, and
    the descriptor still covers the whole stream (Apply drains it)."""
    fake = tmp_path / "fake-mkfs"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    big = TAR + b"\0" * (4 << 20)
    out = apply(big, desc(OCI_LAYER, big), str(tmp_path), V242, mkfs=str(fake))
    assert out.ok and out.descriptor == desc(OCI_LAYER, big)


# -- apply() with the real mkfs.erofs ----------------------------------------------------------
def dump_super(path: Path) -> str:
    p = subprocess.run(["dump.erofs", "-s", str(path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


@needs_mkfs
def test_mkfs_image_is_readable(tmp_path):
    out = apply(TAR, desc(OCI_LAYER, TAR), str(tmp_path), V242, REPRO)
    assert out.ok, out.error
    assert out.descriptor == desc(OCI_LAYER, TAR)
    assert out.layer_path == str(tmp_path / "layer.erofs")
    assert out.argv[-3:] == ["-U", layer_uuid(sha(TAR)), out.layer_path]
    if shutil.which("dump.erofs"):
        sb = dump_super(tmp_path / "layer.erofs")
        assert f"Filesystem UUID:                              {layer_uuid(sha(TAR))}" in sb
        assert "Filesystem blocksize:                         4096" in sb


@needs_mkfs
def test_descriptor_counts_trailing_data(tmp_path):
    blob = fixture("trailing-garbage.tar.gz")
    stream = fixture("trailing-garbage.tar")
    assert len(stream) % 512 != 0
    out = apply(blob, desc(OCI_LAYER + "+gzip", blob), str(tmp_path), V242, REPRO)
    assert out.ok, out.error
    assert out.descriptor == {"mediaType": OCI_LAYER, "digest": sha(stream), "size": len(stream)}
    assert out.uuid == layer_uuid(sha(blob))           # the UUID is of the *compressed* digest


@needs_mkfs
def test_reproducible_with_fixed_time(tmp_path):
    blob = fixture("pax-longname.tar.zst")
    images = []
    for run in ("a", "b"):
        d = tmp_path / run
        d.mkdir()
        out = apply(blob, desc(OCI_LAYER + "+zstd", blob), str(d), V242, REPRO)
        assert out.ok, out.error
        images.append((d / "layer.erofs").read_bytes())
    assert images[0] == images[1]


@needs_mkfs
def test_mkfs_failure_wording_per_era(tmp_path):
    blob = fixture("v7.tar")
    for profile, wrap in ((V214, "failed to convert erofs: erofs apply failed: "),
                          (V229, "failed to convert tar to erofs: erofs apply failed: ")):
        out = apply(blob, desc(OCI_LAYER, blob), str(tmp_path), profile, REPRO)
        assert out.stage == "mkfs" and out.descriptor is None
        assert out.error.startswith(wrap) and out.error.endswith(": exit status 1")
        assert out.error == wrap + out.mkfs_output.decode() + ": exit status 1"


@needs_mkfs
def test_decoder_error_after_successful_mkfs(tmp_path):
    # Go (v2.1.4 … v2.4.2): mkfs got the whole tar and exited 0, then the stdin copy failed.
    blob = GZ + b"\0" * 64
    out = apply(blob, desc(OCI_LAYER + "+gzip", blob), str(tmp_path), V242, REPRO)
    assert out.error == "failed to convert tar to erofs: erofs apply failed: : gzip: invalid header"
    assert out.stage == "decompress"
    blob = GZ[:5]
    out = apply(blob, desc(OCI_LAYER + "+gzip", blob), str(tmp_path), V242, REPRO)
    assert out.error == ("failed to get stream processor for application/vnd.oci.image.layer.v1"
                         ".tar+gzip: unexpected EOF")


@needs_mkfs
def test_uncompressed_type_feeds_gzip_raw(tmp_path):
    out = apply(GZ, desc(OCI_LAYER, GZ), str(tmp_path), V242, REPRO)
    assert out.stage == "mkfs" and out.error.endswith(": exit status 1")
    out = apply(GZ, desc("application/vnd.docker.image.rootfs.diff.tar", GZ), str(tmp_path), V242,
                REPRO)
    assert out.ok and out.descriptor == desc(OCI_LAYER, TAR)


@needs_mkfs
def test_tar_index_mode(tmp_path):
    blob = fixture("trailing-garbage.tar")
    out = apply(blob, desc(OCI_LAYER, blob), str(tmp_path), V230, REPRO, tar_index=True)
    assert out.ok, out.error
    assert out.argv[1] == "--tar=i" and "-Enoinline_data" not in out.argv
    image = (tmp_path / "layer.erofs").read_bytes()
    assert image.endswith(blob) and len(image) > len(blob)
    # without the switch (v2.1.x) enable_tar_index does not exist: a full conversion
    out = apply(blob, desc(OCI_LAYER, blob), str(tmp_path), V214, REPRO, tar_index=True)
    assert out.ok and out.argv[1] == "--tar=f"


def _dialect_params():
    types = {"none": OCI_LAYER, "gzip": OCI_LAYER + "+gzip", "zstd": OCI_LAYER + "+zstd"}
    for name, fx in MANIFEST["fixtures"].items():
        for comp, f in fx["files"].items():
            yield pytest.param(f["file"], types[comp], id=f["file"])


@needs_mkfs
@pytest.mark.parametrize("file,media_type", list(_dialect_params()))
def test_every_dialect_applies_or_fails_cleanly(tmp_path, file, media_type):
    blob = fixture(file)
    out = apply(blob, desc(media_type, blob), str(tmp_path), V242, REPRO)
    if out.ok:
        stream = decompress_stream(blob)
        assert out.descriptor == {"mediaType": OCI_LAYER, "digest": sha(stream), "size": len(stream)}
        # a failed mkfs may leave a sparse 2 TiB file; a good image is small
        assert 0 < os.path.getsize(out.layer_path) < 1 << 20
    else:
        assert out.stage in ("mkfs", "decompress", "processor") and out.descriptor is None
        assert out.error.startswith(("failed to convert tar to erofs: ",
                                     "failed to get stream processor for "))


def test_manifest_matches_the_files():
    # the Go differ's own Compare output is recorded from the oracle, not a pending slot
    assert "slots" not in MANIFEST
    assert MANIFEST["fixtures"]["go-differ"]["tool_version"].startswith("containerd v")
    assert len(MANIFEST["fixtures"]) >= 20
    for name, fx in MANIFEST["fixtures"].items():
        assert set(fx["files"]) == {"none", "gzip", "zstd"}, name
        assert fx["tool_version"] == MANIFEST["tools"][fx["tool"]]
        for comp, f in fx["files"].items():
            data = fixture(f["file"])
            assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["size"]
        plain = fixture(fx["files"]["none"]["file"])
        assert gzip.decompress(fixture(fx["files"]["gzip"]["file"])) == plain
        assert zstandard.ZstdDecompressor().stream_reader(
            fixture(fx["files"]["zstd"]["file"])).read() == plain
        assert fixture(fx["files"]["gzip"]["file"])[4:8] == b"\0\0\0\0"     # gzip -n: no mtime
