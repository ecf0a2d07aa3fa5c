"""harness.reference.layermeaning: hand-computed trees for each rule of containerd's default
applier, then (root and the built Go oracle) a differential test of the meaning: the same layers
applied by containerd's walking applier into a plain directory, captured with treeview.capture."""
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from harness import treeview
from harness.reference.gotar import (
    TYPE_BLOCK, TYPE_CHAR, TYPE_DIR, TYPE_FIFO, TYPE_LINK, TYPE_REG, TYPE_SYMLINK, TYPE_XGLOBAL,
    ZERO_TIME_NS, Format, Header, TarWriter, write_tar,
)
from harness.reference.layermeaning import masked, meaning
from harness.treeview import Node

ROOT = Path(__file__).resolve().parent.parent
DIALECTS = ROOT / "fixtures" / "dialects"
S = 10**9
T0 = 1700000000 * S


# --- building layers ----------------------------------------------------------------------------

def D(name, mode=0o755, mtime=T0, **kw):
    return Header(name.encode() + b"/", TYPE_DIR, mode=mode, mtime_ns=mtime, **kw), b""


def F(name, data=b"", mode=0o644, mtime=T0, **kw):
    if isinstance(name, str):
        name = name.encode()
    return Header(name, TYPE_REG, size=len(data), mode=mode, mtime_ns=mtime, **kw), data


def L(name, target, mode=0o644, mtime=T0, **kw):
    return Header(name.encode(), TYPE_LINK, linkname=target.encode(), mode=mode,
                  mtime_ns=mtime, **kw), b""


def SYM(name, target, mtime=T0, **kw):
    return Header(name.encode(), TYPE_SYMLINK, linkname=target.encode(), mode=0o777,
                  mtime_ns=mtime, **kw), b""


def G(name, **pax):
    """A PAX global header (Go's writer allows only name and records)."""
    return Header(name.encode(), TYPE_XGLOBAL, mtime_ns=ZERO_TIME_NS,
                  pax={k: v.encode() for k, v in pax.items()}), b""


def WH(name):
    return Header(name.encode(), TYPE_REG, mode=0o644, mtime_ns=0), b""


def layer(*members) -> bytes:
    """PAX unless a member chose: Go's writer keeps sub-second and negative times only then."""
    return write_tar([(h if h.format or h.typeflag == TYPE_XGLOBAL else
                       Header(**{**vars(h), "format": Format.PAX}), c) for h, c in members])


def apply(*members, parent=None):
    return meaning(io.BytesIO(layer(*members)), parent)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def dnode(mode=0o755, mtime=T0, uid=0, gid=0, xattrs=()):
    return Node("dir", mode, uid, gid, mtime, xattrs=xattrs)


def fnode(data=b"", mode=0o644, mtime=T0, uid=0, gid=0, xattrs=(), inode=None):
    return Node("file", mode, uid, gid, mtime, size=len(data), digest=sha(data), xattrs=xattrs,
                inode=inode)


ROOTNODE = dnode(mtime=T0)


def parent_tree(extra: dict) -> dict:
    return {b"/": ROOTNODE, **extra}


def shape(tree: dict) -> dict:
    """The tree with inode ids replaced by the sorted group of paths sharing them."""
    groups = treeview.hardlink_groups(tree)
    return {p: (n.__class__(**{**vars(n), "inode": groups.get(p)}) if n.inode else n)
            for p, n in tree.items()}


# --- single rules, hand-computed ----------------------------------------------------------------

def test_files_dirs_and_root_without_parent():
    m = apply(D("a", 0o750, T0 + 5), F("a/f", b"hello", 0o4755, T0 + 123456789, uid=7, gid=8))
    assert m.error is None
    assert m.tree == {b"/": dnode(mtime=0), b"/a": dnode(0o750, T0 + 5),
                      b"/a/f": fnode(b"hello", 0o4755, T0 + 123456789, 7, 8)}
    assert m.volatile == {b"/"}                                    # the fresh root's mtime


def test_whiteouts_remove_from_parent():
    parent = parent_tree({b"/gone": fnode(b"x"), b"/d": dnode(), b"/d/x": fnode(b"y"),
                          b"/d/keep": fnode(b"z"), b"/dd": dnode(), b"/dd/sub": fnode()})
    m = apply(WH(".wh.gone"), WH("d/.wh.x"), WH(".wh.dd"), WH(".wh.never-there"), parent=parent)
    assert m.error is None
    # Entries were removed in / and /d: the kernel set their mtimes to the time of applying.
    assert m.tree == {b"/": dnode(mtime=0), b"/d": dnode(mtime=0), b"/d/keep": fnode(b"z")}
    assert m.volatile == {b"/", b"/d"}


def test_opaque_hides_parent_children_keeps_this_layers():
    parent = parent_tree({b"/o": dnode(0o700), b"/o/old": fnode(b"1"), b"/o/olddir": dnode(),
                          b"/o/olddir/x": fnode(b"2"), b"/o/zz": fnode(b"3")})
    m = apply(D("o"), F("o/new", b"n"), WH("o/.wh..wh..opq"), F("o/after", b"a"), parent=parent)
    assert m.error is None
    assert m.tree == {b"/": ROOTNODE, b"/o": dnode(), b"/o/new": fnode(b"n"),
                      b"/o/after": fnode(b"a")}


def test_opaque_after_a_deeper_entry_removes_it_too():
    # applyNaive records only the paths it unpacked: o/sub was not (only o/sub/f), so the
    # opaque walk removes o/sub with the file this layer just put there.
    parent = parent_tree({b"/o": dnode(), b"/o/sub": dnode(), b"/o/sub/old": fnode()})
    m = apply(F("o/sub/f", b"new"), WH("o/.wh..wh..opq"), parent=parent)
    assert m.error is None and b"/o/sub" not in m.tree and b"/o/sub/f" not in m.tree


def test_hardlink_to_earlier_entry_shares_the_inode_and_takes_its_metadata():
    m = apply(F("a", b"data", 0o644, uid=1), L("b", "a", mode=0o600, mtime=T0 + 9, uid=2))
    assert m.error is None
    t = shape(m.tree)
    # The link's own header is applied to the shared inode (lchown, lchmod, chtimes).
    assert t[b"/a"] == fnode(b"data", 0o600, T0 + 9, 2, inode=(b"/b",))
    assert t[b"/b"] == fnode(b"data", 0o600, T0 + 9, 2, inode=(b"/a",))


def test_hardlink_to_later_or_missing_entry_is_an_error():
    m = apply(L("b", "a"), F("a", b"x"))
    assert m.error == "link /rootfs/a /rootfs/b: no such file or directory"
    assert apply(L("b", "nope")).error == "link /rootfs/nope /rootfs/b: no such file or directory"
    assert apply(D("d"), L("b", "d")).error == "link /rootfs/d /rootfs/b: operation not permitted"
    assert apply(L("b", "../../")).error == "link /rootfs /rootfs/b: operation not permitted"


def test_replacing_a_hardlinked_path_breaks_the_link():
    m = apply(F("a", b"1"), L("b", "a"), F("a", b"2"))
    assert m.error is None
    assert m.tree[b"/a"] == fnode(b"2") and m.tree[b"/b"] == fnode(b"1")


def test_duplicates_later_wins_dir_over_dir_merges():
    parent = parent_tree({b"/d": dnode(0o700, xattrs=(("user.p", b"1"),)),
                          b"/d/child": fnode(b"c")})
    m = apply(F("f", b"one"), F("f", b"two", 0o600), D("d", 0o711, T0 + 1), parent=parent)
    assert m.error is None
    assert m.tree[b"/f"] == fnode(b"two", 0o600)
    assert m.tree[b"/d"] == dnode(0o711, T0 + 1, xattrs=(("user.p", b"1"),))
    assert m.tree[b"/d/child"] == fnode(b"c")


def test_dir_over_file_and_file_over_dir():
    parent = parent_tree({b"/x": fnode(b"file"), b"/y": dnode(), b"/y/in": fnode()})
    m = apply(D("x", 0o700), F("y", b"now a file"), parent=parent)
    assert m.error is None
    assert m.tree == {b"/": dnode(mtime=0), b"/x": dnode(0o700), b"/y": fnode(b"now a file")}
    assert m.volatile == {b"/"}


def test_directory_mtime_set_last_even_on_what_replaced_it():
    m = apply(D("d", mtime=T0 + 100), F("d", b"file", mtime=T0 + 200))
    assert m.tree[b"/d"] == fnode(b"file", mtime=T0 + 100)


def test_whited_out_directory_of_this_layer_fails_at_the_end():
    m = apply(D("d"), WH(".wh.d"))
    assert m.error == "failed call to UtimesNanoAt for /rootfs/d: no such file or directory"


def test_escaping_names_are_clamped_into_the_root():
    m = apply(F("../escape", b"e"), F("/abs/file", b"a"), F("ok/../../up", b"u"))
    assert m.error is None
    assert m.tree[b"/escape"] == fnode(b"e") and m.tree[b"/up"] == fnode(b"u")
    assert m.tree[b"/abs"] == dnode(mtime=0) and b"/abs" in m.volatile    # mkparent, 0755
    assert any("applied at /escape" in n for n in m.notes)


def test_symlinked_parent_is_resolved_inside_the_root():
    m = apply(D("etc"), SYM("link", "/etc"), SYM("up", "../../.."), F("link/f", b"1"),
              F("up/g", b"2"))
    assert m.error is None
    assert m.tree[b"/etc/f"] == fnode(b"1") and m.tree[b"/g"] == fnode(b"2")
    assert m.tree[b"/link"] == Node("symlink", 0o777, 0, 0, T0, target=b"/etc")


def test_whiteout_names_that_name_no_child_are_refused():
    assert apply(WH(".wh.")).error == "invalid whiteout name: .wh.: invalid archive"
    assert apply(WH("d/.wh..")).error == "invalid whiteout name: .wh..: invalid archive"
    assert apply(WH("d/.wh...")).error == "invalid whiteout name: .wh...: invalid archive"
    m = apply(F(".wh.x", b"1"), WH(".wh..wh.x"))       # other .wh..wh. names remove .wh.<x>
    assert m.error is None and b"/.wh.x" not in m.tree


def test_lstat_follows_symlinks_on_the_way_like_the_kernel():
    m = apply(SYM("a", "a"), D("a/b/c"))
    assert m.error == "failed to get root path: lstat /rootfs/a/b: too many levels of symbolic links"


def test_root_entry_is_ignored():
    m = apply(D(".", 0o700), F("f", b"x"))
    assert m.tree[b"/"] == dnode(mtime=0) and any("resolves to the root" in n for n in m.notes)


def test_global_header_is_not_applied_to_later_entries_but_removes_its_name():
    parent = parent_tree({b"/victim": fnode(b"old")})
    m = apply(G("pax_global_header", path="victim", uid="5"), F("a", b"1"), parent=parent)
    assert m.error is None
    assert m.tree == {b"/": dnode(mtime=0), b"/a": fnode(b"1")}    # uid not merged into a


def test_unhandled_types_and_empty_symlink():
    assert apply(F("a"), (Header(b"c", b"7", mode=0o644), b"")).error == \
        "unhandled tar header type 55"
    assert apply(SYM("s", "")).error == "symlink  /rootfs/s: no such file or directory"


def test_devices_fifos_and_ids():
    m = apply((Header(b"null", TYPE_CHAR, mode=0o666, devmajor=1, devminor=3, mtime_ns=T0), b""),
              (Header(b"loop", TYPE_BLOCK, mode=0o660, devmajor=7, devminor=0, mtime_ns=T0), b""),
              (Header(b"fifo", TYPE_FIFO, mode=0o1620, mtime_ns=T0, uid=3000000000), b""))
    assert m.tree[b"/null"] == Node("char", 0o666, 0, 0, T0, rdev=(1, 3))
    assert m.tree[b"/loop"] == Node("block", 0o660, 0, 0, T0, rdev=(7, 0))
    assert m.tree[b"/fifo"] == Node("fifo", 0o1620, 3000000000, 0, T0)


def test_times_full_precision_and_bounds():
    m = apply(F("ns", mtime=T0 + 1), F("neg", mtime=-S), F("pre", mtime=-1))
    assert [m.tree[p].mtime_ns for p in (b"/ns", b"/neg", b"/pre")] == [T0 + 1, 0, 0]


def test_xattrs_from_schily_records_only():
    h, d = F("f", b"x", pax={"SCHILY.xattr.user.a": b"1", "SCHILY.xattr.trusted.t": b"2",
                             "LIBARCHIVE.xattr.user.b": b"Mg==", "SCHILY.xattr.user.empty": b""})
    hs, _ = SYM("s", "f", pax={"SCHILY.xattr.user.a": b"1"})
    m = apply((h, d), (hs, b""))
    assert m.error is None
    assert m.tree[b"/f"].xattrs == (("user.a", b"1"), ("user.empty", b""))
    assert m.tree[b"/s"].xattrs == ()                               # user.* on a symlink: EPERM
    assert any("trusted.t ignored" in n for n in m.notes)
    bad, _ = F("g", pax={"SCHILY.xattr.user.": b"1"})
    assert apply((bad, b"")).error == 'failed to setxattr "/rootfs/g" for key "user.": invalid argument'


def test_sparse_file_content_has_zero_holes():
    m = meaning(open(DIALECTS / "pax-sparse.tar", "rb"))
    n = m.tree[b"/s/sparse"]
    assert m.error is None and n.size == 1 << 20
    assert meaning(open(DIALECTS / "gnu-sparse.tar", "rb")).error == "unhandled tar header type 83"


def test_tar_errors_are_go_reader_errors():
    data = layer(F("a", b"x" * 1000))
    assert apply().error is None
    assert meaning(io.BytesIO(data[:700])).error == "unexpected EOF"
    assert meaning(io.BytesIO(bytes(512) + b"x" * 512)).error == "archive/tar: invalid tar header"


def test_setgid_directory_gives_its_group_when_gid_is_minus_one():
    parent = parent_tree({b"/sg": dnode(0o2775, gid=50)})
    m = apply(F("sg/f", b"x", gid=-1), parent=parent)
    assert m.error is None and m.tree[b"/sg/f"].gid == 50


# --- differential against containerd's default applier (the walking differ's fs applier) -------

CAPV = bytes.fromhex("0100000200200000000000000000000000000000")   # v2: cap_net_bind_service
# The walking applier's error: "mount callback failed on <temp mount>: <archive.Apply error>".
MOUNT_PREFIX = re.compile(r"^mount callback failed on (/\S+): ")
MODEL_ROOT = b"/ROOT"


@pytest.fixture(scope="module")
def oracle():
    if os.geteuid() != 0:
        pytest.skip("applying through containerd needs root (mounts, chown, mknod)")
    from harness.oracle import Oracle, binary_path, default_version
    version = default_version()
    if not os.access(binary_path(version), os.X_OK):
        pytest.skip(f"the Go oracle for containerd {version} is not built (make bootstrap)")
    td = tempfile.mkdtemp(prefix="layerconf-meaning-")
    try:
        with Oracle(version, os.path.join(td, "oracle")) as o:
            yield o, td
    finally:
        shutil.rmtree(td, ignore_errors=True)


def go_apply_dir(o, td: str, blob: bytes, target: str) -> str | None:
    """Apply `blob` with containerd's walking applier onto `target`; its error text or None."""
    from harness.oracle import ContainerdError
    path = os.path.join(td, "blob-" + uuid.uuid4().hex[:8])
    Path(path).write_bytes(blob)
    key = "meaning-" + uuid.uuid4().hex[:8]
    try:
        desc = o.ingest(path, "application/vnd.oci.image.layer.v1.tar")
        o.prepare(key, "")
        try:
            o.call("apply", differ="walking", descriptor=desc, key=key,
                   mounts=[{"type": "bind", "source": target, "options": ["rbind", "rw"]}])
        except ContainerdError as e:
            text = str(e)
            m = MOUNT_PREFIX.match(text)
            if m is None:
                return text
            return text[m.end():].replace(m.group(1), MODEL_ROOT.decode())
        return None
    finally:
        os.unlink(path)
        try:
            o.remove(key)
        except ContainerdError:
            pass


def _pax(name, **pax):
    return F(name, b"p", pax={k.replace("_", "."): v for k, v in pax.items()})


DIFF_CASES = {
    # name: (parent layer or None, layer)
    "whiteouts": (layer(F("gone", b"x"), D("d"), F("d/x"), F("d/keep", b"k"), D("dd"), F("dd/s")),
                  layer(WH(".wh.gone"), WH("d/.wh.x"), WH(".wh.dd"), WH(".wh.never"))),
    "opaque": (layer(D("o", 0o700), F("o/old"), D("o/olddir"), F("o/olddir/x")),
               layer(D("o"), F("o/new", b"n"), WH("o/.wh..wh..opq"), F("o/after", b"a"))),
    "opaque-after-deeper-entry": (layer(D("o"), D("o/sub"), F("o/sub/old")),
                                  layer(F("o/sub/f", b"new"), WH("o/.wh..wh..opq"))),
    "opaque-root": (layer(F("a"), D("b")), layer(F("c"), WH(".wh..wh..opq"))),
    "bare-wh": (None, layer(WH(".wh."))),
    "wh-dotdot": (None, layer(WH("d/.wh.."))),
    "wh-meta-other": (layer(F(".wh.x")), layer(WH(".wh..wh.x"))),
    "hardlink-earlier": (None, layer(F("a", b"data", uid=1), L("b", "a", mode=0o600, mtime=T0 + 9))),
    "hardlink-later": (None, layer(L("b", "a"), F("a", b"x"))),
    "hardlink-missing": (None, layer(L("b", "nope"))),
    "hardlink-dir": (None, layer(D("d"), L("b", "d"))),
    "hardlink-outside": (None, layer(L("b", "../../x"))),
    "hardlink-symlink": (None, layer(SYM("s", "t"), L("h", "s"))),
    "hardlink-to-parent-file": (layer(F("p", b"parent")), layer(L("q", "p", mode=0o640))),
    "hardlink-broken-by-replace": (None, layer(F("a", b"1"), L("b", "a"), F("a", b"2"))),
    "duplicates": (layer(D("d", 0o700), F("d/child", b"c")),
                   layer(F("f", b"one"), F("f", b"two", 0o600), D("d", 0o711, T0 + 1))),
    "dir-over-file-file-over-dir": (layer(F("x", b"file"), D("y"), F("y/in")),
                                    layer(D("x", 0o700), F("y", b"now a file"))),
    "dir-mtime-on-replacement": (None, layer(D("d", mtime=T0 + 100), F("d", b"f", mtime=T0 + 200))),
    "dir-whited-out-later": (None, layer(D("d"), WH(".wh.d"))),
    "escaping": (None, layer(F("../escape", b"e"), F("/abs/file", b"a"), F("ok/../../up", b"u"),
                             F("./x/./y", b"y"), F("//double//slash", b"s"))),
    "symlinked-parent": (None, layer(D("etc"), SYM("link", "/etc"), SYM("up", "../../.."),
                                     F("link/f", b"1"), F("up/g", b"2"))),
    "symlink-loop": (None, layer(SYM("a", "b"), SYM("b", "a"), F("a/f"))),
    # continuity's walk lstats "<root>/a/b" with a -> a: the kernel follows a on the way.
    "symlink-self-on-the-way": (None, layer(SYM("a", "a"), D("a/b/c"))),
    "symlink-chain-absolute": (None, layer(D("t"), SYM("x", "y"), SYM("y", "/t"), F("x/f", b"1"))),
    "file-as-parent": (None, layer(F("f"), F("f/x"))),
    "file-as-grandparent": (None, layer(F("f"), F("f/x/y"))),
    "root-entry": (None, layer(D(".", 0o700), F("f", b"x"))),
    "global-header": (layer(F("victim", b"old"), F("pax_global_header", b"o")),
                      layer(G("pax_global_header", path="victim", uid="5"), F("a", b"1"))),
    "global-header-deep": (None, layer(G("g", path="x/y/z"))),
    "unhandled-type": (None, layer(F("a"), (Header(b"c", b"7", mode=0o644), b""))),
    "empty-symlink": (None, layer(SYM("s", ""))),
    "devices": (None, layer((Header(b"null", TYPE_CHAR, mode=0o666, devmajor=1, devminor=3,
                                    mtime_ns=T0), b""),
                            (Header(b"big", TYPE_CHAR, mode=0o600, devmajor=4097, devminor=1 << 20,
                                    mtime_ns=T0 + 5), b""),
                            (Header(b"loop", TYPE_BLOCK, mode=0o660, devmajor=7, mtime_ns=T0), b""),
                            (Header(b"fifo", TYPE_FIFO, mode=0o1620, mtime_ns=T0,
                                    uid=3000000000, gid=7), b""))),
    "modes-and-ids": (None, layer(F("suid", mode=0o4755), F("sgid", mode=0o2711),
                                  D("sticky", 0o1777), F("big-mode", mode=0o177777),
                                  F("ids", uid=65534, gid=2000000000))),
    "times": (None, layer(F("ns", mtime=T0 + 1), F("neg", mtime=-S), F("pre", mtime=-1),
                          F("far", mtime=(1 << 62)), D("dd", mtime=T0 + 999999999))),
    "xattrs": (None, layer(F("f", b"x", pax={"SCHILY.xattr.user.a": b"1",
                                             "SCHILY.xattr.trusted.t": b"2",
                                             "LIBARCHIVE.xattr.user.b": b"Mg==",
                                             "SCHILY.xattr.user.empty": b"",
                                             "SCHILY.xattr.foo.bar": b"3"}),
                           SYM("s", "f", pax={"SCHILY.xattr.user.a": b"1"}),
                           D("d", pax={"SCHILY.xattr.user.d": b"dir"}))),
    "capability-dropped-by-link-chown": (None, layer(
        F("cap", b"x", mode=0o755, pax={"SCHILY.xattr.security.capability": CAPV}),
        L("link", "cap", mode=0o755))),
    "capability-kept-with-suid": (None, layer(
        F("cap", b"x", mode=0o4755, uid=5, pax={"SCHILY.xattr.security.capability": CAPV}))),
    "capability-invalid": (None, layer(F("c", pax={"SCHILY.xattr.security.capability": b"x"}))),
    "name-too-long-file": (None, layer(F("n" * 256, b"x"))),
    "name-too-long-dir": (None, layer(D("d" * 256))),
    "name-too-long-parent": (None, layer(F("p" * 256 + "/f", b"x"))),
    "name-too-long-symlink": (None, layer(SYM("s" * 256, "t"))),
    "name-too-long-fifo": (None, layer((Header(b"f" * 256, TYPE_FIFO, mode=0o644,
                                              mtime_ns=T0), b""))),
    "name-too-long-link": (None, layer(F("a"), L("l" * 256, "a"))),
    "name-too-long-whiteout": (None, layer(WH(".wh." + "w" * 252))),
    "name-max-ok": (None, layer(F("n" * 255, b"x"))),
    "xattr-empty-name": (None, layer(F("g", pax={"SCHILY.xattr.user.": b"1"}))),
    "setgid-inherit": (layer(D("sg", 0o2775, gid=50)),
                       layer(F("sg/f", b"x", gid=-1, uid=-1), D("sg/sub"))),
    "parent-dir-touched": (layer(D("p", mtime=T0)), layer(F("p/new", b"n"))),
    "truncated": (None, layer(F("a", b"x" * 1000))[:700]),
    "bad-header": (None, bytes(512) + b"x" * 512),
}
DIALECT_CASES = ["ustar", "dot-prefix", "v7", "pax-longname", "gnu-longname", "pax-xattr",
                 "pax-global", "python-pax", "base256-uid", "base256-mtime",
                 "base256-negative-mtime", "gnu-sparse", "pax-sparse", "hardlink",
                 "duplicate-paths", "whiteouts", "bare-wh", "unsafe-names", "devices",
                 "exact-end", "trailing-garbage", "trailing-zeros", "no-end-blocks",
                 "one-end-block", "empty-archive", "empty-stream", "bsdtar-pax",
                 "bsdtar-restricted", "go-differ"]


@pytest.mark.parametrize("label", sorted(DIFF_CASES) + [f"fixture:{n}" for n in DIALECT_CASES])
def test_meaning_against_containerd(oracle, label):
    o, td = oracle
    if label.startswith("fixture:"):
        parent_blob, blob = None, (DIALECTS / (label[8:] + ".tar")).read_bytes()
    else:
        parent_blob, blob = DIFF_CASES[label]
    target = os.path.join(td, "t-" + uuid.uuid4().hex[:8])
    os.mkdir(target)
    os.chmod(target, 0o755)
    try:
        parent = None
        if parent_blob is not None:
            assert go_apply_dir(o, td, parent_blob, target) is None
            parent = treeview.capture(target)
        started = time.time_ns() - S         # the kernel's coarse clock may lag a little
        err = go_apply_dir(o, td, blob, target)
        got = treeview.capture(target)
        m = meaning(io.BytesIO(blob), parent, root=MODEL_ROOT)
        assert m.error == err, f"{label}: error: containerd {err!r}, meaning {m.error!r}"
        if err is None:
            stale = [p for p in sorted(m.volatile) if p in got and got[p].mtime_ns < started]
            assert not stale, f"{label}: modelled as touched while applying, but not: {stale}"
            diffs = treeview.diff(masked(got, m.volatile), masked(m.tree, m.volatile))
            assert not diffs, f"{label}: containerd (before) vs meaning (after):\n" + \
                "\n".join(d.render() for d in diffs)
    finally:
        shutil.rmtree(target, ignore_errors=True)


# --- Hypothesis: random layers over random parents, containerd vs the model ----------------------

from hypothesis import HealthCheck, event, given, settings, strategies as st  # noqa: E402

_NAMES = ["a", "b", "a/b", "a/c", "b/a", "a/b/c", ".wh.a", ".wh.b", "a/.wh.b", "a/.wh.c",
          ".wh..wh..opq", "a/.wh..wh..opq", "a/b/.wh..wh..opq", "../a", "/b", "./a/../c", "c",
          "L" * 256, "a/" + "L" * 256, ".wh." + "L" * 252]
_TARGETS = ["a", "b", "a/b", "c", "/a", "../..", "/", "..", "a/../b", "nope"]


@st.composite
def _entry(draw):
    name = draw(st.sampled_from(_NAMES))
    kind = draw(st.sampled_from(["dir", "file", "file", "link", "symlink", "fifo", "char",
                                 "global"]))
    if kind == "global":
        return G("pax_global_header", **({"path": name} if draw(st.booleans()) else {}))
    mode = draw(st.sampled_from([0o755, 0o644, 0o700, 0o4755, 0o2775, 0o1777, 0o000]))
    mtime = draw(st.sampled_from([T0, T0 + 1, T0 + 999999999, 0, -S, 5 * S + 7]))
    uid, gid = draw(st.sampled_from([(0, 0), (1, 2), (65534, 65534), (-1, -1), (3000000000, 7)]))
    if kind == "dir":
        return D(name, mode, mtime, uid=uid, gid=gid)
    if kind == "file":
        pax = draw(st.sampled_from([{}, {"SCHILY.xattr.user.x": b"v"},
                                    {"SCHILY.xattr.security.capability": CAPV}]))
        return F(name, draw(st.sampled_from([b"", b"x", b"hello"])), mode, mtime, uid=uid,
                 gid=gid, pax=pax)
    if kind == "link":
        return L(name, draw(st.sampled_from(_TARGETS)), mode, mtime, uid=uid, gid=gid)
    if kind == "symlink":
        return SYM(name, draw(st.sampled_from(_TARGETS)), mtime, uid=uid, gid=gid)
    typ = TYPE_FIFO if kind == "fifo" else TYPE_CHAR
    return Header(name.encode(), typ, mode=mode, mtime_ns=mtime, uid=uid, gid=gid, devmajor=1,
                  devminor=3), b""


@settings(max_examples=int(os.environ.get("MEANING_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(parent=st.lists(_entry(), max_size=5), entries=st.lists(_entry(), min_size=1, max_size=6))
def test_hypothesis_meaning_against_containerd(oracle, parent, entries):
    o, td = oracle
    target = os.path.join(td, "h-" + uuid.uuid4().hex[:8])
    os.mkdir(target)
    os.chmod(target, 0o755)
    try:
        if go_apply_dir(o, td, layer(*parent), target) is not None:
            event("parent refused by containerd")
            return                                       # only parents containerd can make
        before = treeview.capture(target)
        started = time.time_ns() - S
        blob = layer(*entries)
        err = go_apply_dir(o, td, blob, target)
        m = meaning(io.BytesIO(blob), before, root=MODEL_ROOT)
        assert m.error == err
        event("layer refused" if err else "layer applied")
        if err is None:
            got = treeview.capture(target)
            stale = [p for p in sorted(m.volatile) if p in got and got[p].mtime_ns < started]
            assert not stale, f"modelled as touched while applying, but not: {stale}"
            diffs = treeview.diff(masked(got, m.volatile), masked(m.tree, m.volatile))
            assert not diffs, "containerd (before) vs meaning (after):\n" + \
                "\n".join(d.render() for d in diffs)
    finally:
        shutil.rmtree(target, ignore_errors=True)


def test_streaming_with_bounded_memory():
    """A 256 MiB file streams through: hashed as it goes, never held in memory."""
    import tracemalloc

    size = 256 << 20
    out = bytearray()
    tw = TarWriter(out.extend)
    tw.write_header(Header(b"big/", TYPE_DIR, mode=0o755, mtime_ns=T0))
    tw.write_header(Header(b"big/f", TYPE_REG, size=size, mode=0o644, mtime_ns=T0))
    head = bytes(out)                                   # the data and end blocks are synthesised

    class Synth(io.RawIOBase):
        """The header, then `size` zero bytes and the end blocks, made up as they are read."""

        def __init__(self):
            self.pos, self.end = 0, len(head) + size + 1024

        def readable(self):
            return True

        def readinto(self, b):
            n = min(len(b), self.end - self.pos)
            chunk = head[self.pos:self.pos + n] if self.pos < len(head) else b""
            b[:len(chunk)] = chunk
            b[len(chunk):n] = bytes(n - len(chunk))
            self.pos += n
            return n

    tracemalloc.start()
    try:
        m = meaning(Synth())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert m.error is None
    assert m.tree[b"/big/f"].size == size
    assert m.tree[b"/big/f"].digest == \
        "a6d72ac7690f53be6ae46ba88506bd97302a093f7108472bd9efc3cefda06484"   # sha256 of 256 MiB of zeros
    assert peak < 16 << 20, f"peak traced memory {peak} bytes"
