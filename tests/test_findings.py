"""The findings register (findings/findings.yaml, harness/report/findings.py, docs/findings.md)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.reference import profiles
from harness.report import findings as fr

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "findings.md"

MINIMAL = """\
findings:
  - id: B2
    quirk: enotdir-abort
    component: containerd
    code: "continuity fs/diff.go DiffDirChanges"
    title: "t"
    impact: "i"
    versions: {kernel: any}
    reproducer: quirks/b2-enotdir-file-replaced-by-dir
    upstream: {status: "not reported", refs: [containerd/containerd#1]}
    fix: null
"""


def _entry(**changes) -> str:
    """MINIMAL with some `key: value` lines replaced (value None drops the line)."""
    lines = MINIMAL.splitlines()
    for key, value in changes.items():
        idx = next((i for i, l in enumerate(lines) if l.strip().startswith(f"{key}:")), None)
        new = None if value is None else f"    {key}: {value}"
        if idx is None:
            lines.append(new)
        elif new is None:
            del lines[idx]
        else:
            lines[idx] = new
    return "\n".join(lines) + "\n"


# -- the repository's register ---------------------------------------------------------------
def test_docs_findings_md_is_up_to_date():
    text, found = fr.build()
    assert not found, "register problems:\n  " + "\n  ".join(found)
    assert DOC.read_text() == text, ("docs/findings.md is stale: run "
                                     "`python -m harness.report.findings > docs/findings.md`")


def test_every_registered_quirk_has_an_entry_in_docs_findings_md():
    doc = DOC.read_text()
    for q in profiles.QUIRKS:
        if q.kind == "quirk":
            assert f"`{q.name}`" in doc, f"quirk {q.name} missing from docs/findings.md"
            assert f"### {q.spec_id} — " in doc, f"{q.spec_id} has no section"


def test_every_scenario_docs_findings_md_names_exists():
    doc = DOC.read_text()
    linked = re.findall(r"\]\(\.\./scenarios/([^)]+)\.yaml\)", doc)
    assert linked, "no scenario links found: the scan is broken"
    missing = sorted({n for n in linked if not (REPO / "scenarios" / f"{n}.yaml").is_file()})
    assert not missing, f"docs/findings.md links scenarios that do not exist: {missing}"


def test_reproducers_exist_or_are_declared_pending():
    entries = fr.load(fr.REGISTER.read_text())
    for f in entries:
        if f.reproducer and not (REPO / "scenarios" / f"{f.reproducer}.yaml").is_file():
            assert f.reproducer_pending, f"{f.id}: scenario {f.reproducer} missing"


def test_register_covers_every_divergence_of_the_spec_and_nothing_else():
    from tests.test_docs import SPEC, spec_structure
    _, _, divergences = spec_structure(SPEC.read_text())
    ids = {f.id for f in fr.load(fr.REGISTER.read_text())}
    assert ids == divergences


def test_mkfs_entries_are_the_registry_mkfs_quirks_with_their_versions():
    mkfs = [f for f in fr.load(fr.REGISTER.read_text()) if f.component == "mkfs.erofs"]
    registered = {q.name for q in profiles.QUIRKS
                  if getattr(q, "component", "containerd") == "mkfs.erofs"}
    assert {f.quirk for f in mkfs} == registered
    for f in mkfs:
        assert "1.8.6" in dict(f.versions)["erofs-utils"]
        assert f.reproducer.startswith("apply/")


def test_a_tool_quirk_range_is_shown_as_that_tools_range():
    text = fr.markdown(fr.load(fr.REGISTER.read_text()), profiles.QUIRKS_BY_NAME, {},
                       lambda n: True, pinned=["v2.4.2"])
    row = next(l for l in text.splitlines() if l.startswith("| [M1]"))
    assert "erofs-utils `<1.9.2`" in row and "v2.4.2" not in row


def test_cli_check_passes_on_the_repository(capsys):
    assert fr.main(["findings", "--check"]) == 0
    assert capsys.readouterr().out == ""


# -- loading and checking (pure) -------------------------------------------------------------
def test_minimal_register_loads_and_joins_the_registry():
    (f,) = fr.load(MINIMAL)
    assert (f.id, f.quirk, f.kind, f.line) == ("B2", "enotdir-abort", "quirk", 2)
    assert f.upstream_refs == ("containerd/containerd#1",)


@pytest.mark.parametrize("changes, cause", [
    (dict(quirk="no-such-quirk"), "not in the quirk registry"),
    (dict(id="B3"), "gives quirk 'enotdir-abort' the id B2, not B3"),
    (dict(id="X1"), "`id` must be B<n>"),
    (dict(component="runc"), "`component` must be one of"),
    (dict(title=None), "missing key(s) title"),
    (dict(colour="red"), "unknown key(s) colour"),
    (dict(upstream='{status: x, refs: ["containerd 12"]}'), "must read owner/repo#N"),
    (dict(versions='{containerd: ">=2.1.0"}'), "comes from the registry"),
    (dict(quirk=None), "`versions.containerd` is required"),
    (dict(quirk=None, versions='{containerd: "*"}', kind="bug"), "`kind` must be one of"),
    (dict(reproducer="null", reproducer_pending="soon"), "needs a `reproducer`"),
    (dict(component="mkfs.erofs"), "is a containerd quirk, not mkfs.erofs"),
    (dict(id="M2", quirk="pax-global-records-applied", component="mkfs.erofs"),
     "`versions.containerd` is required"),
])
def test_bad_entries_give_one_paragraph_errors_with_file_line_and_entry(changes, cause):
    with pytest.raises(fr.RegisterError) as e:
        fr.load(_entry(**changes), "f.yaml")
    msg = str(e.value)
    assert cause in msg
    assert re.match(r"f\.yaml:\d+: findings register entry \S+: ", msg), msg
    assert "\n" not in msg


def test_duplicate_ids_and_broken_yaml_are_refused():
    twice = MINIMAL + MINIMAL.split("findings:\n", 1)[1]
    with pytest.raises(fr.RegisterError, match=r"f\.yaml:12: .* duplicate id \(first at line 2\)"):
        fr.load(twice, "f.yaml")
    with pytest.raises(fr.RegisterError, match=r"f\.yaml:\d+: .*not valid YAML"):
        fr.load("findings:\n  - id: [B1\n", "f.yaml")
    with pytest.raises(fr.RegisterError, match="a `findings` list"):
        fr.load("- 1\n", "f.yaml")


def test_problems_name_missing_quirks_and_scenarios_but_allow_pending():
    (f,) = fr.load(MINIMAL)
    registry = [profiles.QUIRKS_BY_NAME["enotdir-abort"], profiles.QUIRKS_BY_NAME["epoch-ignored"]]
    found = fr.problems([f], registry, lambda n: False, lambda p: True)
    assert any("epoch-ignored (B7) has no entry" in p for p in found)
    assert any("reproducer scenario 'quirks/b2-enotdir-file-replaced-by-dir' does not exist"
               in p for p in found)
    (pending,) = fr.load(_entry(reproducer_pending='"being written"'))
    assert fr.problems([pending], registry[:1], lambda n: False, lambda p: True) == []
    (patched,) = fr.load(_entry(patch="elsewhere/x.patch"))
    found = fr.problems([patched], registry[:1], lambda n: True, lambda p: False)
    assert any("patch 'elsewhere/x.patch' does not exist" in p for p in found)
    assert any("patches live under findings/patches/" in p for p in found)
    (cased,) = fr.load(_entry(case="dialects/none.tar"))
    found = fr.problems([cased], registry[:1], lambda n: True, lambda p: False)
    assert any("case 'fixtures/dialects/none.tar' does not exist" in p for p in found)


# -- rendering (pure) ------------------------------------------------------------------------
def test_markdown_joins_registry_range_pinned_versions_and_scenarios():
    (f,) = fr.load(_entry(quirk="lower-mount-templates-unactivated", id="B20"))
    shown = {"lower-mount-templates-unactivated": ["basic/multi-layer-lowers", "x/other"]}
    text = fr.markdown([f], profiles.QUIRKS_BY_NAME, shown, lambda n: n != "x/other",
                       pinned=["v2.4.2", "v2.1.0", "v2.2.9"])
    row = next(l for l in text.splitlines() if l.startswith("| [B20]"))
    assert "`>=2.2.0`" in row and "v2.2.9, v2.4.2" in row and "v2.1.0" not in row
    assert "[`quirks/b2-enotdir-file-replaced-by-dir`](../scenarios/" in text
    assert "**Also shown by:** [`basic/multi-layer-lowers`]" in text
    assert "[containerd#1](https://github.com/containerd/containerd/issues/1)" in text


def test_markdown_marks_a_pending_reproducer_without_linking_it():
    (f,) = fr.load(_entry(reproducer="apply/not-yet", reproducer_pending='"later"'))
    text = fr.markdown([f], profiles.QUIRKS_BY_NAME, {}, lambda n: False)
    assert "`apply/not-yet` — later" in text
    assert "../scenarios/apply/not-yet" not in text


def test_ref_links():
    assert fr.ref_link("erofs/erofs-utils@3166f1deef") == (
        "[erofs/erofs-utils@3166f1d](https://github.com/erofs/erofs-utils/commit/3166f1deef)")
    assert fr.ref_link("opencontainers/image-spec#144") == (
        "[opencontainers/image-spec#144](https://github.com/opencontainers/image-spec/issues/144)")


def test_cli_reports_a_broken_register_without_traceback(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "findings.yaml"
    bad.write_text(_entry(quirk="nope"))
    monkeypatch.setattr(fr, "REGISTER", bad)
    assert fr.main(["findings"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: findings/findings.yaml:") and "Traceback" not in err


def test_prose_escapes_html_and_emphasis_outside_code_spans():
    assert fr._prose("a <x> `b <y> *` c.*") == "a &lt;x> `b <y> *` c.\\*"
