"""continuity's ``fs.DiffDirChanges(lower, upper, DiffSourceOverlayFS, fn)``, in Python.

The upper directory of an overlay mount is walked (byte-wise sorted, pre-order, never following
symlinks); each entry is classified against the lower with ``os.stat`` and reported as
``handle(kind, path, stat)``, path being b"/a/b". Deletions come only from the upper's own
markers: a char 0/0 device (whiteout) and an opaque directory (``trusted.overlay.opaque`` then
``user.overlay.opaque`` == b"y"), reported as a Delete of ``<dir>/.wh..opq``. Spec sections
refer to docs/spec.md §2.

Paths are bytes throughout (Linux names need not be UTF-8). Errors are ``GoError`` whose str()
is the text Go would produce (``stat <path>: not a directory``). Quirk switches are read from
the profile (see profiles.py); with all of them on, this is continuity v0.4.5/v0.5.0.
"""
from __future__ import annotations

import enum
import errno
import os
import posixpath
import stat as st_
from typing import Callable

from . import fsview


def sort_names(names: list[bytes]) -> None:
    """Go's sort.Strings on raw names: byte order (not the order of any decoded text)."""
    names.sort()


class ChangeKind(enum.IntEnum):
    """continuity fs.ChangeKind (DiffDirChanges never reports UNMODIFIED)."""
    UNMODIFIED = 0
    ADD = 1
    MODIFY = 2
    DELETE = 3


UNMODIFIED, ADD, MODIFY, DELETE = (ChangeKind.UNMODIFIED, ChangeKind.ADD, ChangeKind.MODIFY,
                                   ChangeKind.DELETE)

OPAQUE_KEYS = (b"trusted.overlay.opaque", b"user.overlay.opaque")   # first key present wins
OPAQUE_MARKER = b".wh..opq"     # the Delete path's base; the ChangeWriter adds ".wh." again
_NO_XATTR = (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP)

Handle = Callable[[ChangeKind, bytes, "os.stat_result | None"], None]


# --- Go-compatible errors and paths ---------------------------------------------------------

class GoError(Exception):
    """An error of the Go code being mirrored; str() is Go's err.Error() text."""


def go_errno_text(code: int | None) -> str:
    """syscall.Errno.Error(): glibc's strerror with the first letter lowered (Go's table was
    generated that way; it keeps acronyms such as "RFS specific error")."""
    if code is None:
        return "unknown error"
    s = os.strerror(code)
    if len(s) > 1 and s[0].isupper() and not s[1].isupper():
        s = s[0].lower() + s[1:]
    return s


def go_str(path: bytes) -> str:
    """A Go string as it reaches JSON: invalid UTF-8 becomes U+FFFD."""
    return path.decode("utf-8", "replace")


def path_error(op: str, path: bytes, err: OSError) -> GoError:
    """*fs.PathError: "<op> <path>: <errno text>"."""
    return GoError(f"{op} {go_str(path)}: {go_errno_text(err.errno)}")


def go_clean(p: bytes) -> bytes:
    """filepath.Clean (posixpath.normpath keeps a leading '//', Clean does not)."""
    out = posixpath.normpath(p) if p else b"."
    return out[1:] if out.startswith(b"//") else out


def go_join(*elems: bytes) -> bytes:
    """filepath.Join: the non-empty elements joined by '/', cleaned; "" if all are empty."""
    parts = [e for e in elems if e]
    return go_clean(b"/".join(parts)) if parts else b""


def go_dir(p: bytes) -> bytes:
    """filepath.Dir: everything before the last '/', cleaned ("." when there is none)."""
    i = p.rfind(b"/")
    return go_clean(p[:i + 1]) if i >= 0 else b"."


def go_base(p: bytes) -> bytes:
    """filepath.Base for the clean, non-root paths the walk produces."""
    return p.rstrip(b"/").rsplit(b"/", 1)[-1] or b"/"


def same_fs_time(a_ns: int, b_ns: int) -> bool:
    """sameFsTime: equal, or the same second with either nanosecond part zero (a filesystem
    without sub-second timestamps on one side)."""
    (a_s, a_n), (b_s, b_n) = divmod(a_ns, 10**9), divmod(b_ns, 10**9)
    return a_ns == b_ns or (a_s == b_s and (a_n == 0 or b_n == 0))


def is_whiteout_device(st: os.stat_result) -> bool:
    """overlayfs whiteout: a character device with rdev 0/0 (block devices never count)."""
    return st_.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0


def opaque_value(path: bytes, fs=None) -> bytes | None:
    """getOpaqueValue: the first of the two opaque xattrs that exists (any value), else None.
    ENODATA/ENOTSUP move on to the next key; anything else is fatal."""
    for key in OPAQUE_KEYS:
        try:
            return fsview.default(fs).getxattr(path, key)
        except OSError as e:
            if e.errno in _NO_XATTR:
                continue
            raise GoError(f"failed to retrieve {key.decode()} attr: {go_errno_text(e.errno)}") from None
    return None


# --- the walk ----------------------------------------------------------------------------------

class _Walk:
    def __init__(self, lower: bytes, upper: bytes, handle: Handle, profile, fs=None):
        self.lower, self.upper, self.handle, self.profile = lower, upper, handle, profile
        self.fs = fsview.default(fs)
        self.changed_dirs: set[bytes] = set()
        self.follow = profile.has("lower-stat-follows-symlinks")
        self.enotdir_abort = profile.has("enotdir-abort")

    # Lower lookup ------------------------------------------------------------------------------
    def lower_stat(self, p: bytes) -> os.stat_result | None:
        """What the lower has at p, or None. containerd: os.Stat(lower+p), so symlinks are
        followed (absolute ones resolve on the host) and only ENOENT means absent. Spec:
        overlayfs' view, i.e. lstat of the entry, absent under a symlink or non-directory."""
        full = go_join(self.lower, p)
        if self.follow:
            try:
                return self.fs.stat(full)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    return None
                if e.errno == errno.ENOTDIR and not self.enotdir_abort:
                    return None
                raise path_error("stat", full, e) from None
        cur, comps = self.lower, p.strip(b"/").split(b"/")
        for i, comp in enumerate(comps):
            cur = go_join(cur, comp)
            try:
                st = self.fs.lstat(cur)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    return None
                raise path_error("lstat", cur, e) from None
            if i == len(comps) - 1:
                return st
            if not st_.S_ISDIR(st.st_mode):
                # A file on the way: os.Stat would have failed with ENOTDIR (a symlink it follows).
                if self.enotdir_abort and not st_.S_ISLNK(st.st_mode):
                    raise GoError(f"stat {go_str(full)}: {go_errno_text(errno.ENOTDIR)}")
                return None
        return None

    # Directory reading ---------------------------------------------------------------------
    def read_names(self, path: bytes, rel: bytes) -> list[bytes]:
        """readDirNames: all names, sorted byte-wise; an error aborts the walk."""
        try:
            names = self.fs.listdir(path)
        except OSError as e:
            raise path_error("open", path, e) from None
        sort_names(names)
        if not self.profile.has("whiteout-sorted-by-name"):
            # Spec: whiteouts first in their directory (OCI: before sibling directory entries).
            # Only what will be written as a whiteout moves: a 0/0 device with a lower target.
            def is_whiteout(name: bytes) -> bool:
                try:
                    return (is_whiteout_device(self.fs.lstat(go_join(path, name)))
                            and self.lower_stat(rel + b"/" + name) is not None)
                except (OSError, GoError):
                    return False          # reported when the walk reaches the entry
            names.sort(key=lambda n: not is_whiteout(n))
        return names

    def run(self) -> None:
        try:
            root_st = self.fs.lstat(self.upper)
        except OSError as e:
            raise path_error("lstat", self.upper, e) from None
        if not st_.S_ISDIR(root_st.st_mode):
            return                        # Walk reports the root alone, and "/" is never emitted
        # An explicit stack instead of recursion: trees may be deeper than Python's stack.
        # Each frame: (relative dir path, iterator over its sorted names, under an opaque dir).
        stack = [(b"", iter(self.read_names(self.upper, b"")), False)]
        while stack:
            rel, names, under_opaque = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                continue
            p = rel + b"/" + name
            full = go_join(self.upper, p)
            try:
                f = self.fs.lstat(full)
            except OSError as e:
                raise path_error("lstat", full, e) from None
            if st_.S_ISDIR(f.st_mode):
                children = self.read_names(full, p)   # Go reads the names before the callback
                opaque = self.entry(p, f, under_opaque)
                stack.append((p, iter(children), under_opaque or opaque))
            else:
                self.entry(p, f, under_opaque)

    # One entry -------------------------------------------------------------------------------
    def entry(self, p: bytes, f: os.stat_result, under_opaque: bool) -> bool:
        """Classify and report one upper entry; returns whether it is an opaque directory."""
        prof = self.profile
        if st_.S_ISSOCK(f.st_mode) and not prof.has("socket-parent-emitted"):
            return False                  # spec: a socket contributes nothing, not even a parent

        # 1. Whiteout / opaque probe (overlayFSWhiteoutConvert).
        deleted = opaque = False
        if st_.S_ISCHR(f.st_mode):
            deleted = is_whiteout_device(f)
        elif st_.S_ISDIR(f.st_mode):
            opaque = opaque_value(go_join(self.upper, p), self.fs) == b"y"
            if opaque:
                want_marker = True
                if not prof.has("opaque-without-lower-dir"):
                    lower = self.lower_stat(p)
                    want_marker = lower is not None and st_.S_ISDIR(lower.st_mode)
                if want_marker:
                    # Reported before the directory itself is classified or emitted.
                    self.handle(DELETE, p + b"/" + OPAQUE_MARKER, None)

        # 2. Is there something below?
        lower = self.lower_stat(p)
        if deleted and lower is None:
            deleted = False               # an orphan whiteout
            if not prof.has("orphan-whiteout-as-device"):
                return False              # spec: whiteouts only for what exists below

        # 3. Kind; stat-identical directories are skipped altogether.
        if deleted:
            kind = DELETE
        elif lower is None:
            kind = ADD
        else:
            if (st_.S_ISDIR(lower.st_mode) and st_.S_ISDIR(f.st_mode)
                    and f.st_size == lower.st_size and f.st_mode == lower.st_mode
                    and same_fs_time(f.st_mtime_ns, lower.st_mtime_ns)):
                if prof.has("opaque-identical-subdir-skipped") or not under_opaque:
                    return opaque
            kind = MODIFY

        # 4./5. Changed dirs, and the immediate parent for an Add or Delete.
        if st_.S_ISDIR(f.st_mode):
            self.changed_dirs.add(p)
        if kind in (ADD, DELETE):
            parent = go_dir(p)
            if parent not in self.changed_dirs and parent != b"/":
                ppath = go_join(self.upper, parent)
                try:
                    pst = self.fs.stat(ppath)
                except OSError as e:
                    raise path_error("stat", ppath, e) from None
                self.handle(MODIFY, parent, pst)
                self.changed_dirs.add(parent)

        # 6. The entry itself.
        self.handle(kind, p, None if kind == DELETE else f)
        return opaque


def diff_dir_changes(lower_root: str | bytes, upper_root: str | bytes, handle: Handle,
                     profile, fs=None) -> None:
    """Report every change of upper_root (an overlayfs upper dir) against lower_root (the
    merged lower) as handle(kind, b"/path", stat_result or None for a Delete). `fs` is where
    the filesystem is read (fsview; the real one by default)."""
    lower, upper = go_clean(os.fsencode(lower_root)), go_clean(os.fsencode(upper_root))
    _Walk(lower, upper, handle, profile, fs).run()
