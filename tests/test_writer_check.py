"""The go-erofs writer (oracle/goerofs/, harness/checks/writer.py, harness/goerofs.py): the
verdicts of `judge` (pure), and the writer itself run on crafted layers and read back by the
kernel (root, erofs and overlayfs)."""
import io
import os
import tarfile

import pytest

from harness import goerofs
from harness.checks import writer
from harness.checks.meaning import Context, Reading, read_image
from harness.reference import layermeaning
from harness.reference.profiles import tool_quirk_holds
from harness.result import Status
from harness.treeview import diff

from trees import node, tree


def on(go_erofs="v0.3.1"):
    versions = {"go-erofs": go_erofs, "containerd": "v2.4.2", "mkfs.erofs": "1.8.6"}
    return versions, (lambda q: tool_quirk_holds(q, versions))


# -- judge (pure) ------------------------------------------------------------------------------

def test_agreeing_readings_pass_and_structure_is_information_only():
    t = tree(a=node())
    versions, quirks = on()
    c = writer.judge("x", Reading(t), Reading(t), Reading(t), Context(versions=versions), quirks,
                     structure=["blocksize: go-erofs 4096, mkfs.erofs 512"])
    assert c.status == Status.PASS, c.explanation
    assert "information only" in c.explanation and "blocksize" in c.explanation


def test_a_go_erofs_difference_fails_and_names_go_erofs_or_the_wiring():
    versions, quirks = on()
    c = writer.judge("x", Reading(tree(a=node())), Reading(tree(a=node(uid=7))),
                     Reading(tree(a=node())), Context(versions=versions), quirks)
    assert c.status == Status.FAIL, c.explanation
    assert "/a: uid" in c.explanation and "go-erofs v0.3.1 or layerconf's tar wiring" in c.explanation


def test_mkfs_alone_wrong_is_noted_not_failed():
    versions, quirks = on()
    good, bad = tree(a=node()), tree(a=node(mode=0o777))
    c = writer.judge("x", Reading(good), Reading(good), Reading(bad), Context(versions=versions),
                     quirks)
    assert c.status == Status.PASS and "mkfs.erofs does not" in c.explanation, c.explanation


def _linked(group):
    return tree(a=node(inode=group[0]), b=node(inode=group[1]))


def test_hardlinks_written_as_copies_are_the_g1_quirk_of_go_erofs_up_to_0_3_1():
    meaning, copied = _linked([(1, 5), (1, 5)]), _linked([(1, 5), (1, 6)])
    ctx = Context(hardlinked=frozenset({b"/a", b"/b"}))
    ctx.versions, quirks = on("v0.3.1")
    c = writer.judge("x", Reading(meaning), Reading(copied), Reading(meaning), ctx, quirks)
    assert c.status == Status.XFAIL and c.quirks == ["go-erofs-hardlink-copied"], c.explanation
    ctx.versions, quirks = on("v0.3.2")          # a later go-erofs must link them
    c = writer.judge("x", Reading(meaning), Reading(copied), Reading(meaning), ctx, quirks)
    assert c.status == Status.FAIL and "hardlinks" in c.explanation


def test_a_refusal_of_a_layer_the_meaning_applies_fails():
    versions, quirks = on()
    c = writer.judge("x", Reading(tree(a=node())), Reading(), Reading(tree(a=node())),
                     Context(versions=versions), quirks, go_error="tarconv: boom")
    assert c.status == Status.FAIL and "error: tarconv: boom" in c.explanation


def test_both_refusing_passes():
    versions, quirks = on()
    c = writer.judge("x", Reading(error="unexpected EOF"), Reading(), Reading(),
                     Context(versions=versions), quirks, go_error="reading the layer tar: EOF")
    assert c.status == Status.PASS and "both refuse" in c.explanation, c.explanation


def test_an_image_the_kernel_cannot_read_fails_even_when_the_meaning_refuses():
    versions, quirks = on()
    c = writer.judge("x", Reading(error="invalid whiteout name"), Reading(error="EUCLEAN"),
                     Reading(), Context(versions=versions), quirks)
    assert c.status == Status.FAIL and "cannot read" in c.explanation


def test_merge_order_names_what_a_name_ordered_merge_treats_differently():
    tar = _tar([("o/", tarfile.DIRTYPE, b"", {}), ("o/z", tarfile.REGTYPE, b"z", {}),
                ("o/.bashrc", tarfile.REGTYPE, b"b", {}),
                ("o/.wh..wh..opq", tarfile.REGTYPE, b"", {}),
                ("a/x", tarfile.REGTYPE, b"x", {}), ("a/.wh.x", tarfile.REGTYPE, b"", {}),
                ("a/.wh.y", tarfile.REGTYPE, b"", {}), ("a/y", tarfile.REGTYPE, b"y", {})])
    # .bashrc sorts before the marker, z after; x is added then whited out; y the other way
    assert writer.merge_order(tar) == {b"/o/.bashrc", b"/a/x"}
    assert writer.merge_order(None) == frozenset()


def test_a_merged_image_losing_an_early_sibling_is_g3_and_nothing_else_is():
    versions, quirks = on()
    full = tree(o=node("dir"), **{"o/.bashrc": node(), "o/z": node()})
    lost = tree(o=node("dir"), **{"o/z": node()})
    ctx = Context(versions=versions, merge_order=frozenset({b"/o/.bashrc"}))
    c = writer.judge("x", Reading(full), Reading(full), Reading(full), ctx, quirks,
                     merged=Reading(lost))
    assert c.status == Status.XFAIL and c.quirks == ["go-erofs-merge-in-name-order"], c.explanation
    assert "go-erofs merged image: absent" in c.explanation
    # the per-layer image is not written in name order: the same loss there fails
    c = writer.judge("x", Reading(full), Reading(lost), Reading(full), ctx, quirks)
    assert c.status == Status.FAIL


def test_structure_diff_lists_only_what_differs():
    go = {"Filesystem blocksize": "4096", "Filesystem features": ""}
    mk = {"Filesystem blocksize": "4096", "Filesystem features": "sb_csum mtime"}
    out = writer.structure_diff(go, mk, 8192, 8192)
    assert out == ["features: go-erofs (none), mkfs.erofs sb_csum mtime"]


def test_writer_values():
    assert goerofs.writers("mkfs") == ("mkfs",)
    assert goerofs.writers("all") == ("mkfs", "go-erofs")
    with pytest.raises(ValueError):
        goerofs.writers("mkfs.erofs")


def test_a_guest_without_the_hosts_build_is_an_error_not_a_build(monkeypatch, tmp_path):
    monkeypatch.setattr(goerofs, "BINARY", tmp_path / "layerconf-goerofs")
    monkeypatch.setattr(goerofs, "ensure_built", lambda *a, **k: pytest.fail("built in the guest"))
    monkeypatch.setenv("LAYERCONF_IN_VM", "1")
    with pytest.raises(goerofs.GoErofsError, match="not built on the host.*oracle/goerofs/build.sh"):
        goerofs.version()


# -- the writer on the kernel ------------------------------------------------------------------



def _tar(entries) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, data, extra in entries:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mtime, ti.mode = kind, 1700000000, 0o755 if kind == tarfile.DIRTYPE else 0o644
            for k, v in extra.items():
                setattr(ti, k, v)
            ti.size = len(data) if kind == tarfile.REGTYPE else 0
            t.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return out.getvalue()


BASE = _tar([("d/", tarfile.DIRTYPE, b"", {}), ("d/keep", tarfile.REGTYPE, b"k", {}),
             ("d/gone", tarfile.REGTYPE, b"g", {}), ("o/", tarfile.DIRTYPE, b"", {}),
             ("o/old", tarfile.REGTYPE, b"o", {})])
TOP = _tar([("d/.wh.gone", tarfile.REGTYPE, b"", {}), ("o/.wh..wh..opq", tarfile.REGTYPE, b"", {}),
            ("o/new", tarfile.REGTYPE, b"n", {"pax_headers": {"SCHILY.xattr.user.k": "v"}}),
            ("o/link", tarfile.LNKTYPE, b"", {"linkname": "o/new"})])


def _write(tmp_path, layers, merge):
    paths = []
    for i, data in enumerate(layers):
        p = tmp_path / f"l{i}.tar"
        p.write_bytes(data)
        paths.append(str(p))
    return goerofs.convert(paths, str(tmp_path / "out.erofs"), merge=merge, timeout=60)




def _stacked_meaning():
    over = layermeaning.meaning(io.BytesIO(BASE)).tree
    return layermeaning.meaning(io.BytesIO(TOP), parent=over).tree


@pytest.mark.skipif(os.geteuid() != 0 or not goerofs.BINARY.exists(), reason="root and the writer")
def test_merged_stack_holds_what_the_layers_mean_but_the_copied_hardlink(tmp_path):
    image = _write(tmp_path, [BASE, TOP], merge=True)
    got = read_image(image, str(tmp_path), 60)
    assert got.tree is not None, got.error
    want = _stacked_meaning()
    left = [d for d in diff(want, got.tree) if d.path != b"/" and d.attribute != "mtime"]
    # the whiteout and the opaque marker took effect; only G1 (hardlink copied) remains
    assert {(d.path, d.attribute) for d in left} == {(b"/o/link", "hardlinks"),
                                                     (b"/o/new", "hardlinks")}, left
    assert b"/d/gone" not in got.tree and b"/o/old" not in got.tree
    assert dict(got.tree[b"/o/new"].xattrs) == {"user.k": b"v"}


@pytest.mark.skipif(os.geteuid() != 0 or not goerofs.BINARY.exists(), reason="root and the writer")
def test_one_layer_keeps_its_whiteouts_as_overlayfs_ones(tmp_path):
    """Stacked by overlayfs over the base layer's own go-erofs image, the top layer hides what
    its whiteout and opaque marker name, as containerd stacks layer.erofs files."""
    from harness import roundtrip
    from harness.treeview import capture
    base = goerofs.convert([str(_save(tmp_path, "b.tar", BASE))], str(tmp_path / "b.erofs"))
    top = goerofs.convert([str(_save(tmp_path, "t.tar", TOP))], str(tmp_path / "t.erofs"))
    with roundtrip.merged_layers([top, base], str(tmp_path / "w"), timeout=60) as merged:
        got = capture(merged)
    assert b"/d/gone" not in got and b"/o/old" not in got and b"/d/keep" in got
    assert got.keys() == _stacked_meaning().keys()


def _save(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.skipif(not goerofs.BINARY.exists(), reason="the go-erofs writer is not built")
def test_a_broken_tar_is_refused_with_the_readers_error(tmp_path):
    with pytest.raises(goerofs.Refused, match="reading the layer tar"):
        _write(tmp_path, [BASE[:700]], merge=False)
    assert not (tmp_path / "out.erofs").exists()
