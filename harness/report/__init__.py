"""What layerconf tells a person: tar/EROFS explanations, the terminal table, Markdown and
JUnit summaries, and kept artifacts. Shared helpers for the summaries live here."""
from __future__ import annotations

from ..result import ScenarioResult, Status

# The order of the summary line; "passed" then "failed" first, for CI parsers.
SUMMARY_ORDER = ((Status.PASS, "passed"), (Status.FAIL, "failed"), (Status.ERROR, "error"),
                 (Status.SKIP, "skipped"), (Status.XFAIL, "xfail"))


def counts(results: list[ScenarioResult]) -> dict[Status, int]:
    out = {s: 0 for s in Status}
    for r in results:
        out[r.status] += 1
    return out


def summary_line(results: list[ScenarioResult]) -> str:
    """`12 passed, 1 failed, 0 error, 2 skipped, 3 xfail`, plus `, N xpass` when there are any
    (an XPASS is a failure of the run: the quirk registry is stale)."""
    c = counts(results)
    line = ", ".join(f"{c[s]} {word}" for s, word in SUMMARY_ORDER)
    if c[Status.XPASS]:
        line += f", {c[Status.XPASS]} xpass"
    return line


def short_reason(result: ScenarioResult, width: int = 120) -> str:
    """One line saying why a scenario did not pass (empty for a pass)."""
    if result.status == Status.PASS:
        return ""
    check = next((c for c in result.checks if c.status == result.status and c.explanation), None)
    explanation = check.explanation if check else ""
    lines = _lines(result.message) or _lines(explanation)
    line = lines[0] if lines else ""
    if line.endswith(":"):
        # e.g. "known divergence from the spec:": the next line carries the substance
        rest = lines[1:]
        if not rest and _lines(explanation)[:1] == [line]:
            rest = _lines(explanation)[1:]
        if rest:
            line = f"{line} {rest[0]}"
    line = " ".join(line.split())
    return line if len(line) <= width else line[:width - 3] + "..."


def reason_lines(result: ScenarioResult, max_lines: int = 6) -> list[str]:
    """Why a scenario did not pass, in full (never cut): the first line of its deciding check,
    then the lines that name the first differing entry and field (for a tar difference: both
    `tar tv` lines and the first field with its rule), else the next lines of the explanation."""
    if result.status == Status.PASS:
        return []
    check = next((c for c in result.checks if c.status == result.status and c.explanation), None)
    text = check.explanation if check else ""
    lines = [x.rstrip() for x in (text or result.message or "").splitlines() if x.strip()]
    if result.message and (not lines or lines[0].strip() != result.message.splitlines()[0].strip()) \
            and result.status == Status.ERROR:
        lines = [x.rstrip() for x in result.message.splitlines() if x.strip()]
    if not lines:
        return []
    out = [lines[0].strip()]
    picked = []
    for i, line in enumerate(lines[1:], 1):
        if line.startswith("entry #") and " starts at " in line:
            picked += [x.strip() for x in lines[i + 1:i + 3] if x.startswith("  ")]
        elif line.startswith(("fields a tar reader sees", "raw bytes that differ")):
            follow = [x for x in lines[i + 1:i + 6]]
            first = next((x for x in follow if x.startswith("  ") and not x.strip().startswith("rule:")), None)
            if first:
                picked.append(first.strip())
                j = follow.index(first) + 1
                rule = []
                while j < len(follow) and (follow[j].strip().startswith("rule:") or
                                           (rule and follow[j].startswith("      "))):
                    rule.append(follow[j].strip())
                    j += 1
                if rule:
                    picked.append(" ".join(rule))
            break
        elif line.strip().startswith("rule:") and not any(x.startswith("rule:") for x in picked):
            picked.append(" ".join(x.strip() for x in lines[i:i + 6]
                                   if x.strip().startswith("rule:") or x.startswith("      ")))
    if not picked:
        picked = [x.strip() for x in lines[1:max_lines]]
    return (out + picked)[:max_lines]


def _lines(text: str) -> list[str]:
    return [x.strip() for x in (text or "").splitlines() if x.strip()]


def short_media_type(mt: str) -> str:
    """application/vnd.oci.image.layer.v1.tar+gzip -> tar+gzip."""
    for prefix in ("application/vnd.oci.image.layer.v1.", "application/vnd.docker.image.rootfs.diff.",
                   "application/vnd.oci.image.layer.", "application/"):
        if mt.startswith(prefix):
            return mt[len(prefix):]
    return mt


def media_types(result: ScenarioResult) -> list[str]:
    seen: list[str] = []
    for o in result.outcomes:
        if o.producer.endswith("-apply"):     # labelled by case, not by a Compare media type
            continue
        s = short_media_type(o.media_type)
        if s not in seen:
            seen.append(s)
    return seen


def scenario_class(name: str, default: str = "scenarios") -> tuple[str, str]:
    """("whiteout", "root-file") for "whiteout/root-file"; nested folders join with dots."""
    name = name.strip("/")
    if name.endswith((".yaml", ".yml")):
        name = name.rsplit(".", 1)[0]
    if "/" not in name:
        return default, name
    folder, leaf = name.rsplit("/", 1)
    return folder.replace("/", "."), leaf
