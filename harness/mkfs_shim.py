"""A recording `mkfs.erofs` for the oracle: logs what containerd ran and fed, then runs the real one.

Installed by ``install()`` as an executable named ``mkfs.erofs`` in a directory put first on the
oracle's PATH. Each run appends one JSON line to ``$LAYERCONF_MKFS_LOG``:

    {"argv": [...argv[1:]...], "fed": N, "eof": true|false, "returncode": R, "seconds": S,
     "end": wall time}

``fed`` is how many stdin bytes the real mkfs took; ``eof`` says whether containerd's stream
ended before mkfs stopped reading. The shim reads only as fast as mkfs does and stops when mkfs
closes its stdin, so containerd still meets EPIPE as it would without it. Its own code is
stdlib only: it runs as a script, outside the harness package.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

REAL_ENV, LOG_ENV = "LAYERCONF_MKFS_REAL", "LAYERCONF_MKFS_LOG"
CHUNK = 32 << 10


def install(shim_dir: str, log_path: str) -> dict:
    """Write the `mkfs.erofs` wrapper into shim_dir; the environment that puts it first on PATH
    (for the oracle's Popen env). Raises OSError when the real mkfs.erofs is not on PATH."""
    real = shutil.which("mkfs.erofs")
    if real is None:
        raise OSError("mkfs.erofs is not on PATH")
    os.makedirs(shim_dir, exist_ok=True)
    wrapper = os.path.join(shim_dir, "mkfs.erofs")
    with open(wrapper, "w") as f:
        f.write(f"#!/bin/sh\nexec '{sys.executable}' '{os.path.abspath(__file__)}' \"$@\"\n")
    os.chmod(wrapper, os.stat(wrapper).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return {"PATH": shim_dir + os.pathsep + os.environ.get("PATH", ""), REAL_ENV: real,
            LOG_ENV: log_path}


def read_log(log_path: str | None, offset: int = 0) -> tuple[list[dict], int]:
    """The records appended since byte `offset`, and the new offset."""
    if not log_path or not os.path.exists(log_path):
        return [], offset
    with open(log_path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    return [json.loads(x) for x in data[:end].splitlines() if x.strip()], offset + end


def _die_with_parent():
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)      # PR_SET_PDEATHSIG: no orphaned mkfs
    except (OSError, AttributeError):
        pass


def main(argv: list[str]) -> int:
    real, log = os.environ[REAL_ENV], os.environ.get(LOG_ENV)
    env = {k: v for k, v in os.environ.items() if k not in (REAL_ENV, LOG_ENV)}
    # argv[0] as containerd gives it (exec.Command("mkfs.erofs")): mkfs quotes it in its errors.
    started = time.monotonic()
    proc = subprocess.Popen(["mkfs.erofs", *argv], executable=real, stdin=subprocess.PIPE,
                            env=env, preexec_fn=_die_with_parent)
    fed, eof = 0, False
    src, dst = sys.stdin.buffer.raw.fileno(), proc.stdin.fileno()
    try:
        while True:
            data = os.read(src, CHUNK)
            if not data:
                eof = True
                break
            view = memoryview(data)
            while view:
                n = os.write(dst, view)
                fed += n
                view = view[n:]
    except BrokenPipeError:
        pass                  # mkfs stopped reading: stop reading too, so the caller sees EPIPE
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass
    rc = proc.wait()
    if log:
        line = json.dumps({"argv": argv, "fed": fed, "eof": eof, "returncode": rc,
                           "seconds": round(time.monotonic() - started, 4),
                           "end": time.time()}) + "\n"
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    if rc < 0:                # die of the same signal, so Go prints "signal: …" as without us
        signal.signal(-rc, signal.SIG_DFL)
        os.kill(os.getpid(), -rc)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
