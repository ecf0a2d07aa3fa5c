"""The go-erofs writer (oracle/goerofs/): layer tars to EROFS images with github.com/erofs/go-erofs,
the pure-Go writer containerd is moving to, as a second writer beside mkfs.erofs.

One process per conversion, each with a deadline; the binary is built (and cached by its inputs'
hash) by oracle/goerofs/build.sh, which .ci/bootstrap runs.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "oracle" / "goerofs" / "build.sh"
BINARY = REPO / ".cache" / "goerofs" / "layerconf-goerofs"
WRITERS = ("mkfs", "go-erofs")        # --writer values ("all" = both)


class GoErofsError(Exception):
    """The writer could not run (missing binary, failed build, deadline): an engine error."""


class Refused(Exception):
    """go-erofs (or the tar reading before it) refused the layer; str() is its message."""


def writers(value: str) -> tuple[str, ...]:
    """A --writer value -> the writers whose images are checked."""
    if value in ("", "all"):
        return WRITERS if value == "all" else ("mkfs",)
    if value not in WRITERS:
        raise ValueError(f"--writer {value!r}: expected one of {', '.join(WRITERS)} or all")
    return (value,)


def ensure_built(timeout: float = 600) -> Path:
    from .oracle import build_tool
    return build_tool(BUILD, "the go-erofs writer", GoErofsError, timeout)


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    if not BINARY.exists():
        if os.environ.get("LAYERCONF_IN_VM"):
            # the guest runs the host's build (over 9p, read-only): a Go build under TCG would
            # take minutes and vanish with the guest
            raise GoErofsError(f"{BINARY} is not built on the host, and the "
                               "guest never builds it: run `bash oracle/goerofs/build.sh` "
                               "(make bootstrap does)")
        ensure_built()
    try:
        return subprocess.run([str(BINARY)] + argv, capture_output=True, timeout=timeout,
                              encoding="utf-8", errors="backslashreplace")   # tar names: any bytes
    except subprocess.TimeoutExpired:
        raise GoErofsError(f"layerconf-goerofs {argv[0]} did not finish within {timeout:g} s "
                           "(killed)") from None


def version(timeout: float = 30) -> str:
    """The go-erofs module version the writer links, e.g. "v0.3.1"."""
    p = _run(["version"], timeout)
    try:
        return json.loads(p.stdout)["go_erofs"]
    except (ValueError, KeyError):
        raise GoErofsError(f"layerconf-goerofs version said {p.stdout!r} {p.stderr!r}") from None


def convert(tars: list[str], out: str, merge: bool = False, timeout: float = 300) -> str:
    """Write the EROFS image of the layer tar (or, merged, of the stack bottom first) to `out`.
    Refused when go-erofs or the tar reading fails."""
    p = _run(["convert", "-o", out] + (["--merge"] if merge else []) + list(tars), timeout)
    if p.returncode == 2:
        raise GoErofsError(f"layerconf-goerofs usage error: {p.stderr.strip()}")
    if p.returncode != 0:
        raise Refused(p.stderr.strip() or f"exit {p.returncode}")
    if not os.path.exists(out):
        raise GoErofsError(f"layerconf-goerofs exited 0 but wrote no {out}")
    return out
