"""Scenario data: what the YAML says, validated and normalised. No I/O here."""
from __future__ import annotations

from dataclasses import dataclass, field

OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_TAR_GZIP = OCI_TAR + "+gzip"
OCI_TAR_ZSTD = OCI_TAR + "+zstd"
DEFAULT_MEDIA_TYPES = (OCI_TAR, OCI_TAR_GZIP, OCI_TAR_ZSTD)

ENTRY_TYPES = ("file", "dir", "symlink", "hardlink", "fifo", "char", "block", "socket")
OPS = ("write", "append", "mkdir", "rm", "rmtree", "rename", "chmod", "chown", "mtime",
       "symlink", "link", "setxattr", "mknod", "run", "copy", "many", "sync", "apply")
NODE_TYPES = ("fifo", "char", "block", "socket")


@dataclass(frozen=True)
class Generated:
    """`content: {size, seed}`: deterministic pseudo-random bytes (generators.pseudo_random)."""

    size: int
    seed: int = 0


@dataclass(frozen=True)
class LayerSource:
    """A lower layer from outside the scenario file: `{tar: PATH}` (a layer tar or compressed
    blob, applied by containerd's erofs differ) or `{dir: PATH}` (a tree copied in as it is)."""

    kind: str                          # "tar" | "dir"
    path: str                          # absolute (resolved against the scenario file's folder)
    media_type: str | None = None      # tar: None = from the blob's first bytes
    line: int = 0


@dataclass(frozen=True)
class Entry:
    """One thing in a lower layer."""

    path: bytes
    type: str = "file"
    content: bytes | None = None
    size: int | None = None            # sparse file of this size (content None)
    gen: Generated | None = None       # pseudo-random content (content None)
    target: bytes | None = None        # symlink target / hardlink source
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    mtime_ns: int | None = None
    xattrs: tuple[tuple[str, bytes], ...] = ()
    major: int = 0
    minor: int = 0
    line: int = 0


@dataclass(frozen=True)
class Op:
    """One upper operation; fields unused by an op stay None."""

    op: str
    path: bytes | None = None
    to: bytes | None = None            # rename destination (path is the source)
    target: bytes | None = None
    content: bytes | None = None
    size: int | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    mtime_ns: int | None = None
    name: str | None = None            # xattr name
    value: bytes | None = None         # xattr value
    type: str | None = None            # mknod type
    major: int = 0
    minor: int = 0
    gen: Generated | None = None       # write/many: pseudo-random content
    command: tuple[str, ...] = ()      # run: argv (a string command is ("/bin/sh", "-c", it))
    check: bool = True                 # run: a non-zero exit status fails the scenario
    timeout: float | None = None       # run/copy: seconds
    env: tuple[tuple[str, str], ...] = ()   # run: added to the command's environment
    source: str | None = None          # copy/sync/apply: absolute host path (file, tree, tar)
    media_type: str | None = None      # apply: the layer's media type (None: from its bytes)
    count: int = 0                     # many: number of files (path is a str.format pattern of i)
    expect_error: str | None = None    # the op must fail: an errno name (EXDEV) or a substring
    line: int = 0


APPLY_CHECKS = ("descriptor", "error", "image", "meaning")


@dataclass(frozen=True)
class ApplyCase:
    """One Apply: a blob (a fixture, or this scenario's Compare output) under a media type."""

    media_type: str | None            # None with from_compare: each Compare media type in turn
    fixture: str | None = None        # path under fixtures/, or absolute (`blob: {file: PATH}`)
    from_compare: bool = False
    annotations: tuple[tuple[str, str], ...] = ()
    mkfs_options: tuple[str, ...] = ()
    tar_index: bool = False
    check: tuple[str, ...] = APPLY_CHECKS
    expect: tuple[tuple[str, str], ...] = ()   # (era or "all", outcome)
    name: str = ""
    line: int = 0


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str                          # the YAML file
    description: str
    tags: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    lowers: tuple[tuple[Entry, ...] | LayerSource, ...] = ()
    upper: tuple[Op, ...] = ()
    upperdir: tuple[Op, ...] = ()      # raw edits of the upper dir, after the overlay is unmounted
    media_types: tuple[str, ...] = DEFAULT_MEDIA_TYPES
    source_date_epoch: int | None = None
    expect_quirks: tuple[str, ...] | None = None
    expect_error: str | None = None
    # (version range, quirks or None, error or None): later entries override earlier ones
    expect_by_version: tuple = ()
    requires: tuple[str, ...] = ()
    apply_cases: tuple[ApplyCase, ...] = ()
    timeout: float | None = None       # deadline (s) of each external call; None: the run's
    overlay: tuple[str, ...] = ()      # overlay mount options of the upper's overlay
    raw: dict = field(default_factory=dict, compare=False, repr=False)
    # the host files and folders it reads: the file itself, fixtures, layer tars and folders,
    # corpus files (the VM backend checks them for changes a guest's cache would hide)
    inputs: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def compares(self) -> bool:
        """Whether the scenario has a Compare part (an Apply-only file has none)."""
        return bool(self.lowers or self.upper or self.upperdir) or not self.apply_cases

    def expected(self, version: str) -> tuple[tuple[str, ...] | None, str | None]:
        """(expect.quirks, expect.error) for a containerd version, overrides applied."""
        from harness.reference.profiles import parse_version, version_predicate
        quirks, error = self.expect_quirks, self.expect_error
        v = parse_version(version)
        for rng, q, err in self.expect_by_version:
            if version_predicate(rng)(v):
                quirks = q if q is not None else quirks
                error = err if err is not None else error
        return quirks, error
