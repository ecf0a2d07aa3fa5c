#!/usr/bin/env python3
"""The test command cosmic-ray runs for each mutant (mutation/run.py): checks in a fast order,
stopping at the first that notices the mutant.

    unit    the reference's unit tests (pytest -x: stops at the first failure)
    golden  `layerconf run --oracle golden`: the reference against recorded Go outputs
    live    every scenario against containerd's Go code in host mode (root, the built
            oracle), through pytest with -x, then tests/test_mutants.py

Prints `KILLED-BY: <stage>` and exits 1 when a stage fails, `SURVIVED` and exits 0 otherwise.
Each stage has its own deadline, well inside cosmic-ray's timeout: a stage that overruns gets
SIGTERM (layerconf then unmounts and cleans up) rather than cosmic-ray's SIGKILL.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
UNIT = ["tests/test_gotar.py", "tests/test_reference_compare.py",
        "tests/test_reference_compression.py", "tests/test_reference_profiles.py",
        "tests/test_mediatypes.py", "tests/test_erofs_superblock.py",
        "tests/test_reference_fuzz.py", "tests/test_report_tardiff.py",
        "tests/test_reference_apply.py"]
STAGES = {
    "unit": ([PY, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *UNIT], 600),
    "golden": ([PY, "-m", "harness.cli", "run", "--oracle", "golden", "-q"], 300),
    # pytest over the scenarios (the same runner as `layerconf run --backend host`): -x stops
    # at the first scenario that notices the mutant
    "live": ([PY, "-m", "pytest", "scenarios", "-x", "-q", "-p", "no:cacheprovider",
              "--backend", "host", "-k", "not slow"], 1800),
    "live-mutants": ([PY, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                      "tests/test_mutants.py"], 600),
}
ORDER = ("unit", "golden", "live", "live-mutants")


def run_stage(name: str) -> tuple[bool, str]:
    """(passed, last lines of output). A stage that cannot run at all counts as not passing."""
    argv, deadline = STAGES[name]
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


def main(argv: list[str]) -> int:
    stages = [s for s in (argv[0].split(",") if argv else ORDER)]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        print(f"stages.py: unknown stage(s) {', '.join(unknown)}; known: {', '.join(ORDER)}")
        return 2
    for name in stages:
        ok, tail = run_stage(name)
        if not ok:
            print(tail)
            print(f"KILLED-BY: {name}")
            return 1
    print("SURVIVED")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
