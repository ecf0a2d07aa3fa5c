"""The go-erofs writer check: the layer written by github.com/erofs/go-erofs (oracle/goerofs/),
mounted by the kernel, against what the layer means and against mkfs.erofs' image.

containerd is moving its erofs differ's Apply from mkfs.erofs to go-erofs (containerd PR #13589).
The two writers need not write the same bytes; the kernel must show the same tree. Each Apply
case that converts a tar gets three readings at full precision (as harness/checks/meaning.py
compares them):

    meaning       the layer tar read by layerconf's Go-exact reader with containerd's
                  default-applier semantics (harness/reference/layermeaning.py)
    go-erofs      the go-erofs image, mounted (erofs under overlayfs over an empty directory)
    mkfs.erofs    containerd's layer.erofs (mkfs.erofs), mounted the same way

A difference between go-erofs and the meaning fails unless a registered quirk of go-erofs
(harness/reference/profiles.py, component "go-erofs", scope "writer") explains it. Where go-erofs
agrees with the meaning and mkfs.erofs does not, the difference is mkfs.erofs' (the meaning
check reports it) and is noted here only. Structural differences between the two images
(superblock fields from `dump.erofs -s`) are information, never a failure.

`judge` is pure; `check` does the I/O.
"""
from __future__ import annotations

import io
import os
import subprocess
import uuid
from dataclasses import dataclass

from ..result import Check, Status
from ..roundtrip import listed
from ..treeview import Difference, diff, hardlink_groups
from . import meaning as mc

MEANING, GO, MKFS = "meaning", "go-erofs image", "mkfs.erofs image"
MERGED = "go-erofs merged image"      # the layer through the library's Merge (CopyFrom)
WIRING = "layerconf's tar wiring (oracle/goerofs/tree.go)"


# -- quirk rules: does a registered go-erofs quirk explain this difference? (pure) -----------

def _hardlink_copied(f, ctx, who) -> bool:
    return f.attribute == "hardlinks" and f.path in ctx.hardlinked and f.values.get(who) == ()


def _merge_in_name_order(f, ctx, who) -> bool:
    return who == MERGED and f.attribute == "presence" and f.path in ctx.merge_order


# quirk -> does it explain this difference of the reading `who` (GO or MERGED)?
WRITER_RULES = {
    "go-erofs-hardlink-copied": _hardlink_copied,
    "go-erofs-merge-in-name-order": _merge_in_name_order,
}


def merge_order(tar: bytes | None) -> frozenset:
    """Entries whose fate depends on the order of their own layer (pure): those in a directory
    the same layer marks opaque whose names sort before `.wh..wh..opq` (`.bashrc`, `-x`), and
    those the same layer whites out after adding them. go-erofs' Merge walks a layer in byte
    order of names, not in tar order, so it treats both differently from an in-order reader."""
    from ..reference import tarread
    if tar is None:
        return frozenset()
    names = []
    try:
        for h, _ in tarread.TarReader(io.BytesIO(tar)):
            names.append(mc._clean(h.name))
    except tarread.TarError:
        pass
    marker, prefix = b".wh..wh..opq", b".wh."
    opaque = {n.rsplit(b"/", 1)[0] or b"/" for n in names if n.rsplit(b"/", 1)[-1] == marker}
    out, seen = set(), set()
    for n in names:
        parent, _, base = n.rpartition(b"/")
        parent = parent or b"/"
        if parent in opaque and base and base < marker:
            out.add(n)
        if base.startswith(prefix) and base != marker:
            target = parent.rstrip(b"/") + b"/" + base[len(prefix):]
            if target in seen:
                out.add(target)
        seen.add(n)
    return frozenset(out)


def _component(quirk: str) -> str:
    from ..reference import profiles
    return profiles.QUIRKS_BY_NAME[quirk].component


def _meaning_quirk(f, ctx, quirks_on, who) -> str | None:
    """A quirk of the meaning side itself (containerd's default applier, whose semantics the
    meaning follows) that explains the difference the same way it does for mkfs.erofs' image."""
    from ..reference import profiles
    if MEANING not in f.values:
        return None
    d = Difference(f.path, f.attribute, f.values[MEANING], f.values[who])
    return next((q for q, rule in mc.MEANING_RULES.items()
                 if profiles.QUIRKS_BY_NAME[q].component == "containerd" and quirks_on(q)
                 and rule(d, ctx)), None)


@dataclass
class Finding:
    path: bytes
    attribute: str
    values: dict
    component: str
    quirk: str | None = None

    render = mc.Finding.render


def judge(label: str, meaning: mc.Reading, go: mc.Reading, mkfs: mc.Reading, ctx: mc.Context,
          quirks_on, go_error: str | None = None, structure: list[str] = (),
          merged: mc.Reading | None = None, max_lines: int = 25) -> Check:
    """The verdict on one go-erofs image (and, when given, the same layer through the library's
    Merge). `go_error` is the writer's refusal (no image); `ctx.merge_order` (merge_order())
    is read by the merge quirk."""
    name = f"go-erofs writer {label}"
    gover = f"go-erofs {ctx.versions.get('go-erofs', '')}".strip()
    writer = f"{gover} or {WIRING}"
    findings: list[Finding] = []
    notes: list[str] = []
    if go_error and meaning.tree is not None:
        findings.append(Finding(b"/", "outcome", {MEANING: "applied", GO: "error: " + go_error},
                                writer))
    elif go_error:
        notes.append(f"both refuse the layer: meaning: {meaning.error}; go-erofs: {go_error}")
    elif meaning.error and go.tree is not None:
        # containerd's default applier (whose semantics the meaning follows) refuses the layer
        quirk = next((q for q, rule in mc.APPLIER_ERROR_RULES.items()
                      if _component(q) == "containerd" and quirks_on(q)
                      and rule(meaning.error, ctx)), None)
        findings.append(Finding(b"/", "outcome", {MEANING: "error: " + meaning.error,
                                                  GO: "applied"}, writer, quirk))
        # Go's archive/tar still reads what the applier refuses: an entry it read must be there.
        for path in ctx.sparse_names:
            if path not in go.tree:
                q = "go-erofs-gnu-sparse-0-dropped"
                findings.append(Finding(path, "presence", {"Go archive/tar": True, GO: False},
                                        writer, q if quirks_on(q) else None))
    elif go.error:
        said = "applied" if meaning.tree is not None else "error: " + str(meaning.error)
        findings.append(Finding(b"/", "outcome", {MEANING: said, GO: "error: " + go.error},
                                f"{gover} (an image the kernel {ctx.versions.get('kernel', '')} "
                                "cannot read)"))
    if merged is not None and merged.error and meaning.tree is not None:
        findings.append(Finding(b"/", "outcome", {MEANING: "applied", MERGED: "error: "
                                                  + merged.error}, writer))
    trees = {k: mc._scope(r.tree, ctx) for k, r in ((MEANING, meaning), (GO, go), (MKFS, mkfs),
                                                    (MERGED, merged or mc.Reading()))
             if r.tree is not None}
    links = {k: hardlink_groups(t) for k, t in trees.items()}
    mkfs_only = 0
    for who in (GO, MERGED):
        if who not in trees:
            continue
        keys = set()
        for other in (MEANING, MKFS) if who == GO else (MEANING,):
            if other in trees:
                keys |= {(d.path, d.attribute) for d in diff(trees[other], trees[who])}
        shown = [n for n in (MEANING, who, MKFS if who == GO else None) if n in trees]
        for key in sorted(keys):
            values = {n: mc.value_of(trees[n], links[n], *key) for n in shown}
            if MEANING in values and values[MEANING] == values[who]:
                mkfs_only += 1        # mkfs.erofs' difference: the meaning check names it
                continue
            f = Finding(key[0], key[1], values, writer)
            f.quirk = next((q for q, rule in WRITER_RULES.items()
                            if quirks_on(q) and rule(f, ctx, who)), None) \
                or _meaning_quirk(f, ctx, quirks_on, who)
            findings.append(f)
    if mkfs_only:
        notes.append(f"{mkfs_only} difference(s) where go-erofs holds what the layer means and "
                     "mkfs.erofs does not (the meaning check reports them)")
    from ..reference import profiles
    for f in findings:
        if f.quirk is not None:                # the registered defect says whose it is
            q = profiles.QUIRKS_BY_NAME[f.quirk]
            f.component = f"{q.component} {ctx.versions.get(q.component, '')}".strip()
    unexplained = [f for f in findings if f.quirk is None]
    by_quirk: dict[str, list] = {}
    for f in findings:
        if f.quirk is not None:
            by_quirk.setdefault(f.quirk, []).append(f)
    lines = []
    if unexplained:
        lines.append(f"{len(unexplained)} difference(s) between the go-erofs image and what the "
                     "layer holds, no quirk explains them (entry: attribute: each reading's value "
                     "[component at fault]):")
        lines += listed(unexplained, max_lines)
    for q, fs in sorted(by_quirk.items()):
        info = profiles.QUIRKS_BY_NAME[q]
        lines.append(f"{q} ({info.spec_id}, {info.component} {info.versions}, here "
                     f"{ctx.versions.get(info.component, '?')}): {info.description}")
        lines += ["  " + f.render() for f in fs[:max_lines]]
    read = [n for n in trees]
    if not findings and GO in trees:
        lines.append(f"{' and '.join(read)} agree" + (" (but for mkfs.erofs' own differences)"
                                                     if mkfs_only else ""))
    if structure:
        notes.append("structure (information only, dump.erofs -s): " + "; ".join(structure))
    text = "\n".join(lines + notes)
    if unexplained:
        return Check(name, Status.FAIL, text, sorted(by_quirk))
    if by_quirk:
        return Check(name, Status.XFAIL, "known defect:\n" + text, sorted(by_quirk))
    if GO not in trees and not (go_error and meaning.error):
        return Check(name, Status.SKIP, "the go-erofs image was not read: " + text)
    return Check(name, Status.PASS, text)


# -- structure (information only) -------------------------------------------------------------

SUPERBLOCK_FIELDS = ("Filesystem blocksize", "Filesystem blocks", "Filesystem inode count",
                     "Filesystem features", "Filesystem sb_size", "Filesystem root nid",
                     "Filesystem inode metadata start block",
                     "Filesystem shared xattr metadata start block")


def superblock(image: str, timeout: float) -> dict[str, str]:
    """`dump.erofs -s` as field -> value ({} when dump.erofs cannot run)."""
    try:
        p = subprocess.run(["dump.erofs", "-s", image], capture_output=True, text=True,
                           timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    out = {}
    for line in p.stdout.splitlines():
        k, sep, v = line.partition(":")
        if sep:
            out[k.strip()] = " ".join(v.split())
    return out


def structure_diff(go: dict, mkfs: dict, go_size: int, mkfs_size: int) -> list[str]:
    """'field: go-erofs X, mkfs.erofs Y' for each superblock field that differs (pure)."""
    out = []
    if go_size != mkfs_size:
        out.append(f"image size: go-erofs {go_size}, mkfs.erofs {mkfs_size}")
    for k in SUPERBLOCK_FIELDS:
        a, b = go.get(k), mkfs.get(k)
        if a != b:
            out.append(f"{k.removeprefix('Filesystem ')}: go-erofs {a or '(none)'}, "
                       f"mkfs.erofs {b or '(none)'}")
    return out


# -- the I/O ----------------------------------------------------------------------------------

def check(label: str, blob: bytes, route, go_apply, session, files: dict | None) -> Check:
    """The go-erofs writer check of one Apply case that took the tar route. `go_apply` is
    containerd's Apply result (descriptor, layer.erofs bytes, error, ingested descriptor)."""
    from .. import goerofs
    from ..reference.profiles import tool_quirk_holds
    name = f"go-erofs writer {label}"
    tar, decode_error = mc.decompressed(blob, route)
    versions = mc._versions(session.environment)
    try:
        versions["go-erofs"] = goerofs.version()
    except goerofs.GoErofsError as e:
        return Check(name, Status.ERROR, f"the go-erofs writer could not run: {e}")
    meaning, ctx = mc.read_meaning(tar, decode_error)
    ctx.versions = versions
    ctx.merge_order = merge_order(tar)
    if decode_error:
        # containerd decompresses before the writer reads: its Apply fails with the decoder
        return judge(label, meaning, mc.Reading(), mc.Reading(), ctx,
                     lambda q: tool_quirk_holds(q, versions),
                     go_error=f"decompressing the blob: {decode_error} (the writer is not reached)")
    stem = os.path.join(session.base, f"goerofs-{uuid.uuid4().hex[:8]}")
    tar_path, image_path, merged_path = stem + ".tar", stem + ".erofs", stem + ".merged.erofs"
    mkfs_path = None
    go_error, go, mkfs, structure = None, mc.Reading(), mc.Reading(skipped="no layer.erofs"), []
    try:
        with open(tar_path, "wb") as f:
            f.write(tar)
        try:
            goerofs.convert([tar_path], image_path, timeout=session.timeout)
        except goerofs.Refused as e:
            go_error = str(e)
        except goerofs.GoErofsError as e:
            return Check(name, Status.ERROR, f"the go-erofs writer could not run: {e}")
        merged = mc.Reading(skipped="the writer refused the layer")
        if go_error is None:
            go = mc.read_image(image_path, session.base, session.timeout)
            try:          # the same layer through the library's Merge, over nothing
                goerofs.convert([tar_path], merged_path, merge=True, timeout=session.timeout)
                merged = mc.read_image(merged_path, session.base, session.timeout)
            except goerofs.Refused as e:
                merged = mc.Reading(error=f"go-erofs (merge) refused the layer: {e}")
        if go_apply[1] is not None:
            mkfs_path = mc.write_image(go_apply[1], session.base)
            mkfs = mc.read_image(mkfs_path, session.base, session.timeout)
            if go_error is None:
                structure = structure_diff(superblock(image_path, session.timeout),
                                           superblock(mkfs_path, session.timeout),
                                           os.path.getsize(image_path), len(go_apply[1]))
        result = judge(label, meaning, go, mkfs, ctx, lambda q: tool_quirk_holds(q, versions),
                       go_error=go_error, structure=structure, merged=merged)
        if result.status.failed and files is not None:
            s = mc.file_stem(label)
            for who, r in (("meaning", meaning), ("goerofs", go), ("goerofs-merged", merged),
                           ("mkfs", mkfs)):
                if r.tree is not None:
                    files[f"{s}.tree-{who}.txt"] = mc.listing(r.tree)
            if os.path.exists(image_path):
                with open(image_path, "rb") as f:
                    files[f"{s}.go-erofs-writer.layer.erofs"] = f.read()
        return result
    finally:
        for p in (tar_path, image_path, merged_path, mkfs_path):
            if p and os.path.exists(p):
                os.unlink(p)
