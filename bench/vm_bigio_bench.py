#!/usr/bin/env python3
"""What big inputs cost in a TCG guest: the primitives of a 200 MB Apply, host vs guest (on demand).

    python3 bench/vm_bigio_bench.py                         # every step, kernel 6.12
    python3 bench/vm_bigio_bench.py --cpu max --steps memcpy,mkfs   # another -cpu, some steps

Each step runs once on the host (CPU seconds of the command and its children) and once in a guest
(qemu's CPU seconds during the `run` op: the guest kernel, 9p and the block device included),
on the real-world corpus (`layerconf corpus build`): the 201 MiB rootfs tar and its 88 MiB gzip
blob. CPU seconds, not wall time: on a machine shared with other work a TCG guest's wall time is
mostly waiting for a core. The guest is one of 3 GiB, as VMBackend gives big inputs; `--cpu`
replaces qemu's -cpu under TCG (default: harness/backends/vm.py TCG_CPU).
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import corpus  # noqa: E402
from harness.backends import vm as vmb  # noqa: E402

TAR = "debian-bookworm-minbase.pytar.tar"
GZ = "debian-bookworm-minbase.gnutar.tar.gz"
PY_SHA = ("import hashlib,sys;h=hashlib.sha256();f=open(sys.argv[1],'rb')\n"
          "while (d:=f.read(1<<20)): h.update(d)")
PY_ZLIB = ("import zlib,sys;d=zlib.decompressobj(31);f=open(sys.argv[1],'rb')\n"
           "while (x:=f.read(1<<20)): d.decompress(x)")


def steps(tar: str, gz: str, scratch: str) -> dict[str, str]:
    """name -> shell command; `scratch` is a folder on a local fs (the guest's ext4 disk)."""
    q = lambda s: "'" + s.replace("'", "'\\''") + "'"  # noqa: E731
    t = f"{scratch}/t.tar"
    return {
        "memcpy": "python3 -c 'b=bytearray(200<<20)\nfor _ in range(4): c=bytes(b)'",
        "read": f"cat {tar} >/dev/null",
        "copy": f"cp {tar} {t} && sync",
        "sha256sum": f"sha256sum {t} >/dev/null",
        "hashlib": f"python3 -c {q(PY_SHA)} {t}",
        "zcat": f"zcat {gz} >/dev/null",
        "zlib": f"python3 -c {q(PY_ZLIB)} {gz}",
        "mkfs": f"mkfs.erofs -b4096 -T0 --mkfs-time --tar=f {scratch}/l.erofs {t} >/dev/null && sync",
    }


WHAT = {"memcpy": "Python: 4 copies of 200 MB", "read": "cat the tar (host: page cache; guest: 9p)",
        "copy": "cp the tar to the scratch fs, sync", "sha256sum": "sha256sum of the tar",
        "hashlib": "Python hashlib sha256 of the tar", "zcat": "zcat the gzip blob",
        "zlib": "Python zlib: inflate the gzip blob", "mkfs": "mkfs.erofs --tar=f of the tar, sync"}


def host_cpu(cmd: str, timeout: float) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["sh", "-c", cmd], check=True, timeout=timeout, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", default="6.12")
    ap.add_argument("--cpu", default=None, help=f"qemu -cpu under TCG (default {vmb.TCG_CPU})")
    ap.add_argument("--steps", default=",".join(WHAT), help="comma list of " + ", ".join(WHAT))
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()
    if not corpus.built():
        print("the corpus is not built: run `layerconf corpus build`", file=sys.stderr)
        return 2
    names = [s for s in args.steps.split(",") if s]
    unknown = set(names) - set(WHAT)
    if unknown:
        print(f"unknown steps {', '.join(sorted(unknown))} (known: {', '.join(WHAT)})", file=sys.stderr)
        return 2
    if args.cpu:
        vmb.TCG_CPU = args.cpu
    tar, gz = corpus.path(TAR), corpus.path(GZ)
    rows = {n: [None, None] for n in names}
    tmp = tempfile.mkdtemp(prefix="bigio-")
    try:
        host = steps(tar, gz, tmp)
        for n in names:
            rows[n][0] = host_cpu(host[n], args.timeout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with vmb.VM(args.kernel, memory=vmb.BIG_GUEST_MEMORY) as vm:
        guest = steps(tar, gz, "/run/layerconf")
        for n in names:
            c0 = vm._qemu_cpu_seconds()
            r = vm.run(guest[n], timeout=args.timeout)
            if r["rc"]:
                print(f"{n}: exited {r['rc']} in the guest: {r['stderr'][-300:]}", file=sys.stderr)
                return 1
            rows[n][1] = vm._qemu_cpu_seconds() - c0
        cpu = vmb.TCG_CPU if vm.accel == "tcg" else "host"
    print(f"# kernel {args.kernel}, {vm.accel.upper()} -cpu {cpu}, guest {vmb.BIG_GUEST_MEMORY}; "
          f"load {os.getloadavg()[0]:.1f} at the end; {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'step':10} {'host CPU':>9} {'guest CPU':>10} {'ratio':>6}  what")
    for n, (h, g) in rows.items():
        ratio = f"{g / h:5.0f}x" if h and h > 0.05 else "     -"
        print(f"{n:10} {h:8.2f}s {g:9.2f}s {ratio}  {WHAT[n]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
