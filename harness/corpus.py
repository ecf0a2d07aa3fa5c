"""The real-world corpus: built on demand, cached by content hash under .cache/corpus/.

    layerconf corpus build     # root + the Debian mirror (capability debian-mirror); minutes
    layerconf corpus list      # names, sizes, digests

The scenarios that use it build it when first run under pytest (`ensure`, so `make test` runs
them where the mirror answers, and skips them with the reason where it does not).

A Debian bookworm minbase rootfs (`debootstrap --variant=minbase`) written as a layer tar by GNU
tar, bsdtar and Python's tarfile, each also gzip- and zstd-compressed. Files are kept as
`blobs/sha256/<hex>`; `index.json` maps each name to its digest. debootstrap output is not
reproducible (times), so the first build is the corpus until `build --force`. Scenarios name
the files as `{corpus: NAME}` and require the `corpus` capability (nothing large is committed).
"""
from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "corpus"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
ROOTFS = f"debian-{SUITE}-minbase"
WRITERS = ("gnutar", "bsdtar", "pytar")
COMPRESSIONS = ("", ".gz", ".zst")
NAMES = tuple(f"{ROOTFS}.{w}.tar{c}" for w in WRITERS for c in COMPRESSIONS)
DEBOOTSTRAP_TIMEOUT = 1800
TAR_TIMEOUT = 600


class CorpusError(Exception):
    pass


def _index() -> dict:
    try:
        return json.loads((CACHE / "index.json").read_text())
    except (OSError, ValueError):
        return {}


def path(name: str) -> str:
    """Where the named file is (or would be, once built: then it does not exist)."""
    digest = _index().get(name)
    if not digest:
        return str(CACHE / "missing" / name)
    return str(CACHE / "blobs" / "sha256" / digest)


def built() -> bool:
    index = _index()
    return all(n in index and (CACHE / "blobs" / "sha256" / index[n]).is_file() for n in NAMES)


def mirror_reachable(timeout: float = 5.0) -> bool:
    """The Debian mirror answers (a HEAD of the suite's Release file, with a deadline)."""
    req = urllib.request.Request(f"{MIRROR}/dists/{SUITE}/Release", method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False


def _store(tmp: Path, log) -> str:
    h = hashlib.sha256()
    with open(tmp, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    dest = CACHE / "blobs" / "sha256" / digest
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)
    return digest


def _run(argv, timeout, what):
    try:
        p = subprocess.run(argv, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise CorpusError(f"{what}: {argv[0]} is not installed (apt-get install "
                          f"{ {'bsdtar': 'libarchive-tools'}.get(argv[0], argv[0]) })") from None
    except subprocess.TimeoutExpired:
        raise CorpusError(f"{what}: {argv[0]} did not finish within {timeout} s") from None
    if p.returncode:
        tail = p.stderr.decode(errors="replace").strip().splitlines()[-15:]
        raise CorpusError(f"{what}: {' '.join(map(str, argv[:3]))} ... exited with status "
                          f"{p.returncode}:\n" + "\n".join(tail))


def _pytar(root: Path, out: Path):
    """Python's tarfile (PAX), names sorted, numeric owners only."""
    def numeric(ti: tarfile.TarInfo):
        ti.uname = ti.gname = ""
        return ti
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
        t.add(root, arcname=".", filter=numeric)


def _write_tar(writer: str, root: Path, out: Path):
    if writer == "gnutar":
        _run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "--sort=name",
              "-C", str(root), "-cf", str(out), "."], TAR_TIMEOUT, "GNU tar")
    elif writer == "bsdtar":
        _run(["bsdtar", "--xattrs", "--numeric-owner", "-C", str(root), "-cf", str(out), "."],
             TAR_TIMEOUT, "bsdtar")
    else:
        _pytar(root, out)


def _compress(src: Path, out: Path, kind: str):
    with open(src, "rb") as f, open(out, "wb") as o:
        if kind == ".gz":      # level 6: gzip(1)'s and Go's default, and 3x faster than 9
            with gzip.GzipFile(fileobj=o, mode="wb", mtime=0, compresslevel=6) as g:
                shutil.copyfileobj(f, g, 1 << 20)
        else:
            import zstandard
            with zstandard.ZstdCompressor(level=3).stream_writer(o, closefd=False) as w:
                shutil.copyfileobj(f, w, 1 << 20)


def build(force: bool = False, log=print) -> dict:
    """Build whatever is missing; returns the index. Needs root (debootstrap) and the mirror."""
    if built() and not force:
        return _index()
    if os.geteuid() != 0:
        raise CorpusError("building the corpus needs root (debootstrap)")
    if not mirror_reachable():
        raise CorpusError(f"the Debian mirror {MIRROR} does not answer (capability debian-mirror)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)     # one builder; the others then find it built
        if built() and not force:
            return _index()
        return _build(force, log)


def _build(force: bool, log) -> dict:
    from .state import force_unmount_under
    tmp = Path(tempfile.mkdtemp(prefix="build-", dir=CACHE))
    index = {} if force else _index()
    try:
        root = tmp / "root"
        log(f"debootstrap --variant=minbase {SUITE} (a few minutes)")
        _run(["debootstrap", "--variant=minbase", SUITE, str(root), MIRROR],
             DEBOOTSTRAP_TIMEOUT, "debootstrap")
        for writer in WRITERS:
            plain = tmp / f"{ROOTFS}.{writer}.tar"
            log(f"writing {plain.name}")
            _write_tar(writer, root, plain)
            for comp in COMPRESSIONS[1:]:
                log(f"compressing {plain.name}{comp}")
                _compress(plain, tmp / (plain.name + comp), comp)
                index[plain.name + comp] = _store(tmp / (plain.name + comp), log)
            index[plain.name] = _store(plain, log)
        (CACHE / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
        return index
    finally:
        force_unmount_under(str(tmp))
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)


def ensure(log=print) -> str | None:
    """Build the corpus unless it is built (one builder at a time: pytest workers and parallel
    runs wait for the first); None when it is there, else why it cannot be built here."""
    if built():
        return None
    if os.geteuid() != 0:
        return "the real-world corpus is not built, and building it needs root (debootstrap)"
    if not mirror_reachable():
        return (f"the real-world corpus is not built, and the Debian mirror {MIRROR} does not "
                "answer within 5 s (capability debian-mirror), so it cannot be built here")
    build(log=log)
    return None


def listing() -> list[tuple[str, int | None, str | None]]:
    index = _index()
    out = []
    for n in NAMES:
        p = Path(path(n))
        out.append((n, p.stat().st_size if p.is_file() else None, index.get(n)))
    return out
