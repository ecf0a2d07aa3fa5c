"""Tiny filesystem operations that build a scenario's trees (after continuity's fs/fstest).

Each function takes the root it works under and a relative path in bytes (names need not be
UTF-8). Lower layers are populated with `populate`; upper ops are run with `apply_op`.
"""
from __future__ import annotations

import os
import socket
import stat

from .scenario.model import Entry, Op

DEFAULT_FILE_MODE = 0o644
DEFAULT_DIR_MODE = 0o755


class OpError(Exception):
    """An operation failed; str() names the scenario line and the op."""


def _p(root: bytes, rel: bytes) -> bytes:
    return os.path.join(root, rel)


def _parents(root: bytes, rel: bytes):
    parent = os.path.dirname(rel)
    if parent:
        os.makedirs(_p(root, parent), mode=DEFAULT_DIR_MODE, exist_ok=True)


def write_file(root, rel, content: bytes | None = None, size: int | None = None, append=False):
    _parents(root, rel)
    with open(_p(root, rel), "ab" if append else "wb") as f:
        if content:
            f.write(content)
        if size is not None:
            f.truncate(size)          # sparse: no blocks for the zeros


def make_node(root, rel, typ: str, mode: int, major=0, minor=0):
    _parents(root, rel)
    path = _p(root, rel)
    if typ == "fifo":
        os.mkfifo(path, mode)
    elif typ == "socket":
        # A bound unix socket leaves a socket inode behind; bind needs a str path < 108 bytes.
        cwd = os.getcwd()
        try:
            os.chdir(os.path.dirname(path) or b".")
            with socket.socket(socket.AF_UNIX) as s:
                s.bind(os.fsdecode(os.path.basename(path)))
        finally:
            os.chdir(cwd)
    else:
        kind = stat.S_IFCHR if typ == "char" else stat.S_IFBLK
        os.mknod(path, kind | mode, os.makedev(major, minor))


def set_mtime(root, rel, mtime_ns: int):
    os.utime(_p(root, rel), ns=(mtime_ns, mtime_ns), follow_symlinks=False)


def set_meta(root, rel, *, mode=None, uid=None, gid=None, mtime_ns=None, xattrs=(), is_link=False):
    path = _p(root, rel)
    if uid is not None or gid is not None:
        os.lchown(path, -1 if uid is None else uid, -1 if gid is None else gid)
    if mode is not None and not is_link:
        os.chmod(path, mode)          # after chown: chown clears setuid/setgid
    for name, value in xattrs:
        os.setxattr(path, name, value, follow_symlinks=False)
    if mtime_ns is not None:
        set_mtime(root, rel, mtime_ns)


def populate(root: bytes, entries: tuple[Entry, ...]):
    """Create a lower layer's entries, then their metadata deepest-first so dir mtimes stick."""
    for e in entries:
        try:
            _create_entry(root, e)
        except OSError as err:
            raise OpError(f"line {e.line}: creating {e.type} {e.path!r}: {err.strerror}") from None
    for e in sorted(entries, key=lambda e: e.path.count(b"/"), reverse=True):
        if e.type == "hardlink":
            continue                  # shares the source's inode and metadata
        mode = e.mode
        if mode is None and e.type not in ("symlink",):
            mode = DEFAULT_DIR_MODE if e.type == "dir" else DEFAULT_FILE_MODE
        try:
            set_meta(root, e.path, mode=mode, uid=e.uid, gid=e.gid, mtime_ns=e.mtime_ns,
                     xattrs=e.xattrs, is_link=(e.type == "symlink"))
        except OSError as err:
            raise OpError(f"line {e.line}: setting metadata of {e.path!r}: {err.strerror}") from None


def _create_entry(root, e: Entry):
    if e.type == "file":
        write_file(root, e.path, e.content, e.size)
    elif e.type == "dir":
        os.makedirs(_p(root, e.path), mode=DEFAULT_DIR_MODE, exist_ok=True)
    elif e.type == "symlink":
        _parents(root, e.path)
        os.symlink(e.target, _p(root, e.path))
    elif e.type == "hardlink":
        _parents(root, e.path)
        os.link(_p(root, e.target), _p(root, e.path), follow_symlinks=False)
    else:
        make_node(root, e.path, e.type, e.mode if e.mode is not None else DEFAULT_FILE_MODE,
                  e.major, e.minor)


def apply_op(root: bytes, op: Op):
    """Run one upper operation under root; OpError names the scenario line on failure."""
    try:
        _apply(root, op)
    except OSError as err:
        what = op.path.decode(errors="replace") if op.path else ""
        raise OpError(f"line {op.line}: {op.op} {what!r} failed: {err.strerror}") from None


def _apply(root, op: Op):
    o, path = op.op, op.path
    if o == "write":
        write_file(root, path, op.content, op.size)
        set_meta(root, path, mode=op.mode, uid=op.uid, gid=op.gid, mtime_ns=op.mtime_ns)
    elif o == "append":
        write_file(root, path, op.content, append=True)
    elif o == "mkdir":
        os.makedirs(_p(root, path), mode=DEFAULT_DIR_MODE, exist_ok=True)
        set_meta(root, path, mode=op.mode, uid=op.uid, gid=op.gid, mtime_ns=op.mtime_ns)
    elif o == "rm":
        p = _p(root, path)
        if os.path.isdir(p) and not os.path.islink(p):
            os.rmdir(p)
        else:
            os.unlink(p)
    elif o == "rmtree":
        _rmtree(_p(root, path))
    elif o == "rename":
        _parents(root, op.to)
        os.rename(_p(root, path), _p(root, op.to))
    elif o == "chmod":
        os.chmod(_p(root, path), op.mode)
    elif o == "chown":
        os.lchown(_p(root, path), op.uid, op.gid)
    elif o == "mtime":
        set_mtime(root, path, op.mtime_ns)
    elif o == "symlink":
        _parents(root, path)
        os.symlink(op.target, _p(root, path))
        set_meta(root, path, uid=op.uid, gid=op.gid, mtime_ns=op.mtime_ns, is_link=True)
    elif o == "link":
        _parents(root, path)
        os.link(_p(root, op.target), _p(root, path), follow_symlinks=False)
    elif o == "setxattr":
        os.setxattr(_p(root, path), op.name, op.value, follow_symlinks=False)
    elif o == "mknod":
        make_node(root, path, op.type, op.mode if op.mode is not None else DEFAULT_FILE_MODE,
                  op.major, op.minor)
        set_meta(root, path, uid=op.uid, gid=op.gid, mtime_ns=op.mtime_ns)
    else:  # the loader only lets known ops through
        raise OSError(0, f"unknown op {o}")


def _rmtree(path: bytes):
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
        return
    for name in os.listdir(path):
        _rmtree(os.path.join(path, name))
    os.rmdir(path)
