"""Wall time per phase of one scenario, for finding where the time goes (host and VM alike).

    with phases.recording() as times:       # the runner, around one scenario
        with phases.phase("state"):         # anywhere below it
            ...
    times  ->  {"state": 1.23, "mount": 0.40, ...}   (seconds, summed over repeats)

Phases may nest: "mount" and "mkfs" are also counted inside "state", "round_trip" or "apply",
so they are "of which" figures, not parts of a sum. Outside recording() a phase costs nothing
and records nothing. The table of names is in docs/vm.md.
"""
from __future__ import annotations

import contextlib
import threading
import time

_local = threading.local()


@contextlib.contextmanager
def recording():
    """Collect the phases of the code run inside; yields the dict it fills."""
    outer = getattr(_local, "times", None)
    times: dict[str, float] = {}
    _local.times = times
    try:
        yield times
    finally:
        _local.times = outer


@contextlib.contextmanager
def phase(name: str):
    times = getattr(_local, "times", None)
    if times is None:
        yield
        return
    t0 = time.monotonic()
    try:
        yield
    finally:
        add(name, time.monotonic() - t0, times)


def add(name: str, seconds: float, times: dict | None = None) -> None:
    """Count `seconds` for `name` in the current recording (measured elsewhere, e.g. by mkfs)."""
    times = times if times is not None else getattr(_local, "times", None)
    if times is not None:
        times[name] = round(times.get(name, 0.0) + seconds, 4)
