"""Benchmark: the go-erofs writer vs mkfs.erofs on the same layer tar.

    .venv/bin/python bench/writer_bench.py [--files 20000] [--mib 256] [--runs 3] [--tar PATH]

Writes one layer tar (--files regular files totalling --mib MiB in 100 directories, random
contents, seeded; or --tar PATH), then converts it with `layerconf-goerofs convert` (go-erofs,
oracle/goerofs/) and with `mkfs.erofs --tar=f --aufs --quiet -Enoinline_data` (the argv
containerd's erofs differ runs, fed on stdin as containerd feeds it), alternately, --runs times
each. Prints the median wall time, the peak RSS of each writer process, the image sizes and the
ratio. Not a test: run on demand; no root needed.
"""
from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness import goerofs  # noqa: E402


def layer(path: str, files: int, mib: int, seed: int = 1) -> None:
    rnd = random.Random(seed)
    per = max(1, mib * 2**20 // max(files, 1))
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for d in range(100):
            ti = tarfile.TarInfo(f"d{d:02d}")
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1700000000
            t.addfile(ti)
        for i in range(files):
            data = rnd.randbytes(per)
            ti = tarfile.TarInfo(f"d{i % 100:02d}/f{i:06d}")
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 1700000000
            t.addfile(ti, io.BytesIO(data))


def timed(argv: list[str], stdin_path: str | None, timeout: float) -> tuple[float, int]:
    """(seconds, peak RSS KiB) of one process."""
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    try:
        t = time.monotonic()
        p = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _, status, usage = os.wait4(p.pid, 0)
        except BaseException:
            p.kill()
            p.wait()
            raise
        dt = time.monotonic() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        if dt > timeout or p.returncode != 0:
            raise SystemExit(f"{argv[0]} failed (exit {p.returncode}): {p.stderr.read().decode()[-500:]}")
        return dt, usage.ru_maxrss
    finally:
        if stdin_path:
            stdin.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tar", help="an existing uncompressed layer tar instead of a generated one")
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args(argv)
    binary = str(goerofs.ensure_built())
    with tempfile.TemporaryDirectory(prefix="writer-bench-") as d:
        tar = args.tar or os.path.join(d, "layer.tar")
        if not args.tar:
            layer(tar, args.files, args.mib)
        go_img, mkfs_img = os.path.join(d, "go.erofs"), os.path.join(d, "mkfs.erofs")
        results: dict[str, list] = {"go-erofs": [], "mkfs.erofs": []}
        for _ in range(args.runs):
            for name, cmd, feed in (
                    ("go-erofs", [binary, "convert", "-o", go_img, tar], None),
                    ("mkfs.erofs", ["mkfs.erofs", "--tar=f", "--aufs", "--quiet",
                                    "-Enoinline_data", mkfs_img], tar)):
                results[name].append(timed(cmd, feed, args.timeout))
        print(f"layer: {os.path.getsize(tar)} bytes "
              f"({args.tar or f'{args.files} files, {args.mib} MiB'}), {args.runs} runs each")
        med = {}
        for name, img in (("go-erofs", go_img), ("mkfs.erofs", mkfs_img)):
            med[name] = statistics.median(s for s, _ in results[name])
            rss = max(r for _, r in results[name])
            print(f"{name:11} median {med[name]:7.2f} s  peak RSS {rss / 1024:7.1f} MiB  "
                  f"image {os.path.getsize(img)} bytes")
        print(f"ratio go-erofs / mkfs.erofs: {med['go-erofs'] / med['mkfs.erofs']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
