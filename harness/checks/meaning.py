"""The meaning check of an Apply: does the image say what the layer says?

Agreement between containerd's erofs differ and the reference proves only that the reference
models containerd: both feed the same stream to the same mkfs.erofs. This check reads the layer
three independent ways and compares the trees at full precision (names, types, modes, uid/gid,
mtimes to the nanosecond, xattrs, hardlink groups, device numbers, contents):

    meaning   the layer tar read by layerconf's own Go-exact tar reader with containerd's
              default-applier semantics (harness/reference/layermeaning.py), over an empty parent
    applier   containerd's default applier (the walking differ's Apply) into a plain directory
    image     the erofs differ's layer.erofs mounted by the kernel (erofs + overlayfs over an
              empty directory, as a container's rootfs stacks it)

Every difference names the component at fault: where the meaning and containerd's default
applier agree and the image does not, mkfs.erofs wrote something else than the layer says (it was
fed the layer's exact bytes: the agreement check proves that); where the two containerd readings
agree against the meaning, layerconf's model is wrong. A difference passes only when a registered
quirk of that component, for its version, explains it (harness/reference/profiles.py, scope
"meaning"); the rules that recognise each quirk are here, beside the comparison.

`judge` is pure; the I/O (the walking Apply through the oracle, the mount) is in `read_*`.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field

from ..result import Check, Status
from ..treeview import Difference, Node, diff, format_value, hardlink_groups, show

MEANING, APPLIER, IMAGE = "meaning", "containerd's default applier", "the mounted image"


@dataclass
class Reading:
    """One way of reading the layer: a tree, or the error that reader gave."""

    tree: dict[bytes, Node] | None = None
    error: str | None = None
    skipped: str | None = None        # why this reading was not made


@dataclass
class Context:
    """What the tar itself says, for quirk rules and for the comparison's scope."""

    implicit_dirs: frozenset = frozenset()   # directories the layer implies but never lists
    volatile: frozenset = frozenset()        # paths whose mtime is the time of applying
    features: frozenset = frozenset()        # tarread feature names seen (pax-global-path, …)
    sparse_names: tuple = ()                 # b"/name" of each sparse entry
    truncated_in_data: bool = False          # the stream ends inside an entry's data
    numeric_oddities: dict = field(default_factory=dict)   # header offset -> {"nul", ...}
    dotdot_dirs: frozenset = frozenset()     # directories a `..`-climbing name passes through
    length: int = 0                          # bytes of the tar
    global_keys: frozenset = frozenset()     # record keys of PAX global headers (b"mtime", …)
    pax_mtimes: dict = field(default_factory=dict)   # path -> the PAX mtime record as written
    hardlinked: frozenset = frozenset()      # paths of hardlink entries and their targets
    aufs_dirs: frozenset = frozenset()       # directory entries named .wh..wh.<x>
    versions: dict = field(default_factory=dict)  # component -> version ("mkfs.erofs": "1.8.6")
    merge_order: frozenset = frozenset()     # entries whose fate depends on their layer's
                                             # order (checks/writer.py merge_order)


# -- quirk rules: does a registered quirk explain this difference? (pure) ---------------------

def _misread_pax_time(raw: bytes) -> set:
    """What mkfs.erofs < 1.9.2 makes of a PAX time record: the fraction's digits taken as a
    whole number of nanoseconds (a 32-bit one), the sign of the seconds part lost below 1."""
    text = raw.decode("ascii", "replace")
    ip, _, fd = text.partition(".")
    try:
        sec = int(ip or "0")
        ns = int(fd or "0")
    except ValueError:
        return set()
    out = set()
    for n in (ns, ns % 2**32):
        out |= {sec * 10**9 + n, sec * 10**9 - n, abs(sec) * 10**9 + n}
    return out


def _frac_as_integer_ns(d: Difference, ctx: Context) -> bool:
    raw = ctx.pax_mtimes.get(d.path)
    if raw is not None:
        return b"." in raw and d.after in _misread_pax_time(raw)
    sec, frac = divmod(d.before, 10**9)         # a path the tar gave no PAX mtime of its own
    digits = f"{frac:09d}".rstrip("0")
    return bool(frac) and d.after == sec * 10**9 + int(digits or "0")


# containerd's default applier keeps mtimes in [epoch, max int64 ns]; others become the epoch.
MAX_TIME_NS = (1 << 63) - 1

# A global record, applied by mkfs.erofs to later entries, changes this attribute.
GLOBAL_RECORD_ATTRIBUTES = {b"mtime": "mtime", b"uid": "uid", b"gid": "gid",
                            b"linkpath": "target", b"size": "size", b"uname": "uid",
                            b"gname": "gid"}


def _from_global_record(d: Difference, ctx: Context) -> bool:
    if b"path" in ctx.global_keys:
        return True           # every later entry renamed: nothing in the layout can be trusted
    if d.attribute == "content":
        return b"size" in ctx.global_keys
    if d.attribute.startswith("xattr "):
        return b"SCHILY.xattr." + d.attribute[len("xattr "):].encode() in ctx.global_keys
    return any(GLOBAL_RECORD_ATTRIBUTES.get(k) == d.attribute for k in ctx.global_keys)


def _sparse_stand_in(path: bytes, ctx: Context) -> bool:
    """The sparse file itself, or mkfs.erofs' GNUSparseFile.<pid> stand-in (and what is in it)."""
    return path in ctx.sparse_names or any(c.startswith(b"GNUSparseFile.")
                                           for c in path.split(b"/"))


MEANING_RULES = {
    "pax-fraction-as-integer-ns": lambda d, ctx: d.attribute == "mtime"
    and isinstance(d.before, int) and isinstance(d.after, int) and _frac_as_integer_ns(d, ctx),
    "pax-global-records-applied": lambda d, ctx: bool(ctx.global_keys)
    and _from_global_record(d, ctx),
    "gnu-sparse-1-unexpanded": lambda d, ctx: bool(ctx.sparse_names)
    and _sparse_stand_in(d.path, ctx),
    "implicit-dir-defaults": lambda d, ctx: d.path in ctx.implicit_dirs
    and d.attribute == "mode" and d.after == 0o777,
    "dotdot-leaves-directories": lambda d, ctx: d.attribute == "presence" and not d.before
    and d.path in ctx.dotdot_dirs,
    "applier-clamps-mtime-range": lambda d, ctx: d.attribute == "mtime" and d.before == 0
    and isinstance(d.after, int) and (d.after < 0 or d.after > MAX_TIME_NS
                                      or b"-" in ctx.pax_mtimes.get(d.path, b"")),
    "applier-link-header-sets-inode": lambda d, ctx: d.path in ctx.hardlinked
    and (d.attribute in ("mode", "uid", "gid", "mtime") or d.attribute.startswith("xattr ")),
    "aufs-dir-header-dropped": lambda d, ctx: d.path in ctx.aufs_dirs
    and d.attribute in ("mode", "uid", "gid", "mtime"),
}

# An erofs differ error where the default applier succeeds.
def _refused_header(err: str, ctx: Context, kind: str) -> bool:
    """mkfs.erofs names the header it refuses by its offset: does that header have `kind`?"""
    return any(kind in ctx.numeric_oddities.get(int(m), ())
               for m in re.findall(r"invalid tar @ (\d+)", err))


# The erofs differ fails (no image, or one the kernel cannot read) where the default applier
# succeeds.
ERROR_RULES = {
    "nul-numeric-field-refused": lambda err, ctx: _refused_header(err, ctx, "nul"),
    "v7-header-refused": lambda err, ctx: "invalid tar magic @ 0" in err and "v7" in ctx.features,
    "eof-without-end-blocks-refused": lambda err, ctx: f"failed to read header block @ "
    f"{ctx.length}" in err and "no-end-blocks" in ctx.features,
    # mkfs.erofs says no more than "Could not format the device" for these two
    "pax-time-empty-fraction-refused": lambda err, ctx: "pax-empty-fraction" in ctx.features
    and "Could not format" in err,
    "cut-in-padding-refused": lambda err, ctx: "cut-in-padding" in ctx.features
    and "Could not format" in err,
    "base256-negative-refused": lambda err, ctx: _refused_header(err, ctx, "base256-negative"),
    # the kernel's own words (harness/kmount.py adds its log to a refused mount)
    "tar-index-empty-device-tag-refused": lambda err, ctx: "empty device tag" in err,
}

# containerd's default applier fails where the erofs differ succeeds.
APPLIER_ERROR_RULES = {
    "applier-refuses-gnu-sparse-0": lambda err, ctx: "unhandled tar header type 83" in err,
    "tar-input-decompressed": lambda err, ctx: "compressed-stream" in ctx.features,
    "bare-whiteout-empty-dirent": lambda err, ctx: "bare-whiteout" in ctx.features
    and "invalid whiteout name" in err,
    "cut-in-header-accepted": lambda err, ctx: "cut-in-header" in ctx.features
    and "unexpected EOF" in err,
}


# -- the comparison (pure) --------------------------------------------------------------------

def _scope(tree: dict[bytes, Node], ctx: Context) -> dict[bytes, Node]:
    """What the layer says something about: never the root (containerd's default applier skips
    an entry for it, so a layer cannot change it; what mkfs.erofs makes of the root is
    applied-root-dir-defaults, seen by the round trip); the mtime of
    a directory the layer does not time (implied, or changed with no header re-timing it) is
    nobody's (containerd's default applier leaves it at the time of the run), so it is set to a
    common value."""
    out = {p: n for p, n in tree.items() if p != b"/"}
    for p in ctx.implicit_dirs | ctx.volatile:
        if p in out:
            out[p] = _replace(out[p], mtime_ns=0)
    return out


def _replace(node: Node, **kw) -> Node:
    from dataclasses import replace
    return replace(node, **kw)


def _key(d: Difference) -> tuple:
    return d.path, d.attribute


_MISSING = object()


def value_of(tree: dict[bytes, Node], links: dict, path: bytes, attribute: str):
    """One reading's value of (path, attribute), as treeview.diff names attributes."""
    node = tree.get(path)
    if attribute == "presence":
        return node is not None
    if node is None:
        return None
    if attribute == "hardlinks":
        return links.get(path, ())
    if attribute.startswith("xattr "):
        return dict(node.xattrs).get(attribute[len("xattr "):])
    return getattr(node, {"content": "digest", "mtime": "mtime_ns"}.get(attribute, attribute))


def _value(v, attribute: str) -> str:
    if attribute == "presence" and isinstance(v, bool):
        return "present" if v else "absent"
    return format_value(attribute, v)


@dataclass
class Finding:
    path: bytes
    attribute: str
    values: dict            # reading name -> value
    component: str
    quirk: str | None = None

    def render(self) -> str:
        vals = ", ".join(f"{k}: {' '.join(_value(v, self.attribute).split())}"
                         for k, v in self.values.items())
        what = "presence" if self.attribute == "presence" else self.attribute
        return f"{show(self.path)}: {what}: {vals} [{self.component}]"


def judge(label: str, meaning: Reading, applier: Reading, image: Reading, ctx: Context,
          quirks_on, image_error: str | None = None, max_lines: int = 25) -> Check:
    """The verdict of one Apply case. `quirks_on(name)` says whether a meaning-scope quirk holds
    for the versions under test; `image_error` is the erofs differ's error when it wrote no image."""
    name = f"meaning {label}"
    mkfs = f"mkfs.erofs {ctx.versions.get('mkfs.erofs', '')}".strip()
    cd = f"containerd {ctx.versions.get('containerd', '')}".strip()
    ours = "layerconf (harness/reference/layermeaning.py)"
    findings: list[Finding] = []
    notes: list[str] = []
    # 1. Errors: who refused the layer?
    if meaning.error and not applier.error and applier.tree is not None:
        findings.append(Finding(b"/", "outcome", {MEANING: "error: " + meaning.error,
                                                  APPLIER: "applied"}, ours))
    if applier.error and not meaning.error and meaning.tree is not None:
        findings.append(Finding(b"/", "outcome", {MEANING: "applied",
                                                  APPLIER: "error: " + applier.error}, ours))
    applier_ok = applier.error is None and applier.tree is not None
    if image_error and applier_ok:
        # the erofs differ refused a layer containerd's default applier unpacks
        quirk = next((q for q, rule in ERROR_RULES.items() if quirks_on(q) and rule(image_error, ctx)),
                     None)
        component = mkfs if "mkfs" in image_error or "erofs:" in image_error else f"{cd} erofs differ"
        findings.append(Finding(b"/", "outcome", {"erofs differ": "error: " + image_error,
                                                  APPLIER: "applied"}, component, quirk))
    elif image.error and applier_ok:
        # it wrote an image the kernel cannot read
        quirk = next((q for q, rule in ERROR_RULES.items() if quirks_on(q) and rule(image.error, ctx)),
                     None)
        findings.append(Finding(b"/", "outcome", {IMAGE: "error: " + image.error, APPLIER: "applied"},
                                f"{mkfs} (an image the kernel {ctx.versions.get('kernel', '')} "
                                "cannot read)", quirk))
    elif not image_error and applier.error:
        # the erofs differ accepted a layer containerd's default applier refuses
        quirk = next((q for q, rule in APPLIER_ERROR_RULES.items()
                      if quirks_on(q) and rule(applier.error, ctx)), None)
        image_said = "error: " + image.error if image.error else "applied"
        findings.append(Finding(b"/", "outcome", {"erofs differ": image_said,
                                                  APPLIER: "error: " + applier.error},
                                f"{cd}'s default applier refuses what {mkfs} accepts", quirk))
        if image.tree is not None:
            # Go's reader still reads what the applier refuses: an entry it read must be there.
            for path in ctx.sparse_names:
                if path not in image.tree:
                    q = "gnu-sparse-0-dropped" if quirks_on("gnu-sparse-0-dropped") else None
                    findings.append(Finding(path, "presence", {"Go archive/tar": True, IMAGE: False},
                                            mkfs, q))
    elif image_error and applier.error:
        notes.append(f"both refused the layer: erofs differ: {' '.join(image_error.split())}; "
                     f"containerd's default applier: {applier.error}")
    # 2. Trees, pairwise at full precision; each difference is then judged on all three values.
    trees = {k: _scope(r.tree, ctx) for k, r in ((MEANING, meaning), (APPLIER, applier),
                                                 (IMAGE, image)) if r.tree is not None}
    links = {k: hardlink_groups(t) for k, t in trees.items()}
    keys: set = set()
    names = list(trees)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            keys |= {_key(d) for d in diff(trees[a], trees[b])}
    for key in sorted(keys):
        values = {n: value_of(trees[n], links[n], *key) for n in names}
        m, a, i = (values.get(k, _MISSING) for k in (MEANING, APPLIER, IMAGE))
        if i is not _MISSING and m == a:
            component = mkfs
        elif m is not _MISSING and a == i:
            component = ours
        elif a is not _MISSING and m == i:
            component = f"{cd}'s default applier, or {ours}"
        else:
            component = f"{mkfs} and {ours} (all readings differ)"
        # The quirk rules read a difference as (what the layer means, what the image holds).
        d = Difference(key[0], key[1], m if m is not _MISSING else a, i if i is not _MISSING else a)
        quirk = next((q for q, rule in MEANING_RULES.items() if quirks_on(q) and rule(d, ctx)),
                     None)
        findings.append(Finding(key[0], key[1], values, component, quirk))
    from ..reference import profiles
    for f in findings:
        if f.quirk is not None:                # the registered defect says whose it is
            q = profiles.QUIRKS_BY_NAME[f.quirk]
            f.component = f"{q.component} {ctx.versions.get(q.component, '')}".strip()
    unexplained = [f for f in findings if f.quirk is None]
    explained = [f for f in findings if f.quirk is not None]
    lines = []
    read = [n for n, r in ((MEANING, meaning), (APPLIER, applier), (IMAGE, image)) if r.tree is not None]
    for n, r in ((MEANING, meaning), (APPLIER, applier), (IMAGE, image)):
        if r.skipped:
            notes.append(f"{n}: not read ({r.skipped})")
    if unexplained:
        lines.append(f"{len(unexplained)} difference(s) in what the layer holds, no quirk "
                     f"explains them (entry: attribute: each reading's value [component at fault]):")
        lines += ["  " + f.render() for f in unexplained[:max_lines]]
        if len(unexplained) > max_lines:
            lines.append(f"  … and {len(unexplained) - max_lines} more")
    by_quirk: dict[str, list[Finding]] = {}
    for f in explained:
        by_quirk.setdefault(f.quirk, []).append(f)
    for q, fs in sorted(by_quirk.items()):
        info = profiles.QUIRKS_BY_NAME[q]
        here = ctx.versions.get(info.component, "")
        lines.append(f"{q} ({info.component} {info.versions}{', here ' + here if here else ''}): "
                     f"{info.description}")
        lines += ["  " + f.render() for f in fs[:max_lines]]
    if not findings and read:
        lines.append(f"{' and '.join(read)} agree")
    text = "\n".join(lines + notes)
    if unexplained:
        return Check(name, Status.FAIL, text, sorted(by_quirk))
    if by_quirk:
        return Check(name, Status.XFAIL, "known defect:\n" + text, sorted(by_quirk))
    if len(read) < 2 and not (image_error and applier.error):
        return Check(name, Status.SKIP, "fewer than two readings of the layer to compare: " + text)
    return Check(name, Status.PASS, text)


# -- the readings (I/O) -----------------------------------------------------------------------

def read_applier(oracle, descriptor: dict, base: str) -> Reading:
    """containerd's default applier (the walking diff plugin's Apply) into a plain directory.
    The blob must already be in the oracle's content store (ingested)."""
    from ..oracle import ContainerdError
    from ..treeview import capture
    dest = tempfile.mkdtemp(prefix="applier-", dir=base)
    try:
        try:
            oracle.call("apply", differ="walking", descriptor=descriptor, key="",
                        mounts=[{"type": "bind", "source": dest, "options": ["rbind", "rw"]}])
        except ContainerdError as e:
            return Reading(error=str(e))
        return Reading(tree=capture(dest))
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def read_image(image_path: str, base: str, timeout: float) -> Reading:
    """The image as the kernel shows it: erofs, under overlayfs over an empty directory (so the
    layer's whiteouts are whiteouts and overlayfs' own xattrs stay hidden)."""
    from .. import roundtrip
    from ..treeview import capture
    work = tempfile.mkdtemp(prefix="image-", dir=base)
    try:
        with roundtrip.merged_layers([image_path], work, timeout=timeout) as merged:
            try:
                return Reading(tree=capture(merged))
            except OSError as e:        # e.g. EUCLEAN: the kernel finds the image corrupt
                return Reading(error=f"the kernel could not read the mounted image: "
                                     f"{e.strerror or e} ({os.fsdecode(e.filename or b'')[len(merged):] or '/'})")
    except roundtrip.MountError as e:
        return Reading(error=f"the kernel could not mount layer.erofs: {e}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


NUMERIC_FIELDS = ((100, 108), (108, 116), (116, 124), (136, 148))   # mode uid gid mtime


def _numeric_oddities(tar: bytes) -> dict:
    """Header offset -> the unusual numeric encodings it uses: "nul" (a field of NUL bytes only,
    as `npm pack` writes uid/gid), "base256-negative" (a base-256 field with the sign bit). A
    raw walk by the USTAR size field: enough to find a header mkfs.erofs names by its offset."""
    from ..reference import tarread
    out, off = {}, 0
    while off + 512 <= len(tar):
        blk = tar[off:off + 512]
        if blk == bytes(512):
            break
        kinds = set()
        for a, b in NUMERIC_FIELDS:
            if blk[a:b] == bytes(b - a):
                kinds.add("nul")
            elif blk[a] == 0xFF:
                kinds.add("base256-negative")
        if kinds:
            out[off] = frozenset(kinds)
        try:
            size = tarread.parse_numeric(blk[124:136])
        except Exception:   # noqa: BLE001 - an unparsable size ends the raw walk
            break
        data = 0 if blk[156:157] in b"12345" else size
        off += 512 + -(-max(data, 0) // 512) * 512
    return out


def layer_context(tar: bytes) -> Context:
    """What the tar says about itself (for quirk rules and the comparison's scope), read with
    the Go-exact reader."""
    from ..reference import tarread
    listed_dirs, parents, sparse = set(), set(), []
    truncated = bare_whiteout = clean_end = truncated_header = False
    dotdot: set = set()
    global_keys: set = set()
    pax_mtimes: dict = {}
    linked: set = set()
    aufs_dirs: set = set()
    reader = tarread.TarReader(io.BytesIO(tar))
    try:
        for h, content in reader:
            if h.typeflag == tarread.TYPE_XGLOBAL:
                global_keys |= set(h.pax or ())
                continue
            path = _clean(h.name)
            if h.pax and b"mtime" in h.pax:
                pax_mtimes[path] = h.pax[b"mtime"]
            if h.typeflag == tarread.TYPE_LINK:
                linked |= {path, _clean(h.linkname)}
            if h.typeflag == tarread.TYPE_DIR and path.rsplit(b"/", 1)[-1].startswith(b".wh..wh."):
                aufs_dirs.add(path)
            parts = [p for p in h.name.split(b"/") if p not in (b"", b".")]
            for i, part in enumerate(parts):
                if part == b".." and i:
                    dotdot.add(_clean(b"/".join(parts[:i])))
            if path.rsplit(b"/", 1)[-1] in (b".wh.", b".wh..wh."):
                bare_whiteout = True
            if h.typeflag == tarread.TYPE_DIR:
                listed_dirs.add(path)
            if h.typeflag == tarread.TYPE_GNU_SPARSE or (h.pax and any(
                    k.startswith(b"GNU.sparse.") for k in h.pax)):
                sparse.append(path)
            p = path
            while (p := p.rsplit(b"/", 1)[0] or b"/") != b"/":
                parents.add(p)
            try:
                content.hash()
            except tarread.TarError as e:
                truncated = e.text == tarread.ERR_UNEXPECTED_EOF
                break
        else:
            clean_end = True
    except tarread.TarError as e:             # from Next: the stream ends inside a header
        truncated_header = e.text == tarread.ERR_UNEXPECTED_EOF
    oddities = _numeric_oddities(tar)
    features = set().union(*oddities.values()) if oddities else set()
    if bare_whiteout:
        features.add("bare-whiteout")
    from ..reference.apply import detect_compression
    if detect_compression(tar):      # a compressed blob that reaches mkfs.erofs as the "tar"
        features.add("compressed-stream")
    if len(tar) >= 512 and tar[257:263] not in (b"ustar\x00", b"ustar "):
        features.add("v7")
    if not truncated and not tar.endswith(bytes(1024)) and len(tar) % 512 == 0:
        features.add("no-end-blocks")
    if truncated_header:
        features.add("cut-in-header")
    if clean_end and len(tar) % 512:
        features.add("cut-in-padding")         # Go reads it whole; the last block is short
    if any(v.endswith(b".") for v in pax_mtimes.values()):
        features.add("pax-empty-fraction")
    return Context(implicit_dirs=frozenset(parents - listed_dirs),
                   features=frozenset(features),
                   sparse_names=tuple(sparse), truncated_in_data=truncated,
                   numeric_oddities=oddities, dotdot_dirs=frozenset(dotdot),
                   length=len(tar), global_keys=frozenset(global_keys),
                   pax_mtimes=pax_mtimes, hardlinked=frozenset(linked),
                   aufs_dirs=frozenset(aufs_dirs))


def _clean(name: bytes) -> bytes:
    """A tar name as a tree path: b"./a/b/" -> b"/a/b" (the root is b"/")."""
    parts = [p for p in name.split(b"/") if p not in (b"", b".")]
    return b"/" + b"/".join(parts)


def write_image(image: bytes, base: str) -> str:
    path = os.path.join(base, f"layer-{uuid.uuid4().hex[:8]}.erofs")
    with open(path, "wb") as f:
        f.write(image)
    return path


def read_meaning(tar: bytes | None, decode_error: str | None) -> tuple[Reading, Context]:
    """The layer's meaning over an empty parent, and what the tar says about itself."""
    from ..reference import layermeaning
    if tar is None:
        return Reading(error=decode_error), Context()
    m = layermeaning.meaning(io.BytesIO(tar))
    ctx = layer_context(tar)
    ctx.volatile = frozenset(m.volatile)
    error = m.error or decode_error
    return Reading(tree=None if error else m.tree, error=error), ctx


def decompressed(blob: bytes, route) -> tuple[bytes | None, str | None]:
    """The layer tar inside the blob as the erofs differ's stream processor sees it, and the
    decoder's error (what decoded before it is still returned)."""
    from ..reference import apply as ref_apply
    if not route.decompress:
        return blob, None
    try:
        return ref_apply.decompress_stream(blob), None
    except ref_apply.DecompressError as e:
        return (None if e.header else e.partial), e.message


def _versions(environment: dict) -> dict:
    m = re.search(r"\d+\.\d+(?:\.\d+)?\S*", environment.get("erofs-utils") or "")
    return {"mkfs.erofs": m.group(0) if m else "",
            "containerd": environment.get("containerd", ""),
            "kernel": environment.get("kernel", "")}


def check(label: str, blob: bytes, go, oracle, session, route, files: dict | None) -> Check:
    """The meaning check of one Apply case that took the tar route (see the module docstring)."""
    from ..reference.profiles import tool_quirk_holds
    _, image_bytes, image_error, ingested = go
    versions = _versions(session.environment)
    tar, decode_error = decompressed(blob, route)
    meaning, ctx = read_meaning(tar, decode_error)
    ctx.versions = versions
    applier = read_applier(oracle, ingested, session.base)
    if image_bytes is None:
        image = Reading(skipped="the erofs differ wrote no layer.erofs")
    else:
        path = write_image(image_bytes, session.base)
        try:
            image = read_image(path, session.base, session.timeout)
        finally:
            os.unlink(path)
    result = judge(label, meaning, applier, image, ctx, lambda q: tool_quirk_holds(q, versions),
                   image_error=image_error)
    if result.status.failed and files is not None:
        stem = file_stem(label)
        for name, r in ((MEANING, meaning), ("applier", applier), ("image", image)):
            if r.tree is not None:
                files[f"{stem}.tree-{name.split()[-1]}.txt"] = listing(r.tree)
    return result


def hung(label: str, blob: bytes, descriptor: dict, profile, error, environment: dict) -> Check:
    """containerd's Apply passed its deadline (error: an OracleTimeout naming what still ran)."""
    from ..reference import mediatypes
    from ..reference.profiles import QUIRKS_BY_NAME, tool_quirk_holds
    versions = _versions(environment)
    route = mediatypes.classify(descriptor.get("mediaType", ""), profile)
    text = (f"{label}: containerd's erofs differ Apply did not finish: {error}\n"
            "The reference Apply and the meaning check were not run for this case.")
    if route.kind == mediatypes.TAR:
        tar, _ = decompressed(blob, route)
        ctx = layer_context(tar) if tar is not None else Context()
        q = "truncated-data-loops"
        if ctx.truncated_in_data and "mkfs.erofs" in (getattr(error, "running", "") or "") \
                and tool_quirk_holds(q, versions):
            info = QUIRKS_BY_NAME[q]
            return Check(f"meaning {label}", Status.XFAIL,
                         f"known defect:\n{q} ({info.component} {info.versions}, here "
                         f"{versions['mkfs.erofs']}): {info.description}\n{text}", [q])
    return Check(f"meaning {label}", Status.ERROR, text)


def file_stem(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+=,-]+", "_", label).strip("_")[:80]


def listing(tree: dict[bytes, Node]) -> str:
    """One line per entry, every attribute the comparison looks at."""
    links = hardlink_groups(tree)
    out = []
    for p in sorted(tree):
        n = tree[p]
        cols = [show(p), n.type, f"{n.mode:04o}", f"{n.uid}:{n.gid}", format_value("mtime", n.mtime_ns)]
        if n.type == "file":
            cols += [str(n.size), (n.digest or "")[:16]]
        if n.target is not None:
            cols.append("-> " + show(n.target))
        if n.rdev is not None:
            cols.append(f"{n.rdev[0]}:{n.rdev[1]}")
        if links.get(p):
            cols.append("links=" + ",".join(show(q) for q in links[p]))
        for k, v in n.xattrs:
            cols.append(f"{k}={v!r}")
        out.append(" ".join(cols))
    return "\n".join(out) + "\n"
