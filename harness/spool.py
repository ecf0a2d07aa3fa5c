"""Byte buffers that move to disk when large, so an 8 GiB layer never sits in memory.

A Spool collects writes in memory up to a limit, then in an unlinked temporary file; value() gives
bytes, or a read-only mmap (which slices, hashes and writes like bytes) once spilled.
"""
from __future__ import annotations

import mmap
import os
import tempfile

MEMORY_LIMIT = 64 << 20


class Spool:
    def __init__(self, limit: int = MEMORY_LIMIT, dir: str | None = None):
        self._file = tempfile.SpooledTemporaryFile(max_size=limit, dir=dir)

    def write(self, data) -> int:
        return self._file.write(data)

    def value(self):
        f = self._file
        if not f._rolled:                       # still in memory
            return f._file.getvalue()
        f.flush()
        if f.tell() == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)

    def chunks(self, size: int = 1 << 20):
        """What was written, read back from the start in pieces (never all at once)."""
        f = self._file
        f.flush()
        f.seek(0)
        while data := f.read(size):
            yield data


def load(path: str, limit: int = MEMORY_LIMIT):
    """A file's bytes; mapped rather than read when large."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if size < limit or size == 0:
            return f.read()
        return mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)


def bytes_equal(a, b, chunk: int = 16 << 20) -> bool:
    """Equality for bytes or mmaps (an mmap compares by identity, not content)."""
    if a is None or b is None:
        return a is b
    if len(a) != len(b):
        return False
    if isinstance(a, bytes) and isinstance(b, bytes):
        return a == b
    return all(a[i:i + chunk] == b[i:i + chunk] for i in range(0, len(a), chunk))
