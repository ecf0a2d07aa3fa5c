"""The path check (`--path both`): does reaching containerd through a real daemon change anything
against the direct wiring of its components?

Each path builds its own state, so blob digests are not compared (a directory an op touched has
that run's mtime); each path's blobs are already checked byte for byte against the reference on
its own state. Compared here: every check's status, and every Go outcome's error or success, with
the run-specific parts of error texts (paths, hex ids) blanked.
"""
from __future__ import annotations

import re

from ..result import Check, ScenarioResult, Status

NAME = "paths: direct vs daemon"

_PATH = re.compile(r"/[^\s:'\",()\[\]{}]+")
_HEX = re.compile(r"\b[0-9a-f]{12,}\b")
_PID = re.compile(r"\(pid \d+\)")


def normalise_error(text: str) -> str:
    """An error text without what differs between two runs of the same case."""
    return _PID.sub("(pid <n>)", _HEX.sub("<hex>", _PATH.sub("<path>", text))).strip()


def _go(result: ScenarioResult) -> dict:
    return {(o.producer, o.media_type): ("error: " + normalise_error(o.error)) if o.error else "ok"
            for o in result.outcomes if o.producer.startswith("go-")}


def _checks(result: ScenarioResult) -> dict:
    return {c.name: c.status.value for c in result.checks if c.name != NAME}


def check_paths(direct: ScenarioResult, daemon: ScenarioResult) -> Check:
    """PASS when both paths give the same verdicts and the same Go errors; FAIL listing each
    difference; SKIP when the direct path could not run (engine error or missing capability)."""
    if direct.status in (Status.ERROR, Status.SKIP):
        return Check(NAME, Status.SKIP, f"not compared: the direct path's run ended in "
                     f"{direct.status.value}: {direct.message.splitlines()[0] if direct.message else ''}")
    diffs = []
    for label, a, b in (("Go outcome", _go(direct), _go(daemon)),
                        ("check", _checks(direct), _checks(daemon))):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                what = " ".join(key) if isinstance(key, tuple) else key
                diffs.append(f"{label} {what}: direct {a.get(key, 'absent')}; "
                             f"daemon {b.get(key, 'absent')}")
    if diffs:
        return Check(NAME, Status.FAIL, "the daemon path differs from the direct path:\n"
                     + "\n".join(diffs))
    n_go, n_checks = len(_go(daemon)), len(_checks(daemon))
    return Check(NAME, Status.PASS, f"the direct and daemon paths agree ({n_go} Go outcomes, "
                 f"{n_checks} checks)", info=True)
