"""The Debian bookworm minbase rootfs, written as layer tars by four tar writers.

debootstrap makes the tree once; GNU tar, bsdtar, Python's tarfile and Go's archive/tar (the
stdlib-only program in gotarwrite/) write it, each also gzip- and zstd-compressed. debootstrap
output is not reproducible (times), so the first build is the corpus until `build --force`; a
writer added later writes the tree unpacked from the corpus' own GNU tar (xattrs, owners,
hardlinks and mtimes kept; Go rounds mtimes to the second by default).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
ROOTFS = f"debian-{SUITE}-minbase"
WRITERS = ("gnutar", "bsdtar", "pytar", "gotar")
COMPRESSIONS = ("", ".gz", ".zst")
NAMES = tuple(f"{ROOTFS}.{w}.tar{c}" for w in WRITERS for c in COMPRESSIONS)
DEBOOTSTRAP_TIMEOUT = 1800
TAR_TIMEOUT = 600
GO_BUILD_TIMEOUT = 300
GOTARWRITE = Path(__file__).resolve().parent / "gotarwrite"


class BuildError(Exception):
    pass


def names_of(writer: str) -> tuple[str, ...]:
    return tuple(f"{ROOTFS}.{writer}.tar{c}" for c in COMPRESSIONS)


def run(argv, timeout, what, cwd=None, env=None):
    try:
        p = subprocess.run(argv, capture_output=True, timeout=timeout, cwd=cwd, env=env)
    except FileNotFoundError:
        raise BuildError(f"{what}: {argv[0]} is not installed (apt-get install "
                         f"{ {'bsdtar': 'libarchive-tools'}.get(argv[0], argv[0]) })") from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"{what}: {argv[0]} did not finish within {timeout} s") from None
    if p.returncode:
        tail = p.stderr.decode(errors="replace").strip().splitlines()[-15:]
        raise BuildError(f"{what}: {' '.join(map(str, argv[:3]))} ... exited with status "
                         f"{p.returncode}:\n" + "\n".join(tail))


def debootstrap(root: Path):
    run(["debootstrap", "--variant=minbase", SUITE, str(root), MIRROR],
        DEBOOTSTRAP_TIMEOUT, "debootstrap")


def unpack(tar: str, root: Path):
    """The tree a GNU tar of the corpus holds, as root wrote it (owners, modes, xattrs)."""
    root.mkdir()
    run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", tar, "-C", str(root)],
        TAR_TIMEOUT, "GNU tar (unpacking the corpus rootfs)")


def gotarwrite(cache: Path) -> Path:
    """The Go writer, built once per source content (stdlib only: offline, no module download)."""
    h = hashlib.sha256()
    for f in sorted(GOTARWRITE.iterdir()):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    exe = cache / "tools" / f"gotarwrite-{h.hexdigest()[:16]}"
    if exe.is_file():
        return exe
    go = shutil.which("go")
    if go is None:
        raise BuildError("the Go toolchain (`go`) is not on PATH; it builds the Go archive/tar "
                         "writer (.ci/bootstrap installs it)")
    exe.parent.mkdir(parents=True, exist_ok=True)
    tmp = exe.with_suffix(f".tmp{os.getpid()}")
    env = dict(os.environ, GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS="-buildvcs=false")
    run([go, "build", "-trimpath", "-o", str(tmp), "."], GO_BUILD_TIMEOUT,
        "go build (harness/corpus/gotarwrite)", cwd=GOTARWRITE, env=env)
    os.replace(tmp, exe)
    return exe


def _pytar(root: Path, out: Path):
    """Python's tarfile (PAX), names sorted, numeric owners only."""
    def numeric(ti: tarfile.TarInfo):
        ti.uname = ti.gname = ""
        return ti
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
        t.add(root, arcname=".", filter=numeric)


def write_tar(writer: str, root: Path, out: Path, cache: Path):
    if writer == "gnutar":
        run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "--sort=name",
             "-C", str(root), "-cf", str(out), "."], TAR_TIMEOUT, "GNU tar")
    elif writer == "bsdtar":
        run(["bsdtar", "--xattrs", "--numeric-owner", "-C", str(root), "-cf", str(out), "."],
            TAR_TIMEOUT, "bsdtar")
    elif writer == "gotar":
        run([str(gotarwrite(cache)), str(root), str(out)], TAR_TIMEOUT, "Go archive/tar")
    else:
        _pytar(root, out)


def compress(src: Path, out: Path, kind: str):
    with open(src, "rb") as f, open(out, "wb") as o:
        if kind == ".gz":      # level 6: gzip(1)'s and Go's default, and 3x faster than 9
            with gzip.GzipFile(fileobj=o, mode="wb", mtime=0, compresslevel=6) as g:
                shutil.copyfileobj(f, g, 1 << 20)
        else:
            import zstandard
            with zstandard.ZstdCompressor(level=3).stream_writer(o, closefd=False) as w:
                shutil.copyfileobj(f, w, 1 << 20)
