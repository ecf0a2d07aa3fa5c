"""The filesystem as the reference sees it: real (os calls) or recorded (a golden manifest).

The reference differ only ever reads the filesystem through an ``FS`` object:

- ``lstat(path)`` / ``stat(path)`` (stat follows symlinks, with the kernel's ENOENT, ENOTDIR
  and ELOOP), both return objects with the ``st_*`` fields of ``os.stat_result``;
- ``listdir(path)`` (bytes names for a bytes path, in no particular order);
- ``getxattr(path, name)`` / ``listxattr(path)`` (never following symlinks; a missing
  attribute raises OSError(ENODATA));
- ``readlink(path)``;
- ``open(path)`` (a binary file object with ``read(n)``; a context manager).

Errors are ``OSError`` with ``errno`` set, exactly as the os module raises them: the reference
turns errno values into Go's error texts.

``RealFS`` is plain os calls (the default everywhere). ``RecordedFS`` answers from a manifest
made by ``harness.golden.snapshot_state``: trees of entries under absolute "virtual" roots, plus
recorded host answers for what the recorded trees cannot answer themselves (stat following
absolute symlinks out of the lower onto the host).
"""
from __future__ import annotations

import base64
import errno
import io
import os
import posixpath
import stat as st_

STAT_FIELDS = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size",
               "st_rdev", "st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blocks", "st_blksize")
MAX_SYMLINKS = 40                 # Linux's MAXSYMLINKS


def _b(path) -> bytes:
    return os.fsencode(path)


class RealFS:
    """The real filesystem, through os: what the reference has always done."""

    def lstat(self, path):
        return os.lstat(path)

    def stat(self, path):
        return os.stat(path)

    def listdir(self, path):
        return os.listdir(path)

    def getxattr(self, path, name):
        return os.getxattr(path, name, follow_symlinks=False)

    def listxattr(self, path):
        return os.listxattr(path, follow_symlinks=False)

    def readlink(self, path):
        return os.readlink(path)

    def open(self, path):
        return open(path, "rb", buffering=0)


REAL = RealFS()


def default(fs):
    return REAL if fs is None else fs


# -- stat records --------------------------------------------------------------------------------

class StatRecord:
    """An os.stat_result look-alike built from a dict of st_* fields."""

    __slots__ = STAT_FIELDS

    def __init__(self, fields: dict):
        for k in STAT_FIELDS:
            setattr(self, k, int(fields.get(k, 0)))

    @property
    def st_mtime(self) -> float:
        return self.st_mtime_ns / 1e9

    @property
    def st_atime(self) -> float:
        return self.st_atime_ns / 1e9

    @property
    def st_ctime(self) -> float:
        return self.st_ctime_ns / 1e9

    def __repr__(self):
        return "StatRecord(" + ", ".join(f"{k}={getattr(self, k)}" for k in STAT_FIELDS) + ")"


def stat_dict(st) -> dict:
    return {k: int(getattr(st, k, 0) or 0) for k in STAT_FIELDS}


def _oserror(code: int, path) -> OSError:
    return OSError(code, os.strerror(code), path)


# -- content -------------------------------------------------------------------------------------

class _Zeros(io.RawIOBase):
    """A file of `size` zero bytes (a recorded sparse file), read without holding it in memory."""

    def __init__(self, size: int):
        self.size, self.pos = size, 0

    def readable(self):
        return True

    def read(self, n=-1):
        left = self.size - self.pos
        n = left if n is None or n < 0 else min(n, left)
        self.pos += n
        return bytes(n)

    def readinto(self, b):
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


def decode_content(c) -> bytes | None:
    """A manifest's content record -> bytes, or None when it is not stored."""
    if c is None or "zstd_b64" not in c:
        return None
    import zstandard
    return zstandard.ZstdDecompressor().decompress(base64.b64decode(c["zstd_b64"]),
                                                    max_output_size=c["size"])


# -- the recorded filesystem ---------------------------------------------------------------------

class _Node:
    __slots__ = ("st", "children", "link", "xattrs", "xattr_errno", "content")

    def __init__(self, st, link=None, xattrs=None, xattr_errno=None, content=None):
        self.st, self.link, self.content = st, link, content
        self.xattrs, self.xattr_errno = xattrs or {}, xattr_errno
        self.children: dict[bytes, _Node] | None = {} if st_.S_ISDIR(st.st_mode) else None


class RecordedFS:
    """Answers from a manifest (see harness.golden.snapshot_state).

    manifest = {"roots": {name: {"path": hex of the absolute root, "entries": [...]}},
                "host": {hex of an absolute path: {"stat": {...}} or {"errno": N}},
                "follow": {hex of an absolute path: {"stat": {...}} or {"errno": N}}}
    "follow" holds os.stat answers recorded for exactly the paths the reference stats in the
    lower; they win over resolving the recorded trees (they are what the host said).
    """

    def __init__(self, manifest: dict):
        self.roots: dict[bytes, _Node] = {}
        for root in manifest["roots"].values():
            rpath = bytes.fromhex(root["path"])
            nodes: dict[bytes, _Node] = {}
            for e in sorted(root["entries"], key=lambda e: bytes.fromhex(e["path"]).count(b"/")
                            if e["path"] else -1):
                rel = bytes.fromhex(e["path"])
                node = _Node(StatRecord(e["stat"]),
                             link=bytes.fromhex(e["link"]) if e.get("link") is not None else None,
                             xattrs={bytes.fromhex(k): base64.b64decode(v)
                                     for k, v in (e.get("xattrs") or {}).items()},
                             xattr_errno=e.get("xattr_errno"), content=e.get("content"))
                nodes[rel] = node
                if rel:
                    parent, _, name = rel.rpartition(b"/")
                    nodes[parent].children[name] = node
            self.roots[rpath] = nodes[b""]
        self.host = {bytes.fromhex(k): v for k, v in (manifest.get("host") or {}).items()}
        self.follow = {bytes.fromhex(k): v for k, v in (manifest.get("follow") or {}).items()}

    # -- path resolution ------------------------------------------------------------------
    def _root_of(self, path: bytes):
        for rpath, node in self.roots.items():
            if path == rpath or path.startswith(rpath.rstrip(b"/") + b"/"):
                return rpath, node
        return None, None

    def _host(self, path: bytes, orig):
        rec = self.host.get(path)
        if rec is None:
            raise _oserror(errno.ENOENT, orig)     # not recorded: the host had nothing we used
        if "errno" in rec:
            raise _oserror(rec["errno"], orig)
        return rec

    def _resolve(self, path: bytes, follow_last: bool, orig, depth: int = 0) -> _Node:
        path = posixpath.normpath(path)
        if path.startswith(b"//"):
            path = path[1:]
        rpath, node = self._root_of(path)
        if node is None:
            rec = self._host(path, orig)
            return _Node(StatRecord(rec["stat"]))
        comps = [c for c in path[len(rpath):].split(b"/") if c]
        cur_dir = rpath
        for i, comp in enumerate(comps):
            last = i == len(comps) - 1
            if node.children is None:          # (symlinks on the way were followed below)
                raise _oserror(errno.ENOTDIR, orig)
            child = node.children.get(comp)
            if child is None:
                raise _oserror(errno.ENOENT, orig)
            here = cur_dir.rstrip(b"/") + b"/" + comp
            if st_.S_ISLNK(child.st.st_mode) and (follow_last or not last):
                depth += 1
                if depth > MAX_SYMLINKS:
                    raise _oserror(errno.ELOOP, orig)
                target = child.link if child.link.startswith(b"/") else \
                    cur_dir.rstrip(b"/") + b"/" + child.link
                rest = b"/".join(comps[i + 1:])
                full = target.rstrip(b"/") + (b"/" + rest if rest else b"")
                if not full.startswith(b"/"):
                    full = b"/" + full
                return self._resolve(full or b"/", follow_last, orig, depth)
            node, cur_dir = child, here
        return node

    # -- the FS interface ----------------------------------------------------------------
    def lstat(self, path):
        return self._resolve(_b(path), False, path).st

    def stat(self, path):
        p = _b(path)
        rec = self.follow.get(posixpath.normpath(p))
        if rec is not None:
            if "errno" in rec:
                raise _oserror(rec["errno"], path)
            return StatRecord(rec["stat"])
        return self._resolve(p, True, path).st

    def listdir(self, path):
        node = self._resolve(_b(path), True, path)
        if node.children is None:
            raise _oserror(errno.ENOTDIR, path)
        names = list(node.children)
        return names if isinstance(path, bytes) else [os.fsdecode(n) for n in names]

    def getxattr(self, path, name):
        node = self._resolve(_b(path), False, path)
        if node.xattr_errno:
            raise _oserror(node.xattr_errno, path)
        value = node.xattrs.get(_b(name))
        if value is None:
            raise _oserror(errno.ENODATA, path)
        return value

    def listxattr(self, path):
        node = self._resolve(_b(path), False, path)
        if node.xattr_errno:
            raise _oserror(node.xattr_errno, path)
        return [os.fsdecode(k) for k in node.xattrs]

    def readlink(self, path):
        node = self._resolve(_b(path), False, path)
        if node.link is None:
            raise _oserror(errno.EINVAL, path)
        return node.link if isinstance(path, bytes) else os.fsdecode(node.link)

    def open(self, path):
        node = self._resolve(_b(path), True, path)
        if node.children is not None:
            return io.BytesIO(b"")                 # reading a directory: not done by the reference
        c = node.content
        if c is None:
            raise _oserror(errno.EIO, path)        # content not recorded
        if c.get("zeros"):
            return _Zeros(c["size"])
        data = decode_content(c)
        if data is None:
            raise _oserror(errno.EIO, path)
        return io.BytesIO(data)
