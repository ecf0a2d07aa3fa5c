#!/usr/bin/env python3
"""`make mutate`: mutation testing of harness/reference/ with cosmic-ray, killing mutants in a
fast order (mutation/stages.py: golden runs against recorded Go output, then the unit tests
that import the mutated module, then the live host scenarios that can see it).

    python mutation/run.py [--modules harness/reference] [--stages golden,unit,live,live-mutants]
                           [--budget SECONDS] [--max-mutants N] [--seed S] [--out DIR]

Works on a temporary copy of the tracked files (cosmic-ray edits the code it mutates), so the
checkout is never touched. Each stage command is first run once unmutated (it must pass, or no
mutant could survive it), when a mutant first needs it. Generated mutants are recorded in
DIR/session.sqlite (cosmic-ray's own format: `cr-report DIR/session.sqlite`); DIR/summary.json,
rewritten after every mutant (a run stopped early keeps what it did), and the printed summary
say how many were generated, run, killed by which stage, survived (with the diff), the time per
stage and the wall time. --budget stops starting new mutants after that many seconds;
--max-mutants runs a seeded random sample. Mutants inside type annotations are equivalent and
never run (mutation/annotation_mutants.py).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 3 * 3600          # cosmic-ray's own limit; the stages have tighter ones (stages.py)


class MutateError(Exception):
    pass


def copy_tree(dest: Path) -> None:
    """The files git knows or would add (not ignored ones), and a link to the built oracle."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True,
                           check=True, timeout=60).stdout.split(b"\0")
    for f in filter(None, files):
        src, dst = REPO / os.fsdecode(f), dest / os.fsdecode(f)
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    if (REPO / ".cache").exists():
        (dest / ".cache").symlink_to(REPO / ".cache")


def tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise MutateError(f"{name} is not installed in this environment; run "
                          f"`{sys.executable} -m pip install cosmic-ray==8.7.0` (make mutate does)")
    return str(path)


def load_stages(work: Path):
    """mutation/stages.py of the copy (its commands run there)."""
    sys.path.insert(0, str(work / "mutation"))
    import stages
    return stages


class Baselines:
    """Each distinct stage command, run once on the unmutated copy before a mutant needs it."""

    def __init__(self, stages, names: list[str]):
        self.stages, self.names, self.done = stages, names, {}

    def ensure(self, module: str):
        for name in self.names:
            argv = self.stages.stage_argv(name, module)
            if argv is None or tuple(argv) in self.done:
                continue
            print(f"baseline: {name} for {module} on the unmutated copy ...", flush=True)
            start = time.monotonic()
            ok, tail = self.stages.run_stage(name, argv)
            self.done[tuple(argv)] = round(time.monotonic() - start, 1)
            if not ok:
                raise MutateError(f"the unmutated code fails stage {name} ({' '.join(argv[2:])}), "
                                  f"so no mutant could survive it; fix that first:\n{tail}")


def init_session(work: Path, modules: list[str], stages: str) -> Path:
    cfg, db = work / "cosmic-ray.toml", work / "session.sqlite"
    paths = ", ".join(json.dumps(m) for m in modules)
    cfg.write_text(f"""[cosmic-ray]
module-path = [{paths}]
timeout = {TIMEOUT}
excluded-modules = []
test-command = "{sys.executable} mutation/stages.py {stages}"

[cosmic-ray.distributor]
name = "local"
""")
    p = subprocess.run([tool("cosmic-ray"), "init", str(cfg), str(db)], cwd=work,
                       capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise MutateError(f"cosmic-ray init failed ({p.returncode}): {p.stderr.strip()[-1500:]}")
    return db


GO_STAGES = ("golden", "live", "live-mutants")      # the checks against Go's output


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k/n (a seeded random sample of mutants
    estimates the whole population's kill rate; the interval says how well)."""
    if n == 0:
        return (0.0, 1.0)
    p, d = k / n, 1 + z * z / n
    mid, half = (p + z * z / (2 * n)) / d, z * ((p * (1 - p) + z * z / (4 * n)) / n) ** 0.5 / d
    return (round(max(0.0, mid - half), 3), round(min(1.0, mid + half), 3))


def go_score(counts: Counter, ran: int) -> dict:
    """Killed by a check against Go over all run (equivalent mutants are not known here: the
    note that reviews the survivors takes them out)."""
    k = sum(counts[f"killed by {s}"] for s in GO_STAGES)
    return {"killed_by_go": k, "run": ran, "fraction": round(k / ran, 3) if ran else None,
            "wilson95": wilson(k, ran)}


def describe(item) -> str:
    m = item.mutations[0]
    return f"{m.module_path}:{m.start_pos[0]} {m.operator_name} #{m.occurrence}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", nargs="+", default=["harness/reference"])
    ap.add_argument("--stages", default="golden,unit,live,live-mutants")
    ap.add_argument("--budget", type=float, default=None, help="seconds; no new mutant after that")
    ap.add_argument("--max-mutants", type=int, default=None, help="a seeded random sample")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "artifacts" / "mutation"))
    args = ap.parse_args(argv)
    start = time.monotonic()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    from cosmic_ray.mutating import mutate_and_test
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

    with tempfile.TemporaryDirectory(prefix="layerconf-mutate-") as tmp:
        work = Path(tmp)
        copy_tree(work)
        stages = load_stages(work)
        import annotation_mutants
        try:
            names = stages.parse_stages(args.stages)
        except ValueError as e:
            raise MutateError(str(e)) from None
        baselines = Baselines(stages, names)
        db_path = init_session(work, args.modules, args.stages)
        counts, survivors, ran = Counter(), [], 0
        stage_time, stage_runs, mutants = defaultdict(float), Counter(), []
        generated = 0

        def write_summary():
            summary = {"modules": args.modules, "stages": args.stages, "generated": generated,
                       "run": ran, "outcomes": dict(counts), "survivors": survivors,
                       "stage_seconds": {k: round(v, 1) for k, v in stage_time.items()},
                       "stage_runs": dict(stage_runs), "baseline_seconds": sum(baselines.done.values()),
                       "go_score": go_score(counts, ran),
                       "wall_seconds": round(time.monotonic() - start, 1),
                       "sample": args.max_mutants, "seed": args.seed, "budget": args.budget,
                       "mutants": mutants}
            (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
            return summary

        os.chdir(work)            # mutation specs name modules relative to the copy
        with use_db(str(db_path), WorkDB.Mode.open) as db:
            items = list(db.pending_work_items)
            generated = len(items)
            # Equivalent without a run (mutation/annotation_mutants.py): recorded as skipped,
            # never sampled.
            skipped = [i for i in items if annotation_mutants.in_annotation(i)]
            for item in skipped:
                db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED,
                                                      output="inside a type annotation"))
            counts["equivalent (type annotation, not run)"] = len(skipped)
            skipped_ids = {i.job_id for i in skipped}
            items = [i for i in items if i.job_id not in skipped_ids]
            if args.max_mutants is not None:
                random.Random(args.seed).shuffle(items)
                items = items[:args.max_mutants]
            print(f"{generated} mutants generated, {len(skipped)} inside type annotations "
                  f"(equivalent, not run); running {len(items)}", flush=True)
            for item in items:
                if args.budget is not None and time.monotonic() - start > args.budget:
                    print(f"budget of {args.budget:.0f} s used up", flush=True)
                    break
                module = str(item.mutations[0].module_path)
                baselines.ensure(module)
                t0 = time.monotonic()
                result = mutate_and_test(item.mutations, f"{sys.executable} mutation/stages.py "
                                         f"{args.stages} {module}", TIMEOUT)
                db.set_result(item.job_id, result)
                ran += 1
                for name, secs, status in re.findall(r"^STAGE (\S+) (\S+) (\S+)$",
                                                     result.output or "", re.M):
                    if status != "skipped":
                        stage_time[name] += float(secs)
                        stage_runs[name] += 1
                if result.test_outcome == TestOutcome.KILLED:
                    m = re.search(r"KILLED-BY: (\S+)", result.output or "")
                    outcome = "killed by " + (m.group(1) if m else "timeout")
                elif result.test_outcome == TestOutcome.SURVIVED:
                    outcome = "survived"
                    survivors.append({"mutant": describe(item), "diff": result.diff})
                else:        # incompetent (the mutant does not import), no-test, exception
                    outcome = str((result.test_outcome or result.worker_outcome).value)
                counts[outcome] += 1
                failed = re.findall(r"^FAILED (\S+)", result.output or "", re.M)
                mutants.append({"mutant": describe(item), "outcome": outcome,
                                "seconds": round(time.monotonic() - t0, 1),
                                "failed_test": failed[0] if failed else None})
                print(f"[{ran}/{len(items)}] {describe(item)}: {outcome}", flush=True)
                write_summary()
                shutil.copy2(db_path, out / "session.sqlite")
        os.chdir(REPO)
        shutil.copy2(db_path, out / "session.sqlite")
    summary = write_summary()
    print(f"\n{generated} mutants generated, {ran} run in {summary['wall_seconds']} s: "
          + ", ".join(f"{n} {k}" for k, n in counts.most_common()))
    g = summary["go_score"]
    print(f"killed by a check against Go: {g['killed_by_go']}/{ran} (95 % interval "
          f"{g['wilson95'][0]:.1%}–{g['wilson95'][1]:.1%}, equivalent mutants not taken out)")
    for s in survivors:
        print(f"  survived: {s['mutant']}")
    print(f"details: {out / 'summary.json'}, {out / 'session.sqlite'} (cr-report)")
    return 0


def _terminate(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)     # unwind: the temporary copy is removed
    try:
        sys.exit(main())
    except MutateError as e:
        print(f"mutate: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("mutate: interrupted; the temporary copy was removed", file=sys.stderr)
        sys.exit(130)
