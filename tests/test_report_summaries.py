"""JUnit XML, the Markdown job summary and the terminal table."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from harness.report import scenario_class, short_reason, summary_line
from harness.report.junit import build_junit, write_junit
from harness.report.markdown import render_markdown, write_markdown
from harness.report.terminal import render_table
from harness.result import Check, Outcome, ScenarioResult, Status

OCI = "application/vnd.oci.image.layer.v1.tar"
ENV = {"containerd": "v2.1.4", "erofs-utils": "1.8.6", "kernel": "6.8.0", "backend": "qemu"}


def res(name, status, message="", checks=(), duration=0.5):
    outs = [Outcome("go-erofs", OCI), Outcome("go-erofs", OCI + "+gzip"),
            Outcome("ref@containerd-v2.1.4", OCI)]
    return ScenarioResult(scenario=name, path=f"scenarios/{name}.yaml", status=status,
                          checks=list(checks), outcomes=outs, message=message,
                          duration=duration, environment=dict(ENV))


def sample() -> list[ScenarioResult]:
    fail_expl = 'tar differs at entry #1 "a/f1": uid go-erofs=1000 ref@containerd=1001\nmore | text\x01'
    return [
        res("basic/add-file", Status.PASS),
        res("basic/modify", Status.PASS),
        res("whiteout/root-file", Status.FAIL, fail_expl.splitlines()[0],
            [Check("compare tar: go-erofs vs ref", Status.FAIL, fail_expl)]),
        res("engine/boom", Status.ERROR, "oracle died: EOF\ntraceback..."),
        res("xattr/selinux", Status.SKIP, "missing capabilities: selinux"),
        res("quirks/dup-dir", Status.XFAIL, "known divergence from the spec:",
            [Check("spec tar: go-erofs vs ref@spec", Status.XFAIL,
                   "known divergence from the spec:\nduplicate-dir: opaque dirs repeat (link)\ntar differs",
                   ["duplicate-dir"])]),
        res("quirks/stale", Status.XPASS, "expected quirks x to show, but ...",
            [Check("spec", Status.XPASS, "expected quirks x to show, but ...", ["x"])]),
        res("toplevel", Status.PASS),
    ]


def test_summary_line_words_and_order():
    line = summary_line(sample())
    assert line == "3 passed, 1 failed, 1 error, 1 skipped, 1 xfail, 1 xpass"
    assert summary_line([res("a", Status.PASS)]) == "1 passed, 0 failed, 0 error, 0 skipped, 0 xfail"


def test_short_reason():
    r = sample()
    assert short_reason(r[0]) == ""
    assert short_reason(r[2]).startswith('tar differs at entry #1 "a/f1": uid')
    assert short_reason(r[3]) == "oracle died: EOF"
    assert short_reason(r[5]) == ("known divergence from the spec: duplicate-dir: opaque dirs "
                                  "repeat (link)")
    assert scenario_class("whiteout/root-file") == ("whiteout", "root-file")
    assert scenario_class("a/b/c") == ("a.b", "c")
    assert scenario_class("top", "layerconf") == ("layerconf", "top")


def test_junit_elementtree(tmp_path):
    path = write_junit(sample(), str(tmp_path / "out" / "junit.xml"), ENV, "layerconf")
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite.get("name") == "layerconf"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) \
        == ("8", "2", "1", "2")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props == ENV
    cases = {c.get("classname") + "/" + c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"basic/add-file", "basic/modify", "whiteout/root-file", "engine/boom",
                          "xattr/selinux", "quirks/dup-dir", "quirks/stale", "layerconf/toplevel"}
    f = cases["whiteout/root-file"].find("failure")
    assert "uid" in f.get("message") and "#x01" in f.text      # control chars made visible
    assert cases["quirks/stale"].find("failure").get("message").startswith("[XPASS(strict)]")
    assert cases["engine/boom"].find("error").get("message") == "oracle died: EOF"
    sk = cases["xattr/selinux"].find("skipped")
    assert sk.get("type") == "pytest.skip" and "selinux" in sk.get("message")
    xf = cases["quirks/dup-dir"].find("skipped")
    assert xf.get("type") == "pytest.xfail" and xf.get("message") == "xfail: quirk duplicate-dir"
    assert "duplicate-dir" in cases["quirks/dup-dir"].find("system-out").text
    assert list(cases["basic/add-file"]) == []


def test_junit_junitparser(tmp_path):
    junitparser = pytest.importorskip("junitparser")
    path = write_junit(sample(), str(tmp_path / "junit.xml"), ENV, "layerconf")
    xml = junitparser.JUnitXml.fromfile(path)
    suites = list(xml)
    assert len(suites) == 1
    suite = suites[0]
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (8, 2, 1, 2)
    props = {p.name: p.value for p in suite.properties()}
    assert props["containerd"] == "v2.1.4" and props["erofs-utils"] == "1.8.6"
    kinds = {}
    for case in suite:
        kind = type(case.result[0]).__name__ if case.result else "pass"
        kinds[kind] = kinds.get(kind, 0) + 1
    assert kinds == {"pass": 3, "Failure": 2, "Error": 1, "Skipped": 2}
    # junitparser recounts from the cases, as CI tools do
    suite.update_statistics()
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (8, 2, 1, 2)


def test_junit_empty():
    root = build_junit([], {}, "empty")
    assert root.find("testsuite").get("tests") == "0"


def test_markdown(tmp_path):
    md = render_markdown(sample())
    lines = md.splitlines()
    assert lines[0] == "## ❌ layerconf: 3 passed, 1 failed, 1 error, 1 skipped, 1 xfail, 1 xpass"
    assert "containerd `v2.1.4`" in md and "erofs-utils `1.8.6`" in md and "backend `qemu`" in md
    assert "| ❌ fail | 1 |" in md
    rows = [x for x in lines if x.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == ["engine/boom", "quirks/stale", "whiteout/root-file",
                                               "quirks/dup-dir", "xattr/selinux"]
    assert all(r.count(" | ") == 3 for r in rows)        # pipes inside reasons are escaped
    assert "tar, tar+gzip" in rows[2]
    p = tmp_path / "summary.md"
    write_markdown(sample()[:2], str(p))
    write_markdown(sample()[:2], str(p))
    assert p.read_text().count("## ✅ layerconf: 2 passed") == 2


def test_terminal_table():
    out = render_table(sample(), width=100)
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["SCENARIO", "STATUS", "MEDIA"]
    assert lines[-1] == "3 passed, 1 failed, 1 error, 1 skipped, 1 xfail, 1 xpass"
    row = next(x for x in lines if x.startswith("whiteout/root-file"))
    assert "FAIL" in row and "tar,tar+gzip" in row and "uid" in row
    assert all(len(x) <= 100 for x in lines[:-1])
    assert "\x1b[" in render_table(sample(), width=100, colour=True)
