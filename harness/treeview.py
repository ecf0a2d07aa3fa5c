"""A mounted tree as plain data, and the differences between two such trees.

`capture` is the only function that reads the filesystem; `diff` is pure. Paths are bytes
relative to the root ("/" is the root itself), because scenario names need not be UTF-8.
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat as st_
from dataclasses import dataclass

TYPES = ((st_.S_ISDIR, "dir"), (st_.S_ISREG, "file"), (st_.S_ISLNK, "symlink"),
         (st_.S_ISCHR, "char"), (st_.S_ISBLK, "block"), (st_.S_ISFIFO, "fifo"),
         (st_.S_ISSOCK, "socket"))


@dataclass(frozen=True)
class Node:
    type: str                      # dir file symlink char block fifo socket
    mode: int                      # permission bits incl. setuid/setgid/sticky
    uid: int
    gid: int
    mtime_ns: int                  # nanoseconds; diff() compares at the precision it is given
    size: int | None = None        # regular files
    digest: str | None = None      # sha256 of a regular file's content
    target: bytes | None = None    # symlink target
    rdev: tuple | None = None      # (major, minor) of char/block devices
    xattrs: tuple = ()             # sorted (name, value)
    inode: tuple | None = None     # (st_dev, st_ino) when st_nlink > 1, for hardlink groups


@dataclass(frozen=True)
class Difference:
    path: bytes
    attribute: str                 # presence, type, mode, uid, gid, mtime, size, content,
    before: object                 # target, rdev, hardlinks, or "xattr <name>"
    after: object
    below: int = 0                 # for presence: entries under a missing/extra directory

    def render(self) -> str:
        p = show(self.path)
        if self.attribute == "presence":
            what = "missing after the round trip" if self.after is None else "only after the round trip"
            more = f" (and {self.below} entries below it)" if self.below else ""
            return f"{p}: {what}{more}"
        return f"{p}: {self.attribute}: before {format_value(self.attribute, self.before)}, " \
               f"after {format_value(self.attribute, self.after)}"


def show(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")


def format_value(attribute: str, v) -> str:
    if v is None:
        return "absent"
    if attribute == "mode":
        return f"{v:04o}"
    if attribute == "mtime" and isinstance(v, int):
        return format_ns(v)
    if isinstance(v, bytes):
        return repr(v)[1:]
    if isinstance(v, tuple) and attribute == "hardlinks":
        return "{" + ", ".join(show(p) for p in v) + "}" if v else "no other links"
    if isinstance(v, tuple) and attribute == "rdev":
        return f"{v[0]}:{v[1]}"
    return str(v)


def format_ns(ns: int) -> str:
    """Seconds since the epoch with the nanoseconds only where there are any: 1700000000,
    1700000000.000000005."""
    sec, frac = divmod(ns, 10**9)
    return f"{sec}" if not frac else f"{sec}.{frac:09d}"


def _type(mode: int) -> str:
    return next(name for test, name in TYPES if test(mode))


def _digest(path: bytes) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _xattrs(path: bytes) -> tuple:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for n in sorted(names):
        try:
            out.append((n, os.getxattr(path, n, follow_symlinks=False)))
        except OSError as e:   # listed but unreadable (e.g. user.* on a symlink): still a fact
            out.append((n, f"<unreadable: {errno.errorcode.get(e.errno, e.errno)}>".encode()))
    return tuple(out)


def capture(root: bytes | str) -> dict[bytes, Node]:
    """Every entry under root (root included, as b"/"), without following symlinks."""
    root = os.fsencode(root)
    tree: dict[bytes, Node] = {}
    stack = [b"/"]
    while stack:
        rel = stack.pop()
        path = root + (b"" if rel == b"/" else rel)
        s = os.lstat(path)
        kind = _type(s.st_mode)
        tree[rel] = Node(
            type=kind, mode=st_.S_IMODE(s.st_mode), uid=s.st_uid, gid=s.st_gid,
            mtime_ns=s.st_mtime_ns,
            size=s.st_size if kind == "file" else None,
            digest=_digest(path) if kind == "file" else None,
            target=os.readlink(path) if kind == "symlink" else None,
            rdev=(os.major(s.st_rdev), os.minor(s.st_rdev)) if kind in ("char", "block") else None,
            xattrs=_xattrs(path),
            inode=(s.st_dev, s.st_ino) if kind != "dir" and s.st_nlink > 1 else None)
        if kind == "dir":
            with os.scandir(path) as it:
                names = sorted(e.name for e in it)
            stack.extend((b"" if rel == b"/" else rel) + b"/" + n for n in reversed(names))
    return tree


def hardlink_groups(tree: dict[bytes, Node]) -> dict[bytes, tuple]:
    """path -> the other paths of the tree sharing its inode (sorted), for linked entries."""
    by_inode: dict[tuple, list[bytes]] = {}
    for p, n in tree.items():
        if n.inode is not None:
            by_inode.setdefault(n.inode, []).append(p)
    return {p: tuple(sorted(q for q in paths if q != p))
            for paths in by_inode.values() for p in paths}


ATTRIBUTES = ("mode", "uid", "gid", "mtime_ns", "size", "digest", "target", "rdev")


ATTRIBUTE_NAMES = {"digest": "content", "mtime_ns": "mtime"}


def diff(before: dict[bytes, Node], after: dict[bytes, Node],
         mtime_precision_ns: int = 1) -> list[Difference]:
    """What differs, by path then attribute. A missing or extra directory is one difference
    (with the count of entries below it), not one per entry. mtimes are floored to
    `mtime_precision_ns` first (10**9 where one side went through whole-second tar headers);
    a difference is reported as attribute "mtime" in nanoseconds."""
    out: list[Difference] = []
    for side, mine, other in (("before", before, after), ("after", after, before)):
        for p in sorted(set(mine) - set(other)):
            parent = p.rsplit(b"/", 1)[0] or b"/"
            if parent in mine and parent not in other:
                continue                      # counted under its top-most missing ancestor
            below = sum(1 for q in mine if q.startswith(p + b"/") and q not in other)
            out.append(Difference(p, "presence", p if side == "before" else None,
                                  p if side == "after" else None, below))
    links_b, links_a = hardlink_groups(before), hardlink_groups(after)
    for p in sorted(set(before) & set(after)):
        b, a = before[p], after[p]
        if b.type != a.type:
            out.append(Difference(p, "type", b.type, a.type))
            continue
        for attr in ATTRIBUTES:
            vb, va = getattr(b, attr), getattr(a, attr)
            if attr == "mtime_ns":
                vb, va = (vb // mtime_precision_ns * mtime_precision_ns,
                          va // mtime_precision_ns * mtime_precision_ns)
            if vb != va:
                out.append(Difference(p, ATTRIBUTE_NAMES.get(attr, attr), vb, va))
        xb, xa = dict(b.xattrs), dict(a.xattrs)
        for name in sorted(set(xb) | set(xa)):
            if xb.get(name) != xa.get(name):
                out.append(Difference(p, f"xattr {name}", xb.get(name), xa.get(name)))
        gb, ga = links_b.get(p, ()), links_a.get(p, ())
        if gb != ga:
            out.append(Difference(p, "hardlinks", gb, ga))
    return sorted(out, key=lambda d: (d.path, d.attribute))

