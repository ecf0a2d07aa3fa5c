"""The findings register: findings/findings.yaml joined with the quirk registry, as docs/findings.md.

``python -m harness.report.findings > docs/findings.md`` regenerates the document;
``python -m harness.report.findings --check`` only validates (exit 1 on problems, 2 on a broken
file). An entry that names a registry quirk takes its version range (of the quirk's component:
containerd, or erofs-utils for mkfs.erofs), scope and kind from ``harness/reference/profiles.py``; the scenarios that show the quirk come from
``profiles.scenarios_by_quirk()``. ``load`` and ``markdown`` are pure (text in, data/text out);
reading files happens in ``main`` only.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import yaml

from ..reference import profiles

REPO = Path(__file__).resolve().parents[2]
REGISTER = REPO / "findings" / "findings.yaml"
SCENARIOS = REPO / "scenarios"
VERSIONS_TXT = REPO / "oracle" / "versions.txt"

COMPONENTS = ("containerd", "mkfs.erofs", "kernel", "go-erofs")
KINDS = ("quirk", "switch", "defect", "not-a-defect")
_ID_RE = re.compile(r"^[BMGK]\d+$")
_REF_RE = re.compile(r"^([\w.-]+)/([\w.-]+)(?:#(\d+)|@([0-9a-f]{7,40}))$")
_KEYS_REQUIRED = ("id", "component", "code", "title", "impact", "versions", "reproducer",
                  "upstream", "fix")
_KEYS_OPTIONAL = ("quirk", "kind", "case", "reproducer_pending", "test", "patch")
# The `versions` key that a registry range of each component stands for.
RANGE_KEY = {"containerd": "containerd", "mkfs.erofs": "erofs-utils", "kernel": "kernel",
             "go-erofs": "go-erofs"}


class RegisterError(ValueError):
    """A broken register file; str() is one paragraph naming file, line, entry and cause."""


@dataclass(frozen=True)
class Finding:
    id: str
    component: str
    code: str
    title: str
    impact: str
    versions: tuple[tuple[str, str], ...]     # (component, text): notes beside the registry range
    reproducer: str | None
    upstream_status: str
    upstream_refs: tuple[str, ...]
    fix: str | None
    quirk: str | None = None
    kind: str = "defect"
    case: str | None = None                   # a fixture (under fixtures/) of the reproducer
    reproducer_pending: str | None = None
    test: str | None = None
    patch: str | None = None
    line: int = 0


# -- loading (pure: text in, findings out) ------------------------------------------------------
class _LineLoader(yaml.SafeLoader):
    """Keeps the line of every mapping, for error messages."""


def _mapping_with_line(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    m = yaml.SafeLoader.construct_mapping(loader, node, deep=True)
    m["__line__"] = node.start_mark.line + 1
    return m


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_with_line)


def _err(source: str, line: int, entry: str, cause: str) -> RegisterError:
    where = f"{source}:{line}" if line else source
    return RegisterError(f"{where}: findings register entry {entry}: {cause}. Fix the entry in "
                         "findings/findings.yaml (its format is described at the top of that "
                         "file) and rerun `python -m harness.report.findings`.")


def _text(raw: dict, key: str, source: str, entry: str, *, optional: bool = False) -> str | None:
    v = raw.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str) or not v.strip():
        raise _err(source, raw["__line__"], entry, f"`{key}` must be a non-empty string, "
                   f"got {v!r}")
    return " ".join(v.split())


def load(text: str, source: str = "findings/findings.yaml",
         registry: Mapping[str, profiles.Quirk] = profiles.QUIRKS_BY_NAME) -> list[Finding]:
    """Parse and validate the register. Raises RegisterError (one paragraph) on bad input."""
    try:
        doc = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        raise _err(source, line, "(file)", f"not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("findings"), list):
        raise _err(source, 0, "(file)", "the top level must be a mapping with a `findings` list")
    out: list[Finding] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(doc["findings"]):
        if not isinstance(raw, dict):
            raise _err(source, 0, f"#{i + 1}", "each entry must be a mapping")
        line = raw["__line__"]
        entry = str(raw.get("id", f"#{i + 1}"))
        keys = set(raw) - {"__line__"}
        missing = [k for k in _KEYS_REQUIRED if k not in keys]
        unknown = sorted(keys - set(_KEYS_REQUIRED) - set(_KEYS_OPTIONAL))
        if missing:
            raise _err(source, line, entry, f"missing key(s) {', '.join(missing)}")
        if unknown:
            raise _err(source, line, entry, f"unknown key(s) {', '.join(unknown)} (known: "
                       f"{', '.join(_KEYS_REQUIRED + _KEYS_OPTIONAL)})")
        fid = _text(raw, "id", source, entry)
        if not _ID_RE.match(fid):
            raise _err(source, line, entry, "`id` must be B<n> (docs/spec.md §7), M<n> (§7.1) "
                       "or G<n> (§7.3)")
        if fid in seen:
            raise _err(source, line, entry, f"duplicate id (first at line {seen[fid]})")
        seen[fid] = line
        component = _text(raw, "component", source, entry)
        if component not in COMPONENTS:
            raise _err(source, line, entry, f"`component` must be one of {', '.join(COMPONENTS)}")
        quirk = _text(raw, "quirk", source, entry, optional=True)
        versions = raw["versions"]
        if not isinstance(versions, dict):
            raise _err(source, line, entry, "`versions` must be a mapping of component to text")
        vers = tuple((str(k), " ".join(str(v).split())) for k, v in versions.items()
                     if k != "__line__")
        if quirk is not None:
            q = registry.get(quirk)
            if q is None:
                raise _err(source, line, entry, f"`quirk` {quirk!r} is not in the quirk registry "
                           "(harness/reference/profiles.py)")
            if q.spec_id != fid:
                raise _err(source, line, entry, f"the registry gives quirk {quirk!r} the id "
                           f"{q.spec_id or '(none)'}, not {fid}")
            if "kind" in raw:
                raise _err(source, line, entry, "`kind` comes from the registry for a quirk")
            qcomp = getattr(q, "component", "containerd")
            if qcomp != component:
                raise _err(source, line, entry, f"the registry says quirk {quirk!r} is a "
                           f"{qcomp} quirk, not {component}")
            if qcomp == "containerd" and "containerd" in dict(vers):
                raise _err(source, line, entry, "`versions.containerd` comes from the registry "
                           "for a quirk; remove it")
            if qcomp != "containerd" and "containerd" not in dict(vers):
                raise _err(source, line, entry, "`versions.containerd` is required: the "
                           f"registry range of a {qcomp} quirk is not a containerd range")
            kind = q.kind
        else:
            kind = _text(raw, "kind", source, entry, optional=True) or "defect"
            if kind not in KINDS:
                raise _err(source, line, entry, f"`kind` must be one of {', '.join(KINDS)}")
            if "containerd" not in dict(vers):
                raise _err(source, line, entry, "`versions.containerd` is required when no "
                           "registry quirk gives the range")
        up = raw["upstream"]
        if not isinstance(up, dict) or not isinstance(up.get("refs"), list):
            raise _err(source, line, entry, "`upstream` must be a mapping with `status` and a "
                       "`refs` list")
        status = _text(up, "status", source, entry)
        refs = tuple(str(r) for r in up["refs"])
        bad = [r for r in refs if not _REF_RE.match(r)]
        if bad:
            raise _err(source, line, entry, f"upstream ref(s) {', '.join(bad)} must read "
                       "owner/repo#N or owner/repo@commit")
        reproducer = _text(raw, "reproducer", source, entry, optional=True)
        pending = _text(raw, "reproducer_pending", source, entry, optional=True)
        if pending and not reproducer:
            raise _err(source, line, entry, "`reproducer_pending` needs a `reproducer`")
        out.append(Finding(
            id=fid, component=component, code=_text(raw, "code", source, entry),
            title=_text(raw, "title", source, entry), impact=_text(raw, "impact", source, entry),
            versions=vers, reproducer=reproducer, upstream_status=status, upstream_refs=refs,
            fix=_text(raw, "fix", source, entry, optional=True), quirk=quirk, kind=kind,
            reproducer_pending=pending, test=_text(raw, "test", source, entry, optional=True),
            patch=_text(raw, "patch", source, entry, optional=True),
            case=_text(raw, "case", source, entry, optional=True), line=line))
    return out


# -- cross-checks (pure) -------------------------------------------------------------------------
def problems(findings: Sequence[Finding], registry: Iterable[profiles.Quirk],
             scenario_exists: Callable[[str], bool],
             file_exists: Callable[[str], bool]) -> list[str]:
    """What is inconsistent between the register, the registry and the repository."""
    out: list[str] = []
    named = {f.quirk for f in findings if f.quirk}
    for q in registry:
        if q.kind == "quirk" and q.name not in named:
            out.append(f"registered quirk {q.name} ({q.spec_id or 'no id'}) has no entry in "
                       "findings/findings.yaml")
    for f in findings:
        if f.reproducer and not scenario_exists(f.reproducer) and not f.reproducer_pending:
            out.append(f"findings/findings.yaml:{f.line}: {f.id}: reproducer scenario "
                       f"{f.reproducer!r} does not exist (scenarios/{f.reproducer}.yaml)")
        for label, path in (("test", f.test), ("patch", f.patch),
                            ("case", f.case and f"fixtures/{f.case}")):
            if path and not file_exists(path):
                out.append(f"findings/findings.yaml:{f.line}: {f.id}: {label} {path!r} does "
                           "not exist")
        if f.patch and not f.patch.startswith("findings/patches/"):
            out.append(f"findings/findings.yaml:{f.line}: {f.id}: patches live under "
                       "findings/patches/")
    return out


# -- rendering (pure) ----------------------------------------------------------------------------
def ref_link(ref: str) -> str:
    """'containerd/containerd#12796' -> [containerd#12796](https://github.com/…/issues/12796)."""
    m = _REF_RE.match(ref)
    if not m:
        return f"`{ref}`"
    owner, repo, num, sha = m.groups()
    short = repo if owner == repo else f"{owner}/{repo}"
    if num:
        return f"[{short}#{num}](https://github.com/{owner}/{repo}/issues/{num})"
    return f"[{short}@{sha[:7]}](https://github.com/{owner}/{repo}/commit/{sha})"


def _cell(s: str) -> str:
    return s.replace("|", "\\|")


def _prose(s: str) -> str:
    """Markdown-safe text: outside code spans `<` would open an HTML tag and `*` emphasis."""
    parts = s.split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace("*", "\\*")
                    for i, p in enumerate(parts))


def _pinned(versions: str, pinned: Sequence[str]) -> str:
    if not pinned:
        return ""
    applies = profiles.version_predicate(versions)
    hit = sorted((v for v in pinned if applies(profiles.parse_version(v))),
                 key=profiles.parse_version)
    return ", ".join(hit) if hit else "none"


def scenario_link(name: str) -> str:
    return f"[`{name}`](../scenarios/{name}.yaml)"


def markdown(findings: Sequence[Finding], registry: Mapping[str, profiles.Quirk],
             shown: Mapping[str, Sequence[str]], scenario_exists: Callable[[str], bool],
             pinned: Sequence[str] = ()) -> str:
    """docs/findings.md. `shown` maps quirk name -> scenarios naming it; `pinned` are the
    containerd versions of oracle/versions.txt (to say which of them each range covers)."""
    out = [
        "# Findings register",
        "",
        "Generated by `python -m harness.report.findings` from `findings/findings.yaml`, the",
        "quirk registry (`harness/reference/profiles.py`) and the scenarios' `expect` blocks;",
        "edit those, not this file.",
        "",
        "One entry per divergence of containerd's EROFS differ ([spec.md](spec.md) §7) and per",
        "defect of a component it relies on (§7.1): what goes wrong, for whom, in which",
        "versions, the smallest scenario that shows it, what upstream knows, and a fix where a",
        "small one exists. Version ranges of registered quirks come from the registry, as",
        "ranges of the component's own versions (containerd, or erofs-utils for mkfs.erofs);",
        "\"pinned\" lists the containerd versions of `oracle/versions.txt` inside a containerd",
        "range.",
        "",
        "| id | registry name | component | versions | pinned | upstream | reproducer |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in findings:
        q = registry.get(f.quirk) if f.quirk else None
        qcomp = getattr(q, "component", "containerd") if q else None
        if q:
            rng = f"{RANGE_KEY.get(qcomp, qcomp)} `{_cell(q.versions)}`"
        else:
            rng = f"containerd `{_cell(dict(f.versions).get('containerd', ''))}`"
        rng_for_pinned = q.versions if q and qcomp == "containerd" else None
        name = f"`{f.quirk}`" if f.quirk else "—"
        if f.reproducer and scenario_exists(f.reproducer):
            repro = scenario_link(f.reproducer) + (f" (`{f.case}`)" if f.case else "")
        elif f.reproducer:
            repro = f"`{f.reproducer}` (pending)"
        elif f.test:
            repro = f"test: `{f.test}`"
        else:
            repro = "—"
        out.append(f"| [{f.id}](#{f.id.lower()}) | {name} | {f.component} | {rng} | "
                   f"{_pinned(rng_for_pinned, pinned) if rng_for_pinned else '—'} | "
                   f"{_cell(_prose(f.upstream_status))} | {repro} |")
    out += ["", "## Entries"]
    for f in findings:
        q = registry.get(f.quirk) if f.quirk else None
        spec_ref = "§7.1" if f.id.startswith("M") else f"§7 {f.id}"
        out += ["", f"<a id=\"{f.id.lower()}\"></a>", f"### {f.id} — {_prose(f.title)}", "",
                _prose(f.impact), ""]
        out.append(f"- **Component:** {f.component}")
        out.append(f"- **Where:** {f.code}")
        if q:
            out.append(f"- **Registry:** `{q.name}` ({q.kind}, scope {q.scope}) — "
                       f"{_prose(q.description)}")
        else:
            out.append(f"- **Kind:** {f.kind} (not in the quirk registry)")
        out.append(f"- **Spec:** [{spec_ref}](spec.md)")
        vers = []
        if q:
            qcomp = getattr(q, "component", "containerd")
            vers.append(f"{RANGE_KEY.get(qcomp, qcomp)} `{q.versions}` (registry)"
                        + (f", pinned: {_pinned(q.versions, pinned)}"
                           if pinned and qcomp == "containerd" else ""))
        for comp, text in f.versions:
            vers.append(f"{comp} `{text}`" if comp == "containerd" else f"{comp}: {text}")
        out.append("- **Versions:** " + "; ".join(vers))
        case = f", case `{f.case}`" if f.case else ""
        if f.reproducer and scenario_exists(f.reproducer):
            out.append(f"- **Reproducer:** {scenario_link(f.reproducer)}{case}")
        elif f.reproducer:
            out.append(f"- **Reproducer:** `{f.reproducer}` — {f.reproducer_pending}")
        elif f.test:
            out.append(f"- **Reproducer:** no scenario can build this state; shown by `{f.test}`")
        else:
            out.append("- **Reproducer:** none (the harness cannot build this state; from the "
                       "code)")
        also = [s for s in (shown.get(f.quirk, ()) if f.quirk else ()) if s != f.reproducer]
        if also:
            out.append("- **Also shown by:** " + ", ".join(scenario_link(s) for s in also))
        refs = ", ".join(ref_link(r) for r in f.upstream_refs)
        out.append(f"- **Upstream:** {_prose(f.upstream_status)}" + (f" ({refs})" if refs else ""))
        out.append(f"- **Proposed fix:** {_prose(f.fix)}" if f.fix else "- **Proposed fix:** none")
        if f.patch:
            out.append(f"- **Patch:** [`{f.patch}`](../{f.patch})")
    return "\n".join(out) + "\n"


# -- I/O edge ------------------------------------------------------------------------------------
def _scenario_exists(name: str) -> bool:
    return (SCENARIOS / f"{name}.yaml").is_file()


def _file_exists(path: str) -> bool:
    return (REPO / path).is_file()


def pinned_versions(text: str) -> list[str]:
    """The versions of oracle/versions.txt ('VERSION [default] [tags=…]' lines)."""
    return [line.split()[0] for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def build() -> tuple[str, list[str]]:
    """(docs/findings.md text, problems) from the files of this repository."""
    findings = load(REGISTER.read_text(), "findings/findings.yaml")
    found = problems(findings, profiles.QUIRKS, _scenario_exists, _file_exists)
    pinned = pinned_versions(VERSIONS_TXT.read_text()) if VERSIONS_TXT.is_file() else []
    text = markdown(findings, profiles.QUIRKS_BY_NAME, profiles.scenarios_by_quirk(),
                    _scenario_exists, pinned)
    return text, found


def main(argv: list[str]) -> int:
    if argv[1:] not in ([], ["--check"]):
        print("usage: python -m harness.report.findings [--check]", file=sys.stderr)
        return 2
    try:
        text, found = build()
    except RegisterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in found:
        print(f"error: {p}", file=sys.stderr)
    if found:
        return 1
    if not argv[1:]:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
