"""The round trip of a Compare scenario through the kernel: containerd's Compare blob, applied by
containerd's erofs Apply, mounted with the kernel's erofs over the lower layers' own layer.erofs
files and stacked with overlayfs, must show the tree the scenario's merged upper showed before
Compare.

A difference is explained by a named quirk (the layer lost something containerd drops) or by a
limit of the layer format itself; anything else fails, by path and attribute.
"""
from __future__ import annotations

import contextlib
import os
import stat
import uuid

from . import kmount, phases, state
from .oracle import ContainerdError, OracleError
from .reference import profiles
from .result import Check, Status
from .treeview import Difference, capture, diff

NAME = "round trip: Compare → Apply → erofs + overlay mount"
MOUNT_TIMEOUT = 60


class MountError(Exception):
    """A mount failed or hung: an engine problem, reported as the check's error."""


# -- what explains a difference (pure) ----------------------------------------------------------

def _under(path: bytes, dirs) -> bool:
    return any(path.startswith(d.rstrip(b"/") + b"/") and path != d for d in dirs)


def _node(ctx, path: bytes, kind: str, rdev=None) -> bool:
    n = ctx["before"].get(path)
    return n is not None and n.type == kind and (rdev is None or n.rdev == rdev)


def _node_inode(ctx, path: bytes):
    n = ctx["before"].get(path)
    return n.inode if n is not None and n.inode is not None else None


def _base(path: bytes) -> bytes:
    return path.rsplit(b"/", 1)[-1]


def _hidden_by_wh_file(path: bytes, ctx) -> bool:
    parent, name = path.rsplit(b"/", 1)
    parent = parent or b""
    if _node(ctx, parent + b"/.wh." + name, "file"):
        return True
    # an opaque marker file in this directory or any directory above
    p = path
    while b"/" in p.lstrip(b"/"):
        p = p.rsplit(b"/", 1)[0]
        if _node(ctx, p + b"/.wh..wh..opq", "file"):
            return True
    return _node(ctx, b"/.wh..wh..opq", "file")


def _xattr_name(d: Difference) -> str | None:
    return d.attribute[len("xattr "):] if d.attribute.startswith("xattr ") else None


# quirk -> does it explain this difference? (context: opaque dirs of the upper, overlay marks)
QUIRK_RULES = {
    # Compare walks the upper dir as plain files: a directory renamed under redirect_dir is an
    # upper dir whose content the overlay takes from the lower named by its redirect xattr, so
    # the layer lacks what lay in the lower; a metacopy file holds no data, only metadata, so
    # the layer carries a sparse file of zeros; a lower hardlink written under index=on is
    # copied up once and kept linked through the index, so its other names change in the
    # merged view but not in the upper, and the layer has neither the change nor the link.
    "no-redirect-metacopy": lambda d, ctx: (
        d.attribute == "presence" and d.after is None and _under(d.path, ctx["redirect"])) or (
        d.attribute == "content" and d.path in ctx["metacopy"]) or (
        _node_inode(ctx, d.path) in ctx["index_groups"]),
    # Only security.capability goes into the tar: any other xattr is lost on the way.
    "only-capability-xattr": lambda d, ctx: _xattr_name(d) not in (None, "security.capability")
    and d.after is None,
    # A sub-directory of an opaque dir left out as "identical to the lower": the opaque
    # marker hides the lower copy, so after Apply it is gone (a lost file is no B6).
    "opaque-identical-subdir-skipped": lambda d, ctx: d.attribute == "presence"
    and d.after is None and _node(ctx, d.path, "dir") and _under(d.path, ctx["opaque"]),
}

# quirk of the go-erofs writer -> does it explain this difference of its round trip?
WRITER_RULES = {
    "go-erofs-hardlink-copied": lambda d, ctx: d.attribute == "hardlinks" and d.after == ()
    and bool(d.before),
}

# Differences the intended behaviour has too: what an OCI layer tar cannot carry.
LIMITS = {
    "whiteout-device": ("a 0:0 character device is overlayfs' whiteout: the applied image keeps "
                        "it as one (mkfs.erofs --aufs) and the overlay mount hides it",
                        lambda d, ctx: d.attribute == "presence" and d.after is None
                        and _node(ctx, d.path, "char", (0, 0))),
    "socket": ("sockets are not carried by layer tars (OCI layer.md lists no socket type)",
               lambda d, ctx: d.attribute == "presence" and d.after is None
               and _node(ctx, d.path, "socket")),
    "overlay-xattr": ("overlayfs' own *.overlay.* xattrs are its metadata, never layer xattrs",
                      lambda d, ctx: (_xattr_name(d) or "").startswith(("user.overlay.",
                                                                        "trusted.overlay."))
                      and d.after is None),
    "whiteout-named-file": ("a regular file named like a whiteout (.wh.<name>) is read back as "
                            "a whiteout: OCI layers reserve the .wh. prefix, so no layer can "
                            "carry such a file",
                            lambda d, ctx: d.attribute == "presence" and d.after is None
                            and _node(ctx, d.path, "file") and _base(d.path).startswith(b".wh.")),
    "hidden-by-whiteout-named-file": ("an entry hidden by a regular file named like its whiteout "
                                      "(.wh.<name>, or .wh..wh..opq in its directory) that the "
                                      "layer carries as a plain file and Apply reads as a whiteout",
                                      lambda d, ctx: d.attribute == "presence" and d.after is None
                                      and _hidden_by_wh_file(d.path, ctx)),
    "source-date-epoch": ("SOURCE_DATE_EPOCH clamps an mtime after the epoch to the epoch (the "
                          "spec, as the walking differ does): the applied layer shows the epoch",
                          lambda d, ctx: d.attribute == "mtime" and ctx["epoch_ns"] is not None
                          and isinstance(d.before, int) and d.before > ctx["epoch_ns"]
                          and d.after == ctx["epoch_ns"]),
    "user-opaque-marker": ("Compare reads a user.overlay.opaque marker as a userxattr overlay "
                           "mount would; the snapshotter's trusted-mode mount ignored it, so what "
                           "it hides showed only before",
                           lambda d, ctx: d.attribute == "presence" and d.after is None
                           and _under(d.path, ctx["user_opaque"])),
}


def carried(d: Difference) -> bool:
    """Whether a layer can carry this attribute at all. The root directory has no entry in a
    layer tar (containerd's Compare never writes one), so its own attributes come from the
    snapshot it is applied to, never from the layer: they are not compared. (What a read-only
    view of an applied erofs layer shows there is the quirk applied-root-dir-defaults.)"""
    return d.path != b"/"


def explain(differences, profile, before, opaque, epoch=None, marks=None,
            writer_quirks=()) -> tuple[dict, dict, list]:
    """(quirk -> differences, limit -> differences, unexplained) for the profile's quirks.
    `opaque` maps the upper's opaque directories to the xattr namespace that marks them; `epoch`
    is the Compare's SOURCE_DATE_EPOCH (seconds) or None; `marks` the upper's redirect
    directories and metacopy files (overlay_marks); `writer_quirks` are the quirks of the EROFS
    writer that hold for its version (WRITER_RULES: the go-erofs round trip)."""
    marks = marks or {}
    indexed = [before[p].inode for p in marks.get("indexed", ()) if p in before]
    ctx = {"before": before, "opaque": frozenset(opaque),
           "redirect": frozenset(marks.get("redirect", ())),
           "metacopy": frozenset(marks.get("metacopy", ())),
           "index_groups": frozenset(i for i in indexed if i is not None),
           "epoch_ns": None if epoch is None else epoch * 10**9,
           "user_opaque": frozenset(p for p, ns in opaque.items() if ns == "user")}
    by_quirk: dict[str, list] = {}
    by_limit: dict[str, list] = {}
    unexplained = []
    for d in filter(carried, differences):
        limit = next((n for n, (_, rule) in LIMITS.items() if rule(d, ctx)), None)
        quirk = next((q for q, rule in QUIRK_RULES.items() if profile.has(q) and rule(d, ctx)), None)
        quirk = quirk or next((q for q in writer_quirks if WRITER_RULES[q](d, ctx)), None)
        if limit:
            by_limit.setdefault(limit, []).append(d)
        elif quirk:
            by_quirk.setdefault(quirk, []).append(d)
        else:
            unexplained.append(d)
    return by_quirk, by_limit, unexplained


def listed(items, max_lines: int) -> list[str]:
    """Each item rendered on an indented line, the first max_lines of them, then how many more."""
    lines = ["  " + d.render() for d in items[:max_lines]]
    if len(items) > max_lines:
        lines.append(f"  … and {len(items) - max_lines} more")
    return lines


def verdict(differences, profile, before, opaque, max_lines: int = 30, epoch=None,
            marks=None, name: str = NAME, writer_quirks=()) -> Check:
    by_quirk, by_limit, unexplained = explain(differences, profile, before, opaque, epoch, marks,
                                              writer_quirks)
    lines = []
    if unexplained:
        lines.append(f"{len(unexplained)} difference(s) between the merged upper before Compare "
                     "and the mount of the applied layer (no quirk explains them):")
        lines += listed(unexplained, max_lines)
    for q, ds in sorted(by_quirk.items()):
        info = profiles.QUIRKS_BY_NAME[q]
        whose = "" if info.component == "containerd" else f", {info.component} {info.versions}"
        lines.append(f"{q} ({info.spec_id}{whose}): {info.description} ({info.reference})")
        lines += ["  " + d.render() for d in ds[:max_lines]]
    for limit, ds in sorted(by_limit.items()):
        lines.append(f"expected, as under the spec: {LIMITS[limit][0]}")
        lines += ["  " + d.render() for d in ds[:max_lines]]
    text = "\n".join(lines)
    if unexplained:
        return Check(name, Status.FAIL, text, sorted(by_quirk))
    if by_quirk:
        return Check(name, Status.XFAIL, "known divergence from the spec:\n" + text, sorted(by_quirk))
    return Check(name, Status.PASS, text)


# -- mounts (I/O) ------------------------------------------------------------------------------

@contextlib.contextmanager
def _mounted(mount, target: str, timeout: float = MOUNT_TIMEOUT):
    """mount(target, timeout) (harness/kmount.py) for the block; always unmounted after it."""
    os.makedirs(target, exist_ok=True)
    with phases.phase("mount"):
        try:
            mount(target, timeout)
        except kmount.KernelMountError as e:
            raise MountError(str(e)) from None
    try:
        yield target
    finally:
        with contextlib.suppress(kmount.KernelMountError):   # the run's last-resort cleanup
            kmount.unmount(target, timeout)


@contextlib.contextmanager
def merged_layers(images: list[str], workdir: str, timeout: float = MOUNT_TIMEOUT):
    """The erofs images (top first) mounted read-only by the kernel and stacked with overlayfs.
    An empty directory at the bottom lets a single image be an overlay too, so its whiteouts
    are read as whiteouts."""
    with contextlib.ExitStack() as stack:
        dirs = []
        for i, image in enumerate(images):
            dirs.append(stack.enter_context(_mounted(
                lambda target, t, image=image: kmount.mount_image(image, target, "erofs", t),
                os.path.join(workdir, f"e{i}"), timeout)))
        empty = os.path.join(workdir, "empty")
        os.makedirs(empty, exist_ok=True)
        lowerdir = ":".join(dirs + [empty])
        yield stack.enter_context(_mounted(
            lambda target, t: kmount.mount_overlay(f"lowerdir={lowerdir}", target, t),
            os.path.join(workdir, "merged"), timeout))


def opaque_dirs(upper_dir: str) -> dict[bytes, str]:
    """Directories of the overlay upper marked opaque -> "trusted" or "user" (the marker's
    namespace; trusted wins when both are set)."""
    root = os.fsencode(upper_dir)
    out = {}
    for dirpath, _, _ in os.walk(root):
        for ns in ("user", "trusted"):
            try:
                if os.getxattr(dirpath, f"{ns}.overlay.opaque", follow_symlinks=False) == b"y":
                    out[dirpath[len(root):] or b"/"] = ns
            except OSError:
                pass
    return out


def _has_overlay_xattr(path: bytes, name: str) -> bool:
    for ns in ("trusted", "user"):          # userxattr mounts use user.overlay.*
        try:
            os.getxattr(path, f"{ns}.overlay.{name}", follow_symlinks=False)
            return True
        except OSError:
            pass
    return False


def overlay_marks(upper_dir: str) -> dict[str, set[bytes]]:
    """What overlay features left in the upper dir: `redirect` = directories whose content comes
    from a lower elsewhere (redirect_dir), `metacopy` = files holding metadata only (metacopy),
    `indexed` = copied-up files the overlay index links (index=on: an origin xattr and a second
    link, the index entry in the workdir)."""
    root = os.fsencode(upper_dir)
    out: dict[str, set[bytes]] = {"redirect": set(), "metacopy": set(), "indexed": set()}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = path[len(root):]
            for mark in ("redirect", "metacopy"):
                if _has_overlay_xattr(path, mark):
                    out[mark].add(rel)
            if name in filenames and _has_overlay_xattr(path, "origin"):
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                    out["indexed"].add(rel)
    return out


def capture_upper(oracle, st) -> tuple[dict, dict, dict]:
    """The scenario's merged upper as the kernel shows it, its opaque directories and its
    overlay marks."""
    target = os.path.join(st.workdir, f"rt-before-{uuid.uuid4().hex[:6]}")
    with state.mounted(oracle, st.upper_key, target):
        return capture(target), opaque_dirs(st.upper_dir), overlay_marks(st.upper_dir)


def mtime_precision(tar: bytes | None) -> int:
    """The precision (ns) of the mtimes a layer tar carries: 1 when any entry has a fraction of
    a second (PAX), else whole seconds (containerd's Compare floors them), so the round trip
    compares exactly what the layer could carry."""
    import io

    from .reference import tarread
    if tar is None:
        return 10**9
    try:
        for h, _ in tarread.TarReader(io.BytesIO(tar)):
            if h.mtime_ns % 10**9:
                return 1
    except tarread.TarError:
        pass
    return 10**9


def round_trip(oracle, st, go_outcome, before, opaque, marks, profile, epoch=None,
               trees: dict | None = None) -> Check:
    """Apply containerd's Compare blob with containerd's erofs Apply and compare the mount."""
    if go_outcome is None or go_outcome.error or go_outcome.blob is None:
        why = go_outcome.error.splitlines()[0] if go_outcome and go_outcome.error else "no blob"
        return Check(NAME, Status.SKIP, f"containerd's Compare gave no layer to apply ({why})")
    work = os.path.join(st.workdir, f"rt-{uuid.uuid4().hex[:6]}")
    os.makedirs(work)
    key = f"rt-{uuid.uuid4().hex[:10]}"
    try:
        # Compare left the blob in containerd's content store: Apply reads it from there.
        oracle.prepare(key, "")
        try:
            layer = oracle.apply("erofs", go_outcome.descriptor, key).get("layer")
        except ContainerdError as e:
            return Check(NAME, Status.FAIL, f"containerd's Apply refused containerd's own Compare "
                         f"blob ({go_outcome.media_type}): {e}")
        if not layer:
            return Check(NAME, Status.FAIL, "containerd's Apply wrote no layer.erofs")
        lowers = [os.path.join(oracle.snapshot_dir(k), "layer.erofs") for k in st.lower_layers]
        try:
            with merged_layers([layer] + lowers[::-1], work) as merged:
                after = capture(merged)
        except MountError as e:
            return Check(NAME, Status.ERROR, f"mounting the applied layer failed: {e}")
        if trees is not None:
            trees["mkfs"] = after          # for the go-erofs round trip's comparison
        precision = mtime_precision(go_outcome.tar)
        return verdict(diff(before, after, mtime_precision_ns=precision), profile, before, opaque,
                       epoch=epoch, marks=marks)
    finally:
        with contextlib.suppress(ContainerdError, OracleError):   # never hide the first error
            oracle.remove(key)


WRITER_NAME = "round trip (go-erofs writer): Compare → go-erofs image → erofs + overlay mount"
WRITER_MAX_TAR = 1 << 30


def writer_round_trip(oracle, st, go_outcome, before, opaque, marks, profile, epoch=None,
                      mkfs_after: dict | None = None, timeout: float = MOUNT_TIMEOUT) -> Check:
    """The round trip with the go-erofs writer: containerd's Compare tar written by go-erofs
    (oracle/goerofs/), stacked over the lower layers' layer.erofs, must show the merged upper
    as containerd's own Apply does; a difference passes only on a quirk of containerd's Compare
    (the layer lost it) or of go-erofs (for its version)."""
    from . import goerofs
    from .reference.profiles import QUIRKS, tool_quirk_holds
    if go_outcome is None or go_outcome.error or go_outcome.tar is None:
        why = go_outcome.error.splitlines()[0] if go_outcome and go_outcome.error else "no blob"
        return Check(WRITER_NAME, Status.SKIP, f"containerd's Compare gave no layer ({why})")
    if len(go_outcome.tar) > WRITER_MAX_TAR:
        return Check(WRITER_NAME, Status.SKIP, f"the Compare tar is {len(go_outcome.tar)} bytes: "
                     "the go-erofs round trip would stage it four times on disk (tar, the "
                     "writer's spool, go-erofs' spool, the image); over "
                     f"{WRITER_MAX_TAR >> 30} GiB it is left out")
    work = os.path.join(st.workdir, f"rtg-{uuid.uuid4().hex[:6]}")
    os.makedirs(work)
    tar, image = os.path.join(work, "layer.tar"), os.path.join(work, "layer.erofs")
    with open(tar, "wb") as f:
        f.write(go_outcome.tar)
    try:
        version = goerofs.version()
        goerofs.convert([tar], image, timeout=timeout)
    except goerofs.Refused as e:
        return Check(WRITER_NAME, Status.FAIL, f"go-erofs refused containerd's Compare tar: {e}")
    except goerofs.GoErofsError as e:
        return Check(WRITER_NAME, Status.ERROR, f"the go-erofs writer could not run: {e}")
    finally:
        os.unlink(tar)
    lowers = [os.path.join(oracle.snapshot_dir(k), "layer.erofs") for k in st.lower_layers]
    try:
        with merged_layers([image] + lowers[::-1], work, timeout) as merged:
            after = capture(merged)
    except MountError as e:
        return Check(WRITER_NAME, Status.ERROR, f"mounting the go-erofs image failed: {e}")
    except OSError as e:
        return Check(WRITER_NAME, Status.FAIL, f"the kernel could not read the go-erofs image: "
                     f"{e.strerror or e}")
    finally:
        os.unlink(image)
    held = [q.name for q in QUIRKS if q.name in WRITER_RULES
            and tool_quirk_holds(q.name, {"go-erofs": version})]
    precision = mtime_precision(go_outcome.tar)
    result = verdict(diff(before, after, mtime_precision_ns=precision), profile, before, opaque,
                     epoch=epoch, marks=marks, name=WRITER_NAME, writer_quirks=held)
    if mkfs_after is not None:
        n = len([d for d in diff(mkfs_after, after, mtime_precision_ns=precision) if carried(d)])
        note = ("the mounted tree equals containerd's own Apply's (mkfs.erofs)" if not n else
                f"{n} difference(s) from containerd's own Apply's mounted tree (mkfs.erofs), "
                "each judged above against the merged upper")
        result.explanation = (result.explanation + "\n" + note).strip()
    return result
