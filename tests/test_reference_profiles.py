"""The quirk registry and profiles: versions, lookups, docs, and that every Compare switch is
wired (turning it off in containerd's profile, or on in the spec's, changes the output)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from harness.reference import profiles
from harness.reference.compare import compare
from harness.reference.profiles import (OCI_TAR, QUIRKS, SPEC, get_profile,
                                        parse_version, version_predicate)
from harness.reference.walk import GoError

REPO = Path(__file__).resolve().parent.parent


def test_parse_version_orders_prereleases_first():
    assert parse_version("v2.4.2") == (2, 4, 2, 1, "")
    assert parse_version("2.4.0-beta.0") < parse_version("v2.4.0") < parse_version("v2.4.1")
    assert parse_version("v2.3.4") < parse_version("v2.4.0-beta.0")
    with pytest.raises(ValueError):
        parse_version("2.4")


def test_version_predicate():
    p = version_predicate(">=2.1.0,<2.3.0")
    assert p(parse_version("2.1.0")) and p(parse_version("2.2.7"))
    assert not p(parse_version("2.3.0")) and not p(parse_version("2.0.9"))
    assert version_predicate("*")(parse_version("9.9.9"))
    either = version_predicate(">=2.1.0,<2.1.1 || >=2.3.0")
    assert either(parse_version("2.1.0")) and either(parse_version("2.4.0-beta.0"))
    assert not either(parse_version("2.2.0"))
    with pytest.raises(ValueError):
        version_predicate("~2.1")


def test_registry_well_formed():
    for q in QUIRKS:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", q.name), q.name
        # B: containerd, M: mkfs.erofs, G: go-erofs, K: kernel (numbered apart per component)
        prefix = {"containerd": "B", "mkfs.erofs": "M", "go-erofs": "G", "kernel": "K"}[q.component]
        assert re.fullmatch(prefix + r"\d+", q.spec_id) or (q.kind == "switch" and not q.spec_id)
        assert q.scope in ("compare", "mounts", "apply", "roundtrip", "meaning", "writer",
                           "engine")
        assert q.kind in ("quirk", "switch")
        assert q.description and q.reference and "\n" not in q.description
        version_predicate(q.versions)
    ids = [q.spec_id for q in QUIRKS if q.spec_id]
    assert len(set(ids)) == len(ids)
    assert all(q.kind == "quirk" for q in QUIRKS if q.scope != "apply")


def test_tool_quirks_follow_their_tools_version_not_containerds():
    from harness.reference.profiles import tool_quirk_holds
    assert "pax-fraction-as-integer-ns" not in get_profile("containerd@2.4.2").quirks
    assert tool_quirk_holds("pax-fraction-as-integer-ns", {"mkfs.erofs": "1.8.6"})
    assert not tool_quirk_holds("pax-fraction-as-integer-ns", {"mkfs.erofs": "1.9.4"})
    assert tool_quirk_holds("pax-global-records-applied", {"mkfs.erofs": "1.9.4"})
    assert not tool_quirk_holds("pax-global-records-applied", {})     # unknown version: no excuse


def test_apply_switches_merged_with_their_versions():
    mediatypes = pytest.importorskip("harness.reference.mediatypes")
    for v in ("2.1.0", "2.1.3", "2.1.4", "2.2.0", "2.2.7", "2.3.0", "2.3.3", "2.4.0-beta.0",
              "2.4.2"):
        p = get_profile(f"containerd@{v}")
        apply_side = {n for n in p.quirks if profiles.QUIRKS_BY_NAME[n].scope == "apply"}
        assert apply_side == set(mediatypes.switches_for_version(v)), v


@pytest.mark.parametrize("version,on,off", [
    ("v2.1.0", {"enotdir-abort"}, {"block-mode-empty-upper"}),
    ("v2.1.9", {"enotdir-abort"}, {"block-mode-empty-upper"}),
    ("v2.2.0", {"block-mode-empty-upper"}, set()),
    ("v2.4.0-beta.0", {"epoch-ignored"}, set()),
    ("v2.4.2", {"duplicate-dir-headers"}, set()),
])
def test_containerd_profiles_by_version(version, on, off):
    p = get_profile(f"containerd@{version}")
    assert p.name == f"containerd@{version}"
    assert on <= p.quirks and not (off & p.quirks)
    assert all(p.has(q.name) for q in QUIRKS if q.scope == "compare")
    assert p.continuity == ("v0.5.0" if p.version >= parse_version("2.3.0-0") else "v0.4.5")


def test_profile_lookup_errors_and_spec():
    assert get_profile("containerd@2.4.2") == get_profile("containerd@v2.4.2")
    assert get_profile("spec") is SPEC
    assert not any(profiles.QUIRKS_BY_NAME[n].kind == "quirk" for n in SPEC.quirks)
    for bad in ("containerd@v2.0.0", "containerd@v2.5.0", "containerd@v2.5.0-rc.1", "moby"):
        with pytest.raises(ValueError):
            get_profile(bad)
    with pytest.raises(KeyError):
        SPEC.has("no-such-quirk")
    with pytest.raises(ValueError):
        profiles.Profile("x", frozenset({"no-such-quirk"}))
    p = get_profile("containerd@v2.4.2").without("epoch-ignored")
    assert not p.has("epoch-ignored") and p.has("enotdir-abort")
    assert SPEC.with_quirks("epoch-ignored").has("epoch-ignored")


def test_docs_quirks_md_is_generated_from_registry():
    assert (REPO / "docs" / "quirks.md").read_text() == profiles.markdown(), \
        "regenerate: python -m harness.reference.profiles --markdown > docs/quirks.md"


def test_every_compare_switch_is_read_by_the_reference():
    src = "".join((REPO / "harness" / "reference" / f).read_text()
                  for f in ("walk.py", "changes.py", "compare.py"))
    read = set(re.findall(r'has\("([a-z0-9-]+)"\)', src))
    compare_scope = {q.name for q in QUIRKS if q.scope in ("compare", "mounts")}
    assert read == compare_scope


# --- each switch changes the output, in both directions ----------------------------------------

def _shapes():
    from test_reference_compare import (T0, NS, dir_times, make_socket, mkdir, opaque, symlink,
                                        whiteout, write)

    def enotdir(lo, up):
        write(lo, "u", b"f")
        write(up, "u/inner", b"x")

    def orphan(lo, up):
        whiteout(up, "ghost")

    def follows(lo, up):
        symlink(lo, "e", "/nonexistent-layerconf")
        whiteout(up, "e")

    def opaque_skip(lo, up):
        write(lo, "o/keep/old", b"x")
        mkdir(up, "o/keep")
        opaque(up, "o")
        dir_times(lo), dir_times(up)
        os.utime(os.path.join(up, "o"), ns=((T0 + 1) * NS,) * 2)

    def opaque_no_lower(lo, up):
        mkdir(up, "new")
        opaque(up, "new")

    def socket_parent(lo, up):
        mkdir(lo, "s")
        make_socket(up, "s/sock")
        dir_times(lo), dir_times(up)

    def wh_sorted(lo, up):
        write(lo, "z", b"x")
        write(up, "a/f", b"y")
        whiteout(up, "z")

    def hl_whiteout(lo, up):
        whiteout(up, "w1")
        os.link(os.path.join(up, "w1"), os.path.join(up, "w2"))

    def dup_dirs(lo, up):
        write(lo, "p/m1", b"old")
        write(up, "p/m1", b"new")
        write(up, "p/z", b"add")
        dir_times(lo), dir_times(up)

    def epoch(lo, up):
        write(up, "late", b"", mtime=T0 + 10)

    def xattrs(lo, up):
        write(up, "f", b"")
        os.setxattr(os.path.join(up, "f"), b"user.a", b"1")

    def label(lo, up):
        write(up, "f", b"x")

    # quirk -> (builder, quirks the spec side needs for this one to show)
    return {
        "enotdir-abort": (enotdir, ()),
        "orphan-whiteout-as-device": (orphan, ()),
        "lower-stat-follows-symlinks": (follows, ()),
        "opaque-identical-subdir-skipped": (opaque_skip, ()),
        "opaque-without-lower-dir": (opaque_no_lower, ()),
        "socket-parent-emitted": (socket_parent, ()),
        "whiteout-sorted-by-name": (wh_sorted, ()),
        "hardlinked-whiteout-link": (hl_whiteout, ("orphan-whiteout-as-device",)),
        "duplicate-dir-headers": (dup_dirs, ()),
        "epoch-ignored": (epoch, ()),
        "only-capability-xattr": (xattrs, ()),
        "uncompressed-label-dropped": (label, ()),
    }


def _outcome(lower, upper, profile):
    try:
        out = compare(lower, upper, media_type=OCI_TAR, profile=profile,
                      source_date_epoch=1_700_000_000)
        return out.tar, out.labels
    except GoError as e:
        return "error", str(e)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, trusted.* xattrs)")
@pytest.mark.parametrize("quirk", sorted(q.name for q in QUIRKS if q.scope == "compare"))
def test_switch_changes_output(tmp_path, quirk):
    shapes = _shapes()
    assert set(shapes) == {q.name for q in QUIRKS if q.scope == "compare"}
    build, needs = shapes[quirk]
    lower, upper = str(tmp_path / "lower"), str(tmp_path / "upper")
    os.mkdir(lower), os.mkdir(upper)
    build(lower, upper)
    ctr = get_profile("containerd@v2.4.2")
    assert _outcome(lower, upper, ctr) != _outcome(lower, upper, ctr.without(quirk))
    base = SPEC.with_quirks(*needs) if needs else SPEC
    assert _outcome(lower, upper, base) != _outcome(lower, upper, base.with_quirks(quirk))
