"""The summary table `layerconf run` prints, ending with
`N passed, N failed, N error, N skipped, N xfail` (", N xpass" when there are any)."""
from __future__ import annotations

import shutil

from ..result import ScenarioResult, Status
from . import media_types, short_reason, summary_line

LABEL = {Status.PASS: "PASS", Status.FAIL: "FAIL", Status.ERROR: "ERROR", Status.SKIP: "SKIP",
         Status.XFAIL: "XFAIL", Status.XPASS: "XPASS"}
COLOUR = {Status.PASS: "32", Status.FAIL: "31", Status.ERROR: "31;1", Status.SKIP: "33",
          Status.XFAIL: "33", Status.XPASS: "35"}


def render_table(results: list[ScenarioResult], width: int | None = None,
                 colour: bool = False) -> str:
    width = width or shutil.get_terminal_size((120, 24)).columns
    rows = [(r.scenario, r.status, ",".join(media_types(r)) or "-", short_reason(r, 400))
            for r in results]
    w_name = max([len("SCENARIO")] + [len(x[0]) for x in rows])
    w_mt = max([len("MEDIA TYPES")] + [len(x[2]) for x in rows])
    lines = [f"{'SCENARIO':<{w_name}}  {'STATUS':<6}  {'MEDIA TYPES':<{w_mt}}  REASON"]
    for name, st, mts, reason in rows:
        fixed = f"{name:<{w_name}}  {LABEL[st]:<6}  {mts:<{w_mt}}  "
        room = max(20, width - len(fixed))
        if len(reason) > room:
            reason = reason[:room - 3] + "..."
        label = LABEL[st]
        if colour:
            label = f"\x1b[{COLOUR[st]}m{label}\x1b[0m" + " " * (6 - len(LABEL[st]))
            fixed = f"{name:<{w_name}}  {label}  {mts:<{w_mt}}  "
        lines.append((fixed + reason).rstrip())
    lines.append(summary_line(results))
    return "\n".join(lines)


def print_table(results: list[ScenarioResult], file=None, colour: bool | None = None) -> None:
    import sys
    file = file or sys.stdout
    if colour is None:
        colour = hasattr(file, "isatty") and file.isatty()
    print(render_table(results, colour=colour), file=file)
