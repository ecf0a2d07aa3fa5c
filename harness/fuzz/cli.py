"""`layerconf fuzz` arguments and entry (kept here so harness/cli.py only registers it)."""
from __future__ import annotations

import argparse
import os


def _positive(text: str) -> float:
    v = float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return v


def add_arguments(p: argparse.ArgumentParser):
    p.add_argument("--seconds", type=_positive, default=60.0,
                   help="time budget, split evenly between targets (default 60)")
    p.add_argument("--seed", type=int, default=0, help="seed; the same seed and --max-examples "
                   "repeat a run exactly (default 0)")
    p.add_argument("--target", choices=("compare", "apply", "both"), default="both")
    p.add_argument("--out", default="fuzz-findings",
                   help="folder for minimal failing scenarios (default fuzz-findings/)")
    p.add_argument("--max-examples", type=int, default=100_000,
                   help="generated cases at most, split between targets (default 100000)")
    p.add_argument("--shrink-seconds", type=_positive, default=180.0,
                   help="time a shrink may take past --seconds (default 180)")
    p.add_argument("--containerd", default="", help="containerd version (default: oracle/versions.txt)")


def run_fuzz(args) -> int:
    """Exit 0: nothing new; 1: new failures written to --out; 2: cannot run here."""
    from .. import capabilities, runner
    from .engine import FuzzOptions, Fuzzer, summary
    if os.geteuid() != 0:
        print("layerconf fuzz: needs root (it runs scenarios in host mode: mounts, device nodes)")
        return 2
    missing = capabilities.missing(())
    if missing:
        print(f"layerconf fuzz: cannot run here: missing {', '.join(missing)}")
        return 2
    targets = ("compare", "apply") if args.target == "both" else (args.target,)
    opts = FuzzOptions(seconds=args.seconds, seed=args.seed, targets=targets, out=args.out,
                       max_examples=args.max_examples, shrink_seconds=args.shrink_seconds)
    with runner.Session(runner.RunOptions(containerd=args.containerd)) as session:
        fuzzer = Fuzzer(opts, session, log=print)
        stats = fuzzer.run()
    print("\n".join(summary(stats)))
    if fuzzer.restarts:
        print(f"the Go oracle died and was restarted {fuzzer.restarts} time(s) (see above)")
    new = sum(len(s.findings) for s in stats.values())
    print(f"{new} new finding(s)" + (f" in {args.out}/" if new else ""))
    return 1 if new else 0
