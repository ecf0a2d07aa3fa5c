"""The reference of containerd's EROFS differ ``Compare`` (spec §1), from two directories.

``lower_root`` stands for the mounted lower (containerd's temporary mount) and ``upper_root``
for ``<layer>/fs``. The walk (walk.py) feeds the ChangeWriter (changes.py), whose tar is
written to memory, compressed for the media type (compression.py), and described the way
Compare returns it. Labels are what the content store ends up holding for the blob (a fresh
store: the "blob already exists" branches of §1.1 steps 12–14 do not arise).

Errors are ``CompareError`` with containerd's wrapping; where Go names its temporary mount
directory, the text names ``lower_root`` instead.
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field

from . import compression
from .changes import ChangeWriter
from .profiles import OCI_TAR, Profile
from .walk import GoError, diff_dir_changes, go_str

LABEL_UNCOMPRESSED = "containerd.io/uncompressed"


class CompareError(GoError):
    """Compare failed; str() is containerd's error text. not_implemented marks errors that wrap
    errdefs.ErrNotImplemented (the diff service then tries the next differ)."""

    def __init__(self, text: str, *, not_implemented: bool = False, cause: str | None = None):
        super().__init__(text)
        self.not_implemented = not_implemented
        self.cause = cause                  # the innermost error text, without the wrapping


@dataclass
class CompareOutput:
    descriptor: dict                        # {"mediaType", "digest", "size"}
    labels: dict = field(default_factory=dict)
    blob: bytes = b""                       # as stored (compressed for +gzip/+zstd)
    tar: bytes = b""                        # the uncompressed layer tar


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_diff(lower_root: str | bytes, upper_root: str | bytes, profile: Profile,
               source_date_epoch: int | None = None, out=None) -> bytes | None:
    """writeDiff: the layer tar of upper against lower, returned, or streamed into `out` (a
    binary file object; then None is returned: use it for multi-GiB layers). GoError texts are
    those of DiffDirChanges / ChangeWriter, before Compare's wrapping."""
    buf = io.BytesIO() if out is None else out
    cw = ChangeWriter(buf.write, upper_root, profile, source_date_epoch)
    try:
        diff_dir_changes(lower_root, upper_root, cw.handle_change, profile)
    except GoError as e:
        raise GoError(f"failed to create diff tar stream: {e}") from e
    cw.close()
    return buf.getvalue() if out is None else None


def compare(lower_root: str | bytes, upper_root: str | bytes, *, media_type: str,
            profile: Profile, source_date_epoch: int | None = None,
            labels: dict | None = None) -> CompareOutput:
    """erofsDiff.Compare for one media type (\"\" means tar+gzip)."""
    mt = media_type or profile.default_media_type
    if mt not in profile.media_types:
        raise CompareError(f"unsupported diff media type: {mt}: not implemented",
                           not_implemented=True)
    compressed = mt != OCI_TAR

    try:
        tar = write_diff(lower_root, upper_root, profile, source_date_epoch)
    except GoError as e:
        # writeDiff runs inside mount.WithTempMount, which wraps the callback's error.
        root = go_str(os.fsencode(lower_root))
        inner = f"mount callback failed on {root}: {e}"
        outer = "failed to write compressed diff" if compressed else "failed to create diff tar stream"
        cause = e.__cause__ if isinstance(e.__cause__, GoError) else e
        raise CompareError(f"{outer}: {inner}", cause=str(cause)) from e

    blob = compression.compress(tar, mt)
    digest = sha256_digest(blob)

    # Labels as committed (the metadata store drops empty values).
    stored = dict(labels or {})
    if compressed:
        stored[LABEL_UNCOMPRESSED] = sha256_digest(tar)
    elif not profile.has("uncompressed-label-dropped"):
        stored[LABEL_UNCOMPRESSED] = digest         # spec: the diffID, which is the digest
    stored = {k: v for k, v in stored.items() if v != ""}

    return CompareOutput(descriptor={"mediaType": mt, "digest": digest, "size": len(blob)},
                         labels=stored, blob=blob, tar=tar)
