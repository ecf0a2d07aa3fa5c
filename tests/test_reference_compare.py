"""The reference Compare on real directory pairs: the spec's worked example (§3.4) entry by
entry, each quirk's containerd vs spec behaviour, media types, labels and errors.

Needs root (char 0/0 whiteouts, devices, trusted.* xattrs, chown); no Go.
"""
from __future__ import annotations

import hashlib
import io
import os
import socket
import stat
import struct
import tarfile

import pytest

from harness.reference import compression
from harness.reference.compare import CompareError, compare, write_diff
from harness.reference.profiles import OCI_TAR, OCI_TAR_GZIP, OCI_TAR_ZSTD, SPEC, get_profile

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, trusted.* xattrs)")

CTR = get_profile("containerd@v2.4.2")
T0 = 1_700_000_000
NS = 10**9
# A v2 file capability: CAP_NET_BIND_SERVICE permitted+effective (20 bytes).
CAP = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)


# --- tree builders ------------------------------------------------------------------------------

def _p(root, rel) -> bytes:
    return os.path.join(os.fsencode(root), os.fsencode(rel))


def _parents(root, rel):
    os.makedirs(os.path.dirname(_p(root, rel)), exist_ok=True)


def write(root, rel, data=b"", mode=0o644, mtime=T0, uid=None, gid=None, mtime_ns=None):
    _parents(root, rel)
    path = _p(root, rel)
    with open(path, "wb") as f:
        f.write(data)
    if uid is not None or gid is not None:
        os.chown(path, uid if uid is not None else -1, gid if gid is not None else -1)
    os.chmod(path, mode)
    ns = mtime * NS if mtime_ns is None else mtime_ns
    os.utime(path, ns=(ns, ns))


def mkdir(root, rel, mode=0o755):
    os.makedirs(_p(root, rel), exist_ok=True)
    os.chmod(_p(root, rel), mode)


def symlink(root, rel, target):
    _parents(root, rel)
    os.symlink(os.fsencode(target), _p(root, rel))
    os.utime(_p(root, rel), ns=(T0 * NS, T0 * NS), follow_symlinks=False)


def whiteout(root, rel):
    """What overlayfs leaves in the upper for a deleted name: char 0/0, mode 0."""
    _parents(root, rel)
    os.mknod(_p(root, rel), stat.S_IFCHR | 0, os.makedev(0, 0))
    os.utime(_p(root, rel), ns=(T0 * NS, T0 * NS), follow_symlinks=False)


def device(root, rel, kind, major, minor, mode=0o644):
    _parents(root, rel)
    os.mknod(_p(root, rel), kind | mode, os.makedev(major, minor))
    os.utime(_p(root, rel), ns=(T0 * NS, T0 * NS))


def opaque(root, rel, key=b"trusted.overlay.opaque", value=b"y"):
    os.setxattr(_p(root, rel), key, value, follow_symlinks=False)


def dir_times(root, mtime=T0):
    """Set every directory's mtime, deepest first (a child's creation bumps its parent)."""
    root = os.fsencode(root)
    for dirpath, dirnames, _ in sorted(os.walk(root), key=lambda t: -t[0].count(b"/")):
        os.utime(dirpath, ns=(mtime * NS, mtime * NS))


def make_socket(root, rel):
    _parents(root, rel)
    path = _p(root, rel)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)
    os.utime(path, ns=(T0 * NS, T0 * NS))


def build_worked_example(base) -> tuple[bytes, bytes]:
    """Spec §3.4: the lower and upper of the worked example."""
    lower, upper = _p(base, "lower"), _p(base, "upper")
    os.makedirs(lower), os.makedirs(upper)
    for rel, data in (("a/f1", b"one\n"), ("a/f2", b"two\n"), ("b/x", b"x"), ("c", b"c"),
                      ("d/d1", b"d1"), ("same/s", b"s")):
        write(lower, rel, data)
    symlink(lower, "e", "/nonexistent-layerconf-target")      # dangling on the host too
    dir_times(lower)

    write(upper, "a/f1", b"ONE\n")
    write(upper, "a/new", b"new\n")
    whiteout(upper, "b/x")
    whiteout(upper, "c")
    whiteout(upper, "e")
    mkdir(upper, "d")
    opaque(upper, "d")
    write(upper, "d/d2", b"d2")
    write(upper, "n/deep/file", b"deep")
    write(upper, "hl1", b"0123456789")
    os.link(_p(upper, "hl1"), _p(upper, "hl2"))
    symlink(upper, "sl", "target/path")
    os.mkfifo(_p(upper, "fifo"), 0o644)
    os.utime(_p(upper, "fifo"), ns=(T0 * NS, T0 * NS))
    write(upper, "suid", b"#!/bin/sh\n", mode=0o4755)
    write(upper, "subsec", b"s", mtime_ns=T0 * NS + 123_456_789)
    write(upper, "bigid", b"big", uid=3000000, gid=5)
    write(upper, "L" * 60 + "/" + "M" * 60, b"long")
    write(upper, "ünï", b"utf8")
    write(upper, "capfile", b"cap")
    os.setxattr(_p(upper, "capfile"), b"security.capability", CAP)
    os.setxattr(_p(upper, "capfile"), b"user.other", b"o")
    device(upper, "blk", stat.S_IFBLK, 8, 1)
    device(upper, "chr", stat.S_IFCHR, 1, 3)
    mkdir(upper, "same")
    dir_times(upper, T0 + 1)               # changed dirs: a newer mtime than the lower's
    os.utime(_p(upper, "same"), ns=(T0 * NS, T0 * NS))   # same/ stays stat-identical
    return lower, upper


# --- reading the tar back ---------------------------------------------------------------------------

def raw_blocks(tar: bytes):
    """Every header block as Go wrote it: (name, typeflag, prefix, linkname, fields dict),
    PAX 'x' headers included, data skipped."""
    out, off = [], 0
    while off + 512 <= len(tar):
        blk = tar[off:off + 512]
        if blk == bytes(512):
            break

        def s(a, n):
            return blk[a:a + n].split(b"\0", 1)[0]

        def num(a, n):
            t = s(a, n).strip()
            return int(t, 8) if t else 0
        size = num(124, 12)
        typ = blk[156:157]
        rec = dict(name=s(0, 100), type=typ.decode(), prefix=s(345, 155), link=s(157, 100),
                   mode=num(100, 8), uid=num(108, 8), gid=num(116, 8), size=size,
                   mtime=num(136, 12), devmajor=num(329, 8), devminor=num(337, 8),
                   raw_uid=blk[108:116], raw_dev=blk[329:345])
        data_len = 0 if typ in b"123456" else size
        if typ == b"x":
            rec["pax"] = tar[off + 512:off + 512 + size]
        out.append(rec)
        off += 512 + (data_len + 511) // 512 * 512
    assert tar[off:] == bytes(1024), "the archive must end in exactly two zero blocks"
    return out


def members(tar: bytes):
    """tarfile's view: PAX records applied; names decoded as UTF-8 (surrogateescape)."""
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:", encoding="utf-8",
                      errors="surrogateescape") as tf:
        return tf.getmembers()


def names(tar: bytes):
    return [(m.name + ("/" if m.isdir() else ""), m.type.decode()) for m in members(tar)]


# Optional cross-check while developing: LAYERCONF_GO_DIFF=<binary> taking `LOWER UPPER`, writing
# containerd's ChangeWriter+DiffDirChanges tar to stdout (or the error to stderr, exit 1). Every
# containerd-profile run is then compared with Go byte for byte. Unset: no Go needed.
GO_DIFF = os.environ.get("LAYERCONF_GO_DIFF")


def _go_check(lower, upper, result: bytes | None, error: str | None):
    import subprocess
    proc = subprocess.run([GO_DIFF, os.fsdecode(lower), os.fsdecode(upper)], capture_output=True)
    if proc.returncode == 0:
        assert error is None, f"Go succeeded, the reference failed: {error}"
        assert result == proc.stdout, "reference tar differs from Go's"
    else:
        assert error == proc.stderr.decode(errors="replace").strip()


def run(lower, upper, profile=CTR, **kw) -> bytes:
    check = GO_DIFF and profile == CTR and kw.get("source_date_epoch") is None
    try:
        tar = write_diff(lower, upper, profile, **kw)
    except Exception as e:
        if check:
            _go_check(lower, upper, None, str(e))
        raise
    if check:
        _go_check(lower, upper, tar, None)
    return tar


@pytest.fixture
def trees(tmp_path):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir(), upper.mkdir()
    return str(lower), str(upper)


# --- the worked example ---------------------------------------------------------------------------------

L60, M60 = "L" * 60, "M" * 60

WORKED_EXAMPLE_BLOCKS = [
    # (header name field, type, prefix)
    (L60 + "/", "5", ""),
    (M60, "0", L60),
    ("a/", "5", ""), ("a/f1", "0", ""), ("a/new", "0", ""),
    ("b/", "5", ""), ("b/.wh.x", "0", ""),
    ("PaxHeaders.0/bigid", "x", ""), ("bigid", "0", ""),
    ("blk", "4", ""),
    (".wh.c", "0", ""),
    ("PaxHeaders.0/capfile", "x", ""), ("capfile", "0", ""),
    ("chr", "3", ""),
    ("d/", "5", ""), ("d/.wh..wh..opq", "0", ""), ("d/", "5", ""), ("d/d2", "0", ""),
    ("e", "3", ""),
    ("fifo", "6", ""), ("hl1", "0", ""), ("hl2", "1", ""),
    ("n/", "5", ""), ("n/deep/", "5", ""), ("n/deep/file", "0", ""),
    ("sl", "2", ""), ("subsec", "0", ""), ("suid", "0", ""),
    ("PaxHeaders.0/n", "x", ""), ("n", "0", ""),
]


def test_worked_example_sequence(tmp_path):
    lower, upper = build_worked_example(tmp_path)
    blocks = raw_blocks(run(lower, upper))
    got = [(b["name"].decode(), b["type"], b["prefix"].decode()) for b in blocks]
    assert got == WORKED_EXAMPLE_BLOCKS


def test_worked_example_fields(tmp_path):
    lower, upper = build_worked_example(tmp_path)
    tar = run(lower, upper)
    blocks = {(b["name"], b["type"]): b for b in raw_blocks(tar)}
    # whiteouts: mode 0, uid 0, mtime 0, USTAR (no PAX for atime/ctime)
    for n in (b"b/.wh.x", b".wh.c", b"d/.wh..wh..opq"):
        b = blocks[(n, "0")]
        assert (b["mode"], b["uid"], b["gid"], b["size"], b["mtime"]) == (0, 0, 0, 0, 0)
    assert blocks[(b"PaxHeaders.0/bigid", "x")]["pax"].startswith(b"15 uid=3000000\n")
    bigid = blocks[(b"bigid", "0")]
    assert bigid["raw_uid"] == b"0000000\0" and bigid["gid"] == 5
    blk = blocks[(b"blk", "4")]
    assert blk["raw_dev"] == b"0000010\0" + b"0000001\0"
    chr_ = blocks[(b"chr", "3")]
    assert (chr_["devmajor"], chr_["devminor"]) == (1, 3)
    assert blocks[(b"PaxHeaders.0/capfile", "x")]["pax"] == \
        b"57 SCHILY.xattr.security.capability=" + CAP + b"\n"
    e = blocks[(b"e", "3")]
    assert (e["devmajor"], e["devminor"], e["mode"]) == (0, 0, 0)
    assert blocks[(b"hl1", "0")]["size"] == 10
    hl2 = blocks[(b"hl2", "1")]
    assert (hl2["link"], hl2["size"]) == (b"hl1", 0)
    sl = blocks[(b"sl", "2")]
    assert (sl["link"], sl["mode"]) == (b"target/path", 0o777)
    assert blocks[(b"subsec", "0")]["mtime"] == T0            # floored, not rounded
    assert blocks[(b"suid", "0")]["mode"] == 0o4755
    assert blocks[(b"PaxHeaders.0/n", "x")]["pax"] == "14 path=ünï\n".encode()
    for b in blocks.values():                                   # no uname/gname, no '.' prefix
        assert not b["name"].startswith((b"/", b"./"))
    # content survives, and tarfile agrees on the PAX-applied view
    by_name = {m.name: m for m in members(tar)}
    assert by_name["ünï"].size == 4 and by_name["bigid"].uid == 3000000
    assert by_name["capfile"].pax_headers["SCHILY.xattr.security.capability"]
    assert b"same" not in b"".join(b["name"] for b in blocks.values())


def test_worked_example_spec_profile(tmp_path):
    lower, upper = build_worked_example(tmp_path)
    got = names(run(lower, upper, SPEC))
    assert got == [
        # spec: whiteouts first in their directory; `e` (dangling symlink below) is deleted
        (".wh.c", "0"), (".wh.e", "0"),
        (L60 + "/", "5"), (L60 + "/" + M60, "0"),
        ("a/", "5"), ("a/f1", "0"), ("a/new", "0"),
        ("b/", "5"), ("b/.wh.x", "0"),
        ("bigid", "0"), ("blk", "4"), ("capfile", "0"), ("chr", "3"),
        ("d/", "5"), ("d/.wh..wh..opq", "0"), ("d/d2", "0"),      # d/ once
        ("fifo", "6"), ("hl1", "0"), ("hl2", "1"),
        ("n/", "5"), ("n/deep/", "5"), ("n/deep/file", "0"),
        ("sl", "2"), ("subsec", "0"), ("suid", "0"), ("ünï", "0"),
    ]
    cap = {m.name: m for m in members(run(lower, upper, SPEC))}["capfile"]
    assert cap.pax_headers["SCHILY.xattr.user.other"] == "o"


def test_empty_upper_is_two_zero_blocks(trees):
    lower, upper = trees
    assert run(lower, upper) == bytes(1024)
    assert run(lower, upper, SPEC) == bytes(1024)


def test_upper_root_metadata_never_emitted(trees):
    lower, upper = trees
    os.chmod(upper, 0o700)
    write(upper, "f", b"x")
    assert names(run(lower, upper)) == [("f", "0")]


# --- walk rules -----------------------------------------------------------------------------------

def test_byte_order_and_preorder(trees):
    lower, upper = trees
    for rel in ("b", "B", "a/z", "a-", "a/y/x", "_", "é"):
        write(upper, rel, b"")
    assert [n for n, _ in names(run(lower, upper))] == \
        ["B", "_", "a/", "a/y/", "a/y/x", "a/z", "a-", "b", "é"]


def test_invalid_utf8_name(trees):
    lower, upper = trees
    write(upper, b"bad\xff", b"x")
    blocks = raw_blocks(run(lower, upper))
    assert blocks[0]["type"] == "x" and blocks[0]["pax"] == b"13 path=bad\xff\n"
    assert blocks[1]["name"] == b"bad"


def test_modify_child_of_unchanged_dir_includes_parent(trees):
    lower, upper = trees
    write(lower, "p/m", b"old")
    write(upper, "p/m", b"new")
    dir_times(lower), dir_times(upper)       # p/ stat-identical: skipped by the walk
    assert names(run(lower, upper)) == [("p/", "5"), ("p/m", "0")]


def test_stat_identical_dir_with_modify_then_add_is_duplicated(trees):
    """B5, second shape: p/ from includeParents (for p/m1), again from DiffDirChanges (p/z)."""
    lower, upper = trees
    write(lower, "p/m1", b"old")
    write(upper, "p/m1", b"new")
    write(upper, "p/z", b"add")
    dir_times(lower), dir_times(upper)
    assert names(run(lower, upper)) == [("p/", "5"), ("p/m1", "0"), ("p/", "5"), ("p/z", "0")]
    assert names(run(lower, upper, SPEC)) == [("p/", "5"), ("p/m1", "0"), ("p/z", "0")]


def test_ancestors_top_down_for_deep_modify(trees):
    lower, upper = trees
    write(lower, "x/y/z/f", b"old")
    write(upper, "x/y/z/f", b"new")
    dir_times(lower), dir_times(upper)
    assert names(run(lower, upper)) == [("x/", "5"), ("x/y/", "5"), ("x/y/z/", "5"),
                                        ("x/y/z/f", "0")]


def test_deleted_directory_is_one_whiteout(trees):
    lower, upper = trees
    write(lower, "gone/a/b", b"x")
    whiteout(upper, "gone")
    assert names(run(lower, upper)) == [(".wh.gone", "0")]


def test_nested_whiteout_in_unchanged_dir(trees):
    lower, upper = trees
    write(lower, "u/v/w", b"x")
    whiteout(upper, "u/v/w")
    dir_times(lower), dir_times(upper)
    # DiffDirChanges emits the immediate parent; includeParents adds the grandparent first.
    assert names(run(lower, upper)) == [("u/", "5"), ("u/v/", "5"), ("u/v/.wh.w", "0")]


def test_opaque_key_precedence_and_value(trees):
    lower, upper = trees
    for d in ("t", "u", "both", "n", "yes"):
        write(lower, f"{d}/old", b"x")
        mkdir(upper, d)
    opaque(upper, "t")                                            # trusted y
    opaque(upper, "u", b"user.overlay.opaque")                    # user y
    opaque(upper, "both", b"trusted.overlay.opaque", b"n")        # trusted wins, not y
    opaque(upper, "both", b"user.overlay.opaque", b"y")
    opaque(upper, "n", value=b"n")
    opaque(upper, "yes", value=b"yes")                            # only exactly b"y"
    dir_times(lower), dir_times(upper, T0 + 1)
    got = [n for n, _ in names(run(lower, upper))]
    assert got == ["both/", "n/", "t/", "t/.wh..wh..opq", "t/", "u/", "u/.wh..wh..opq", "u/",
                   "yes/"]


def test_opaque_stat_identical_dir_single_header(trees):
    lower, upper = trees
    write(lower, "d/old", b"x")
    mkdir(upper, "d")
    opaque(upper, "d")
    dir_times(lower), dir_times(upper)
    assert names(run(lower, upper)) == [("d/", "5"), ("d/.wh..wh..opq", "0")]


def test_b2_enotdir_aborts(trees):
    lower, upper = trees
    write(lower, "u", b"file")
    write(upper, "u/inner", b"x")
    with pytest.raises(CompareError) as ei:
        compare(lower, upper, media_type=OCI_TAR, profile=CTR)
    assert str(ei.value) == (f"failed to create diff tar stream: mount callback failed on "
                             f"{lower}: failed to create diff tar stream: stat {lower}/u/inner: "
                             f"not a directory")
    assert ei.value.cause == f"stat {lower}/u/inner: not a directory"
    with pytest.raises(CompareError, match="^failed to write compressed diff: mount callback"):
        compare(lower, upper, media_type=OCI_TAR_GZIP, profile=CTR)
    # spec: the lower under a file is absent; u/ replaces the file (u is an Add: no marker)
    assert names(run(lower, upper, SPEC)) == [("u/", "5"), ("u/inner", "0")]
    assert names(run(lower, upper, CTR.without("enotdir-abort"))) == [("u/", "5"),
                                                                      ("u/inner", "0")]
    # spec + the quirk reproduces the abort
    with pytest.raises(CompareError, match="not a directory$"):
        compare(lower, upper, media_type=OCI_TAR, profile=SPEC.with_quirks("enotdir-abort"))


def test_b3_orphan_whiteout(trees):
    lower, upper = trees
    whiteout(upper, "ghost")
    whiteout(upper, "sub/ghost2")
    assert names(run(lower, upper)) == [("ghost", "3"), ("sub/", "5"), ("sub/ghost2", "3")]
    assert names(run(lower, upper, SPEC)) == [("sub/", "5")]


def test_b3_absolute_lower_symlink_resolves_on_host(trees):
    lower, upper = trees
    symlink(lower, "etc-link", "/etc")           # exists on the host
    symlink(lower, "dangling", "/nonexistent-layerconf")
    whiteout(upper, "dangling")
    whiteout(upper, "etc-link")
    assert names(run(lower, upper)) == [("dangling", "3"), (".wh.etc-link", "0")]
    assert names(run(lower, upper, SPEC)) == [(".wh.dangling", "0"), (".wh.etc-link", "0")]


def test_b4_hardlinked_orphan_whiteouts(trees):
    lower, upper = trees
    whiteout(upper, "w1")
    os.link(_p(upper, "w1"), _p(upper, "w2"))
    write(lower, "w3", b"x")                     # a real deletion sharing the inode
    os.link(_p(upper, "w1"), _p(upper, "w3"))
    assert names(run(lower, upper)) == [("w1", "3"), ("w2", "1"), (".wh.w3", "0")]
    no_b4 = CTR.without("hardlinked-whiteout-link")
    assert names(run(lower, upper, no_b4)) == [("w1", "3"), ("w2", "3"), (".wh.w3", "0")]
    assert names(run(lower, upper, SPEC)) == [(".wh.w3", "0")]


def test_b6_identical_subdir_under_opaque(trees):
    lower, upper = trees
    write(lower, "o/keep/old", b"x")
    mkdir(upper, "o/keep")
    opaque(upper, "o")
    dir_times(lower)
    dir_times(upper)                           # o/keep identical to the lower's
    os.utime(_p(upper, "o"), ns=((T0 + 1) * NS,) * 2)
    assert names(run(lower, upper)) == [("o/", "5"), ("o/.wh..wh..opq", "0"), ("o/", "5")]
    assert names(run(lower, upper, SPEC)) == [("o/", "5"), ("o/.wh..wh..opq", "0"),
                                              ("o/keep/", "5")]


def test_b19_opaque_marker_without_lower_dir(trees):
    lower, upper = trees
    write(lower, "wasfile", b"x")
    mkdir(upper, "wasfile")
    opaque(upper, "wasfile")
    mkdir(upper, "new")
    opaque(upper, "new")
    assert names(run(lower, upper)) == [("new/", "5"), ("new/.wh..wh..opq", "0"), ("new/", "5"),
                                        ("wasfile/", "5"), ("wasfile/.wh..wh..opq", "0"),
                                        ("wasfile/", "5")]
    assert names(run(lower, upper, SPEC)) == [("new/", "5"), ("wasfile/", "5")]


def test_b11_socket_dropped_parent_kept(trees):
    lower, upper = trees
    mkdir(lower, "s")
    make_socket(upper, "s/sock")
    make_socket(upper, "rootsock")
    dir_times(lower), dir_times(upper)
    assert names(run(lower, upper)) == [("s/", "5")]
    assert run(lower, upper, SPEC) == bytes(1024)


def test_b16_whiteout_position(trees):
    lower, upper = trees
    write(lower, "z", b"x")
    write(lower, "adir/f", b"x")
    write(upper, "adir/f", b"y")
    whiteout(upper, "z")
    dir_times(lower), dir_times(upper, T0 + 1)
    assert names(run(lower, upper)) == [("adir/", "5"), ("adir/f", "0"), (".wh.z", "0")]
    assert names(run(lower, upper, SPEC)) == [(".wh.z", "0"), ("adir/", "5"), ("adir/f", "0")]


def test_b16_orphan_devices_keep_their_place(trees):
    """Only what is written as a whiteout moves to the front: with orphan whiteouts emitted as
    devices (B3 on), the device stays at its sort position."""
    lower, upper = trees
    write(upper, "a/f", b"y")
    whiteout(upper, "ghost")
    p = SPEC.with_quirks("orphan-whiteout-as-device")
    assert names(run(lower, upper, p)) == [("a/", "5"), ("a/f", "0"), ("ghost", "3")]


def test_write_diff_streams(tmp_path):
    lower, upper = build_worked_example(tmp_path)
    buf = io.BytesIO()
    assert write_diff(lower, upper, CTR, out=buf) is None
    assert buf.getvalue() == run(lower, upper)


@pytest.mark.parametrize("mt", [OCI_TAR, OCI_TAR_GZIP, OCI_TAR_ZSTD])
def test_a_layer_past_the_spill_size_is_described_from_its_spooled_bytes(trees, monkeypatch, mt):
    """Past SPILL the tar and the blob live in temporary files (an mmap each); digest, size and
    the uncompressed label, taken while writing, match the bytes returned."""
    from harness.reference import compare as compare_mod
    monkeypatch.setattr(compare_mod, "SPILL", 4096)
    lower, upper = trees
    for i in range(8):
        write(upper, f"d/f{i}", os.urandom(3000) + bytes(3000))
    out = compare(lower, upper, media_type=mt, profile=CTR)
    assert not isinstance(out.tar, bytes) and len(out.tar) > 4096     # spilled: an mmap
    blob = bytes(out.blob)
    assert out.descriptor == {"mediaType": mt, "size": len(blob),
                              "digest": "sha256:" + hashlib.sha256(blob).hexdigest()}
    assert compression.decompress(blob) == bytes(out.tar) == run(lower, upper)
    if mt != OCI_TAR:
        assert blob == compression.compress(bytes(out.tar), mt)
        assert out.labels["containerd.io/uncompressed"] == (
            "sha256:" + hashlib.sha256(bytes(out.tar)).hexdigest())


def test_b18_lower_symlink_dir_component(trees):
    """Lower x is a symlink to a directory; the upper replaced it with a real x/. overlayfs
    shows nothing of the lower below x, so x/keep must be emitted; containerd follows the
    symlink, finds x/keep identical, and skips it."""
    lower, upper = trees
    mkdir(lower, "real/keep")
    symlink(lower, "x", "real")
    mkdir(upper, "x/keep")
    dir_times(lower), dir_times(upper)
    os.utime(_p(upper, "x"), ns=((T0 + 1) * NS,) * 2)
    assert names(run(lower, upper)) == [("x/", "5")]
    assert names(run(lower, upper, SPEC)) == [("x/", "5"), ("x/keep/", "5")]


# --- ChangeWriter fields --------------------------------------------------------------------

def test_mtime_floor_negative_and_epoch_clamp(trees):
    lower, upper = trees
    write(upper, "neg", b"", mtime_ns=-1 * NS - 500_000_000)       # -1.5 s -> -2
    write(upper, "late", b"", mtime_ns=(T0 + 500) * NS + 7)
    write(upper, "early", b"", mtime_ns=(T0 - 500) * NS + 7)
    by = {m.name: m for m in members(run(lower, upper))}
    assert by["neg"].mtime == -2 and by["late"].mtime == T0 + 500
    # containerd ignores the epoch (B7) ...
    assert run(lower, upper, source_date_epoch=T0) == run(lower, upper)
    # ... the spec clamps what is later than the epoch; earlier stays (floored)
    by = {m.name: m for m in members(run(lower, upper, SPEC, source_date_epoch=T0))}
    assert (by["late"].mtime, by["early"].mtime, by["neg"].mtime) == (T0, T0 - 500, -2)


def test_epoch_leaves_whiteouts_at_zero(trees):
    lower, upper = trees
    write(lower, "gone", b"x")
    whiteout(upper, "gone")
    tar = run(lower, upper, SPEC, source_date_epoch=T0)
    assert raw_blocks(tar)[0]["mtime"] == 0


def test_modes_and_owner(trees):
    lower, upper = trees
    write(upper, "sgid", b"", mode=0o2750)
    mkdir(upper, "sticky", mode=0o1777)
    write(upper, "owned", b"", uid=1234, gid=5678)
    by = {b["name"]: b for b in raw_blocks(run(lower, upper))}
    assert by[b"sgid"]["mode"] == 0o2750 and by[b"sticky/"]["mode"] == 0o1777
    assert (by[b"owned"]["uid"], by[b"owned"]["gid"]) == (1234, 5678)


def test_hardlink_source_is_first_in_walk_order(trees):
    lower, upper = trees
    write(upper, "z/late", b"data")
    os.link(_p(upper, "z/late"), _p(upper, "a-first"))
    os.link(_p(upper, "z/late"), _p(upper, "m"))
    blocks = [(b["name"], b["type"], b["link"]) for b in raw_blocks(run(lower, upper))]
    assert blocks == [(b"a-first", "0", b""), (b"m", "1", b"a-first"), (b"z/", "5", b""),
                      (b"z/late", "1", b"a-first")]


def test_capability_on_hardlink_kept(trees):
    lower, upper = trees
    write(upper, "c1", b"bin")
    os.setxattr(_p(upper, "c1"), b"security.capability", CAP)
    os.link(_p(upper, "c1"), _p(upper, "c2"))
    blocks = [(b["name"], b["type"]) for b in raw_blocks(run(lower, upper))]
    assert blocks == [(b"PaxHeaders.0/c1", "x"), (b"c1", "0"), (b"PaxHeaders.0/c2", "x"),
                      (b"c2", "1")]


def test_b12_xattrs(trees):
    lower, upper = trees
    write(upper, "f", b"")
    os.setxattr(_p(upper, "f"), b"user.a", b"1")
    os.setxattr(_p(upper, "f"), b"trusted.x", b"2")
    os.setxattr(_p(upper, "f"), b"trusted.overlay.origin", b"3")
    os.setxattr(_p(upper, "f"), b"user.overlay.impure", b"4")
    os.setxattr(_p(upper, "f"), b"user.empty", b"")
    assert raw_blocks(run(lower, upper))[0]["type"] == "0"       # containerd: none exported
    pax = {m.name: m for m in members(run(lower, upper, SPEC))}["f"].pax_headers
    assert {k: v for k, v in pax.items() if k.startswith("SCHILY")} == {
        "SCHILY.xattr.user.a": "1", "SCHILY.xattr.trusted.x": "2"}


def test_long_symlink_target_uses_pax_linkpath(trees):
    lower, upper = trees
    target = "t" * 150
    symlink(upper, "ln", target)
    by = {m.name: m for m in members(run(lower, upper))}
    assert by["ln"].linkname == target and by["ln"].pax_headers["linkpath"] == target


def test_sparse_size_and_content(trees):
    lower, upper = trees
    write(upper, "f", b"hello")
    with open(_p(upper, "f"), "ab") as f:
        f.truncate(70_000)                    # spans several 32 KiB copies
    tar = run(lower, upper)
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        data = tf.extractfile("f").read()
    assert len(data) == 70_000 and data.startswith(b"hello") and data[5:] == bytes(69_995)


# --- Compare: media types, labels, compression ------------------------------------------------------

def test_media_types_and_descriptor(trees):
    lower, upper = trees
    write(upper, "f", b"x" * 5000)
    tar = run(lower, upper)
    for mt in (OCI_TAR, OCI_TAR_GZIP, OCI_TAR_ZSTD, ""):
        out = compare(lower, upper, media_type=mt, profile=CTR)
        want_mt = mt or OCI_TAR_GZIP
        assert out.tar == tar
        assert out.descriptor == {"mediaType": want_mt,
                                  "digest": "sha256:" + hashlib.sha256(out.blob).hexdigest(),
                                  "size": len(out.blob)}
        assert compression.decompress(out.blob) == tar
    gz = compare(lower, upper, media_type=OCI_TAR_GZIP, profile=CTR).blob
    assert gz[:10] == bytes.fromhex("1f8b08000000000000ff")
    assert compression.gzip_trailer(gz) == compression.expected_gzip_trailer(tar)
    zs = compare(lower, upper, media_type=OCI_TAR_ZSTD, profile=CTR).blob
    assert zs[:4] == bytes.fromhex("28b52ffd") and compression.zstd_frame_checksum(zs) is not None


@pytest.mark.parametrize("mt", ["application/vnd.docker.image.rootfs.diff.tar.gzip",
                                "application/vnd.oci.image.layer.v1.tar+encrypted",
                                "application/vnd.erofs.layer.v1", "foo"])
def test_unsupported_media_type(trees, mt):
    lower, upper = trees
    with pytest.raises(CompareError) as ei:
        compare(lower, upper, media_type=mt, profile=CTR)
    assert str(ei.value) == f"unsupported diff media type: {mt}: not implemented"
    assert ei.value.not_implemented


def test_labels(trees):
    lower, upper = trees
    write(upper, "f", b"x")
    tar_digest = "sha256:" + hashlib.sha256(run(lower, upper)).hexdigest()
    gz = compare(lower, upper, media_type=OCI_TAR_GZIP, profile=CTR,
                 labels={"a": "1", "empty": "", "containerd.io/uncompressed": "bogus"})
    assert gz.labels == {"a": "1", "containerd.io/uncompressed": tar_digest}
    plain = compare(lower, upper, media_type=OCI_TAR, profile=CTR, labels={"a": "1"})
    assert plain.labels == {"a": "1"}                                 # B8
    assert compare(lower, upper, media_type=OCI_TAR, profile=CTR).labels == {}
    spec = compare(lower, upper, media_type=OCI_TAR, profile=SPEC)
    assert spec.labels == {"containerd.io/uncompressed": tar_digest}
    assert spec.descriptor["digest"] == tar_digest


def test_missing_upper_root(tmp_path):
    with pytest.raises(CompareError) as ei:
        compare(str(tmp_path), str(tmp_path / "nope"), media_type=OCI_TAR, profile=CTR)
    assert ei.value.cause == f"lstat {tmp_path}/nope: no such file or directory"


class _SizeLie:
    """A stat result whose st_size is not the file's (the file changed after the walk)."""

    def __init__(self, st, size):
        self._st, self.st_size = st, size

    def __getattr__(self, name):
        return getattr(self._st, name)


@pytest.mark.parametrize("lie,cause", [(2, "failed to copy: {upper}/f: archive/tar: write too long"),
                                       (5, "short write copying file")])
def test_file_changed_during_copy(trees, monkeypatch, lie, cause):
    lower, upper = trees
    write(upper, "f", b"abc")
    real_lstat = os.lstat

    def lying_lstat(path, *a, **kw):
        st = real_lstat(path, *a, **kw)
        return _SizeLie(st, lie) if os.fsencode(path).endswith(b"/f") else st
    monkeypatch.setattr(os, "lstat", lying_lstat)
    with pytest.raises(CompareError) as ei:
        compare(lower, upper, media_type=OCI_TAR, profile=CTR)
    assert ei.value.cause == cause.format(upper=upper)


def test_template_lower_mounts_fail_like_containerd(tmp_path):
    """B20: a mount-manager template in the lower view cannot be mounted by mount.All."""
    from harness.reference.compare import CompareError, compare
    from harness.reference.profiles import SPEC, get_profile
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir(), upper.mkdir()
    (upper / "f").write_text("x")
    mounts = [{"type": "erofs", "source": "/s/1/layer.erofs", "options": ["ro", "loop"]},
              {"type": "format/mkdir/overlay", "source": "overlay",
               "options": ["lowerdir={{ overlay 0 1 }}"]}]
    with pytest.raises(CompareError) as info:
        compare(str(lower), str(upper), media_type=OCI_TAR, lower_mounts=mounts,
                profile=get_profile("containerd@v2.4.2"))
    assert str(info.value) == (
        'failed to create diff tar stream: failed to mount /tmp/containerd-mount0: mount source: '
        '"overlay", target: "/tmp/containerd-mount0", fstype: format/mkdir/overlay, flags: 0, '
        'data: "lowerdir={{ overlay 0 1 }}", err: no such device')
    for profile in (get_profile("containerd@v2.1.9"), SPEC):   # v2.1 mounts plain overlays
        assert compare(str(lower), str(upper), media_type=OCI_TAR, lower_mounts=mounts,
                       profile=profile).tar
