"""Tiny filesystem operations that build a scenario's trees (after continuity's fs/fstest).

Each function takes the root it works under and a relative path in bytes (names need not be
UTF-8). Lower layers are populated with `populate`; upper ops are run with `apply_op`.
"""
from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess

from . import chroot
from .scenario import generators
from .scenario.model import ENTRY_TYPES, NODE_TYPES, Entry, Generated, Op

DEFAULT_FILE_MODE = 0o644
DEFAULT_DIR_MODE = 0o755
COPY_TIMEOUT = 600.0
# cp -a without its "ignore what cannot be kept": an xattr that cannot be copied is an error
CP = ["cp", "--no-dereference", "--recursive", "--no-target-directory",
      "--preserve=mode,ownership,timestamps,links,xattr"]


class OpError(Exception):
    """An operation failed; str() names the scenario line and the op."""


# -- preflight: what the calls below accept, checked before anything is touched --------------

_TIME_T = (-(2**63), 2**63 - 1)
_NEEDS = {   # op -> fields that must be set (the loader requires their keys)
    "write": (), "append": ("content",), "mkdir": (), "rm": (), "rmtree": (),
    "rename": ("to",), "chmod": ("mode",), "chown": ("uid", "gid"), "mtime": ("mtime_ns",),
    "symlink": ("target",), "link": ("target",), "setxattr": ("name", "value"),
    "mknod": ("type",),
    # ops that bring host files, commands or layers: their paths were checked by the loader
    "run": ("command",), "copy": ("source", "to"), "many": ("path",), "sync": ("source",),
    "apply": ("source",),
}


def _rel_ok(p) -> bool:
    return isinstance(p, bytes) and bool(p) and not p.startswith(b"/") and b"\0" not in p \
        and b".." not in p.split(b"/")


def _int_in(v, lo, hi, optional=True) -> bool:
    if v is None:
        return optional
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _common_problems(x) -> list[str]:
    """Fields shared by Entry and Op, as os.open/truncate/chmod/lchown/utime/mknod take them."""
    out = []
    if not _rel_ok(x.path):
        out.append(f"path {x.path!r} is not a non-empty relative path without NUL or '..'")
    if x.content is not None and not isinstance(x.content, bytes):
        out.append("content is not bytes")
    if not _int_in(x.size, 0, 2**63 - 1):
        out.append(f"size {x.size!r} is not an off_t >= 0")
    if not _int_in(x.mode, 0, 0o7777):
        out.append(f"mode {x.mode!r} is not permission bits")
    for k in ("uid", "gid"):
        if not _int_in(getattr(x, k), 0, 2**32 - 2):
            out.append(f"{k} {getattr(x, k)!r} is not a 32-bit id")
    if x.mtime_ns is not None and not (isinstance(x.mtime_ns, int)
                                       and _int_in(x.mtime_ns // 10**9, *_TIME_T)):
        out.append(f"mtime {x.mtime_ns!r} ns does not fit a 64-bit time_t")
    if not (_int_in(x.major, 0, 4095, False) and _int_in(x.minor, 0, 2**20 - 1, False)):
        out.append(f"device {x.major!r}:{x.minor!r} is out of range")
    return out


def _xattr_ok(name, value) -> bool:
    return isinstance(name, str) and bool(name) and "\0" not in name \
        and isinstance(value, bytes) and bool(os.fsencode(name))


def entry_problems(e: Entry) -> list[str]:
    out = _common_problems(e)
    if e.type not in ENTRY_TYPES:
        out.append(f"type {e.type!r} is unknown")
    if e.type in ("symlink", "hardlink") and not (isinstance(e.target, bytes) and e.target
                                                   and b"\0" not in e.target):
        out.append(f"target {e.target!r} is not a non-empty name without NUL")
    if e.type == "hardlink" and not _rel_ok(e.target):
        out.append(f"hardlink target {e.target!r} is not a relative path")
    for name, value in e.xattrs:
        if not _xattr_ok(name, value):
            out.append(f"xattr {name!r}={value!r} is not a name string and a bytes value")
    return out


def op_problems(op: Op) -> list[str]:
    if op.op not in _NEEDS:
        return [f"unknown op {op.op!r}"]
    if op.op in ("run", "sync", "apply"):      # no path of their own in the merged view
        return [f"{k} is not set" for k in _NEEDS[op.op] if getattr(op, k) is None]
    out = _common_problems(op)
    out += [f"{k} is not set" for k in _NEEDS[op.op] if getattr(op, k) is None]
    if op.op == "rename" and not _rel_ok(op.to):
        out.append(f"rename destination {op.to!r} is not a relative path")
    if op.op in ("symlink", "link") and op.target is not None and (
            not isinstance(op.target, bytes) or b"\0" in op.target
            or (op.op == "link" and not _rel_ok(op.target))):
        out.append(f"target {op.target!r} is not a name without NUL")
    if op.op == "setxattr" and op.name is not None and not _xattr_ok(op.name, op.value):
        out.append(f"xattr {op.name!r}={op.value!r} is not a name string and a bytes value")
    if op.op == "mknod" and op.type not in NODE_TYPES:
        out.append(f"mknod type {op.type!r} is not one of {', '.join(NODE_TYPES)}")
    return out


def preflight(lowers, ops) -> None:
    """Raise OpError for the first entry or op the calls below would reject with something
    other than an OSError (TypeError, ValueError, OverflowError): a loader gap, reported by line."""
    for e in (e for layer in lowers if isinstance(layer, tuple) for e in layer):
        problems = entry_problems(e)
        if problems:
            raise OpError(f"line {e.line}: entry {e.path!r}: {'; '.join(problems)}")
    for op in ops:
        problems = op_problems(op)
        if problems:
            raise OpError(f"line {op.line}: {op.op} {op.path!r}: {'; '.join(problems)}")


def _p(root: bytes, rel: bytes) -> bytes:
    return os.path.join(root, rel)


def _parents(root: bytes, rel: bytes):
    parent = os.path.dirname(rel)
    if parent:
        os.makedirs(_p(root, parent), mode=DEFAULT_DIR_MODE, exist_ok=True)


def write_file(root, rel, content: bytes | None = None, size: int | None = None, append=False,
               gen: Generated | None = None, stream: int = 0):
    _parents(root, rel)
    with open(_p(root, rel), "ab" if append else "wb") as f:
        if content:
            f.write(content)
        if gen is not None:
            for chunk in generators.pseudo_random(gen.size, gen.seed, stream):
                f.write(chunk)
        if size is not None:
            f.truncate(size)          # sparse: no blocks for the zeros


def sync_tree(src: str, dst: bytes, timeout: float | None = None):
    """Make dst equal to the host tree src (contents by checksum, owners, modes, times, xattrs,
    hardlinks, special files; extra names deleted), changing only what differs: rsync."""
    argv = ["rsync", "-aHAX", "--numeric-ids", "--delete", "--checksum", src.rstrip("/") + "/",
            os.fsdecode(dst).rstrip("/") + "/"]
    try:
        p = subprocess.run(argv, capture_output=True, timeout=timeout or COPY_TIMEOUT)
    except FileNotFoundError:
        raise OSError(errno.ENOENT, "sync needs rsync (apt-get install rsync)") from None
    except subprocess.TimeoutExpired:
        raise OSError(errno.ETIMEDOUT, f"rsync did not finish within {timeout or COPY_TIMEOUT:g} s")
    if p.returncode:
        raise OSError(errno.EIO, "rsync: " + p.stderr.decode(errors="replace").strip())


def copy_tree(src: str, dst: bytes, timeout: float | None = None):
    """Copy a host file or tree to dst (merged into dst when both are directories), keeping
    owners, modes, times, xattrs, hardlinks and special files, as `cp -a` does."""
    argv = CP + [src, os.fsdecode(dst)]
    try:
        p = subprocess.run(argv, capture_output=True, timeout=timeout or COPY_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise OSError(errno.ETIMEDOUT, f"cp did not finish within {timeout or COPY_TIMEOUT:g} s")
    if p.returncode:
        raise OSError(errno.EIO, "cp: " + p.stderr.decode(errors="replace").strip())


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
        write_file(root, e.path, e.content, e.size, gen=e.gen)
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


def apply_op(root: bytes, op: Op) -> str | None:
    """Run one upper operation under root; OpError names the scenario line on failure (or on
    success when the op states `expect_error`). Returns a run op's log."""
    what = f"{op.op} {op.path.decode(errors='replace')!r}" if op.path else op.op
    try:
        log = _apply(root, op)
    except (OSError, chroot.CommandFailed) as err:
        text = str(err) if isinstance(err, chroot.CommandFailed) else (err.strerror or str(err))
        if op.expect_error and error_matches(err, op.expect_error):
            return None
        hint = ""
        if op.expect_error:
            hint = f" (the scenario expects an error matching {op.expect_error!r})"
        raise OpError(f"line {op.line}: {what} failed: {text}{hint}") from None
    if op.expect_error:
        raise OpError(f"line {op.line}: {what} succeeded, but the scenario expects "
                      f"the error {op.expect_error!r}")
    return log


def error_matches(err: Exception, expected: str) -> bool:
    """An errno name (EXDEV) matches the error's errno; any other text is a substring."""
    code = getattr(err, "errno", None)
    if code is not None and errno.errorcode.get(code) == expected:
        return True
    text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return expected in text


def _apply(root, op: Op):
    o, path = op.op, op.path
    if o == "write":
        write_file(root, path, op.content, op.size, gen=op.gen)
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
        _rename(_p(root, path), _p(root, op.to), raw=op.expect_error is not None)
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
    elif o == "run":
        return chroot.run(root, op.command, timeout=op.timeout, env=dict(op.env), check=op.check)
    elif o == "copy":
        _parents(root, path)
        copy_tree(op.source, _p(root, path), op.timeout)
    elif o == "sync":
        sync_tree(op.source, root, op.timeout)
    elif o == "many":
        pattern = path.decode()
        for i in range(op.count):
            rel = generators.many_path(pattern, i).encode()
            write_file(root, rel, op.content, gen=op.gen, stream=i)
            set_meta(root, rel, mode=op.mode, mtime_ns=op.mtime_ns)
    else:  # the loader only lets known ops through
        raise OSError(0, f"unknown op {o}")
    return None


def _rename(src: bytes, dst: bytes, raw: bool):
    """rename(2); on EXDEV (overlayfs will not rename a lower directory without redirect_dir)
    copy then delete, as mv does. `raw` (the op expects an error) keeps rename(2)'s error."""
    try:
        os.rename(src, dst)
        return
    except OSError as e:
        if e.errno != errno.EXDEV or raw:
            raise
    if os.path.isdir(dst) and not os.path.islink(dst):
        os.rmdir(dst)             # rename(2) replaces an empty dir only; so does this
    elif os.path.lexists(dst):
        os.unlink(dst)
    copy_tree(os.fsdecode(src), dst)
    _rmtree(src)


def _rmtree(path: bytes):
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
        return
    for name in os.listdir(path):
        _rmtree(os.path.join(path, name))
    os.rmdir(path)
