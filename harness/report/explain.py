"""Explanations a person reads: tar differences (via tardiff), `tar tv` listings, and the
structural difference of two EROFS images as erofs-utils' own `dump.erofs` shows it.

Everything here is pure except the `dump.erofs` calls in the EROFS part.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from .tardiff import FieldDiff, diff_tars, entry_line, parse_tar

# -- tar -------------------------------------------------------------------------------------


def explain_tar(go: bytes | None, ref: bytes | None, labels: tuple[str, str] = ("go", "ref"),
                max_lines: int | None = 40, epoch: int | None = None) -> str:
    """One screen saying where two layer tars differ (first line: a one-line summary)."""
    gl, rl = labels
    if go is None or ref is None:
        missing = [lb for lb, t in ((gl, go), (rl, ref)) if t is None]
        return f"no tar to compare from {' and '.join(missing)}"
    d = diff_tars(go, ref, gl, rl, epoch)
    if d is None:
        return f"the tars are identical ({len(go)} bytes, {len(parse_tar(go).entries)} entries)"
    return d.render(max_lines)


def list_entries(tar: bytes) -> list[str]:
    """One line per entry, like `tar tv`: type+mode, uid/gid, size (major,minor for devices),
    mtime (UTC), name, `-> target` for symlinks and `link to` for hardlinks; PAX record keys
    in brackets. Parse problems follow as `# problem: ...` lines."""
    p = parse_tar(tar)
    lines = [entry_line(e) for e in p.entries]
    lines += [f"# problem: {x}" for x in p.problems]
    return lines


# -- EROFS -----------------------------------------------------------------------------------

DUMP = "dump.erofs"
MAX_PATHS = 2000
SB_NONDETERMINISTIC = {
    "UUID": "random unless mkfs gets -U (spec §5.6)",
    "created": "the build time unless -T/SOURCE_DATE_EPOCH (spec §5.6)",
}
ROOT_NONDETERMINISTIC = {
    "Timestamp": "the root's mtime is the build time (spec §5.5/§5.6)",
    "Uid": "the root's owner is the mkfs process (spec §5.5)",
    "Gid": "the root's owner is the mkfs process (spec §5.5)",
}
# inode fields that only say where things are on disk; they follow from earlier differences
LAYOUT_FIELDS = ("NID", "Compression ratio")
EROFS_FT = {"1": "file", "2": "dir", "3": "chr", "4": "blk", "5": "fifo", "6": "sock",
            "7": "symlink"}


class DumpError(Exception):
    pass


def find_dump() -> str | None:
    return shutil.which(DUMP) or (
        "/usr/local/bin/dump.erofs" if os.access("/usr/local/bin/dump.erofs", os.X_OK) else None)


def _run(tool: str, args: list, img: str) -> str:
    try:
        p = subprocess.run([tool, *args, img], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DumpError(f"{DUMP} {' '.join(os.fsdecode(a) for a in args)}: {e}") from e
    err = p.stderr.decode("utf-8", "replace").strip()
    # dump.erofs 1.8.6 exits 0 even when it cannot read the path; errors are "<E> ..." lines
    if p.returncode != 0 or "<E>" in err:
        raise DumpError(f"{DUMP} {' '.join(os.fsdecode(a) for a in args)} {img}: "
                        f"{err or 'exit ' + str(p.returncode)}")
    return p.stdout.decode("utf-8", "surrogateescape")


def parse_superblock(text: str) -> dict[str, str]:
    """`dump.erofs -s`: "Filesystem <field>:   <value>" lines."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"Filesystem (.+?):\s+(.*)$", line)
        if m:
            out[m.group(1).strip()] = m.group(2).strip()
    return out


def parse_inode(text: str) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """`dump.erofs --path=P [--ls]`: the inode block ("Key: value" pairs separated by two or
    more spaces, plus the file type) and, for --ls, (name, type, nid) rows."""
    info: dict[str, str] = {}
    listing: list[tuple[str, str, str]] = []
    in_ls = False
    for line in text.splitlines():
        if re.match(r"\s*NID\s+TYPE\s+FILENAME", line):
            in_ls = True
            continue
        if in_ls:
            m = re.match(r"\s*(\d+)\s+(\d+)  (.*)$", line)
            if m and m.group(3) not in (".", ".."):
                listing.append((m.group(3), m.group(2), m.group(1)))
            continue
        if line.startswith("Path :"):
            continue
        for tok in re.split(r"\s{2,}", line.strip()):
            if ": " in tok:
                k, v = tok.split(": ", 1)
                info[k.strip()] = v.strip()
            elif tok:
                info["type"] = tok
    return info, listing


@dataclass
class ErofsDiff:
    go_label: str
    ref_label: str
    superblock: list[FieldDiff] = field(default_factory=list)
    nondeterministic: list[FieldDiff] = field(default_factory=list)
    path: str | None = None            # first path whose structure differs
    kind: str = ""                     # "inode", "entries", "content", "bytes"
    fields: list[FieldDiff] = field(default_factory=list)
    detail: list[str] = field(default_factory=list)
    layout: str = ""                   # first layout-only difference (NID), if any
    note: str = ""

    def headline(self) -> str:
        if self.path is not None:
            if self.kind == "entries":
                what = "; ".join(x for x in self.detail[:2])
            else:
                what = ", ".join(f"{d.field} {self.go_label}={d.go} {self.ref_label}={d.ref}"
                                 for d in self.fields[:2]) or self.kind
            return f"erofs images differ at {self.path} ({self.kind}): {what}"
        if self.superblock:
            d = self.superblock[0]
            return (f"erofs images differ in the superblock: {d.field} "
                    f"{self.go_label}={d.go} {self.ref_label}={d.ref}")
        return f"erofs images differ: {self.note or 'no structural difference found'}"

    def render(self, max_lines: int | None = 40) -> str:
        g, r = self.go_label, self.ref_label
        lines = [self.headline()]
        if self.superblock:
            lines.append("superblock (dump.erofs -s):")
            lines += [f"  {d.field}: {g}={d.go}  {r}={d.ref}" for d in self.superblock]
        if self.path is not None:
            lines.append(f"first differing structure: {self.path} ({self.kind})")
            for d in self.fields:
                lines.append(f"  {d.field}: {g}={d.go}  {r}={d.ref}" +
                             (f"  [{d.rule}]" if d.rule else ""))
            lines += ["  " + x for x in self.detail]
        if self.layout:
            lines.append(f"first layout difference: {self.layout}")
        if self.nondeterministic:
            lines.append("known non-deterministic (ignored):")
            lines += [f"  {d.field}: {g}={d.go}  {r}={d.ref}  [{d.rule}]"
                      for d in self.nondeterministic]
        if self.note and self.path is None and self.superblock:
            lines.append(self.note)
        if max_lines is not None and len(lines) > max_lines:
            lines = lines[:max_lines - 1] + [f"... ({len(lines) - max_lines + 1} more lines)"]
        return "\n".join(lines)


def _first_byte(a: str, b: str) -> str:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        x, y = fa.read(), fb.read()
    if x == y:
        return ""
    i = next((k for k, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
    where = "superblock" if 1024 <= i < 1024 + 128 else f"4 KiB block {i // 4096}"
    return f"first differing byte at offset {i} ({where}); sizes {len(x)} vs {len(y)}"


def diff_erofs(go_img: str, ref_img: str, labels: tuple[str, str] = ("go", "ref"),
               tool: str | None = None) -> ErofsDiff | None:
    """None when the images are byte-identical; else the first differing structure.
    Raises DumpError when dump.erofs fails."""
    with open(go_img, "rb") as fa, open(ref_img, "rb") as fb:
        if fa.read() == fb.read():
            return None
    tool = tool or find_dump()
    if tool is None:
        raise DumpError(f"{DUMP} not found")
    d = ErofsDiff(*labels)
    sa = parse_superblock(_run(tool, ["-s"], go_img))
    sb = parse_superblock(_run(tool, ["-s"], ref_img))
    for k in list(sa) + [k for k in sb if k not in sa]:
        if sa.get(k) != sb.get(k):
            fd = FieldDiff(k, str(sa.get(k)), str(sb.get(k)), SB_NONDETERMINISTIC.get(k, ""))
            (d.nondeterministic if k in SB_NONDETERMINISTIC else d.superblock).append(fd)
    # walk the tree depth-first in directory order (the order of `--ls`, i.e. EROFS dirents),
    # comparing each path's inode, its listing (directories) and its content (files, symlinks)
    queue: list[tuple[str, bool]] = [("/", True)]
    seen = 0
    while queue and seen < MAX_PATHS:
        path, is_dir = queue.pop(0)
        seen += 1
        args = [b"--path=" + os.fsencode(path)] + (["--ls"] if is_dir else [])
        ia, la = parse_inode(_run(tool, args, go_img))
        ib, lb = parse_inode(_run(tool, args, ref_img))
        for k in list(ia) + [k for k in ib if k not in ia]:
            if ia.get(k) == ib.get(k):
                continue
            fd = FieldDiff(k, str(ia.get(k)), str(ib.get(k)))
            if path == "/" and k in ROOT_NONDETERMINISTIC:
                fd.rule = ROOT_NONDETERMINISTIC[k]
                d.nondeterministic.append(FieldDiff(f"/ {k}", fd.go, fd.ref, fd.rule))
            elif k in LAYOUT_FIELDS:
                if not d.layout:
                    d.layout = f"{path} {k}: {labels[0]}={fd.go} {labels[1]}={fd.ref}"
            else:
                if k == "Timestamp" and ia.get("type") == "directory":
                    fd.rule = "implicit parent directories inherit the build time (spec §5.5)"
                d.fields.append(fd)
        na = [(n, t) for n, t, _ in la]
        nb = [(n, t) for n, t, _ in lb]
        if na != nb:
            # the listing explains a directory's Size; show it first
            d.path, d.kind = path, "entries"
            d.fields.sort(key=lambda f: f.field not in ("Size", "On-disk size"))
            only_a = [f"{n} ({EROFS_FT.get(t, t)})" for n, t in na if (n, t) not in nb]
            only_b = [f"{n} ({EROFS_FT.get(t, t)})" for n, t in nb if (n, t) not in na]
            d.detail.append(f"only in {labels[0]}: {', '.join(only_a[:6]) or '(none)'}")
            d.detail.append(f"only in {labels[1]}: {', '.join(only_b[:6]) or '(none)'}")
            if not only_a and not only_b:
                d.detail.append("same names, different order")
            return d
        if d.fields:
            d.path, d.kind = path, "inode"
            d.detail.append(f"(from dump.erofs --path={path})")
            return d
        if ia.get("type") in ("regular file", "symlink file"):
            cat = [b"--path=" + os.fsencode(path), "--cat"]
            ca = _run(tool, cat, go_img).encode("utf-8", "surrogateescape")
            cb = _run(tool, cat, ref_img).encode("utf-8", "surrogateescape")
            if ca != cb:
                i = next((k for k, (x, y) in enumerate(zip(ca, cb)) if x != y),
                         min(len(ca), len(cb)))
                d.path, d.kind = path, "content"
                d.fields.append(FieldDiff("content",
                                          "sha256:" + hashlib.sha256(ca).hexdigest()[:12],
                                          "sha256:" + hashlib.sha256(cb).hexdigest()[:12]))
                d.detail.append(f"first differing content byte: {i}")
                return d
        base = path.rstrip("/")
        queue[:0] = [(f"{base}/{n}", t == "2") for n, t, _ in la]
    if seen >= MAX_PATHS and queue:
        d.note = f"stopped after {MAX_PATHS} paths"
    if not d.superblock:
        d.kind = "bytes"
        d.note = ("dump.erofs shows no structural difference (superblock, inodes, listings, "
                  "contents); " + (_first_byte(go_img, ref_img) or "the bytes are equal") +
                  ("; xattr values and device numbers are not shown by dump.erofs 1.8.6"))
    return d


def explain_erofs(go_img_path: str, ref_img_path: str,
                  labels: tuple[str, str] = ("go", "ref")) -> str:
    """One screen on how two EROFS images differ, as dump.erofs (erofs-utils) sees them."""
    for p in (go_img_path, ref_img_path):
        if not os.path.isfile(p):
            return f"cannot compare the EROFS images: {p} does not exist"
    with open(go_img_path, "rb") as fa, open(ref_img_path, "rb") as fb:
        if fa.read() == fb.read():
            return "the EROFS images are identical"
    tool = find_dump()
    if tool is None:
        return ("the EROFS images differ, but dump.erofs was not found on PATH, so no "
                "structural explanation: install erofs-utils >= 1.8 (it ships dump.erofs next "
                "to mkfs.erofs). " + _first_byte(go_img_path, ref_img_path))
    try:
        d = diff_erofs(go_img_path, ref_img_path, labels, tool)
    except DumpError as e:
        return (f"the EROFS images differ; dump.erofs could not read them: {e}. "
                + _first_byte(go_img_path, ref_img_path))
    return "the EROFS images are identical" if d is None else d.render()
