"""Benchmark: the Debian minbase rootfs of the corpus through Compare and Apply, Go vs reference.

    .venv/bin/layerconf corpus build                 # once (root, the Debian mirror)
    .venv/bin/python bench/realworld_bench.py [--blob debian-bookworm-minbase.gnutar.tar.gz]

Compare: the rootfs tar is unpacked by containerd's applier into the upper of an empty first
layer, then containerd's erofs differ (in the oracle) and the reference (in a fresh Python
process) diff it. Apply: the corpus blob through containerd's erofs Apply (a fresh oracle) and
reference apply_file (a fresh Python process). Same run, same machine; wall time and peak RSS
(VmHWM: the oracle's from the Compare request on, for Apply its whole life; the reference's is
its whole process, interpreter and imports included; mkfs.erofs children not counted on either
side).
`agree`: Compare gave the same uncompressed tar (the diffID), Apply the same descriptor.
Not a test: run on demand. Needs root.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness import corpus, runner, state  # noqa: E402
from harness.scenario.model import OCI_TAR, Op, Scenario  # noqa: E402

CHILD = """
import json, sys, time
sys.path.insert(0, {repo!r})
from harness.reference import compare, profiles
from harness.reference.apply import apply_file
profile = profiles.containerd_profile({ver!r})
t = time.monotonic()
if {kind!r} == "compare":
    out = compare.compare({a!r}, {b!r}, media_type={mt!r}, profile=profile)
    result = {{"diff_id": out.labels.get("containerd.io/uncompressed") or out.descriptor["digest"]}}
else:
    out = apply_file({a!r}, json.loads({desc!r}), {b!r}, profile, {mkfs!r})
    result = {{"digest": out.descriptor and out.descriptor["digest"], "error": out.error}}
result["seconds"] = time.monotonic() - t
result["hwm_kib"] = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps(result))
"""


def reset_hwm(pid: int) -> None:
    """Start the peak RSS afresh (Linux: 5 > clear_refs), so the oracle's figure for Compare
    leaves out the rootfs unpack that built the state before it."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


# As the corpus Apply scenarios: a reproducible image, so the two digests can be compared.
MKFS_OPTIONS = ("-T0", "--mkfs-time")


def child(**kw) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO), mkfs=MKFS_OPTIONS, **kw)],
                       capture_output=True, text=True, timeout=3600)
    if p.returncode:
        raise SystemExit(p.stderr)
    return json.loads(p.stdout)


def tar_stats(path: str) -> tuple[int, int]:
    entries = size = 0
    with tarfile.open(path) as t:
        for m in t:
            entries += 1
            size += m.size if m.isfile() else 0
    return entries, size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blob", default=f"{corpus.ROOTFS}.gnutar.tar.gz", choices=corpus.NAMES,
                    help="the corpus file applied (Compare always uses the plain GNU tar)")
    ap.add_argument("--containerd", default="")
    ap.add_argument("--workdir", default="/var/tmp")
    args = ap.parse_args()
    if not corpus.built():
        print("the corpus is not built: run `layerconf corpus build`", file=sys.stderr)
        return 2
    rootfs = corpus.path(f"{corpus.ROOTFS}.gnutar.tar")
    blob = corpus.path(args.blob)
    entries, size = tar_stats(rootfs)
    rows = []
    options = runner.RunOptions(containerd=args.containerd, workdir=args.workdir)
    scenario = Scenario(name="bench", path="<generated>", description="rootfs as one layer",
                        upper=(Op(op="apply", source=rootfs),), media_types=(OCI_TAR,))
    with runner.Session(options) as session:
        oracle = session.oracle()
        with state.build(scenario, oracle, session.base) as st:
            for mt in (OCI_TAR, OCI_TAR + "+gzip"):
                reset_hwm(oracle.proc.pid)
                t = time.monotonic()
                go = oracle.compare("erofs", st.lower_key, st.upper_key, mt, None)
                go_s = time.monotonic() - t
                go_rss = hwm_kib(oracle.proc.pid)
                ref = child(kind="compare", a=st.lower_root, b=st.upper_dir, mt=mt,
                            ver=session.options.containerd, desc="")
                go_diff_id = (go.get("labels") or {}).get("containerd.io/uncompressed") \
                    or go["descriptor"]["digest"]
                rows.append((f"Compare ({mt.rsplit('.', 1)[-1]})", go_s, go_rss, ref["seconds"],
                             ref["hwm_kib"], go_diff_id == ref["diff_id"]))
    with runner.Session(options) as session:
        from harness.applycheck import _descriptor, go_apply
        oracle = session.oracle(MKFS_OPTIONS)
        desc = _descriptor(Path(blob).read_bytes(), corpus_media_type(args.blob), ())
        t = time.monotonic()
        gd, _, gerr, _ = go_apply(oracle, blob, desc)
        go_s = time.monotonic() - t
        go_rss = hwm_kib(oracle.proc.pid)
        out = tempfile.mkdtemp(prefix="ref-apply-", dir=args.workdir)
        try:
            ref = child(kind="apply", a=blob, b=out, mt="", ver=session.options.containerd,
                        desc=json.dumps(desc))
        finally:
            shutil.rmtree(out, ignore_errors=True)
        rows.append((f"Apply ({args.blob.split('.', 1)[1]})", go_s, go_rss, ref["seconds"],
                     ref["hwm_kib"], (gd or {}).get("digest") == ref["digest"] and not gerr))
    print(f"rootfs: {corpus.ROOTFS}: {entries} entries, {size / 2**20:.1f} MiB of file data, "
          f"tar {os.path.getsize(rootfs) / 2**20:.1f} MiB, blob {args.blob} "
          f"{os.path.getsize(blob) / 2**20:.1f} MiB")
    print(f"{'operation':22} {'Go s':>7} {'Go MiB':>7} {'ref s':>7} {'ref MiB':>8}  agree")
    for name, gs, gm, rs, rm, same in rows:
        print(f"{name:22} {gs:7.2f} {gm / 1024:7.0f} {rs:7.2f} {rm / 1024:8.0f}  {same}")
    return 0


def corpus_media_type(name: str) -> str:
    return OCI_TAR + {"gz": "+gzip", "zst": "+zstd"}.get(name.rsplit(".", 1)[-1], "")


if __name__ == "__main__":
    sys.exit(main())
