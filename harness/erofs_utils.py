"""The pinned erofs-utils versions (erofs-utils/versions.txt) and choosing one for a run.

`--mkfs VERSION` puts that version's build (.cache/erofs-utils/VERSION/bin, made by
erofs-utils/build.sh) first on PATH for the whole run, so containerd's erofs differ (the oracle
runs `mkfs.erofs` from PATH, as containerd does), the reference Apply and the capability probes
all run the same mkfs.erofs. The default version is the system's (.ci/bootstrap installs it).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VERSIONS_FILE = REPO / "erofs-utils" / "versions.txt"


class ErofsUtilsError(Exception):
    """A version that is not pinned, or whose build failed: a set-up error."""


def versions() -> list[str]:
    """Pinned versions, the default first."""
    rows = [line.split("#", 1)[0].split() for line in VERSIONS_FILE.read_text().splitlines()]
    rows = [r for r in rows if r]
    return [r[0] for r in rows if "default" in r[2:]] + [r[0] for r in rows if "default" not in r[2:]]


def bin_dir(version: str) -> Path:
    return REPO / ".cache" / "erofs-utils" / version / "bin"


def ensure_built(version: str, timeout: float = 1200) -> Path:
    if version not in versions():
        raise ErofsUtilsError(f"erofs-utils {version} is not pinned (erofs-utils/versions.txt "
                              f"pins {', '.join(versions())})")
    try:
        p = subprocess.run(["bash", str(REPO / "erofs-utils" / "build.sh"), version],
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ErofsUtilsError(f"building erofs-utils {version} took over {timeout:g} s") from None
    if p.returncode != 0:
        raise ErofsUtilsError(p.stderr.strip().splitlines()[-1] if p.stderr.strip()
                              else f"erofs-utils/build.sh {version} exited {p.returncode}")
    return Path(p.stdout.strip())


def use(version: str) -> None:
    """Run every later mkfs.erofs of this process from the pinned build of `version` ("" or the
    default: the system's)."""
    pinned = {str(bin_dir(v)) for v in versions()}
    parts = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p not in pinned]
    if version and version != versions()[0]:
        parts.insert(0, str(ensure_built(version)))
    os.environ["PATH"] = os.pathsep.join(parts)
    from .mkfs_shim import forward_in_process
    forward_in_process()       # in a guest: the shim stays first, in front of this version
