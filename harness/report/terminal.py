"""The summary table `layerconf run` prints, ending with
`N passed, N failed, N error, N skipped, N xfail` (", N xpass" when there are any)."""
from __future__ import annotations

import shutil
import textwrap

from ..result import ScenarioResult, Status
from . import media_types, reason_lines, short_reason, summary_line

LABEL = {Status.PASS: "PASS", Status.FAIL: "FAIL", Status.ERROR: "ERROR", Status.SKIP: "SKIP",
         Status.XFAIL: "XFAIL", Status.XPASS: "XPASS"}
COLOUR = {Status.PASS: "32", Status.FAIL: "31", Status.ERROR: "31;1", Status.SKIP: "33",
          Status.XFAIL: "33", Status.XPASS: "35"}


# How many lines below a row name the first difference (the row's reason is line 0).
DETAIL = {Status.FAIL: 6, Status.XPASS: 3, Status.ERROR: 3}


def _printable(text: str) -> str:
    """Control characters (from names or tool output) as \\xNN, so they cannot move the cursor."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def render_table(results: list[ScenarioResult], width: int | None = None,
                 colour: bool = False) -> str:
    """One row per scenario; a reason too long for the row wraps onto indented lines below it
    (never cut), followed by the lines naming the first differing entry and field."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    rows = [(r.scenario, r.status, ",".join(media_types(r)) or "-",
             _printable(short_reason(r, 10**6)),
             [_printable(x) for x in reason_lines(r)[1:DETAIL.get(r.status, 1)]])
            for r in results]
    w_name = max([len("SCENARIO")] + [len(x[0]) for x in rows])
    w_mt = max([len("MEDIA TYPES")] + [len(x[2]) for x in rows])
    lines = [f"{'SCENARIO':<{w_name}}  {'STATUS':<6}  {'MEDIA TYPES':<{w_mt}}  REASON"]
    for name, st, mts, reason, detail in rows:
        fixed = f"{name:<{w_name}}  {LABEL[st]:<6}  {mts:<{w_mt}}  "
        room = max(40, width - len(fixed))
        indent = " " * len(fixed) if room < width else "    "
        wrapped = textwrap.wrap(reason, room, break_on_hyphens=False) or [""]
        label = LABEL[st]
        if colour:
            label = f"\x1b[{COLOUR[st]}m{label}\x1b[0m" + " " * (6 - len(LABEL[st]))
            fixed = f"{name:<{w_name}}  {label}  {mts:<{w_mt}}  "
        lines.append((fixed + wrapped[0]).rstrip())
        lines += [indent + x for x in wrapped[1:]]
        for extra in detail:
            lines += [indent + x for x in textwrap.wrap(extra, room, initial_indent="| ",
                                                        subsequent_indent="  ",
                                                        break_on_hyphens=False)]
    lines.append(summary_line(results))
    return "\n".join(lines)


def print_table(results: list[ScenarioResult], file=None, colour: bool | None = None) -> None:
    import sys
    file = file or sys.stdout
    if colour is None:
        colour = hasattr(file, "isatty") and file.isatty()
    print(render_table(results, colour=colour), file=file)
