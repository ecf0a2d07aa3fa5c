"""The recording `mkfs.erofs` for the oracle: installing it, and reading what it recorded.

The shim itself is compiled (oracle/mkfsshim/, built and cached in .cache/mkfsshim/ by its
build.sh, which .ci/bootstrap runs): under the VM's software emulation a Python process per mkfs
run, piping every byte of the layer through Python, cost tens of seconds per scenario.
``install()`` links it as an executable named ``mkfs.erofs`` in a directory put first on the
oracle's PATH. Each run appends one JSON line to ``$LAYERCONF_MKFS_LOG``:

    {"argv": [...argv[1:]...], "fed": N, "eof": true|false, "returncode": R, "seconds": S,
     "end": wall time}

``fed`` is how many stdin bytes the real mkfs took; ``eof`` says whether containerd's stream
ended before mkfs stopped reading; ``returncode`` is negative for a signal. The shim reads only
as fast as mkfs does and stops when mkfs closes its stdin, so containerd still meets EPIPE as
it would without it; mkfs dies with the shim, and the shim dies of mkfs's signal.

In a guest of the VM backend, ``$LAYERCONF_MKFS_HOST`` names virtio-serial ports to the host,
and the shim sends a tar-mode run reading stdin there, to run natively on the host
(harness/backends/mkfs_forward.py); the log line is the same. ``forward_in_process()`` puts
the shim, without a log, first on the guest runner's own PATH, so the reference's mkfs runs take
the same way as containerd's.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .oracle import OracleError, build_tool

REAL_ENV, LOG_ENV, HOST_ENV = "LAYERCONF_MKFS_REAL", "LAYERCONF_MKFS_LOG", "LAYERCONF_MKFS_HOST"
# stdin a guest may send before the host's mkfs took any (harness/backends/mkfs_forward.py)
CREDIT = 256 << 10
REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "oracle" / "mkfsshim" / "build.sh"
BINARY = REPO / ".cache" / "mkfsshim" / "layerconf-mkfs-shim"


class ShimError(OracleError):
    """The recording shim could not be built or is missing: an engine error, like an oracle
    that cannot be built."""


def ensure_built(timeout: float = 300) -> Path:
    """Build the shim when its inputs changed (a few hundred ms when they did not). Where it
    cannot be built (no Go on PATH, or .cache not writable by this user) the one bootstrap built
    is used as it is; ShimError when there is none, or the build fails."""
    if shutil.which("go") is None or not _writable(BINARY.parent):
        if os.access(BINARY, os.X_OK):
            return BINARY
        why = "Go is not on PATH" if shutil.which("go") is None else \
            f"{BINARY.parent} is not writable by this user"
        raise ShimError(f"the recording mkfs.erofs {BINARY} is not built, and {why}: run "
                        "`bash oracle/mkfsshim/build.sh` (make bootstrap does) and retry")
    return build_tool(BUILD, "the recording mkfs.erofs", ShimError, timeout)


def _writable(d: Path) -> bool:
    """Whether this user can create files in `d` (or in the nearest folder above it that exists)."""
    while not d.exists() and d != d.parent:
        d = d.parent
    return os.access(d, os.W_OK | os.X_OK)


def install(shim_dir: str, log_path: str) -> dict:
    """Link the shim as `mkfs.erofs` into shim_dir; the environment that puts it first on PATH
    (for the oracle's Popen env). OSError when the real mkfs.erofs is not on PATH; ShimError
    when the shim is not built (the guest never builds it: the host does, before the run)."""
    real = shutil.which("mkfs.erofs")
    if real is not None and os.path.realpath(real) == os.path.realpath(BINARY):
        real = os.environ.get(REAL_ENV)      # forward_in_process() put the shim first
    if real is None:
        raise OSError("mkfs.erofs is not on PATH")
    if not os.access(BINARY, os.X_OK):
        raise ShimError(f"the recording mkfs.erofs {BINARY} is not built: run `bash "
                        "oracle/mkfsshim/build.sh` (make bootstrap does) and retry")
    _link_shim(shim_dir)
    return {"PATH": shim_dir + os.pathsep + os.environ.get("PATH", ""), REAL_ENV: real,
            LOG_ENV: log_path}


def _link_shim(shim_dir: str) -> None:
    """shim_dir/mkfs.erofs -> the shim (left as it is when it already points there)."""
    os.makedirs(shim_dir, exist_ok=True)
    link = os.path.join(shim_dir, "mkfs.erofs")
    if os.path.islink(link) and os.readlink(link) == str(BINARY):
        return
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(BINARY, link)


def forward_in_process() -> None:
    """With mkfs ports to the host ($LAYERCONF_MKFS_HOST, set by the guest's agent), put the shim
    first on this process's PATH as mkfs.erofs, without a log, the real one being what PATH
    named before; no-op elsewhere. Run again after PATH changed (erofs_utils.use)."""
    if not os.environ.get(HOST_ENV) or not os.access(BINARY, os.X_OK):
        return
    shim_dir = os.path.join(tempfile.gettempdir(), f"layerconf-mkfs-forward-{os.getuid()}")
    parts = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != shim_dir]
    real = shutil.which("mkfs.erofs", path=os.pathsep.join(parts))
    if real is None:
        return
    _link_shim(shim_dir)
    os.environ[REAL_ENV] = real
    os.environ["PATH"] = os.pathsep.join([shim_dir] + parts)


def read_log(log_path: str | None, offset: int = 0) -> tuple[list[dict], int]:
    """The records appended since byte `offset`, and the new offset."""
    if not log_path or not os.path.exists(log_path):
        return [], offset
    with open(log_path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    return [json.loads(x) for x in data[:end].splitlines() if x.strip()], offset + end
