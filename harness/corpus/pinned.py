"""Real layer tars from the package registries, each pinned by digest, fetched on first use.

Each file is named in a scenario as `{corpus: NAME}`; the scenario requires the capability of
its registry (npm-registry, pypi, debian-mirror), so it skips with that reason offline. The
stored file's sha256 is known in advance, so its path is too (`.cache/corpus/blobs/sha256/`);
a download is checked against the registry's own digest (npm's sha512 integrity, the sha256 of
PyPI's index and of Debian's Packages file) and the stored file against its recorded sha256.
"""
from __future__ import annotations

import base64
import hashlib
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from . import deb

FETCH_TIMEOUT = 120          # seconds for one whole download
MAX_BYTES = 64 << 20         # these are small on purpose


@dataclass(frozen=True)
class Pinned:
    name: str                 # the corpus name scenarios use
    registry: str             # the capability that says the registry answers
    url: str
    sha256: str               # of the download
    stored: str               # sha256 of the corpus file (the download itself, or its data.tar)
    integrity: str = ""       # npm's sha512 Subresource Integrity string, checked as well
    deb_data: bool = False    # keep the .deb's data.tar (decompressed unless tar/gzip/zstd)
    why: str = ""             # what this file exercises


NPM = "https://registry.npmjs.org"
PYPI = "https://files.pythonhosted.org/packages"
DEBIAN = "http://deb.debian.org/debian"

FILES = (
    Pinned("npm/npm-6.14.18.tgz", "npm-registry", f"{NPM}/npm/-/npm-6.14.18.tgz",
           "c9b15f277e2a0b1b57e05bad04504296a27024555d56c2aa967f862e957ad2ed",
           "c9b15f277e2a0b1b57e05bad04504296a27024555d56c2aa967f862e957ad2ed",
           integrity="sha512-p3SjqSchSuNQUqbJBgwdv0L3O6bKkaSfQrQzJsskNpNKLg0g37c5xTXFV0SqTlX9"
                     "GWvoGxBELVJMRWq0J8oaLA==",
           why="npm pack's node-tar dialect at scale: 4215 files and no directory entries, "
               "69 names over 100 bytes in the USTAR prefix field (bundled node_modules)"),
    Pinned("npm/commander-0.0.1.tgz", "npm-registry", f"{NPM}/commander/-/commander-0.0.1.tgz",
           "662efece8d53ca36b48da1f53d41fe72d63763909544094343d4224523efb8ab",
           "662efece8d53ca36b48da1f53d41fe72d63763909544094343d4224523efb8ab",
           integrity="sha512-tCOJMg2UJ7N/ai7PbIb09Ae5gwURekJ0MPmgu0u8n1Ur1I9dX8ids/QWNw3B281x"
                     "TGKuSi8zINkxEDp7TjM7xg==",
           why="a 2011 publish: the author's uid 501, gid 20 and names tj/staff, executables"),
    Pinned("npm/once-1.1.1.tgz", "npm-registry", f"{NPM}/once/-/once-1.1.1.tgz",
           "3fdc1a246f2522991fd9a6554a93c012c3192ea99918fdd893a2d4f2d546fe93",
           "3fdc1a246f2522991fd9a6554a93c012c3192ea99918fdd893a2d4f2d546fe93",
           integrity="sha512-frdJr++QKEg4+JylTX+NNLgSoO6M2pDNYOOXe4WGIYKKBADBI9nU3oa06y4D4FpA"
                     "J3obAsjExeBOnscYJB9Blw==",
           why="a 2012 publish: uid 24561, no names, a different mtime per file"),
    Pinned("deb/hello_2.10-3_amd64.data.tar", "debian-mirror",
           f"{DEBIAN}/pool/main/h/hello/hello_2.10-3_amd64.deb",
           "2e6e2f1a0007dc43bc91c273fd36e91e40a4f1c2765a03eca68b70a42103878a",
           "f0c28e66b1a4d548ff77e392ae277fbba70683818a19ae97c51fbdd6ba46c1b5", deb_data=True,
           why="dpkg-deb's GNU tar: ./-prefixed names, every directory listed, root-owned; "
               "data.tar.xz decompressed (containerd takes no xz)"),
    Pinned("pypi/six-1.16.0.tar.gz", "pypi",
           f"{PYPI}/71/39/171f1c67cd00715f190ba0b100d606d440a28c93c7714febeca8b79af85e/"
           "six-1.16.0.tar.gz",
           "1e61c37477a1626458e36f7b1d82aa5c9b094fa4802892072e49de9c60c4c926",
           "1e61c37477a1626458e36f7b1d82aa5c9b094fa4802892072e49de9c60c4c926",
           why="a setuptools sdist (Python tarfile, PAX): fractional mtimes in PAX records, "
               "group-writable modes 0664/0775, uid 2000 named travis"),
)
BY_NAME = {p.name: p for p in FILES}
PROBES = {"npm-registry": f"{NPM}/", "pypi": "https://files.pythonhosted.org/"}


class FetchError(Exception):
    pass


def reachable(url: str, timeout: float = 5.0) -> bool:
    """The registry answers a HEAD within the deadline."""
    req = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False


def download(url: str, timeout: float = FETCH_TIMEOUT) -> bytes:
    """The whole body within `timeout` seconds (each read also bounded), at most MAX_BYTES."""
    deadline = time.monotonic() + timeout
    chunks, size = [], 0
    try:
        with urllib.request.urlopen(url, timeout=min(timeout, 30)) as r:
            while chunk := r.read(1 << 20):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BYTES:
                    raise FetchError(f"{url}: larger than {MAX_BYTES >> 20} MiB")
                if time.monotonic() > deadline:
                    raise FetchError(f"{url}: not downloaded within {timeout:.0f} s")
    except urllib.error.HTTPError as e:
        raise FetchError(f"{url}: HTTP {e.code} {e.reason} (a pinned file the registry no "
                         "longer serves: pin a current version in harness/corpus/pinned.py)") \
            from None
    except (OSError, ValueError) as e:
        raise FetchError(f"{url}: {e}") from None
    return b"".join(chunks)


def verified(p: Pinned, body: bytes) -> bytes:
    """The corpus file made from a download, after every digest is checked (pure)."""
    got = hashlib.sha256(body).hexdigest()
    if got != p.sha256:
        raise FetchError(f"{p.url}: sha256 {got}, pinned {p.sha256}")
    if p.integrity:
        algo, _, want = p.integrity.partition("-")
        have = base64.b64encode(hashlib.new(algo, body).digest()).decode()
        if have != want:
            raise FetchError(f"{p.url}: {algo} integrity {have}, pinned {want}")
    out = body
    if p.deb_data:
        try:
            _, out = deb.data_tar(body)
        except deb.DebError as e:
            raise FetchError(f"{p.url}: {e}") from None
    got = hashlib.sha256(out).hexdigest()
    if got != p.stored:
        raise FetchError(f"{p.name}: made from {p.url} with sha256 {got}, pinned {p.stored}")
    return out
