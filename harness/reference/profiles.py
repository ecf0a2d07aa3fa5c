"""The quirk registry and the reference profiles.

A *quirk* is one way containerd's EROFS differ departs from the intended behaviour (the OCI
image-spec layer format, and what the walking differ does where the two differ). Each has a
kebab-case name, the id it has in docs/spec.md (§7, B1–B21; B18+ were found while writing the
reference), the containerd versions it applies to, and a scope:

- ``compare``: the reference Compare (walk.py, changes.py, compare.py) has a switch for it and
  reads ``profile.has(name)``; nothing there branches on version strings.
- ``apply``: read by the reference Apply (apply.py / mediatypes.py).
- ``mounts``: the shape of the mounts containerd hands to Compare (the runner checks it).
- ``roundtrip``: seen only when the applied layer is mounted (harness/roundtrip.py explains a
  round-trip difference with it).
- ``engine``: documented only; the reference never produces that state (a panic, block mode,
  overlay features the harness does not mount with).

Besides quirks (``kind="quirk"``) the registry holds *switches* (``kind="switch"``): behaviour that
changed between containerd versions without either side being wrong (mkfs ``-U``, ``-b4096``, the
native-EROFS media-type eras). They are mediatypes.APPLY_SWITCHES, merged in here so one profile
answers every ``has()``.

A *profile* is a name plus the set of enabled entries plus a few data fields the differ reads.
``containerd@vX.Y.Z`` (2.1.0 <= X.Y.Z < 2.5.0, pre-releases included) enables every entry whose
version range holds. ``spec`` enables no quirk, and the switches of the newest modelled version
(LATEST_MODELLED).

Run ``python -m harness.reference.profiles --markdown`` to print docs/quirks.md.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field, replace
from typing import Callable

OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_TAR_GZIP = OCI_TAR + "+gzip"
OCI_TAR_ZSTD = OCI_TAR + "+zstd"

# Version tuples: (major, minor, patch, is_release, prerelease-text). A release sorts after its
# pre-releases: 2.4.0-beta.0 < 2.4.0.
Version = tuple[int, int, int, int, str]
# Build metadata after "+" is ignored, as semver orders versions: a source tree's key
# (v2.4.2+tree.<hash>, harness/srctree.py) reads as its base version.
_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")
FIRST_SUPPORTED, LAST_EXCLUDED = "2.1.0", "2.5.0-0"   # Compare exists from v2.1.0
LATEST_MODELLED = "2.4.2"       # the `spec` profile takes this version's switches (not quirks)


def parse_version(text: str) -> Version:
    """'v2.4.0-beta.0' -> (2, 4, 0, 0, 'beta.0'); 'v2.4.2' and 'v2.4.2+tree.ab12' -> (2, 4, 2, 1, '')."""
    m = _VERSION_RE.match(text.strip())
    if not m:
        raise ValueError(f"not a containerd version: {text!r} (want vX.Y.Z or vX.Y.Z-pre)")
    major, minor, patch, pre = m.groups()
    return int(major), int(minor), int(patch), 0 if pre else 1, pre or ""


def format_version(v: Version) -> str:
    return "v%d.%d.%d" % v[:3] + (f"-{v[4]}" if not v[3] else "")


_OPS: dict[str, Callable[[Version, Version], bool]] = {
    ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
    "<": lambda a, b: a < b, "==": lambda a, b: a == b,
}


def version_predicate(spec: str) -> Callable[[Version], bool]:
    """'>=2.1.0,<2.3.0 || >=2.4.0' -> predicate: ','-clauses are ANDed, '||'-ranges ORed;
    '*' matches every version."""
    if spec.strip() == "*":
        return lambda v: True
    ranges = []
    for alternative in spec.split("||"):
        clauses = []
        for clause in alternative.split(","):
            m = re.match(r"^\s*(>=|<=|==|>|<)\s*(\S+)\s*$", clause)
            if not m:
                raise ValueError(f"bad version range clause {clause!r} in {spec!r}")
            clauses.append((_OPS[m.group(1)], parse_version(m.group(2))))
        ranges.append(clauses)
    return lambda v: any(all(op(v, bound) for op, bound in clauses) for clauses in ranges)


@dataclass(frozen=True)
class Quirk:
    name: str                  # kebab-case switch name, read by the differ via profile.has()
    spec_id: str               # B-number in docs/spec.md §7 (B18+ found in this package);
                               # "" for a switch that is no quirk
    description: str           # one line: what containerd does, then what `spec` does instead
    reference: str             # spec section and upstream issue/PR
    versions: str = ">=2.1.0"  # versions of `component` it applies to (see version_predicate)
    scope: str = "compare"     # compare | mounts | apply | roundtrip | meaning | writer | engine
    kind: str = "quirk"        # quirk (a departure from the spec) | switch (a version era)
    component: str = "containerd"   # whose defect: containerd | mkfs.erofs | go-erofs | kernel
    overlay: tuple[str, ...] = ()   # overlay mount options it needs (any one); () = none
    kernels: tuple[str, ...] = ()   # guest kernels (vm/kernels.toml) it was shown on; () = any

    def applies(self, version: Version) -> bool:
        return version_predicate(self.versions)(version)


def tool_version(text: str) -> Version:
    """'mkfs.erofs (erofs-utils) 1.8.6' or '1.9.4-1' -> a comparable Version (the first X.Y[.Z])."""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not m:
        raise ValueError(f"no version in {text!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0), 1, ""


def tool_quirk_holds(name: str, versions: dict) -> bool:
    """Whether a quirk of a tool (component != containerd) holds for the versions under test,
    e.g. {"mkfs.erofs": "mkfs.erofs (erofs-utils) 1.8.6"}; unknown version: it does not."""
    q = QUIRKS_BY_NAME[name]
    try:
        return q.applies(tool_version(versions.get(q.component, "")))
    except ValueError:
        return False


QUIRKS: tuple[Quirk, ...] = (
    # -- Compare: the walk (continuity DiffDirChanges, DiffSourceOverlayFS) -------------------
    Quirk("enotdir-abort", "B2",
          "A lower path under a non-directory (os.Stat -> ENOTDIR) aborts Compare with "
          "`stat <lower>/<p>: not a directory`; spec: the lower entry is absent.",
          "spec §2.2 step 2, §7 B2"),
    Quirk("orphan-whiteout-as-device", "B3",
          "A 0/0 char-device whiteout with nothing below it is emitted as a char device "
          "('3', dev 0/0); spec: it is dropped (whiteouts only for what exists below).",
          "spec §2.2 step 2, §7 B3; OCI layer.md Whiteouts"),
    Quirk("lower-stat-follows-symlinks", "B18",
          "Lower existence is os.Stat, following symlinks (absolute ones on the host), so a "
          "dangling lower symlink counts as absent; spec: overlay semantics, lstat of the "
          "entry, absent under any symlink or non-directory component (a regular file there "
          "still aborts while enotdir-abort is on).",
          "spec §2.2 step 2, §7 B3; continuity fs/diff.go"),
    Quirk("opaque-identical-subdir-skipped", "B6",
          "A sub-directory of an opaque directory whose size, mode and mtime equal the lower's "
          "is skipped, so the layer does not recreate it; spec: emit it.",
          "spec §2.3, §7 B6; image-spec#144"),
    Quirk("opaque-without-lower-dir", "B19",
          "An opaque upper directory gets a `.wh..wh..opq` entry even when the lower path is "
          "not a directory; spec: the marker only when a lower directory exists.",
          "spec §2.2 step 1; OCI layer.md Whiteouts"),
    Quirk("socket-parent-emitted", "B11",
          "A socket is dropped, but when it is an Add its parent directory is still emitted; "
          "spec: a socket contributes nothing.",
          "spec §3.1, §7 B11; containerd pkg/archive TestDiffTar/IgnoreSockets"),
    Quirk("whiteout-sorted-by-name", "B16",
          "Whiteouts come at the sort position of the deleted name, after sibling directories "
          "that sort earlier; spec: entries written as whiteouts come first in their directory "
          "(OCI SHOULD: before sibling directory entries).",
          "spec §3.3, §7 B16; OCI layer.md Whiteouts"),
    # -- Compare: the tar (containerd pkg/archive ChangeWriter) --------------------------------
    Quirk("hardlinked-whiteout-link", "B4",
          "Orphan whiteout devices sharing one inode (overlayfs >= 5.8) become '1' hardlinks to "
          "the first; spec: no inode tracking for whiteout devices.",
          "spec §7 B4"),
    Quirk("duplicate-dir-headers", "B5",
          "A directory can be written twice (opaque dirs; skipped parents with Modify then "
          "Add/Delete children); spec: each directory at most once, first position kept.",
          "spec §3.3, §7 B5; containerd#2054, containerd#2070, erofs-utils#32"),
    Quirk("lower-mount-templates-unactivated", "B20",
          "From v2.2.0 a view of two or more layers is a mount-manager template "
          "(`format/mkdir/overlay`, `lowerdir={{ overlay a b }}`) that Compare hands to "
          "mount.All unactivated, so Compare fails with `no such device`; spec: the lower "
          "mounts are activated first and the diff is taken.",
          "found by layerconf, confirmed through a containerd daemon (its diff service passes "
          "snapshot mounts raw); containerd pkg/rootfs/diff.go CreateDiff, core/mount/temp.go",
          versions=">=2.2.0", scope="mounts"),
    Quirk("epoch-ignored", "B7",
          "SOURCE_DATE_EPOCH (option or context) is read but never applied; spec: mtimes after "
          "the epoch become the epoch, as the walking differ does (whiteouts stay at 0).",
          "spec §1.1 step 3, §7 B7; containerd#8764, containerd#7478"),
    Quirk("only-capability-xattr", "B12",
          "Only security.capability is exported (as SCHILY.xattr.*); spec: every xattr except "
          "overlayfs' own trusted.overlay.* / user.overlay.* (OCI: xattrs SHOULD be kept).",
          "spec §3.1 step 11, §7 B12; containerd#8947, containerd#2863"),
    # -- Compare: the service around the tar ---------------------------------------------------
    Quirk("uncompressed-label-dropped", "B8",
          "For the plain tar media type the containerd.io/uncompressed label is set to \"\" and "
          "so never stored; spec: it is the blob's own digest, as for compressed blobs.",
          "spec §1.1 step 14, §7 B8"),
    # -- Apply, seen once the layer is mounted (harness/roundtrip.py) ---------------------------
    Quirk("applied-root-dir-defaults", "B21",
          "Compare never writes a root entry, so the applied image's root directory is "
          "mkfs.erofs's own: mode 0777, uid/gid 0, mtime the build time (0 under -T0); a "
          "read-only view whose top layer is that image shows / world-writable; spec: a layer "
          "that says nothing about / leaves the root of the layers below as it is.",
          "found by layerconf; erofs-utils lib/inode.c (root i_mode S_IFDIR|0777), "
          "plugins/diff/erofs Apply", scope="roundtrip"),
    # -- mkfs.erofs, seen when the image is read back against the layer's meaning --------------
    # (harness/checks/meaning.py recognises each; versions are erofs-utils versions.)
    Quirk("pax-fraction-as-integer-ns", "M1",
          "A PAX time with fewer than 9 fraction digits (`mtime=1795983873.5`, as GNU tar and "
          "Go's archive/tar write it) is read as that many nanoseconds (.5 -> 5 ns, "
          ".66737128 -> 66737128 ns); spec: the fraction is a decimal fraction of a second.",
          "spec §7.1 M1; POSIX pax 'mtime'; seen on 1.8.6, not on 1.9.4; fixed in 1.9.2 "
          "(erofs-utils 3166f1d)",
          versions="<1.9.2", scope="meaning", component="mkfs.erofs"),
    Quirk("pax-global-records-applied", "M2",
          "Every record of a PAX global header (`g`) is applied to every later entry: a `path` "
          "renames them all to one name (the image holds one file), and mtime, uid, gid, "
          "linkpath, size and SCHILY.xattr records overwrite each entry's own; spec (Go "
          "archive/tar, containerd's default applier): a global header is its own entry and "
          "changes no other entry.",
          "spec §7.1; seen on 1.8.6 and 1.9.4", versions="*", scope="meaning",
          component="mkfs.erofs"),
    Quirk("gnu-sparse-1-unexpanded", "M3",
          "A PAX sparse entry (GNU sparse 0.0, 0.1 and 1.0: `GNU.sparse.*` records, `tar "
          "--sparse --format=pax`) is not expanded: 1.0 and 0.1 are stored as "
          "`GNUSparseFile.<pid>/<name>` holding the map and the packed data, 0.0 at its "
          "packed size; spec: the file `<name>` at its real size, holes as zeros.",
          "spec §7.1; seen on 1.8.6 and 1.9.4", versions="*", scope="meaning",
          component="mkfs.erofs"),
    Quirk("implicit-dir-defaults", "M4",
          "A directory the tar implies (a parent of an entry) but never lists is created with "
          "mode 0777; spec (containerd's default applier): mode 0755.",
          "spec §7.1; erofs-utils lib/tar.c; seen on 1.8.6 and 1.9.4", versions="*",
          scope="meaning", component="mkfs.erofs"),
    Quirk("nul-numeric-field-refused", "M5",
          "A header whose numeric fields (uid, gid) are all NUL bytes, as `npm pack` writes, "
          "is refused as `invalid tar @ <offset>`; spec (Go archive/tar): an all-NUL numeric "
          "field is 0, and containerd's default applier unpacks the layer.",
          "spec §7.1; seen on 1.8.6 and 1.9.4", versions="*", scope="meaning",
          component="mkfs.erofs"),
    Quirk("truncated-data-loops", "M6",
          "A tar cut inside a file's data makes mkfs.erofs loop forever at end of input "
          "(`write(fd, \"\", 0)` again and again), so containerd's Apply never returns; spec: "
          "an error (`unexpected EOF`).",
          "spec §7.1 M6; seen on 1.8.6; 1.9.4 fails at once; fixed in 1.9.1 (erofs-utils "
          "aa169fb, erofs-utils#43)", versions="<1.9.1", scope="meaning", component="mkfs.erofs"),
    Quirk("base256-negative-refused", "M7",
          "A header with a negative base-256 number (a pre-1970 mtime, as GNU tar writes it) "
          "is refused as `invalid tar @ <offset>`; spec (Go archive/tar): base-256 numbers are "
          "signed, and containerd's default applier unpacks the layer.",
          "spec §7.1 M7; seen on 1.8.6, not on 1.9.4; fixed in 1.8.8 (erofs-utils c1f655e)",
          versions="<1.8.8",
          scope="meaning", component="mkfs.erofs"),
    Quirk("bare-whiteout-empty-dirent", "M8",
          "A bare `.wh.` entry (a whiteout of the empty name) or `.wh..wh.` becomes a directory "
          "entry with an empty name: the kernel rejects the directory as corrupt (EUCLEAN, "
          "`bogus dirent`), so nothing in it can be listed; spec (containerd's default "
          "applier): the layer is refused (`invalid whiteout name`).",
          "spec §7.1; seen on 1.8.6 and 1.9.4", versions="*", scope="meaning",
          component="mkfs.erofs"),
    Quirk("v7-header-refused", "M9",
          "A pre-POSIX V7 header (no `ustar` magic, as `tar --format=v7` writes) is refused as "
          "`invalid tar magic @ <offset>`; spec (Go archive/tar, containerd's default applier): "
          "V7 headers are read.",
          "spec §7.1; seen on 1.8.6 and 1.9.4", versions="*", scope="meaning",
          component="mkfs.erofs"),
    Quirk("eof-without-end-blocks-refused", "M10",
          "A tar that ends at a header boundary without its two zero blocks (none, or only "
          "one), and an empty stream, are refused as `failed to read header block @ <end>`; "
          "spec (Go archive/tar, containerd's default applier): a clean end of stream there "
          "ends the archive.",
          "spec §7.1 M10; seen on 1.8.6, not on 1.9.4; fixed in 1.9.0 (erofs-utils 0c15713)",
          versions="<1.9.0",
          scope="meaning", component="mkfs.erofs"),
    Quirk("dotdot-leaves-directories", "M11",
          "A name that climbs with `..` (`ok/../../up`) leaves the directories it passed "
          "through (`/ok`) in the image; spec (containerd's default applier): the name is "
          "cleaned first (`/up`) and nothing else is created.",
          "spec §7.1; seen on 1.8.6 and 1.9.4", versions="*", scope="meaning",
          component="mkfs.erofs"),
    Quirk("aufs-dir-header-dropped", "M13",
          "A directory entry named `.wh..wh.<x>` (aufs' own metadata directories, e.g. "
          "`.wh..wh.plnk/`) loses its header: the directory comes out with mkfs.erofs' defaults "
          "(0777) when something below it keeps it; spec (containerd's default applier): a "
          "directory with the header's mode, owner and mtime.",
          "spec §7.1 M13; seen on 1.8.6 and 1.9.4", versions="*", scope="meaning",
          component="mkfs.erofs"),
    Quirk("pax-time-empty-fraction-refused", "M14",
          "A PAX time with a point and no digits after it (`mtime=1700000000.`) is refused "
          "with nothing but `Could not format the device`; spec (Go archive/tar, containerd's "
          "default applier): the same as `1700000000`.",
          "spec §7.1 M14; seen on 1.8.6 and 1.9.4", versions="*", scope="meaning",
          component="mkfs.erofs"),
    Quirk("cut-in-padding-refused", "M15",
          "A tar that ends inside the zero padding after its last entry's data (no end "
          "blocks) is refused with nothing but `Could not format the device`; spec (Go "
          "archive/tar, containerd's default applier): every entry is whole, the archive ends "
          "there.",
          "spec §7.1 M15; seen on 1.8.6 and 1.9.4", versions="*", scope="meaning",
          component="mkfs.erofs"),
    Quirk("cut-in-header-accepted", "M16",
          "A tar cut inside a header block (or inside its end blocks) is applied as if it "
          "ended there, silently dropping the cut entry; spec (Go archive/tar, containerd's "
          "default applier): `unexpected EOF`, the layer is refused.",
          "spec §7.1 M16; seen on 1.9.4; 1.8.6 refuses the same inputs", versions=">=1.9.4",
          scope="meaning", component="mkfs.erofs"),
    Quirk("gnu-sparse-0-dropped", "M17",
          "An old-GNU sparse entry (type `S`, `tar --sparse --format=gnu`) is dropped without "
          "a word (exit 0; only `-d3` logs `unrecognized typeflag`): the image lacks the file; "
          "spec (Go archive/tar): a regular file with holes.",
          "spec §7.1 M17; seen on 1.8.6 and 1.9.4", versions="*", scope="meaning",
          component="mkfs.erofs"),
    Quirk("tar-input-decompressed", "M12",
          "With --tar=f, a gzip or zstd stream is decompressed by mkfs.erofs itself, so the erofs "
          "differ applies a compressed blob whose media type says plain tar (its digest, not the "
          "tar's, becomes the diffID), while containerd's default applier refuses it as a broken "
          "tar; spec: the stream is the tar the media type names.",
          "spec §5.1, §7.1 M12; seen on 1.9.4, not on 1.8.6 (which refuses the stream)",
          versions=">=1.9.4", scope="meaning", component="mkfs.erofs"),
    # -- containerd's default applier (the walking differ's Apply), the meaning check's second
    # opinion: where it refuses a layer the erofs differ accepts.
    Quirk("applier-refuses-gnu-sparse-0", "B22",
          "containerd's default applier (pkg/archive) refuses an old-GNU sparse entry (type "
          "'S', `tar --sparse --format=gnu`): `unhandled tar header type 83`, while the erofs "
          "differ applies the layer; spec: Go's archive/tar reads the entry as a regular file "
          "with holes.",
          "spec §7 B22; containerd pkg/archive/tar.go createTarFile", scope="meaning"),
    Quirk("applier-clamps-mtime-range", "B23",
          "containerd's default applier sets an mtime before 1970 or after 2262 (outside int64 "
          "nanoseconds) to the epoch (pkg/archive boundTime), while the erofs differ's image "
          "keeps the tar's value; spec: the tar's mtime.",
          "spec §7 B23; containerd pkg/archive/time.go boundTime", scope="meaning"),
    Quirk("applier-link-header-sets-inode", "B24",
          "containerd's default applier applies a hardlink entry's own mode, owner, mtime and "
          "xattrs to the inode it shares with its target, so the last header of a link group "
          "wins (a link header with mode 0, as Go's tar.Header{} gives, makes the file 0000); "
          "the erofs differ's image keeps the target entry's metadata; spec: a hardlink entry "
          "only names another path for the same file (POSIX ustar: its other fields are not "
          "the file's).",
          "spec §7 B24; containerd pkg/archive/tar.go createTarFile (Lchown, chmod, chtimes "
          "after Link)", scope="meaning"),
    # -- Engine-level (documented; the reference never reaches these states) -------------------
    Quirk("empty-mounts-panic", "B9",
          "MountsToLayer indexes mounts[0] without a length check: an empty upper panics.",
          "spec §1.3, §7 B9", scope="engine"),
    Quirk("block-mode-empty-upper", "B10",
          "In block mode (default_size > 0) Compare reads the empty `<id>/fs` instead of the "
          "upper inside rwlayer.img, giving an empty diff.",
          "spec §1.4, §7 B10", versions=">=2.2.0", scope="engine"),
    Quirk("no-redirect-metacopy", "B13",
          "Compare reads the upper dir as plain files, blind to overlay.redirect, "
          "overlay.metacopy and the overlay index: a lower directory renamed under "
          "redirect_dir=on loses its lower content (the layer has the new name, empty, and a "
          "whiteout of the old); a file whose metadata changed under metacopy=on (chown, chmod, "
          "a rename) reads as zeros; a lower hardlink written through one name under index=on "
          "keeps the old content under its other names and loses the link; spec: the merged "
          "view. containerd's erofs snapshotter passes none of these options itself; a node "
          "gets them from ovl_mount_options or the overlay module's defaults (Debian: off).",
          "spec §2.2 step 1, §7 B13; scenarios/overlay; docs/overlay.md", scope="roundtrip",
          overlay=("redirect_dir=on", "metacopy=on", "index=on"), kernels=("6.1", "6.12", "7.3")),
    Quirk("compressor-close-error-ignored", "B14",
          "The compressor's Close error is ignored, so a failed final flush still commits.",
          "spec §1.1 step 10, §7 B14", scope="engine"),
)

# Divergences of the go-erofs writer (oracle/goerofs/, `--writer go-erofs`) from what the layer
# means, read through the kernel (harness/checks/writer.py); versions are go-erofs versions.
QUIRKS += (
    Quirk("go-erofs-hardlink-copied", "G1",
          "A hard link is written as an independent copy of its target (same content and "
          "attributes, its own inode, link count 1): go-erofs v0.3.1's Writer has no Link and "
          "CopyFrom makes one inode per path; spec (containerd's default applier, mkfs.erofs): "
          "the names share one inode.",
          "spec §7.3 G1; go-erofs v0.3.1 mkfs.go (Writer: Create/Mkdir/Symlink/Mknod only); "
          "continuity#289 needs a later go-erofs for Writer.Link",
          versions="<=0.3.1", scope="writer", component="go-erofs"),
    Quirk("go-erofs-gnu-sparse-0-dropped", "G2",
          "An old-GNU sparse entry (type `S`) is skipped, so the image lacks the file: Go's "
          "archive/tar reports it as TypeGNUSparse, which containerd's go-erofs Apply "
          "(continuity tarconv) treats as an unknown type; spec (Go archive/tar): the file at "
          "its real size, holes as zeros. mkfs.erofs drops it too (M17); containerd's default "
          "applier refuses the layer (B22).",
          "spec §7.3 G2; continuity#289 tarconv/apply.go Apply (default case)",
          versions="<=0.3.1", scope="writer", component="go-erofs"),
    Quirk("go-erofs-merge-in-name-order", "G3",
          "Merge (CopyFrom with erofs.Merge) walks a layer in byte order of names and acts on "
          "each whiteout when it meets it, not in tar order: `.wh..wh..opq` also removes the "
          "layer's own entries that sort before it (`.bashrc`, `-x`), and an entry the layer "
          "adds and then whites out stays (`.wh.x` sorts before `x`); spec: containerd's "
          "default applier reads in tar order (OCI layer.md: a whiteout hides lower layers only, "
          "so go-erofs is right on the second shape and containerd is not).",
          "spec §7.3 G3; go-erofs v0.3.1 mkfs.go Writer.CopyFrom (Merge); OCI layer.md Whiteouts",
          versions="<=0.3.1", scope="writer", component="go-erofs"),
)

# Limits of the kernel met through Apply: a layer whose image is right, that a kernel cannot
# mount (harness/checks/meaning.py recognises each; versions are kernel versions).
QUIRKS += (
    Quirk("tar-index-empty-device-tag-refused", "K1",
          "A tar-index layer (containerd's enable_tar_index: `mkfs.erofs --tar=i`, the tar "
          "appended to the index) has one extra device whose tag is empty; the kernel refuses "
          "to mount it (`erofs_init_device: empty device tag`, EINVAL), so the snapshotter "
          "cannot use the layer; spec: the image mounts, as on kernels with the flat-device "
          "relaxation.",
          "spec §7.4 K1; linux-erofs 'erofs: relax the constraint of non-empty device tag in "
          "flatdev mode' (Linux 6.7); shown on 6.1, not on 6.12, 7.3",
          versions="<6.7.0", scope="meaning", component="kernel", kernels=("6.1",)),
)

# Apply-side switches live in mediatypes.py (their reader); ids and kinds are added here.
_APPLY_IDS = {"native-mt-seed-inverted": ("B1", "quirk"), "native-mt-layer-prefix": ("B15", "switch")}


def _apply_entries() -> tuple[Quirk, ...]:
    try:
        from .mediatypes import APPLY_SWITCHES
    except ImportError:            # the Apply reference is optional for the Compare side
        return ()
    out = []
    for sw in APPLY_SWITCHES:
        spec_id, kind = _APPLY_IDS.get(sw.name, ("", "switch"))
        versions = " || ".join(f">={lo},<{hi}" if hi else f">={lo}" for lo, hi in sw.versions)
        out.append(Quirk(sw.name, spec_id, sw.description, sw.reference, versions=versions,
                         scope="apply", kind=kind))
    return tuple(out)


QUIRKS = QUIRKS + _apply_entries()

# Considered and deliberately not registered (kept for docs/quirks.md).
NOT_QUIRKS: tuple[tuple[str, str, str], ...] = (
    ("B17", "No content comparison: an upper file identical to the lower (e.g. a copy-up) is "
            "emitted in full.",
     "Not a quirk: OCI layer.md says added and modified files are carried \"in their "
     "entirety\", and overlayfs reports a copied-up file as changed. Suppressing it would need "
     "a content comparison no containerd differ does (buildkit's does, moby/buildkit#2181)."),
)

QUIRKS_BY_NAME: dict[str, Quirk] = {q.name: q for q in QUIRKS}
assert len(QUIRKS_BY_NAME) == len(QUIRKS), "duplicate quirk name"


@dataclass(frozen=True)
class Profile:
    """What one reference run emulates. The differ reads has() and the data fields only."""

    name: str
    quirks: frozenset[str]
    version: Version | None = None          # containerd version; None for `spec`
    # Compare media types accepted, and the one an empty media type becomes.
    media_types: tuple[str, ...] = (OCI_TAR, OCI_TAR_GZIP, OCI_TAR_ZSTD)
    default_media_type: str = OCI_TAR_GZIP
    # With only-capability-xattr off: xattr name prefixes that are not exported (overlayfs'
    # own metadata in the upper; user.overlay.* is what a userxattr mount uses).
    xattr_exclude_prefixes: tuple[bytes, ...] = (b"trusted.overlay.", b"user.overlay.")
    continuity: str | None = None           # continuity module version (information only)
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self):
        unknown = sorted(set(self.quirks) - QUIRKS_BY_NAME.keys())
        if unknown:
            raise ValueError(f"unknown quirk(s) {', '.join(unknown)} in profile {self.name!r}")

    def has(self, quirk: str) -> bool:
        if quirk not in QUIRKS_BY_NAME:       # a typo must not silently read as "off"
            raise KeyError(f"unknown quirk {quirk!r}")
        return quirk in self.quirks

    def without(self, *names: str, name: str | None = None) -> "Profile":
        """This profile with some quirks switched off (e.g. to see which quirk explains a diff)."""
        for n in names:
            QUIRKS_BY_NAME[n]
        return replace(self, name=name or f"{self.name}-{'-'.join(names)}",
                       quirks=self.quirks - set(names))

    def with_quirks(self, *names: str, name: str | None = None) -> "Profile":
        for n in names:
            QUIRKS_BY_NAME[n]
        return replace(self, name=name or f"{self.name}+{'+'.join(names)}",
                       quirks=self.quirks | set(names))


def _continuity_for(v: Version) -> str:
    return "v0.5.0" if v >= parse_version("2.3.0-0") else "v0.4.5"


def containerd_profile(version: str) -> Profile:
    """The profile of containerd's erofs differ at `version` (2.1.0 <= version < 2.5.0). A source
    tree (`v2.4.2+tree.<hash>`) gets its base version's profile, named as that version."""
    v = parse_version(version)
    notes = ((f"source tree {version}: the profile of its base version {format_version(v)}",)
             if "+" in version else ())
    if not parse_version(FIRST_SUPPORTED) <= v < parse_version(LAST_EXCLUDED):
        raise ValueError(f"no profile for containerd {format_version(v)}: the EROFS differ's "
                         f"Compare is modelled for v{FIRST_SUPPORTED} … v2.4.x")
    enabled = frozenset(q.name for q in QUIRKS if q.component == "containerd" and q.applies(v))
    return Profile(name=f"containerd@{format_version(v)}", quirks=enabled, version=v,
                   continuity=_continuity_for(v), notes=notes)


SPEC = Profile(name="spec", notes=(
    "OCI image-spec layer.md; SOURCE_DATE_EPOCH clamps mtimes like the walking differ; "
    "no duplicate paths; whiteouts only for what exists below; whiteouts first in their "
    "directory; all xattrs except overlayfs' own.",),
               quirks=frozenset(q.name for q in QUIRKS if q.kind == "switch"
                                and q.applies(parse_version(LATEST_MODELLED))))


def get_profile(name: str) -> Profile:
    """'spec', 'containerd@v2.4.2' (the 'v' is optional)."""
    if name == "spec":
        return SPEC
    if name.startswith("containerd@"):
        return containerd_profile(name.split("@", 1)[1])
    raise ValueError(f"unknown profile {name!r} (want 'spec' or 'containerd@vX.Y.Z')")


def quirks_table(scope: str | None = None, kind: str | None = "quirk") -> list[dict[str, str]]:
    """Rows for docs: name, id, scope, kind, description, reference, versions."""
    return [dict(name=q.name, id=q.spec_id, scope=q.scope, kind=q.kind,
                 description=q.description + _holds_under(q), reference=q.reference,
                 versions=q.versions)
            for q in QUIRKS
            if (scope is None or q.scope == scope) and (kind is None or q.kind == kind)]


def _holds_under(q: Quirk) -> str:
    """' Holds under overlay redirect_dir=on or metacopy=on, kernels 6.1, 6.12.' (or '')."""
    parts = []
    if q.overlay:
        parts.append("overlay " + " or ".join(q.overlay))
    if q.kernels:
        parts.append("kernels " + ", ".join(q.kernels))
    if not parts:
        return ""
    return " Holds under " + ", ".join(parts) + "."


def _cell(s: str) -> str:
    return s.replace("|", "\\|")


def scenarios_by_quirk() -> dict[str, list[str]]:
    """quirk name -> scenario names whose expectations name it (scenarios/ of this repo)."""
    import yaml
    from pathlib import Path
    root = Path(__file__).resolve().parents[2] / "scenarios"
    out: dict[str, list[str]] = {}
    for f in sorted(root.rglob("*.yaml")):
        try:
            expect = (yaml.safe_load(f.read_text()) or {}).get("expect") or {}
        except (yaml.YAMLError, AttributeError):
            continue
        names = set(expect.get("quirks") or [])
        for sub in (expect.get("versions") or {}).values():
            names |= set((sub or {}).get("quirks") or [])
        for q in names:
            out.setdefault(q, []).append(str(f.relative_to(root).with_suffix("")))
    return out


def markdown() -> str:
    """docs/quirks.md, generated from the registry."""
    out = [
        "# Quirk registry",
        "",
        "Generated by `python -m harness.reference.profiles --markdown` from",
        "`harness/reference/profiles.py`; edit the registry, not this file.",
        "",
        "A quirk is one way containerd's EROFS differ departs from the intended behaviour",
        "(OCI image-spec layer format; the walking differ where they differ). Ids are those of",
        "[spec.md](spec.md) §7 (B18+ were found while writing the Python reference); what each",
        "means for a user, and its upstream status, is in [findings.md](findings.md).",
        "",
        "Profiles: `containerd@vX.Y.Z` (v2.1.0 … v2.4.x) enables every quirk and switch whose",
        "version range holds; `spec` enables no quirk (and the newest version's switches). The",
        "reference reads `profile.has(name)` and never a version. Scope `compare` is read by",
        "the reference Compare, `apply` by the reference Apply; `engine` is documented only.",
        "",
        "| name | id | scope | versions | description | reference |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in quirks_table():
        out.append(f"| `{r['name']}` | {r['id']} | {r['scope']} | `{r['versions']}` | "
                   f"{_cell(r['description'])} | {_cell(r['reference'])} |")
    switches = quirks_table(kind="switch")
    if switches:
        out += ["", "## Version switches (not quirks)", "",
                "Behaviour that changed between containerd versions without being a departure "
                "from", "the spec; `spec` takes the newest modelled version's "
                f"(v{LATEST_MODELLED}). Defined in", "`harness/reference/mediatypes.py`.", "",
                "| name | id | scope | versions | description | reference |",
                "| --- | --- | --- | --- | --- | --- |"]
        for r in switches:
            out.append(f"| `{r['name']}` | {r['id']} | {r['scope']} | `{r['versions']}` | "
                       f"{_cell(r['description'])} | {_cell(r['reference'])} |")
    shown = scenarios_by_quirk()
    out += ["", "## Scenarios that show each quirk", "",
            "From the scenarios' `expect.quirks` (and `expect.versions`); each is checked on every run.",
            ""]
    for q in QUIRKS:
        if q.kind == "quirk" and shown.get(q.name):
            out.append(f"- `{q.name}`: " + ", ".join(f"`{n}`" for n in shown[q.name]))
    out += ["", "## Considered and not registered", ""]
    for sid, what, why in NOT_QUIRKS:
        out.append(f"- **{sid}** — {what} {why}")
    out += [
        "",
        "## The `spec` profile, in one place",
        "",
        "- Lower lookup with overlay semantics: `lstat` of the entry; a symlink or",
        "  non-directory on the way means absent (never an error).",
        "- Whiteouts (char 0/0) only when something exists below; otherwise dropped. An",
        "  opaque marker only when a lower directory exists.",
        "- Whiteouts first within their directory, then the other entries in byte order.",
        "- Under an opaque directory nothing is skipped as \"identical to the lower\".",
        "- Each directory at most once; sockets contribute nothing.",
        "- `SOURCE_DATE_EPOCH` clamps mtimes (strictly later → the epoch, then floor to",
        "  seconds); whiteouts stay at 0.",
        "- Xattrs: all, as `SCHILY.xattr.<name>`, except `trusted.overlay.*` and",
        "  `user.overlay.*`; empty values are dropped (as containerd drops an empty",
        "  capability).",
        "- `containerd.io/uncompressed` is always set, to the tar's digest.",
    ]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if argv[1:] == ["--markdown"]:
        sys.stdout.write(markdown())
        return 0
    if len(argv) == 3 and argv[1] == "--profile":
        try:
            p = get_profile(argv[2])
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(p.name)
        for q in QUIRKS:
            print(f"  [{'x' if q.name in p.quirks else ' '}] {q.name} "
                  f"({q.spec_id or '-'}, {q.scope} {q.kind})")
        return 0
    print("usage: python -m harness.reference.profiles --markdown | --profile NAME",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
