"""What an OCI layer tar means: the tree containerd's default applier builds from it over a parent
tree (`pkg/archive` Apply/applyNaive in containerd v2.4.2, as the walking differ's fs applier runs
it on a bind mount), computed without touching the filesystem.

The tar is read by `tarread` (Go archive/tar Reader semantics); this module replays applyNaive's
steps on an in-memory tree: name cleaning, symlink resolution scoped to the root (continuity
`fs.RootPath`), parent creation (`mkparent`, 0755), whiteouts (`.wh.<name>` removes, `.wh..wh..opq`
removes what this layer has not unpacked yet), replace-or-merge, hardlinks, devices, xattrs from
`SCHILY.xattr.*`, ownership, modes and nanosecond mtimes, directory mtimes last. Each step names the
Go function it models. Errors are the text containerd's Apply returns, with paths under `root`.

The result is `dict[bytes, treeview.Node]` keyed b"/", b"/a", ... like `treeview.capture()`.

Root: with a parent tree, the parent's root node (the layer cannot change it: an entry that
resolves to the root is skipped, as containerd does); without one, a 0755 root:root directory, the
empty directory a fresh snapshot starts from. Directory mtimes the kernel sets to "now" while the
layer is applied (created by mkparent, or entries added/removed in them and no header of the layer
re-timing them at the end) cannot be predicted: their mtime_ns is 0 and their paths are listed in
`Meaning.volatile`; compare them only after masking.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import BinaryIO

from harness.reference import tarread as T
from harness.reference.gotar import go_quote
from harness.treeview import Node

VOLATILE = None                      # an mtime set by the kernel at apply time
MAX_TIME_NS = (1 << 63) - 1          # containerd's boundTime: outside [epoch, this] becomes epoch
XATTR_NAME_MAX, XATTR_SIZE_MAX = 255, 65536

ENOENT = "no such file or directory"
ENOTDIR = "not a directory"
EPERM = "operation not permitted"
EINVAL = "invalid argument"
ELOOP = "too many levels of symbolic links"
ENAMETOOLONG = "file name too long"
NAME_MAX = 255
CAPABILITY = b"security.capability"
MAX_SYMLINKS = 40                    # the kernel's limit per path lookup
POSIX_ACLS = (b"system.posix_acl_access", b"system.posix_acl_default")


@dataclass
class Meaning:
    tree: dict                       # bytes path -> Node (the tree after the layer, also on error)
    error: str | None                # containerd's Apply error text, None when it succeeds
    notes: list = field(default_factory=list)       # entries skipped or normalised, in order
    volatile: frozenset = frozenset()                # paths whose mtime is the time of applying


class ApplyError(Exception):
    """An error containerd's applyNaive returns (its text)."""


class _Inode:
    __slots__ = ("type", "mode", "uid", "gid", "mtime", "size", "digest", "target", "rdev",
                 "xattrs", "children")

    def __init__(self, type: str, mode: int = 0, uid: int = 0, gid: int = 0, mtime=VOLATILE):
        self.type, self.mode, self.uid, self.gid, self.mtime = type, mode, uid, gid, mtime
        self.size = self.digest = self.target = self.rdev = None
        self.xattrs: dict = {}
        self.children: dict | None = {} if type == "dir" else None


_HOST_DIR = _Inode("dir")             # a directory above the root (its only child on the way)


# --- Go's path/filepath on bytes --------------------------------------------------------------

def clean(p: bytes) -> bytes:
    """filepath.Clean: drop empty and "." elements, resolve ".." lexically ("/.." is "/")."""
    if not p:
        return b"."
    rooted = p.startswith(b"/")
    out: list[bytes] = []
    for part in p.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if out and out[-1] != b"..":
                out.pop()
            elif not rooted:
                out.append(part)
            continue
        out.append(part)
    s = b"/".join(out)
    return (b"/" + s) if rooted else (s or b".")


def split(p: bytes) -> tuple[bytes, bytes]:
    """filepath.Split: everything up to and including the last '/', and the rest."""
    i = p.rfind(b"/")
    return p[:i + 1], p[i + 1:]


def join(*elems: bytes) -> bytes:
    """filepath.Join: the non-empty elements joined by '/', cleaned ("" when all are empty)."""
    parts = [e for e in elems if e]
    return clean(b"/".join(parts)) if parts else b""


def base(p: bytes) -> bytes:
    """filepath.Base."""
    if not p:
        return b"."
    p = p.rstrip(b"/")
    return p[p.rfind(b"/") + 1:] if p else b"/"


def dirname(p: bytes) -> bytes:
    """filepath.Dir."""
    return clean(p[:p.rfind(b"/") + 1])


def _s(b: bytes) -> str:
    return b.decode("utf-8", "replace")


# --- the in-memory filesystem (what the syscalls do) -------------------------------------------

class _FS:
    def __init__(self, root: bytes, top: _Inode):
        self.root, self.top = root, top

    def lstat(self, path: bytes) -> _Inode | None:
        """lstat(2) on an absolute path: None for ENOENT; OSError(`not a directory`, `too many
        levels of symbolic links`). Like the kernel, symlinks on the way (not the last component)
        are followed, at most 40. A path that leaves the root through them is on the host, which
        is not modelled: it is taken as missing."""
        comps = [c for c in path.split(b"/") if c]
        cur: list[bytes] = []                # canonical components from "/"
        rootc = [c for c in self.root.split(b"/") if c]
        budget = MAX_SYMLINKS
        node: _Inode | None = None
        while comps:
            c = comps.pop(0)
            if c == b".":
                continue
            if c == b"..":
                if cur:
                    cur.pop()
                continue
            if len(c) > NAME_MAX:
                raise OSError(ENAMETOOLONG)
            if cur[:len(rootc)] != rootc:                      # above the root: the host
                if cur + [c] == rootc[:len(cur) + 1]:
                    cur.append(c)
                    continue
                return None
            d = self._at(cur[len(rootc):])
            if d.type != "dir":
                raise OSError(ENOTDIR)
            node = d.children.get(c)
            if node is None:
                if comps:
                    return None                                 # ENOENT on the way
                return None
            if node.type == "symlink" and comps:
                budget -= 1
                if budget < 0:
                    raise OSError(ELOOP)
                target = [t for t in node.target.split(b"/") if t]
                comps = target + comps
                if node.target.startswith(b"/"):
                    cur = []
                continue
            cur.append(c)
        if cur[:len(rootc)] != rootc:
            return _HOST_DIR if cur == rootc[:len(cur)] else None
        return self._at(cur[len(rootc):])

    def _at(self, rel: list) -> _Inode:
        """The inode at canonical components below the root (all directories on the way)."""
        node = self.top
        for c in rel:
            node = node.children[c]
        return node

    def parent_of(self, path: bytes) -> tuple[_Inode | None, bytes]:
        d = self.lstat(dirname(path))
        return d, base(path)

    def add(self, path: bytes, node: _Inode) -> None:
        d, name = self.parent_of(path)
        if d is None:
            raise OSError(ENOENT)
        if d is _HOST_DIR:
            raise AssertionError(f"creating outside the modelled root: {path!r}")
        if d.type != "dir":
            raise OSError(ENOTDIR)
        d.children[name] = node
        d.mtime = VOLATILE                    # creating an entry touches the directory

    def remove_all(self, path: bytes) -> bool:
        """os.RemoveAll: the entry and everything below it; a missing path is no error."""
        try:
            d, name = self.parent_of(path)
        except OSError:
            return False
        if d is None or d.type != "dir" or name not in d.children:
            return False
        del d.children[name]
        d.mtime = VOLATILE
        return True


# --- continuity fs.RootPath, containerd's hardlinkRootPath ------------------------------------

def _walk_link(fs: _FS, path: bytes, walked: list) -> tuple[bytes, bool]:
    """continuity walkLink: a symlink's target (counted, at most 255), else the path itself."""
    if walked[0] > 255:
        raise ApplyError("too many links")
    path = join(b"/", path)
    if path == b"/":
        return path, False
    real = join(fs.root, path)
    try:
        node = fs.lstat(real)
    except OSError as e:
        raise ApplyError(f"lstat {_s(real)}: {e}") from None
    if node is None or node.type != "symlink":
        return path, False
    walked[0] += 1
    return node.target, True


def _walk_links(fs: _FS, path: bytes, walked: list) -> bytes:
    """continuity walkLinks: resolve each directory component, then the last one."""
    d, f = split(path)
    if not d:
        return _walk_link(fs, f, walked)[0]
    if not f:
        if d == b"/":
            return d
        return _walk_links(fs, d[:-1], walked)
    newdir = _walk_links(fs, d, walked)
    newpath, islink = _walk_link(fs, join(newdir, f), walked)
    if not islink or newpath.startswith(b"/"):
        return newpath
    return join(newdir, newpath)


def root_path(fs: _FS, path: bytes) -> bytes:
    """continuity fs.RootPath: path resolved with every symlink followed inside root (".." and
    absolute targets stop at the root), joined to root."""
    if not path:
        return fs.root
    walked = [0]
    while True:
        before = walked[0]
        path = _walk_links(fs, path, walked)
        if before == walked[0]:
            rooted = join(b"/", path)
            if path == rooted:
                return join(fs.root, rooted)
            path = rooted


def _under(path: bytes, root: bytes) -> bool:
    return path.startswith(root)


# --- applyNaive ---------------------------------------------------------------------------------

class _Apply:
    def __init__(self, parent: dict | None, root: bytes):
        self.root = clean(root)
        self.fs = _FS(self.root, self._load(parent))
        self.notes: list[str] = []
        self.unpacked: set[bytes] = set()
        self.opaque: set[bytes] = set()
        self.dirs: list[T.Header] = []

    # parent tree -> inodes (hardlinked paths share one inode)
    def _load(self, parent: dict | None) -> _Inode:
        if not parent:
            return _Inode("dir", 0o755, 0, 0, VOLATILE)
        shared: dict = {}
        top = None
        for path in sorted(parent, key=lambda p: (p.count(b"/"), p) if p != b"/" else (0, b"")):
            n = parent[path]
            ino = shared.get(n.inode) if n.inode is not None else None
            if ino is None:
                ino = _Inode(n.type, n.mode, n.uid, n.gid, n.mtime_ns)
                ino.size, ino.digest, ino.target, ino.rdev = n.size, n.digest, n.target, n.rdev
                ino.xattrs = {os.fsencode(k): v for k, v in n.xattrs}
                if n.inode is not None:
                    shared[n.inode] = ino
            if path == b"/":
                top = ino
                continue
            d = top
            for name in path.strip(b"/").split(b"/")[:-1]:
                d = d.children[name]
            d.children[path.rsplit(b"/", 1)[1]] = ino
        return top or _Inode("dir", 0o755, 0, 0, VOLATILE)

    def rel(self, path: bytes) -> bytes:
        """The tree key of an absolute path under root."""
        r = path[len(self.root):] if self.root != b"/" else path
        return r or b"/"

    def run(self, stream: BinaryIO) -> str | None:
        try:
            for h, content in T.TarReader(stream):
                self.entry(h, content)
            self.dir_times()
        except T.TarError as e:                # Next or a content read: Go's error as is
            return e.text
        except ApplyError as e:
            return str(e)
        return None

    def entry(self, h: T.Header, content: T.Content) -> None:
        fs = self.fs
        h.name = clean(h.name)                                     # "for safety"
        ppath, b = split(h.name)
        try:
            ppath = root_path(fs, ppath)
        except ApplyError as e:
            raise ApplyError(f"failed to get root path: {e}") from None
        path = join(ppath, join(b"/", b))
        if path == self.root:
            self.notes.append(f"{_s(h.name)}: ignored, resolves to the root")
            return
        if self.rel(path) != join(b"/", h.name) or h.name == b".." or h.name.startswith(b"../"):
            self.notes.append(f"{_s(h.name)}: applied at {_s(self.rel(path))}")
        if ppath != self.root:
            self.mkparent(dirname(path) if not b else ppath)
        self.validate_whiteout(path)
        if not self.convert_whiteout(h, path):
            return
        try:
            old = fs.lstat(path)
        except OSError:
            old = None
        if old is not None and (old.type != "dir" or h.typeflag != T.TYPE_DIR):
            fs.remove_all(path)                                    # replace, unless dir over dir
            if h.typeflag == T.TYPE_XGLOBAL:
                self.notes.append(f"{_s(h.name)}: PAX global header removed the existing entry")
        self.create(path, h, content)
        if h.typeflag == T.TYPE_DIR:
            self.dirs.append(h)
        self.unpacked.add(path)

    def mkparent(self, path: bytes) -> None:
        """containerd mkparent: missing directories up to path made 0755 (ownership from the
        process, mtime now); an existing non-directory is ENOTDIR."""
        fs = self.fs
        try:
            node = fs.lstat(path)
        except OSError as e:
            raise ApplyError(f"lstat {_s(path)}: {e}") from None
        if node is not None:
            if node.type == "dir":
                return
            raise ApplyError(f"mkparent {_s(path)}: {ENOTDIR}")
        i = len(path)
        while i > len(self.root) and path[i - 1:i] != b"/":
            i -= 1
        if i > len(self.root) + 1:
            self.mkparent(path[:i - 1])
        fs.add(path, _Inode("dir", 0o755, 0, self._new_gid(path), VOLATILE))
        self.notes.append(f"{_s(self.rel(path))}: created as a parent directory (0755)")

    def _new_gid(self, path: bytes) -> int:
        """A new inode's group: the directory's when it is setgid, else root's."""
        d = self.fs.lstat(dirname(path))
        return d.gid if d is not None and d.mode & 0o2000 else 0

    def validate_whiteout(self, path: bytes) -> None:
        """containerd validateWhiteout: `.wh.<x>` must name something inside the directory."""
        b, d = base(path), dirname(path)
        if b == b".wh..wh..opq" or not b.startswith(b".wh."):
            return
        original = join(d, b[4:])
        if not d.endswith(b"/"):
            d += b"/"
        if not original.startswith(d):
            raise ApplyError(f"invalid whiteout name: {_s(b)}: invalid archive")

    def convert_whiteout(self, h: T.Header, path: bytes) -> bool:
        """applyNaive's default convertWhiteout: False when the entry was a whiteout."""
        b, d = base(path), dirname(path)
        if b == b".wh..wh..opq":
            if d in self.opaque:
                return False
            self.opaque.add(d)
            self._opaque_walk(d)
            return False
        if b.startswith(b".wh."):
            if self.fs.remove_all(join(d, b[4:])):
                self.notes.append(f"{_s(self.rel(join(d, b[4:])))}: removed by whiteout")
            return False
        return True

    def _opaque_walk(self, d: bytes) -> None:
        """filepath.Walk over d in name order: remove what this layer has not unpacked yet
        (not descending into removed directories), descend into unpacked directories."""
        node = self.fs.lstat(d)
        if node is None or node.type != "dir":
            return
        for name in sorted(node.children):
            p = join(d, name)
            child = node.children.get(name)
            if child is None:
                continue
            if p not in self.unpacked:
                self.fs.remove_all(p)
                self.notes.append(f"{_s(self.rel(p))}: hidden by opaque directory")
            elif child.type == "dir":
                self._opaque_walk(p)

    def create(self, path: bytes, h: T.Header, content: T.Content) -> None:
        """containerd createTarFile."""
        fs, t = self.fs, h.typeflag
        try:
            node = fs.lstat(path)
        except OSError:
            node = None
        long = len(base(path)) > NAME_MAX                          # the kernel refuses to create it
        if t == T.TYPE_DIR:
            if node is None or node.type != "dir":
                if long:
                    raise ApplyError(f"mkdir {_s(path)}: {ENAMETOOLONG}")
                node = _Inode("dir", gid=self._new_gid(path))
                fs.add(path, node)
        elif t in (T.TYPE_REG, T.TYPE_REGA):
            if long:
                raise ApplyError(f"open {_s(path)}: {ENAMETOOLONG}")
            node = _Inode("file", gid=self._new_gid(path))
            fs.add(path, node)
            node.digest, node.size = content.hash()
        elif t in (T.TYPE_BLOCK, T.TYPE_CHAR, T.TYPE_FIFO):
            if not (0 <= h.devmajor <= 0xFFFFFFFF and 0 <= h.devminor <= 0xFFFFFFFF):
                raise ApplyError(f"device number {h.devmajor}:{h.devminor} for "
                                 f"{go_quote(h.name)} out of range: invalid archive")
            if long:
                raise ApplyError(ENAMETOOLONG)                     # mknod's bare errno
            node = _Inode({T.TYPE_BLOCK: "block", T.TYPE_CHAR: "char"}.get(t, "fifo"),
                          gid=self._new_gid(path))
            if t != T.TYPE_FIFO:
                # mknod(2) takes a 32-bit dev_t: 12 bits of major, 20 of minor survive.
                node.rdev = (h.devmajor & 0xFFF, h.devminor & 0xFFFFF)
                if (node.rdev[0], node.rdev[1]) != (h.devmajor, h.devminor):
                    self.notes.append(f"{_s(h.name)}: device {h.devmajor}:{h.devminor} "
                                      f"truncated to {node.rdev[0]}:{node.rdev[1]} by mknod")
            fs.add(path, node)
        elif t == T.TYPE_LINK:
            target = self.hardlink_root_path(h.linkname)
            try:
                src = fs.lstat(target)
            except OSError as e:
                raise ApplyError(f"link {_s(target)} {_s(path)}: {e}") from None
            if src is None:
                raise ApplyError(f"link {_s(target)} {_s(path)}: {ENOENT}")
            if long:                                               # linkat: old, then new, then EPERM
                raise ApplyError(f"link {_s(target)} {_s(path)}: {ENAMETOOLONG}")
            if src.type == "dir":
                raise ApplyError(f"link {_s(target)} {_s(path)}: {EPERM}")
            fs.add(path, src)
            node = src
        elif t == T.TYPE_SYMLINK:
            if not h.linkname:
                raise ApplyError(f"symlink  {_s(path)}: {ENOENT}")
            if long:
                raise ApplyError(f"symlink {_s(h.linkname)} {_s(path)}: {ENAMETOOLONG}")
            node = _Inode("symlink", 0o777, gid=self._new_gid(path))
            node.target = h.linkname
            fs.add(path, node)
        elif t == T.TYPE_XGLOBAL:
            self.notes.append(f"{_s(h.name)}: PAX global header ignored")
            return
        else:
            raise ApplyError(f"unhandled tar header type {t}")
        self.chown(node, h)
        self.set_xattrs(path, node, h)
        if node.type != "symlink":
            node.mode = h.mode & 0o7777                            # lchmod, after lchown
        node.mtime = bound_time(h.mtime_ns)

    def chown(self, node: _Inode, h: T.Header) -> None:
        """os.Lchown: ids are 32-bit in the kernel; -1 (0xffffffff) leaves the id as it is."""
        uid, gid = h.uid & 0xFFFFFFFF, h.gid & 0xFFFFFFFF
        if uid != 0xFFFFFFFF:
            node.uid = uid
        if gid != 0xFFFFFFFF:
            node.gid = gid
        if (uid, gid) != (h.uid, h.gid):
            self.notes.append(f"{_s(h.name)}: uid/gid {h.uid}:{h.gid} as the kernel takes them")
        if node.type != "dir" and node.xattrs.pop(CAPABILITY, None) is not None:
            # chown of a non-directory drops file capabilities (ATTR_KILL_PRIV), even by root.
            self.notes.append(f"{_s(h.name)}: lchown dropped security.capability")

    def set_xattrs(self, path: bytes, node: _Inode, h: T.Header) -> None:
        """SCHILY.xattr.* records, as createTarFile sets them (PAX record order)."""
        for key, value in (h.pax or {}).items():
            if not key.startswith(T.SCHILY_XATTR):
                continue
            name = key[len(T.SCHILY_XATTR):]
            ns = name.split(b".", 1)[0] + b"."
            if name.startswith(b"trusted."):
                self.notes.append(f"{_s(h.name)}: xattr {_s(name)} ignored (trusted.* refused)")
                continue
            if ns not in (b"user.", b"security.") and name not in POSIX_ACLS:
                self.notes.append(f"{_s(h.name)}: xattr {_s(name)} ignored (not supported)")
                continue
            if name == ns:
                raise ApplyError(f"failed to setxattr {go_quote(path)} for key "
                                 f"{go_quote(name)}: {EINVAL}")
            if len(name) > XATTR_NAME_MAX:
                raise ApplyError(f"failed to setxattr {go_quote(path)} for key "
                                 f"{go_quote(name)}: numerical result out of range")
            if len(value) > XATTR_SIZE_MAX:
                raise ApplyError(f"failed to setxattr {go_quote(path)} for key "
                                 f"{go_quote(name)}: argument list too long")
            if name == CAPABILITY and not valid_capability(value):
                raise ApplyError(f"failed to setxattr {go_quote(path)} for key "
                                 f"{go_quote(name)}: {EINVAL}")
            if ns == b"user." and node.type not in ("file", "dir"):
                self.notes.append(f"{_s(h.name)}: xattr {_s(name)} ignored (user.* on a "
                                  f"{node.type})")
                continue
            node.xattrs[name] = value

    def hardlink_root_path(self, linkname: bytes) -> bytes:
        """containerd hardlinkRootPath: the link's directory resolved inside root, its last
        component not followed; anything outside root becomes root."""
        ppath, b = split(linkname)
        ppath = root_path(self.fs, ppath)
        target = join(ppath, b)
        return target if _under(target, self.root) else self.root

    def dir_times(self) -> None:
        """Directory mtimes last, in header order, on whatever each name resolves to now."""
        for h in self.dirs:
            path = root_path(self.fs, h.name)
            try:
                node = self.fs.lstat(path)
            except OSError as e:
                raise ApplyError(f"failed call to UtimesNanoAt for {_s(path)}: {e}") from None
            if node is None:
                raise ApplyError(f"failed call to UtimesNanoAt for {_s(path)}: {ENOENT}")
            node.mtime = bound_time(h.mtime_ns)

    def export(self) -> tuple[dict, frozenset]:
        tree: dict = {}
        volatile = set()
        links: dict[int, int] = {}
        stack = [(b"/", self.fs.top)]
        while stack:
            p, n = stack.pop()
            tree[p] = n
            if n.type != "dir":
                links[id(n)] = links.get(id(n), 0) + 1
            else:
                for name in n.children:
                    stack.append(((b"" if p == b"/" else p) + b"/" + name, n.children[name]))
        out = {}
        for p in sorted(tree):
            n = tree[p]
            if n.mtime is VOLATILE:
                volatile.add(p)
            out[p] = Node(type=n.type, mode=n.mode, uid=n.uid, gid=n.gid,
                          mtime_ns=0 if n.mtime is VOLATILE else n.mtime,
                          size=n.size if n.type == "file" else None,
                          digest=n.digest if n.type == "file" else None,
                          target=n.target if n.type == "symlink" else None,
                          rdev=n.rdev if n.type in ("char", "block") else None,
                          xattrs=tuple(sorted((os.fsdecode(k), v) for k, v in n.xattrs.items())),
                          inode=("layer", id(n)) if n.type != "dir" and links[id(n)] > 1 else None)
        return out, frozenset(volatile)


def masked(tree: dict, volatile) -> dict:
    """The tree with the mtimes of `volatile` paths set to 0: apply it to both sides before
    comparing a captured tree with a meaning."""
    return {p: (replace(n, mtime_ns=0) if p in volatile else n) for p, n in tree.items()}


def valid_capability(v: bytes) -> bool:
    """The kernel's check of security.capability: a v2 (20 bytes) or v3 (24 bytes) header."""
    if len(v) not in (20, 24):
        return False
    rev = int.from_bytes(v[:4], "little") & 0xFF000000
    return (rev, len(v)) in ((0x02000000, 20), (0x03000000, 24))


def bound_time(ns: int) -> int:
    """containerd boundTime: before the epoch or past 2262 becomes the epoch."""
    return ns if 0 <= ns <= MAX_TIME_NS else 0


DEFAULT_ROOT = b"/rootfs"


def meaning(stream: BinaryIO, parent: dict | None = None, root: bytes = DEFAULT_ROOT) -> Meaning:
    """The tree containerd's default applier makes of the layer `stream` (an uncompressed tar,
    read once, in blocks) over `parent` (a treeview tree, or None for an empty snapshot).
    `root` is where containerd would have the tree mounted: it shapes the paths in error texts,
    and it must not be "/" (Go's whiteout and hardlink checks compare string prefixes, which
    degenerate there; containerd always applies under a mount point)."""
    if clean(root) == b"/" or not root.startswith(b"/"):
        raise ValueError(f"root must be an absolute path other than /: {root!r}")
    a = _Apply(parent, root)
    err = a.run(stream)
    tree, volatile = a.export()
    return Meaning(tree, err, a.notes, volatile)
