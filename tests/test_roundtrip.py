"""The round trip (harness/treeview.py, harness/roundtrip.py): tree capture and diff, what explains
a difference, and, against containerd's real differ and the kernel, that a layer which lost
something fails by path and attribute."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from harness import capabilities, roundtrip, runner, state
from harness.oracle import binary_path, default_version
from harness.reference import profiles
from harness.result import Status
from harness.scenario import load
from harness.scenario.model import OCI_TAR
from harness.treeview import Difference, Node, capture, diff

REPO = Path(__file__).resolve().parent.parent
CD = profiles.containerd_profile(default_version())


def node(kind="file", **kw):
    base = dict(type=kind, mode=0o644, uid=0, gid=0, mtime_ns=1700000000 * 10**9)
    if kind == "file":
        base.update(size=1, digest="d")
    base.update(kw)
    return Node(**base)


ROOT = {b"/": node("dir", mode=0o755)}


# -- diff (pure) ---------------------------------------------------------------------------------

def test_identical_trees_have_no_difference():
    t = {**ROOT, b"/a": node(), b"/d": node("dir")}
    assert diff(t, dict(t)) == []


def test_a_missing_directory_is_one_difference_with_its_count():
    before = {**ROOT, b"/d": node("dir"), b"/d/x": node(), b"/d/y": node("dir"),
                          b"/d/y/z": node()}
    [d] = diff(before, dict(ROOT))
    assert (d.path, d.attribute, d.below) == (b"/d", "presence", 3)
    assert d.render() == "/d: missing after the round trip (and 3 entries below it)"
    [e] = diff(dict(ROOT), {**ROOT, b"/new": node()})
    assert e.render() == "/new: only after the round trip"


def test_attributes_are_named_and_a_type_change_is_reported_alone():
    before = {**ROOT, b"/f": node(mode=0o644, xattrs=(("user.a", b"1"),)),
                          b"/l": node("symlink", target=b"x"), b"/c": node("char", rdev=(1, 3))}
    after = {**ROOT, b"/f": node(mode=0o600, uid=7, digest="e"),
                         b"/l": node(), b"/c": node("char", rdev=(1, 5))}
    got = [d.render() for d in diff(before, after)]
    assert got == ["/c: rdev: before 1:3, after 1:5",
                   "/f: content: before d, after e",
                   "/f: mode: before 0644, after 0600",
                   "/f: uid: before 0, after 7",
                   "/f: xattr user.a: before '1', after absent",
                   "/l: type: before symlink, after file"]


def test_hardlink_groups_compare_by_path_not_inode_number():
    before = {**ROOT, b"/a": node(inode=(1, 10)), b"/b": node(inode=(1, 10)), b"/c": node()}
    same_groups = {**ROOT, b"/a": node(inode=(9, 99)), b"/b": node(inode=(9, 99)), b"/c": node()}
    assert diff(before, same_groups) == []
    split = {**ROOT, b"/a": node(), b"/b": node(), b"/c": node()}
    got = [d.render() for d in diff(before, split)]
    assert got == ["/a: hardlinks: before {/b}, after no other links",
                   "/b: hardlinks: before {/a}, after no other links"]


def test_capture_reads_types_links_xattrs_and_whole_second_mtimes(tmp_path):
    r = tmp_path
    (r / "d").mkdir()
    (r / "d" / "f").write_bytes(b"hello")
    os.link(r / "d" / "f", r / "g")
    os.symlink("d/f", r / "s")
    os.mkfifo(r / "p")
    os.utime(r / "d" / "f", ns=(0, 1700000000_900000000))
    try:
        os.setxattr(r / "d" / "f", "user.k", b"v")
        xattr = True
    except OSError:
        xattr = False
    t = capture(str(r))
    assert set(t) == {b"/", b"/d", b"/d/f", b"/g", b"/s", b"/p"}
    f = t[b"/d/f"]
    assert (f.type, f.size, f.mtime_ns // 10**9) == ("file", 5, 1700000000)
    assert f.digest == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert f.inode == t[b"/g"].inode is not None
    assert t[b"/s"].target == b"d/f" and t[b"/p"].type == "fifo"
    if xattr:
        assert ("user.k", b"v") in f.xattrs


# -- what explains a difference (pure) -------------------------------------------------------------

def test_lost_xattrs_are_only_capability_xattr_and_only_where_it_is_on():
    before = {**ROOT, b"/f": node(xattrs=(("user.a", b"1"),))}
    after = {**ROOT, b"/f": node()}
    ds = diff(before, after)
    check = roundtrip.verdict(ds, CD, before, {})
    assert check.status == Status.XFAIL and check.quirks == ["only-capability-xattr"]
    assert "/f: xattr user.a" in check.explanation
    check = roundtrip.verdict(ds, profiles.SPEC, before, {})
    assert check.status == Status.FAIL and "/f: xattr user.a" in check.explanation


def test_a_lost_capability_is_never_excused():
    cap = (("security.capability", b"\x01"),)
    before = {**ROOT, b"/f": node(xattrs=cap)}
    check = roundtrip.verdict(diff(before, {**ROOT, b"/f": node()}), CD, before, {})
    assert check.status == Status.FAIL


def test_b6_needs_an_opaque_ancestor():
    before = {**ROOT, b"/d": node("dir"), b"/d/s": node("dir")}
    after = {**ROOT, b"/d": node("dir")}
    ds = diff(before, after)
    assert roundtrip.verdict(ds, CD, before, {b"/d": "trusted"}).quirks == ["opaque-identical-subdir-skipped"]
    assert roundtrip.verdict(ds, CD, before, {}).status == Status.FAIL
    # A lost file under an opaque directory is no skipped sub-directory.
    before = {**ROOT, b"/d": node("dir"), b"/d/f": node()}
    ds = diff(before, {**ROOT, b"/d": node("dir")})
    assert roundtrip.verdict(ds, CD, before, {b"/d": "trusted"}).status == Status.FAIL


def test_format_limits_pass_with_a_note_and_the_root_is_not_compared():
    before = {b"/": node("dir", mode=0o755, mtime_ns=5), b"/s": node("socket"),
              b"/w": node("char", rdev=(0, 0))}
    after = {b"/": node("dir", mode=0o777, mtime_ns=0)}
    check = roundtrip.verdict(diff(before, after), CD, before, {})
    assert check.status == Status.PASS
    assert "expected, as under the spec" in check.explanation and "sockets are not carried" in check.explanation and "whiteout" in check.explanation
    assert "/: mode" not in check.explanation
    # A device that is no whiteout is not excused.
    before[b"/w"] = node("char", rdev=(1, 3))
    assert roundtrip.verdict(diff(before, after), CD, before, {}).status == Status.FAIL


# -- against containerd and the kernel -------------------------------------------------------------

def live(f):
    for mark in (pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root"),
                 pytest.mark.skipif(not binary_path(default_version()).exists(),
                                    reason="the Go oracle is not built (make bootstrap)"),
                 pytest.mark.skipif(bool(capabilities.missing(())),
                                    reason="kernel lacks erofs/overlay or mkfs.erofs lacks --tar=")):
        f = mark(f)
    return f


@pytest.fixture(scope="module")
def session():
    with runner.Session(runner.RunOptions(build=False)) as s:
        yield s


def _without(tar: bytes, name: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(tar)) as src, tarfile.open(fileobj=out, mode="w",
                                                                    format=tarfile.PAX_FORMAT) as dst:
        for m in src.getmembers():
            if m.name != name:
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    return out.getvalue()


@live
def test_a_layer_that_lost_a_file_fails_the_round_trip(session, monkeypatch, tmp_path):
    """containerd's Compare blob, minus one file, stored as if Compare had written it: the
    round trip names the lost file."""
    real = runner.go_compare

    def lossy(oracle, differ, st, mt, epoch, **kw):
        out = real(oracle, differ, st, mt, epoch, **kw)
        if differ == "erofs" and mt == OCI_TAR and not out.error:
            path = tmp_path / "lossy.tar"
            path.write_bytes(_without(bytes(out.tar), "n/deep/file"))
            out.descriptor = oracle.ingest(str(path), mt)
        return out

    monkeypatch.setattr(runner, "go_compare", lossy)
    r = runner.run_scenario(load(REPO / "scenarios/basic/new-nested-tree.yaml"), session)
    [rt] = [c for c in r.checks if c.name == roundtrip.NAME]
    assert rt.status == Status.FAIL and r.status == Status.FAIL
    assert "/n/deep/file: missing after the round trip" in rt.explanation, rt.explanation


@live
def test_b21_a_read_only_view_of_an_applied_layer_has_a_0777_root(session, tmp_path):
    """applied-root-dir-defaults: containerd's Compare writes no root entry, so the image made
    by containerd's Apply has mkfs.erofs's root, 0777, where the upper's root was 0755."""
    oracle = session.oracle()
    scenario = load(REPO / "scenarios/basic/new-nested-tree.yaml")
    with state.build(scenario, oracle, session.base) as st:
        before, _ = roundtrip.capture_upper(oracle, st)
        go = runner.go_compare(oracle, "erofs", st, OCI_TAR, None)
        key = "b21-apply"
        oracle.prepare(key, "")
        try:
            layer = oracle.apply("erofs", go.descriptor, key)["layer"]
            lowers = [os.path.join(oracle.snapshot_dir(k), "layer.erofs") for k in st.lower_layers]
            with roundtrip.merged_layers([layer] + lowers[::-1], str(tmp_path)) as merged:
                after = capture(merged)
        finally:
            oracle.remove(key)
    assert before[b"/"].mode == 0o755
    assert after[b"/"].mode == 0o777, "erofs-utils no longer gives / 0777: update the registry (B21)"
    assert not any(d.path != b"/" for d in diff(before, after))
