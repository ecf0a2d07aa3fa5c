"""The reference of containerd's EROFS differ ``Compare`` (spec §1), from two directories.

``lower_root`` stands for the mounted lower (containerd's temporary mount) and ``upper_root``
for ``<layer>/fs``. The walk (walk.py) feeds the ChangeWriter (changes.py), whose tar is
hashed as it is written and spooled (memory while small, then an unlinked temporary file),
compressed for the media type from the spool in pieces (compression.py), and described the way
Compare returns it: memory stays bounded for a rootfs-sized layer. Labels are what the content store ends up holding for the blob (a fresh
store: the "blob already exists" branches of §1.1 steps 12–14 do not arise).

Errors are ``CompareError`` with containerd's wrapping; where Go names its temporary mount
directory, the text names ``lower_root`` instead.
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field

from ..spool import Spool
from . import compression
from .changes import ChangeWriter
from .profiles import OCI_TAR, Profile
from .walk import GoError, diff_dir_changes, go_str

LABEL_UNCOMPRESSED = "containerd.io/uncompressed"
SPILL = 8 << 20          # the tar and blob buffers move to a temporary file past this size


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


class _Counted:
    """A writer that hashes and counts what it passes on (the digest without a second read)."""

    def __init__(self, write):
        self._write, self.sha, self.size = write, hashlib.sha256(), 0

    def write(self, data) -> None:
        self.sha.update(data)
        self.size += len(data)
        self._write(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


def write_diff(lower_root: str | bytes, upper_root: str | bytes, profile: Profile,
               source_date_epoch: int | None = None, out=None, fs=None) -> bytes | None:
    """writeDiff: the layer tar of upper against lower, returned, or streamed into `out` (a
    binary file object; then None is returned: use it for multi-GiB layers). GoError texts are
    those of DiffDirChanges / ChangeWriter, before Compare's wrapping."""
    buf = io.BytesIO() if out is None else out
    cw = ChangeWriter(buf.write, upper_root, profile, source_date_epoch, fs=fs)
    try:
        diff_dir_changes(lower_root, upper_root, cw.handle_change, profile, fs=fs)
    except GoError as e:
        raise GoError(f"failed to create diff tar stream: {e}") from e
    cw.close()
    return buf.getvalue() if out is None else None


# Mount flags containerd's parseMountOptions turns into mount(2) flags rather than data.
_FLAG_OPTIONS = {"ro", "rw", "bind", "rbind", "remount", "defaults", "loop", "nodev", "nosuid",
                 "noexec", "noatime", "relatime", "strictatime", "nodiratime", "sync", "dirsync"}


def temp_mount_failure(mounts: list[dict], profile: Profile) -> str | None:
    """mount.WithTempMount's error for mounts it cannot perform, or None.

    A type with '/' (e.g. format/mkdir/overlay) is a mount-manager template; mount.All passes it
    to mount(2) as the fstype, which the kernel does not know (ENODEV)."""
    if not profile.has("lower-mount-templates-unactivated"):
        return None
    root = "/tmp/containerd-mount0"       # Go's temp dir name; errors are compared normalised
    for m in mounts:
        if "/" in m.get("type", ""):
            data = ",".join(o for o in m.get("options") or [] if o not in _FLAG_OPTIONS)
            return (f'failed to mount {root}: mount source: "{m.get("source", "")}", '
                    f'target: "{root}", fstype: {m["type"]}, flags: 0, data: "{data}", '
                    f"err: no such device")
    return None


def compare(lower_root: str | bytes, upper_root: str | bytes, *, media_type: str,
            profile: Profile, source_date_epoch: int | None = None,
            labels: dict | None = None, lower_mounts: list[dict] | None = None,
            fs=None) -> CompareOutput:
    """erofsDiff.Compare for one media type (\"\" means tar+gzip). `lower_mounts` is the
    snapshotter's mount list for the lower view (data only: its shape decides whether
    containerd's temporary mount can succeed); `lower_root` is that view already mounted.
    `fs` reads the filesystem (fsview.RealFS by default; a RecordedFS replays a golden state)."""
    mt = media_type or profile.default_media_type
    if mt not in profile.media_types:
        raise CompareError(f"unsupported diff media type: {mt}: not implemented",
                           not_implemented=True)
    compressed = mt != OCI_TAR
    outer = "failed to write compressed diff" if compressed else "failed to create diff tar stream"
    failing = temp_mount_failure(lower_mounts or [], profile)
    if failing:
        raise CompareError(f"{outer}: {failing}")

    tar_spool = Spool(SPILL)
    tar_out = _Counted(tar_spool.write)
    try:
        write_diff(lower_root, upper_root, profile, source_date_epoch, out=tar_out, fs=fs)
    except GoError as e:
        # writeDiff runs inside mount.WithTempMount, which wraps the callback's error.
        root = go_str(os.fsencode(lower_root))
        inner = f"mount callback failed on {root}: {e}"
        cause = e.__cause__ if isinstance(e.__cause__, GoError) else e
        raise CompareError(f"{outer}: {inner}", cause=str(cause)) from e

    tar = tar_spool.value()                 # bytes, or an mmap (not read here) when large
    blob, digest, size = tar, tar_out.digest, tar_out.size
    if compressed:
        blob_spool = Spool(SPILL)
        blob_out = _Counted(blob_spool.write)
        compression.compress_to(tar_spool.chunks(), tar_out.size, mt, blob_out.write)
        blob, digest, size = blob_spool.value(), blob_out.digest, blob_out.size

    # Labels as committed (the metadata store drops empty values).
    stored = dict(labels or {})
    if compressed:
        stored[LABEL_UNCOMPRESSED] = tar_out.digest
    elif not profile.has("uncompressed-label-dropped"):
        stored[LABEL_UNCOMPRESSED] = digest         # spec: the diffID, which is the digest
    stored = {k: v for k, v in stored.items() if v != ""}

    return CompareOutput(descriptor={"mediaType": mt, "digest": digest, "size": size},
                         labels=stored, blob=blob, tar=tar)
