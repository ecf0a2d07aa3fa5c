"""A Markdown summary fit for a CI job summary ($GITHUB_STEP_SUMMARY and the like)."""
from __future__ import annotations

from ..result import ScenarioResult, Status
from . import counts, media_types, short_reason, summary_line

ICON = {Status.PASS: "✅", Status.FAIL: "❌", Status.ERROR: "💥", Status.SKIP: "⏭️",
        Status.XFAIL: "🟡", Status.XPASS: "❗"}
ENV_KEYS = ("containerd", "erofs-utils", "kernel", "backend", "go")


def _cell(s: str) -> str:
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("`", "'")


def environment_line(env: dict) -> str:
    keys = [k for k in ENV_KEYS if env.get(k)] + \
        [k for k in env if k not in ENV_KEYS and isinstance(env[k], (str, int, float)) and env[k] != ""]
    return " · ".join(f"{k} `{_cell(str(env[k]))}`" for k in keys) or "(unknown)"


def render_markdown(results: list[ScenarioResult], environment: dict | None = None,
                    title: str = "layerconf") -> str:
    env = environment if environment is not None else next(
        (r.environment for r in results if r.environment), {})
    c = counts(results)
    bad = any(s.failed for s in (r.status for r in results))
    out = [f"## {'❌' if bad else '✅'} {title}: {summary_line(results)}", "",
           f"**Environment:** {environment_line(env)}", "",
           "| Status | Count |", "| --- | ---: |"]
    for s in Status:
        out.append(f"| {ICON[s]} {s.value} | {c[s]} |")
    others = [r for r in results if r.status != Status.PASS]
    if others:
        order = {s: i for i, s in enumerate([Status.ERROR, Status.XPASS, Status.FAIL,
                                              Status.XFAIL, Status.SKIP])}
        out += ["", "### Not passing", "", "| Scenario | Status | Media types | Reason |",
                "| --- | --- | --- | --- |"]
        for r in sorted(others, key=lambda r: (order.get(r.status, 9), r.scenario)):
            out.append(f"| `{_cell(r.scenario)}` | {ICON[r.status]} {r.status.value} | "
                       f"{_cell(', '.join(media_types(r)))} | {_cell(short_reason(r, 160))} |")
    return "\n".join(out) + "\n"


def write_markdown(results: list[ScenarioResult], path: str, environment: dict | None = None,
                   title: str = "layerconf", append: bool = True) -> str:
    """Append by default: $GITHUB_STEP_SUMMARY is shared by a job's steps."""
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        f.write(render_markdown(results, environment, title))
    return path
