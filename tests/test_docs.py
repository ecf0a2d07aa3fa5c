"""docs/spec.md is self-contained and every citation of it resolves.

- No tracked file names a path outside the repository (notes kept elsewhere, absolute
  machine paths): a clone must be complete.
- Every "spec §N.M" (also "§N.M step K", "§7 Bn", "§3.1–3.3") cited anywhere in the repository
  is a heading, a numbered rule of that section, or a divergence of §7 in docs/spec.md.
- Every "*Source:*" citation of docs/spec.md is well-formed, and — where the cited version's
  source is on this machine (Go module cache, GOROOT) — names a file that exists and a function
  defined in it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "docs" / "spec.md"
SCANNED = ("harness", "docs", "scenarios", "oracle", "vm", "tests", "bench", "fixtures",
           "findings", "README.md")
# Built from pieces so that this file does not match itself.
_OUTSIDE = re.compile(("shared" + "/research").encode() + b"|(?:^|(?<=[\\s\"'`(=:,\\[]))" +
                      ("/" + "work/").encode())


def tracked_files() -> list[Path]:
    """Files git tracks under SCANNED (all files there when this is no git checkout)."""
    git = shutil.which("git")
    if git and (REPO / ".git").exists():
        r = subprocess.run([git, "-C", str(REPO), "ls-files", "-z", "--", *SCANNED],
                           capture_output=True, timeout=60, check=True)
        return [REPO / p.decode() for p in r.stdout.split(b"\0") if p]
    out = []
    for top in SCANNED:
        p = REPO / top
        out += [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
    return out


def test_no_path_outside_the_repository():
    offenders = []
    for f in tracked_files():
        if not f.is_file():         # deleted in the work tree, still in the index
            continue
        for n, line in enumerate(f.read_bytes().splitlines(), 1):
            if _OUTSIDE.search(line):
                offenders.append(f"{f.relative_to(REPO)}:{n}: {line.decode(errors='replace')[:120]}")
    assert not offenders, ("these lines name a path outside the repository; point at "
                           "docs/spec.md (or a file in the repository) instead:\n  "
                           + "\n  ".join(offenders))


def test_outside_pattern_catches_what_it_should():
    assert _OUTSIDE.search(b"see /" + b"work/shared/x")
    assert _OUTSIDE.search(b"`shared/" + b"research/spec.md`")
    assert not _OUTSIDE.search(b"upperdir={{ mount 0 }}/work/upper")
    assert not _OUTSIDE.search(b"snapshots/<id>/work/ is the workdir")


# -- the structure of docs/spec.md -------------------------------------------------------------
_HEADING = re.compile(r"^#{2,4}\s+(\d+(?:\.\d+)*)\.?\s", re.M)
_RULE = re.compile(r"^\s{0,3}(\d+)\.\s", re.M)
_DIVERGENCE = re.compile(r"^- \*\*([BMGK]\d+) —", re.M)


def spec_structure(text: str) -> tuple[dict[str, str], dict[str, set[int]], set[str]]:
    """(section number -> body, section -> numbered rules in its body, divergence ids)."""
    heads = list(_HEADING.finditer(text))
    bodies = {}
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        bodies[m.group(1)] = text[m.end():end]
    rules = {sec: {int(n) for n in _RULE.findall(body)} for sec, body in bodies.items()}
    return bodies, rules, set(_DIVERGENCE.findall(text))


# "§3.1", "§7 B2", "§7-B17", "§1.1 step 3", "§1.1 steps 12–14", "§3.1–3.3", "§5.5/§5.6"
_CITE = re.compile(r"§\s*(\d+(?:\.\d+)?)"
                   r"(?:[ -]([BMGK]\d+)\b)?"
                   r"(?:\s+steps?\s+(\d+)(?:\s*[–-]\s*(\d+))?)?"
                   r"(?:–(\d+\.\d+))?")


def citations(text: str) -> list[tuple[str, str | None, list[int]]]:
    out = []
    for m in _CITE.finditer(text):
        sec, div, s1, s2, upto = m.groups()
        steps = list(range(int(s1), int(s2 or s1) + 1)) if s1 else []
        out.append((sec, div, steps))
        if upto:
            out.append((upto, None, []))
    return out


def test_citation_parser():
    got = citations("spec §1.1 steps 12–14, §7 B2, spec§7-B17, §3.1–3.3, §5.5/§5.6, §2.2 step 1")
    assert got == [("1.1", None, [12, 13, 14]), ("7", "B2", []), ("7", "B17", []),
                   ("3.1", None, []), ("3.3", None, []), ("5.5", None, []), ("5.6", None, []),
                   ("2.2", None, [1])]


def test_spec_structure_reader_sees_sections_rules_and_divergences():
    sections, rules, divs = spec_structure(
        "## 1. A\n\n### 1.1 B\n\n1. one\n2. two\n   1. nested\n\n## 7. C\n\n- **B3 — x.**\n")
    assert set(sections) == {"1", "1.1", "7"}
    assert rules["1.1"] == {1, 2} and divs == {"B3"}


def test_every_spec_citation_in_the_repository_resolves():
    sections, rules, divergences = spec_structure(SPEC.read_text())
    bad, seen = [], 0
    for f in tracked_files() + [SPEC]:
        if not f.is_file() or f.suffix in (".gz", ".tar", ".erofs", ".img", ".zst"):
            continue
        try:
            text = f.read_text()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            for sec, div, steps in citations(line):
                seen += 1
                where = f"{f.relative_to(REPO)}:{n}"
                if sec not in sections:
                    bad.append(f"{where}: §{sec} is not a section of docs/spec.md")
                elif div and div not in divergences:
                    bad.append(f"{where}: {div} is not a divergence in docs/spec.md §7")
                for k in steps:
                    if k not in rules.get(sec, ()):
                        bad.append(f"{where}: §{sec} has no numbered rule {k}")
    assert seen > 50, f"only {seen} citations found: the scan is broken"
    assert not bad, "citations that docs/spec.md does not have:\n  " + "\n  ".join(bad)


def test_registry_ids_are_divergences_of_the_spec():
    from harness.reference import profiles
    _, _, divergences = spec_structure(SPEC.read_text())
    missing = sorted({q.spec_id for q in profiles.QUIRKS if q.spec_id} - divergences)
    assert not missing, f"registry ids missing from docs/spec.md §7: {missing}"


# -- source citations ------------------------------------------------------------------------
_SOURCE_PARA = re.compile(r"^\*Source:\*(.*?)(?=\n\s*\n|\Z)", re.M | re.S)
_SOURCE_ITEM = re.compile(r"^(containerd|continuity|go-erofs|erofs-utils|Go|Linux) (v?\d[\w.\-]*) "
                          r"`([^`]+)` `([^`]+)`$")
_MODULES = {"containerd": "github.com/containerd/containerd/v2@{v}",
            "continuity": "github.com/containerd/continuity@{v}",
            "go-erofs": "github.com/erofs/go-erofs@{v}"}


def source_citations(text: str) -> tuple[list[tuple[str, str, str, str]], list[str]]:
    """(component, version, file, function) for every *Source:* item; malformed items."""
    good, bad = [], []
    for para in _SOURCE_PARA.findall(text):
        for item in " ".join(para.split()).rstrip(".").split(";"):
            item = item.strip()
            m = _SOURCE_ITEM.match(item)
            (good.append(m.groups()) if m else bad.append(item))
    return good, bad


def function_pattern(component: str, name: str) -> re.Pattern:
    if component in ("erofs-utils", "Linux"):   # C: a definition starts a line with its type
        return re.compile(r"^[A-Za-z_][\w \t\*]*\b" + re.escape(name) + r"\s*\(", re.M)
    if "." in name:
        typ, meth = name.split(".", 1)
        return re.compile(r"^func \(\s*\w*\s*\*?" + re.escape(typ) + r"(?:\[[^\]]*\])?\s*\)\s*"
                          + re.escape(meth) + r"\s*[\[(]", re.M)
    return re.compile(r"^func " + re.escape(name) + r"\s*[\[(]", re.M)


@lru_cache(maxsize=None)
def _go_env(key: str) -> str:
    go = shutil.which("go")
    if not go:
        return ""
    try:
        r = subprocess.run([go, "env", key], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return r.stdout.strip()


def source_text(component: str, version: str, path: str) -> str | None:
    """The cited file's text, or None when that version's source is not on this machine.
    erofs-utils is read from a git clone named by $EROFS_UTILS_GIT, when set."""
    if component in _MODULES:
        cache = os.environ.get("GOMODCACHE") or _go_env("GOMODCACHE")
        root = Path(cache) / _MODULES[component].format(v=version) if cache else None
        f = root / path if root else None
        if not root or not root.is_dir():
            return None
        return f.read_text() if f.is_file() else ""
    if component == "Go":
        goroot, gover = _go_env("GOROOT"), _go_env("GOVERSION")
        if not goroot or not gover.startswith(f"go{version}"):
            return None
        f = Path(goroot) / path
        return f.read_text() if f.is_file() else ""
    if component == "erofs-utils":
        git, clone = shutil.which("git"), os.environ.get("EROFS_UTILS_GIT")
        if not git or not clone:
            return None
        r = subprocess.run([git, "-C", clone, "show", f"{version}:{path}"],
                           capture_output=True, text=True, timeout=30)
        return r.stdout if r.returncode == 0 else ""
    return None


def test_source_citations_are_well_formed():
    good, bad = source_citations(SPEC.read_text())
    assert len(good) > 60, f"only {len(good)} source citations parsed"
    assert not bad, ("malformed *Source:* items (want: component version `file` `function`):"
                     "\n  " + "\n  ".join(bad))


def test_function_pattern_matches_go_and_c_definitions():
    assert function_pattern("containerd", "erofsDiff.Compare").search(
        "func (s erofsDiff) Compare(ctx context.Context) {")
    assert function_pattern("containerd", "ChangeWriter.Close").search(
        "func (cw *ChangeWriter) Close() error {")
    assert not function_pattern("containerd", "ChangeWriter.Close").search(
        "func (cw *ChangeWriter) CloseAll() error {")
    assert function_pattern("continuity", "DiffDirChanges").search(
        "func DiffDirChanges(ctx context.Context,")
    assert function_pattern("erofs-utils", "tarerofs_otoi").search(
        "static long long tarerofs_otoi(const char *ptr, int len)")


def test_source_citations_name_real_files_and_functions():
    good, _ = source_citations(SPEC.read_text())
    checked, wrong, unchecked = 0, [], set()
    for component, version, path, func in good:
        text = source_text(component, version, path)
        if text is None:
            unchecked.add(f"{component} {version}")
            continue
        checked += 1
        if text == "":
            wrong.append(f"{component} {version} {path}: no such file")
        elif not function_pattern(component, func).search(text):
            wrong.append(f"{component} {version} {path}: no function {func}")
    assert not wrong, "docs/spec.md cites source that is not there:\n  " + "\n  ".join(wrong)
    if not checked:
        pytest.skip("no cited version's source is on this machine (Go module cache, GOROOT); "
                    f"not checked: {', '.join(sorted(unchecked))}")
