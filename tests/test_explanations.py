"""Messages a person acts on: reorders, the epoch quirk, quirks a toggle reproduces, both
descriptor values, word diffs of argvs and error texts, and the terminal row that wraps."""
from __future__ import annotations

import io
import tarfile

from harness import mkfscheck
from harness.reference import profiles
from harness.report import reason_lines
from harness.report.explain import explain_tar
from harness.report.terminal import render_table
from harness.report.worddiff import word_diff
from harness.result import Check, Outcome, ScenarioResult, Status
from harness.verdict import check_pair, descriptor_diff, name_quirk

OCI = "application/vnd.oci.image.layer.v1.tar"


def tar_of(entries) -> bytes:
    """entries: (name bytes, mtime) regular files of one byte."""
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as t:
        for name, mtime in entries:
            ti = tarfile.TarInfo(name.decode("utf-8", "surrogateescape"))
            ti.size, ti.mtime = 1, mtime
            t.addfile(ti, io.BytesIO(b"x"))
    return b.getvalue()


def test_swapped_entries_are_a_reorder_that_names_byte_order():
    go = tar_of([(b"\xee\x80\x80", 1), (b"\xf0", 1)])
    ref = tar_of([(b"\xf0", 1), (b"\xee\x80\x80", 1)])
    text = explain_tar(go, ref, ("go-erofs", "ref"))
    head = text.splitlines()[0]
    assert "the same entries in a different order" in head
    assert "lacks" not in text and "only in" not in text
    assert "sorted by their raw bytes" in text and "(bytes EE 80 80) sorts" in text
    assert "ref does not" in text and "sorted by decoded text" in text


def test_reorder_of_valid_names_does_not_blame_decoding():
    text = explain_tar(tar_of([(b"a", 1), (b"b", 1)]), tar_of([(b"b", 1), (b"a", 1)]),
                       ("go-erofs", "ref"))
    assert "go-erofs follows it" in text and "decoded text" not in text


def test_missing_entry_is_still_reported_as_missing():
    text = explain_tar(tar_of([(b"a", 1), (b"b", 1)]), tar_of([(b"b", 1)]), ("go-erofs", "ref"))
    assert "different order" not in text and "has extra" in text


def test_mtime_clamped_to_the_epoch_names_the_epoch_quirk():
    go, ref = tar_of([(b"f", 1800000000)]), tar_of([(b"f", 1700000000)])
    text = explain_tar(go, ref, ("go-erofs", "ref"), epoch=1700000000)
    assert "one side clamped it to SOURCE_DATE_EPOCH" in text.splitlines()[0]
    assert "quirk epoch-ignored" in text and "ref clamped this mtime" in text
    assert "floored to whole seconds" not in text
    plain = explain_tar(go, ref, ("go-erofs", "ref"))           # no epoch: the generic rule
    assert "epoch-ignored" not in plain and "floored to whole seconds" in plain


def test_a_difference_one_quirk_reproduces_is_named():
    profile = profiles.containerd_profile("v2.4.2")
    go = Outcome("go-erofs", OCI, tar=b"quirky", blob=b"quirky")
    ref = Outcome("ref@containerd@v2.4.2", OCI, tar=b"plain", blob=b"plain")
    check = Check("compare", Status.FAIL, "tar differs ...")

    def run_ref(p):  # the reference reproduces Go exactly when epoch-ignored is off
        return Outcome(p.name, OCI, tar=b"quirky" if not p.has("epoch-ignored") else b"plain")

    named = name_quirk(check, go, ref, profile, run_ref, None)
    assert named.explanation.startswith("this difference is quirk epoch-ignored")
    assert "should not have it" in named.explanation and named.quirks == ["epoch-ignored"]
    assert named.explanation.endswith("tar differs ...")
    unexplained = name_quirk(check, go, ref, profile, lambda p: ref, None)
    assert unexplained is check
    # the same tar on both sides (a framing or descriptor difference): no quirk is blamed
    framing = name_quirk(check, go, Outcome("ref", OCI, tar=b"quirky"), profile, run_ref, None)
    assert framing is check


def test_descriptor_difference_shows_both_values_on_the_first_line():
    text = descriptor_diff({"mediaType": OCI, "size": 10, "digest": "sha256:aa"},
                           {"mediaType": OCI, "size": 12, "digest": "sha256:bb"}, ("go-erofs", "ref"))
    first = text.splitlines()[0]
    assert "size go-erofs=10 ref=12" in first and "digest go-erofs='sha256:aa' ref='sha256:bb'" in first
    assert "mediaType" not in first


def test_check_pair_descriptor_lines_show_both_producers():
    go = Outcome("go-erofs", OCI, tar=b"t", blob=b"t",
                 descriptor={"mediaType": OCI, "digest": "sha256:aa", "size": 1})
    ref = Outcome("ref", OCI, tar=b"t", blob=b"t",
                  descriptor={"mediaType": OCI, "digest": "sha256:bb", "size": 1})
    c = check_pair(go, ref, None, "/x")
    assert c.status == Status.FAIL
    assert "go-erofs='sha256:aa'" in c.explanation and "ref='sha256:bb'" in c.explanation


def test_argv_word_diff_marks_only_the_difference():
    go = ["--tar=f", "--aufs", "--quiet", "-Enoinline_data", "-b4096", "-U", "u", "<snapshot>/layer.erofs"]
    ref = ["--tar=f", "--aufs", "--quiet", "-Enoinline_data", "-U", "u", "<snapshot>/layer.erofs"]
    text = word_diff(go, ref, ("go-erofs", "ref"))
    diff = text.splitlines()[2]
    assert "[--b4096-]" in diff and "{+" not in diff.split("(")[0]
    assert diff.count("--aufs") == 1


def test_error_word_diff():
    text = word_diff("failed to convert tar to erofs: exit status 1",
                     "failed to convert erofs: exit status 1", ("go-erofs", "ref"))
    assert "[-tar to-]" in text


def test_mkfs_check_argv_and_early_stop():
    rec = {"argv": ["--tar=f", "--aufs", "-b4096", "/a/layer.erofs"], "fed": 65536, "eof": False,
           "returncode": 0}
    same = mkfscheck.check_mkfs("x", [rec], ["mkfs.erofs", "--tar=f", "--aufs", "-b4096",
                                             "/b/layer.erofs"], 98304, 1 << 20)
    assert same.status == Status.PASS and "mkfs stopped reading" in same.explanation
    other = mkfscheck.check_mkfs("x", [rec], ["mkfs.erofs", "--tar=f", "--aufs", "/b/layer.erofs"],
                                 1 << 20, 1 << 20)
    assert other.status == Status.FAIL
    assert "[--b4096-]" in other.explanation and "stopped reading" in other.explanation
    assert mkfscheck.check_mkfs("x", [], None, None, None) is None


def test_terminal_wraps_instead_of_cutting():
    detail = "mtime: go-erofs=1800000000 (2027-01-15 08:00:00 UTC)  ref=1700000000 (2023-11-14 22:13:20 UTC)"
    expl = ("tar differs at entry #3 \"some/rather/long/path/name/that/goes/on/and/on\": mtime "
            "go-erofs=1800000000 ref=1700000000 (one side clamped it to SOURCE_DATE_EPOCH)\n"
            "entry #3 starts at go-erofs offset 0, ref offset 0\n"
            "  go-erofs: -rw-r--r-- 0/0 1 2027-01-15 08:00:00 some/rather/long/path\n"
            "  ref: -rw-r--r-- 0/0 1 2023-11-14 22:13:20 some/rather/long/path\n"
            "fields a tar reader sees differently:\n  " + detail + "\n"
            "    rule: SOURCE_DATE_EPOCH=1700000000: ref clamped this mtime\n")
    r = ScenarioResult("epoch/x", "scenarios/epoch/x.yaml", Status.FAIL,
                       checks=[Check("compare", Status.FAIL, expl)], message=expl.splitlines()[0])
    out = render_table([r], width=80)
    assert "..." not in out
    assert all(len(x) <= 80 for x in out.splitlines())
    flat = " ".join(x.strip().lstrip("| ") for x in out.splitlines()[1:-1])
    assert "(one side clamped it to SOURCE_DATE_EPOCH)" in flat
    assert "2027-01-15 08:00:00 some/rather/long/path" in flat
    assert "ref=1700000000 (2023-11-14 22:13:20 UTC)" in flat
    assert reason_lines(r)[-1].startswith("rule: SOURCE_DATE_EPOCH=1700000000")
