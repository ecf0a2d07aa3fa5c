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
