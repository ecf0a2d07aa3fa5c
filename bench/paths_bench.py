#!/usr/bin/env python3
"""Direct path vs daemon path, scenario by scenario, in host mode (root; run on demand).

    sudo .venv/bin/python bench/paths_bench.py                    # every scenario but slow ones
    sudo .venv/bin/python bench/paths_bench.py scenarios/basic --json out.json

Runs each scenario through `--path direct` and `--path daemon` in the same process (one session
per path, so each path's start-up is paid once, as in a run) and prints:
  table     scenario, status on each path, and where the two differ (the path check's findings)
  counts    statuses per path
  time      total seconds per path and the ratio daemon/direct (same machine, same load)
The daemon's start-up (containerd with a generated config) is counted in the daemon path's time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import runner  # noqa: E402
from harness.checks.paths import check_paths  # noqa: E402
from harness.cli import _scenario_files  # noqa: E402
from harness.result import Status  # noqa: E402
from harness.scenario import ScenarioError, load  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--containerd", default="")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--include-slow", action="store_true",
                    help="also slow-tagged scenarios (numbers/sparse-file-8gib holds 8 GiB blobs)")
    args = ap.parse_args()
    files = _scenario_files(args.paths, [], None)
    rows, seconds = [], {"direct": 0.0, "daemon": 0.0}
    sessions = {p: runner.Session(runner.RunOptions(containerd=args.containerd, path=p))
                for p in seconds}
    try:
        for f in files:
            try:
                s = load(f)
            except ScenarioError as e:
                print(f"skip {f}: {e}", file=sys.stderr)
                continue
            if "slow" in s.tags and not args.include_slow:
                print(f"skip {s.name}: tagged slow (use --include-slow)", file=sys.stderr)
                continue
            res = {}
            for p, session in sessions.items():
                t0 = time.monotonic()
                res[p] = runner.run_scenario(s, session)
                seconds[p] += time.monotonic() - t0
            c = check_paths(res["direct"], res["daemon"])
            rows.append({"scenario": s.name, "direct": res["direct"].status.value,
                         "daemon": res["daemon"].status.value, "paths": c.status.value,
                         "differences": "" if c.status == Status.PASS else c.explanation})
            r = rows[-1]
            print(f"{r['scenario']:60} {r['direct']:6} {r['daemon']:6} {r['paths']}", flush=True)
            if r["differences"]:
                print("    " + r["differences"].replace("\n", "\n    "), flush=True)
    finally:
        for session in sessions.values():
            session.close()
    for p in seconds:
        counts = Counter(r[p] for r in rows)
        print(f"{p:7} " + ", ".join(f"{n} {st}" for st, n in sorted(counts.items())))
    print(f"paths   " + ", ".join(f"{n} {st}" for st, n in sorted(Counter(r['paths'] for r in rows).items())))
    ratio = seconds["daemon"] / seconds["direct"] if seconds["direct"] else float("nan")
    print(f"time    direct {seconds['direct']:.1f} s, daemon {seconds['daemon']:.1f} s, "
          f"daemon/direct {ratio:.2f} (load average {os.getloadavg()[0]:.1f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "seconds": seconds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
