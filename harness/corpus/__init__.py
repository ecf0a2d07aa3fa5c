"""The real-world corpus: built or fetched on demand, cached by content hash in .cache/corpus/.

    layerconf corpus build     # the rootfs (root + the Debian mirror; minutes) and every pinned file
    layerconf corpus list      # names, sizes, digests

Two kinds of file, both kept as `blobs/sha256/<hex>` and named in scenarios as `{corpus: NAME}`
(nothing large is committed):

- the Debian minbase rootfs as layer tars by four writers (rootfs.py); `index.json` maps each
  name to its digest. Scenarios require the `corpus` capability; under pytest the first one
  builds it (`ensure`), so `make test` runs them where the mirror answers.
- real tars from the package registries (pinned.py): npm tarballs, a .deb's data.tar, a Python
  sdist, each pinned by digest, so its path is known before it is fetched. The runner fetches a
  missing one when a scenario names it; the scenario requires its registry's capability.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from . import pinned, rootfs

REPO = Path(__file__).resolve().parent.parent.parent
CACHE = REPO / ".cache" / "corpus"
MIRROR, SUITE, ROOTFS = rootfs.MIRROR, rootfs.SUITE, rootfs.ROOTFS
NAMES = rootfs.NAMES + tuple(p.name for p in pinned.FILES)


class CorpusError(Exception):
    pass


def _index() -> dict:
    try:
        return json.loads((CACHE / "index.json").read_text())
    except (OSError, ValueError):
        return {}


def _blob(digest: str) -> Path:
    return CACHE / "blobs" / "sha256" / digest


def path(name: str) -> str:
    """Where the named file is (or would be, once built: then it does not exist)."""
    digest = pinned.BY_NAME[name].stored if name in pinned.BY_NAME else _index().get(name)
    return str(_blob(digest) if digest else CACHE / "missing" / name)


def _present(names, index=None) -> bool:
    index = _index() if index is None else index
    return all(n in index and _blob(index[n]).is_file() for n in names)


def built() -> bool:
    """The rootfs tars are all there (the `corpus` capability)."""
    return _present(rootfs.NAMES)


def mirror_reachable(timeout: float = 5.0) -> bool:
    """The Debian mirror answers (a HEAD of the suite's Release file, with a deadline)."""
    return pinned.reachable(f"{MIRROR}/dists/{SUITE}/Release", timeout)


def registry_reachable(name: str) -> bool:
    """npm-registry / pypi answer within 5 s."""
    return pinned.reachable(pinned.PROBES[name])


def _store(tmp: Path, log) -> str:
    h = hashlib.sha256()
    with open(tmp, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    dest = _blob(digest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)
    return digest


def names_in(data) -> list[str]:
    """The corpus names a scenario's data mentions (`{corpus: NAME}` anywhere), in order."""
    out = []
    if isinstance(data, dict):
        if isinstance(data.get("corpus"), str):
            out.append(data["corpus"])
        for v in data.values():
            out += names_in(v)
    elif isinstance(data, list):
        for v in data:
            out += names_in(v)
    return out


def fetch(names, log=print) -> None:
    """Fetch the pinned files among `names` that are not cached (each download with a deadline,
    every digest checked); the rootfs names are left to `build`."""
    for name in dict.fromkeys(names):
        p = pinned.BY_NAME.get(name)
        if p is None or Path(path(name)).is_file():
            continue
        log(f"fetching {p.url}")
        try:
            data = pinned.verified(p, pinned.download(p.url))
        except pinned.FetchError as e:
            raise CorpusError(f"corpus file {name}: {e}") from None
        dest = _blob(p.stored)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as t:
            t.write(data)
        os.replace(t.name, dest)


def build(force: bool = False, log=print) -> dict:
    """Build the rootfs tars that are missing; returns the index. Needs root and the mirror."""
    if built() and not force:
        return _index()
    if os.geteuid() != 0:
        raise CorpusError("building the corpus rootfs needs root (debootstrap)")
    if not mirror_reachable():
        raise CorpusError(f"the Debian mirror {MIRROR} does not answer (capability debian-mirror)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)     # one builder; the others then find it built
        if built() and not force:
            return _index()
        try:
            return _build(force, log)
        except rootfs.BuildError as e:
            raise CorpusError(str(e)) from None


def _build(force: bool, log) -> dict:
    from ..state import force_unmount_under
    tmp = Path(tempfile.mkdtemp(prefix="build-", dir=CACHE))
    index = {} if force else _index()
    base = f"{rootfs.ROOTFS}.gnutar.tar"
    root = tmp / "root"
    try:
        if not _present([base], index):
            log(f"debootstrap --variant=minbase {SUITE} (a few minutes)")
            rootfs.debootstrap(root)
            index = {}                      # a new tree: every writer writes it again
        for writer in rootfs.WRITERS:
            names = rootfs.names_of(writer)
            if _present(names, index):
                continue
            plain = tmp / names[0]
            if _present(names[:1], index):  # only a compression is missing: the tar stays
                shutil.copyfile(_blob(index[names[0]]), plain)
            else:
                if not root.exists():
                    log(f"unpacking {base} for the writers added since it was built")
                    rootfs.unpack(str(_blob(index[base])), root)
                log(f"writing {plain.name}")
                rootfs.write_tar(writer, root, plain, CACHE)
            for name, comp in zip(names[1:], rootfs.COMPRESSIONS[1:]):
                log(f"compressing {name}")
                rootfs.compress(plain, tmp / name, comp)
                index[name] = _store(tmp / name, log)
            index[names[0]] = _store(plain, log)
            (CACHE / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
        return index
    finally:
        force_unmount_under(str(tmp))
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)


def ensure(log=print) -> str | None:
    """Build the rootfs unless it is built (one builder at a time: pytest workers and parallel
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
        digest = pinned.BY_NAME[n].stored if n in pinned.BY_NAME else index.get(n)
        out.append((n, p.stat().st_size if p.is_file() else None, digest))
    return out
