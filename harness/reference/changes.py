"""containerd's ``archive.ChangeWriter``: changes in, Go ``archive/tar`` headers out.

``handle_change(kind, path, stat)`` is the callback of walk.diff_dir_changes. Each change
becomes gotar Headers exactly as containerd builds them (spec §3.1–3.3): whiteouts as empty
'0' entries named ``.wh.<name>`` with epoch-0 times and no format; everything else through
``tar.FileInfoHeader`` without name lookups, Format=PAX, mtime floored to the second, numeric
owner, device numbers for char/block, hardlinks by inode (first seen is the source),
``security.capability`` as a PAX record, and every ancestor directory written before its
first descendant (``includeParents``). Error texts are containerd's.

Quirk switches come from the profile: duplicate-dir-headers, epoch-ignored,
only-capability-xattr, hardlinked-whiteout-link.
"""
from __future__ import annotations

import errno
import os
import stat as st_
from typing import Callable

from . import fsview
from .gotar import (Format, Header, TarError, TarWriter, TYPE_BLOCK, TYPE_CHAR, TYPE_DIR,
                    TYPE_FIFO, TYPE_LINK, TYPE_REG, TYPE_SYMLINK)
from .walk import (DELETE, MODIFY, UNMODIFIED, ChangeKind, GoError, go_base, go_clean,
                   go_dir, go_errno_text, go_join, go_str, is_whiteout_device, path_error)

WHITEOUT_PREFIX = b".wh."
PAX_SCHILY_XATTR = "SCHILY.xattr."
CAPABILITY = "security.capability"
# containerd copies through a 32 KiB buffer; the bytes written do not depend on the read size,
# so the reference reads 1 MiB at a time (fewer Python round trips).
COPY_BUFFER = 1 << 20
_NO_XATTR = (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP)
_S_IFBLK_OR_CHR = st_.S_IFBLK | st_.S_IFCHR    # containerd tests (mode & S_IFBLK) || (mode & S_IFCHR)


def file_info_header(st: os.stat_result, link: bytes) -> Header:
    """tarheader.FileInfoHeaderNoLookups: Go's tar.FileInfoHeader with Sys() hidden (no user
    or group names), then containerd's statUnix hook (uid, gid, device numbers)."""
    mode = st.st_mode
    hdr = Header(name=b"", mode=st_.S_IMODE(mode), mtime_ns=st.st_mtime_ns,
                 uid=st.st_uid, gid=st.st_gid)
    if st_.S_ISREG(mode):
        hdr.typeflag, hdr.size = TYPE_REG, st.st_size
    elif st_.S_ISDIR(mode):
        hdr.typeflag = TYPE_DIR
    elif st_.S_ISLNK(mode):
        hdr.typeflag, hdr.linkname = TYPE_SYMLINK, link
    elif st_.S_ISCHR(mode):
        hdr.typeflag = TYPE_CHAR
    elif st_.S_ISBLK(mode):
        hdr.typeflag = TYPE_BLOCK
    elif st_.S_ISFIFO(mode):
        hdr.typeflag = TYPE_FIFO
    elif st_.S_ISSOCK(mode):
        raise GoError("archive/tar: sockets not supported")
    else:
        raise GoError(f"archive/tar: unknown file mode {mode:#o}")
    set_device_numbers(hdr, st)
    return hdr


def set_device_numbers(hdr: Header, st: os.stat_result) -> None:
    """The S_IFBLK/S_IFCHR bit test also matches dirs, symlinks and sockets, whose rdev is 0;
    Linux major()/minor() encoding."""
    if st.st_mode & _S_IFBLK_OR_CHR:
        hdr.devmajor, hdr.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)


class ChangeWriter:
    """archive.NewChangeWriter(w, source) for one profile; source is the upper directory."""

    def __init__(self, write: Callable[[bytes], object], source: str | bytes, profile,
                 source_date_epoch: int | None = None, fs=None):
        self.tw = TarWriter(write)
        self.fs = fsview.default(fs)
        self.source = go_clean(os.fsencode(source))
        self.profile = profile
        # WithModTimeUpperBound: the erofs differ never passes it (B7); the spec clamps.
        self.mtime_bound_ns = (None if source_date_epoch is None or profile.has("epoch-ignored")
                               else source_date_epoch * 10**9)
        self.inode_src: dict[int, bytes] = {}     # inode -> tar name of its first path
        self.added_dirs: set[bytes] = set()       # includeParents' set (names without '/')
        self.written_dirs: set[bytes] = set()     # dirs already written (spec dedup, B5)

    # -- the change callback ---------------------------------------------------------------
    def handle_change(self, kind: ChangeKind, p: bytes, st: os.stat_result | None) -> None:
        if kind == DELETE:
            self._write_whiteout(p)
        elif kind == UNMODIFIED:
            raise GoError("reference ChangeWriter: Unmodified changes are not supported "
                          "(DiffDirChanges never reports them)")
        else:
            self._write_entry(p, st)

    __call__ = handle_change

    def _write_whiteout(self, p: bytes) -> None:
        # "/b/x" -> "b/.wh.x"; the opaque marker "/d/.wh..opq" -> "d/.wh..wh..opq".
        name = go_join(go_dir(p), WHITEOUT_PREFIX + go_base(p))[1:]
        # Since containerd v2.0 (#8764) whiteouts carry 1970-01-01, never the epoch; no Format.
        hdr = Header(name=name, typeflag=TYPE_REG, size=0, mtime_ns=0, atime_ns=0, ctime_ns=0,
                     format=Format.UNKNOWN)
        self._include_parents(hdr)
        try:
            self.tw.write_header(hdr)
        except TarError as e:
            raise GoError(f"failed to write whiteout header: {e}") from None

    def _write_entry(self, p: bytes, st: os.stat_result) -> None:
        prof = self.profile
        source = go_join(self.source, p)
        if st_.S_ISSOCK(st.st_mode):
            return                                  # sockets are ignored
        link = b""
        if st_.S_ISLNK(st.st_mode):
            try:
                link = self.fs.readlink(source)
            except OSError as e:
                raise path_error("readlink", source, e) from None

        hdr = file_info_header(st, link)
        hdr.format = Format.PAX   # USTAR when everything fits, else PAX; never GNU
        mtime = st.st_mtime_ns
        if self.mtime_bound_ns is not None and mtime > self.mtime_bound_ns:
            mtime = self.mtime_bound_ns
        hdr.mtime_ns = mtime // 10**9 * 10**9       # Truncate(time.Second): a floor
        hdr.atime_ns = hdr.ctime_ns = None

        name = p[1:] if p.startswith(b"/") else p  # relative to "/"; parents come relative
        if st_.S_ISDIR(st.st_mode) and not name.endswith(b"/"):
            name += b"/"
        hdr.name = name
        set_device_numbers(hdr, st)

        # Hardlinks: keyed by inode alone; later paths link to the first one's tar name.
        if not st_.S_ISDIR(st.st_mode) and st.st_nlink > 1 and not (
                is_whiteout_device(st) and not prof.has("hardlinked-whiteout-link")):
            src = self.inode_src.get(st.st_ino)
            if src is not None:
                hdr.typeflag, hdr.linkname, hdr.size = TYPE_LINK, src, 0
            else:
                self.inode_src[st.st_ino] = name

        hdr.pax = self._xattr_records(source)

        if hdr.typeflag == TYPE_DIR and not prof.has("duplicate-dir-headers"):
            if name.rstrip(b"/") in self.written_dirs:
                return                              # spec: each directory at most once
        self._include_parents(hdr)
        try:
            self.tw.write_header(hdr)
        except TarError as e:
            raise GoError(f"failed to write file header: {e}") from None
        if hdr.typeflag == TYPE_DIR:
            self.written_dirs.add(name.rstrip(b"/"))

        if hdr.typeflag == TYPE_REG and hdr.size > 0:
            self._copy_content(source, hdr.size)

    def _xattr_records(self, source: bytes) -> dict[str, bytes]:
        """containerd: only security.capability. Spec: every xattr but overlayfs' own."""
        records: dict[str, bytes] = {}
        if self.profile.has("only-capability-xattr"):
            try:
                value = self.fs.getxattr(source, CAPABILITY)
            except OSError as e:
                if e.errno not in _NO_XATTR:
                    raise GoError(f"failed to get capabilities xattr: {go_errno_text(e.errno)}") from None
                value = b""
            if value:                               # an empty capability is dropped
                records[PAX_SCHILY_XATTR + CAPABILITY] = value
            return records
        try:
            names = self.fs.listxattr(source)
        except OSError as e:
            if e.errno in _NO_XATTR:
                return records
            raise GoError(f"failed to list xattrs: {go_errno_text(e.errno)}") from None
        for key in names:
            if os.fsencode(key).startswith(self.profile.xattr_exclude_prefixes):
                continue
            try:
                value = self.fs.getxattr(source, key)
            except OSError as e:
                if e.errno in _NO_XATTR:
                    continue
                raise GoError(f"failed to get xattr {key}: {go_errno_text(e.errno)}") from None
            if value:
                records[PAX_SCHILY_XATTR + key] = value
        return records

    def _copy_content(self, source: bytes, size: int) -> None:
        """os.Open + copyBuffered into the tar writer (grown file: write too long; shrunk: short write)."""
        try:
            f = self.fs.open(source)
        except OSError as e:
            raise GoError(f"failed to open path: {go_str(source)}: "
                          f"{path_error('open', source, e)}") from None
        written = 0
        with f:
            while True:
                try:
                    chunk = f.read(COPY_BUFFER)
                except OSError as e:
                    raise GoError(f"failed to copy: {go_str(source)}: "
                                  f"{path_error('read', source, e)}") from None
                if not chunk:
                    break
                try:
                    written += self.tw.write(chunk)      # a grown file: "write too long"
                except TarError as e:
                    raise GoError(f"failed to copy: {go_str(source)}: {e}") from None
        if written != size:
            raise GoError("short write copying file")   # the file shrank

    def _include_parents(self, hdr: Header) -> None:
        """Write each not-yet-added ancestor directory (stat'ed in the upper, following
        symlinks) before hdr, top-down; the root is never written."""
        name = hdr.name.rstrip(b"/")
        fname = go_join(self.source, name)
        parent = go_dir(name)
        pname = go_join(self.source, parent)
        if fname != self.source and pname != self.source and parent not in self.added_dirs:
            self.added_dirs.add(parent)
            try:
                fi = self.fs.stat(pname)
            except OSError as e:
                raise path_error("stat", pname, e) from None
            self.handle_change(MODIFY, parent, fi)
        if hdr.typeflag == TYPE_DIR:
            self.added_dirs.add(name)

    def close(self) -> None:
        """Flush the last entry's padding and write the two zero blocks."""
        try:
            self.tw.close()
        except TarError as e:
            raise GoError(f"failed to close tar writer: {e}") from None
