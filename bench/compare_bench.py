"""Benchmark: reference Compare vs containerd's Go erofs differ on the same generated state.

    .venv/bin/python bench/compare_bench.py [--files 20000] [--mib 1024] [--media-type ...]

Builds one state with containerd's snapshotter (a lower layer, then an upper with --files new or
modified files totalling --mib MiB, through the overlay), then times Go's Compare (in the oracle)
and the reference's (in a fresh Python process, so its peak memory is its own), same state, same
run. Prints wall time, peak RSS and the time ratio. Not a test: run on demand. Needs root.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness import runner, state  # noqa: E402
from harness.scenario.model import OCI_TAR, Entry, Op, Scenario  # noqa: E402

REF_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from harness.reference import compare, profiles
t = time.monotonic()
out = compare.compare({lower!r}, {upper!r}, media_type={mt!r}, profile=profiles.containerd_profile({ver!r}))
dt = time.monotonic() - t
print(json.dumps({{"seconds": dt, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   "digest": out.descriptor["digest"], "uncompressed": out.labels.get("containerd.io/uncompressed")}}))
"""


def synthetic(files: int, mib: int, seed: int = 1) -> Scenario:
    rnd = random.Random(seed)
    per = max(1, mib * 2**20 // files)
    lower = tuple(Entry(path=f"d{i % 50:02d}/old{i}".encode(), content=b"lower\n", mtime_ns=1_700_000_000 * 10**9)
                  for i in range(200))
    block = rnd.randbytes(1 << 20)
    ops = []
    for i in range(files):
        off = (i * 7919) % (len(block) - min(per, len(block)) + 1)
        data = (block[off:] + block)[:per] if per <= len(block) else block * (per // len(block) + 1)
        ops.append(Op(op="write", path=f"d{i % 50:02d}/s{i % 7}/f{i:06d}".encode(), content=data[:per]))
    ops += [Op(op="rm", path=f"d{i % 50:02d}/old{i}".encode()) for i in range(0, 200, 4)]
    return Scenario(name="bench", path="<generated>", description="benchmark tree",
                    lowers=(lower,), upper=tuple(ops), media_types=(OCI_TAR,))


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--media-type", default=OCI_TAR)
    ap.add_argument("--containerd", default="")
    ap.add_argument("--workdir", default="/var/tmp")
    args = ap.parse_args()
    scenario = synthetic(args.files, args.mib)
    with runner.Session(runner.RunOptions(containerd=args.containerd, workdir=args.workdir)) as session:
        oracle = session.oracle()
        t = time.monotonic()
        with state.build(scenario, oracle, session.base) as st:
            build_s = time.monotonic() - t
            t = time.monotonic()
            go = oracle.compare("erofs", st.lower_key, st.upper_key, args.media_type)
            go_s = time.monotonic() - t
            go_rss = vm_hwm_kib(oracle.proc.pid)
            child = REF_CHILD.format(repo=str(REPO), lower=st.lower_root, upper=st.upper_dir,
                                     mt=args.media_type, ver=session.options.containerd)
            proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
            if proc.returncode:
                print(proc.stderr, file=sys.stderr)
                return 1
            ref = json.loads(proc.stdout)
    same = (go["descriptor"]["digest"] == ref["digest"]) if args.media_type == OCI_TAR else \
        (go["labels"].get("containerd.io/uncompressed") == ref["uncompressed"])
    print(f"tree: {args.files} files, {args.mib} MiB, media type {args.media_type} "
          f"(state built in {build_s:.1f} s)")
    print(f"{'producer':22} {'seconds':>8} {'peak RSS MiB':>13}")
    print(f"{'go-erofs (oracle)':22} {go_s:8.2f} {go_rss / 1024:13.0f}")
    print(f"{'ref@containerd':22} {ref['seconds']:8.2f} {ref['maxrss_kib'] / 1024:13.0f}")
    print(f"ratio reference/Go: {ref['seconds'] / go_s:.2f}x   identical tar: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
