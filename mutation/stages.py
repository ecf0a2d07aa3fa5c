#!/usr/bin/env python3
"""The test command cosmic-ray runs for each mutant (mutation/run.py): checks in a fast order,
stopping at the first that notices the mutant.

    python mutation/stages.py [STAGES] [MODULE]

    golden        `layerconf run --oracle golden`: the reference against recorded Go outputs
    unit          the reference's unit tests that import MODULE (pytest -x)
    live          the scenario folders whose checks import MODULE, against containerd's Go code
                  in host mode (root, the built oracle), through pytest with -x
    live-mutants  tests/test_mutants.py: planted bugs, live

STAGES is a comma list (default: all, in that order); MODULE is the mutated file, which picks the
tests and scenarios that can see it (mutation/targets.py); a stage with nothing to run for it is
skipped. Prints `STAGE <name> <seconds> <passed|failed|skipped>` per stage, then `KILLED-BY:
<stage>` and exits 1 when a stage fails, `SURVIVED` and exits 0 otherwise. Each stage has its own
deadline, well inside cosmic-ray's timeout: a stage that overruns gets SIGTERM (layerconf then
unmounts and cleans up) rather than cosmic-ray's SIGKILL.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import targets

ROOT = targets.ROOT
PY = sys.executable
PYTEST = [PY, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
ORDER = ("golden", "unit", "live", "live-mutants")
DEADLINES = {"golden": 300, "unit": 600, "live": 1800, "live-mutants": 600}


def stage_argv(name: str, module: str | None) -> list[str] | None:
    """The command of one stage for a mutant of ``module``; None when nothing in it can see it."""
    if name == "golden":
        return [PY, "-m", "harness.cli", "run", "--oracle", "golden", "-q"] \
            if targets.golden_sees(module) else None
    if name == "unit":
        tests = targets.unit_tests(module)
        return [*PYTEST, *tests] if tests else None
    if name == "live":
        # the same runner as `layerconf run --backend host`; -x stops at the first scenario
        # that notices the mutant
        dirs = targets.live_targets(module)
        return [*PYTEST, *dirs, "--backend", "host", "-k", "not slow"] if dirs else None
    if name == "live-mutants":
        return [*PYTEST, "tests/test_mutants.py"]
    raise KeyError(name)


def run_stage(name: str, argv: list[str]) -> tuple[bool, str]:
    """(passed, last lines of output). A stage that cannot run at all counts as not passing."""
    deadline = DEADLINES[name]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=deadline)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)          # layerconf unwinds and cleans up
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        return False, f"{name}: over its {deadline} s deadline\n" + out.decode(errors="replace")[-2000:]
    return proc.returncode == 0, out.decode(errors="replace")[-2000:]


def parse_stages(text: str | None) -> list[str]:
    stages = text.split(",") if text else list(ORDER)
    unknown = [s for s in stages if s not in ORDER]
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; known: {', '.join(ORDER)}")
    return stages


def main(argv: list[str]) -> int:
    try:
        stages = parse_stages(argv[0] if argv else None)
    except ValueError as e:
        print(f"stages.py: {e}")
        return 2
    module = argv[1] if len(argv) > 1 else None
    for name in stages:
        cmd = stage_argv(name, module)
        if cmd is None:
            print(f"STAGE {name} 0 skipped", flush=True)
            continue
        start = time.monotonic()
        ok, tail = run_stage(name, cmd)
        print(f"STAGE {name} {time.monotonic() - start:.1f} {'passed' if ok else 'failed'}",
              flush=True)
        if not ok:
            print(tail)
            print(f"KILLED-BY: {name}")
            return 1
    print("SURVIVED")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
