"""Where two tar streams differ, told in tar terms. Pure: bytes in, data and text out.

``parse_tar`` reads raw 512-byte blocks and keeps, per logical entry, its PAX extended header
(if any), its main header, their offsets, every raw field and the effective values a reader
sees (PAX overrides applied, USTAR prefix joined). It never raises: whatever it could not
read is described in ``problems``.

``diff_tars`` finds the first entry whose bytes differ and says which effective fields
differ, or — when a reader would see the same entry — which raw bytes differ and the Go
``archive/tar`` rule that decides them (docs/spec.md §3.5).
"""
from __future__ import annotations

import datetime
import hashlib
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

BLOCK = 512
# (name, offset, length) of every field of a USTAR/PAX header block (Go's format.go).
FIELDS = (
    ("name", 0, 100), ("mode", 100, 8), ("uid", 108, 8), ("gid", 116, 8),
    ("size", 124, 12), ("mtime", 136, 12), ("chksum", 148, 8), ("typeflag", 156, 1),
    ("linkname", 157, 100), ("magic", 257, 6), ("version", 263, 2), ("uname", 265, 32),
    ("gname", 297, 32), ("devmajor", 329, 8), ("devminor", 337, 8), ("prefix", 345, 155),
    ("pad", 500, 12),
)
FIELD_AT = {name: (off, ln) for name, off, ln in FIELDS}
NUMERIC = ("mode", "uid", "gid", "size", "mtime", "chksum", "devmajor", "devminor")
HEADER_ONLY = b"123456"            # header-only types: no data whatever Size says (Go reader)
META_TYPES = b"xLK"                # headers that describe the next entry
TYPE_NAMES = {b"0": "regular", b"\0": "regular (old '\\0')", b"1": "hardlink", b"2": "symlink",
              b"3": "char device", b"4": "block device", b"5": "directory", b"6": "fifo",
              b"7": "contiguous", b"x": "PAX header", b"g": "PAX global header",
              b"L": "GNU long name", b"K": "GNU long link"}
USTAR_MAGIC, GNU_MAGIC = b"ustar\x00", b"ustar "
SPEC = "spec §3.5"


# -- parsing ---------------------------------------------------------------------------------

def _cstr(b: bytes) -> bytes:
    """parseString: up to the first NUL."""
    i = b.find(b"\0")
    return b if i < 0 else b[:i]


def parse_numeric(b: bytes) -> int | None:
    """Go's parseNumeric: base-256 when the top bit is set, else octal with spaces/NULs trimmed
    (empty is 0). None when the field is not a number."""
    if b and b[0] & 0x80:
        v = int.from_bytes(bytes([b[0] & 0x7F]) + b[1:], "big")
        if b[0] & 0x40:                       # negative, two's complement
            v -= 1 << (len(b) * 8 - 1)
        return v
    s = b.strip(b" \x00")
    if not s:
        return 0
    try:
        return int(s, 8)
    except ValueError:
        return None


@dataclass
class RawHeader:
    """One 512-byte header block as found in the stream."""

    offset: int
    block: bytes
    fields: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self):
        if not self.fields:
            self.fields = {n: self.block[o:o + ln] for n, o, ln in FIELDS}

    def num(self, name: str) -> int | None:
        return parse_numeric(self.fields[name])

    @property
    def typeflag(self) -> bytes:
        return self.fields["typeflag"]

    @property
    def computed_chksum(self) -> int:
        return sum(self.block[:148]) + 8 * 0x20 + sum(self.block[156:])

    @property
    def checksum_ok(self) -> bool:
        stored = self.num("chksum")
        signed = sum(b - 256 if b > 127 else b for b in self.block[:148] + self.block[156:]) + 256
        return stored is not None and stored in (self.computed_chksum, signed)


@dataclass
class PaxRecord:
    key: bytes
    value: bytes
    raw: bytes                    # the whole "%d %s=%s\n" record as written


@dataclass
class TarEntry:
    """One logical entry: optional PAX/GNU meta headers, then the main header, then data."""

    index: int
    start: int                    # offset of its first header block (PAX header if any)
    end: int                      # offset after its data padding
    header: RawHeader
    pax: RawHeader | None = None
    pax_records: list[PaxRecord] = field(default_factory=list)
    pax_body: bytes = b""         # the PAX data blocks, padding included
    gnu: list[RawHeader] = field(default_factory=list)   # 'L'/'K' headers, if any
    data_offset: int = 0
    data: bytes = b""             # data as found (may be short when truncated)
    padding: bytes = b""
    truncated: bool = False
    effective: dict[str, object] = field(default_factory=dict)

    @property
    def name(self) -> bytes:
        return self.effective.get("name", b"")

    @property
    def data_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()


@dataclass
class ParsedTar:
    size: int
    entries: list[TarEntry] = field(default_factory=list)
    end_offset: int | None = None         # where the two zero blocks start
    trailer: bytes = b""                  # everything from end_offset (or the stop point) on
    problems: list[str] = field(default_factory=list)

    @property
    def problem(self) -> str | None:
        return "; ".join(self.problems) or None


def _parse_pax(body: bytes, offset: int, problems: list[str]) -> list[PaxRecord]:
    """parsePAX: "%d %s=%s\\n" records; stops (with a problem) at the first malformed one."""
    out, pos = [], 0
    while pos < len(body):
        sp = body.find(b" ", pos)
        try:
            n = int(body[pos:sp]) if sp > pos else -1
        except ValueError:
            n = -1
        rec = body[pos:pos + n] if n > 0 else b""
        eq = rec.find(b"=")
        if n <= 0 or len(rec) < n or not rec.endswith(b"\n") or eq < 0 or eq < sp - pos:
            problems.append(f"malformed PAX record at offset {offset + pos}: "
                            f"{_q(body[pos:pos + 40])}")
            break
        out.append(PaxRecord(rec[sp - pos + 1:eq], rec[eq + 1:-1], rec))
        pos += n
    return out


def _effective(hdr: RawHeader, records: list[PaxRecord], gnu: list[RawHeader],
               gnu_bodies: dict[int, bytes]) -> dict[str, object]:
    """The header a reader sees: USTAR prefix joined, GNU long names and PAX records applied."""
    f = hdr.fields
    name = _cstr(f["name"])
    if f["magic"] == USTAR_MAGIC and _cstr(f["prefix"]):
        name = _cstr(f["prefix"]) + b"/" + name
    eff: dict[str, object] = {
        "name": name, "typeflag": f["typeflag"], "linkname": _cstr(f["linkname"]),
        "mode": hdr.num("mode"), "uid": hdr.num("uid"), "gid": hdr.num("gid"),
        "size": hdr.num("size"), "mtime": _norm_time(hdr.num("mtime")),
        "uname": _cstr(f["uname"]), "gname": _cstr(f["gname"]),
        "devmajor": hdr.num("devmajor"), "devminor": hdr.num("devminor"),
    }
    if eff["typeflag"] == b"\0":        # TypeRegA: readers see a regular file (or a dir)
        eff["typeflag"] = b"5" if name.endswith(b"/") else b"0"
    for g in gnu:
        body = _cstr(gnu_bodies.get(g.offset, b""))
        eff["name" if g.typeflag == b"L" else "linkname"] = body
    for r in records:
        k, v = r.key, r.value
        if k == b"path":
            eff["name"] = v
        elif k == b"linkpath":
            eff["linkname"] = v
        elif k in (b"uid", b"gid", b"size"):
            try:
                eff[k.decode()] = int(v)
            except ValueError:
                eff[k.decode()] = "invalid " + _q(v)
        elif k in (b"mtime", b"atime", b"ctime"):
            eff[k.decode()] = _norm_time(v)
        elif k in (b"uname", b"gname"):
            eff[k.decode()] = v
        elif k.startswith(b"SCHILY.xattr."):
            eff["xattr " + k[13:].decode("utf-8", "backslashreplace")] = v
        else:
            eff["pax " + k.decode("utf-8", "backslashreplace")] = v
    return eff


def _norm_time(v) -> str | None:
    """Times compare as decimal seconds, so header 1700000000 equals PAX "1700000000.0"."""
    if v is None:
        return None
    if isinstance(v, int):
        return str(v)
    try:
        d = Decimal(v.decode("ascii"))
    except (InvalidOperation, UnicodeDecodeError):
        return "invalid " + _q(v)
    s = format(d.normalize(), "f")
    return s


def parse_tar(data: bytes) -> ParsedTar:
    """Read every block of a tar stream; never raises."""
    out = ParsedTar(size=len(data))
    problems = out.problems
    pos, n = 0, len(data)
    meta_start = None
    pax: RawHeader | None = None
    records: list[PaxRecord] = []
    pax_body = b""
    gnu: list[RawHeader] = []
    gnu_bodies: dict[int, bytes] = {}

    def pending() -> str:
        return " (after a PAX/GNU header with no entry)" if meta_start is not None else ""

    while True:
        if pos >= n:
            problems.append(f"missing end blocks: the archive stops at offset {n}{pending()} "
                            "without the two 512-byte zero blocks")
            out.trailer = b""
            break
        if n - pos < BLOCK:
            problems.append(f"truncated block at offset {pos}: {n - pos} bytes, a block is 512")
            out.trailer = data[pos:]
            break
        blk = data[pos:pos + BLOCK]
        if not any(blk):
            nxt = data[pos + BLOCK:pos + 2 * BLOCK]
            if len(nxt) == BLOCK and not any(nxt):
                out.end_offset, out.trailer = pos, data[pos:]
                rest = data[pos + 2 * BLOCK:]
                if rest:
                    nz = next((i for i, b in enumerate(rest) if b), None)
                    what = (f"{len(rest)} zero bytes (record padding)" if nz is None else
                            f"{len(rest)} bytes, non-zero at offset {pos + 2 * BLOCK + nz}")
                    problems.append(f"trailing bytes after the two end blocks at offset "
                                    f"{pos + 2 * BLOCK}: {what}")
                if meta_start is not None:
                    problems.append(f"a PAX/GNU header at offset {meta_start} has no entry")
                break
            if len(nxt) < BLOCK:
                problems.append(f"only one end block at offset {pos}" +
                                (f", then {len(nxt)} bytes" if nxt else "") +
                                " (Go writes two)")
                out.end_offset, out.trailer = pos, data[pos:]
                break
            problems.append(f"a single zero block at offset {pos} followed by a header "
                            "(readers stop there)")
            pos += BLOCK
            continue
        hdr = RawHeader(pos, blk)
        size = hdr.num("size")
        if not hdr.checksum_ok:
            stored = hdr.fields["chksum"]
            problems.append(f"bad checksum in header at offset {pos} ({_q(_cstr(hdr.fields['name']))}): "
                            f"stored {_q(stored)}, computed {hdr.computed_chksum:06o}")
            if size is None or hdr.fields["magic"] not in (USTAR_MAGIC, GNU_MAGIC, b"\0" * 6):
                problems.append(f"not a tar header at offset {pos}; stopped reading")
                out.trailer = data[pos:]
                break
        if size is None or size < 0:
            problems.append(f"invalid size field {_q(hdr.fields['size'])} at offset {pos}; "
                            "stopped reading")
            out.trailer = data[pos:]
            break
        flag = hdr.typeflag
        nbytes = 0 if flag and flag in HEADER_ONLY else size
        data_off = pos + BLOCK
        body = data[data_off:data_off + nbytes]
        padded = -(-nbytes // BLOCK) * BLOCK
        truncated = len(body) < nbytes
        if truncated:
            problems.append(f"truncated: {_q(_cstr(hdr.fields['name']))} at offset {pos} needs "
                            f"{nbytes} data bytes, only {len(body)} remain")
        if flag in (b"x", b"L", b"K") and not truncated:
            if meta_start is None:
                meta_start = pos
            if flag == b"x":
                pax, pax_body = hdr, data[data_off:data_off + padded]
                records = _parse_pax(body, data_off, problems)
            else:
                gnu.append(hdr)
                gnu_bodies[hdr.offset] = body
            pos = data_off + padded
            continue
        entry = TarEntry(index=len(out.entries), start=pos if meta_start is None else meta_start,
                         end=min(n, data_off + padded), header=hdr, pax=pax,
                         pax_records=records, pax_body=pax_body, gnu=gnu,
                         data_offset=data_off, data=body,
                         padding=data[data_off + nbytes:data_off + padded], truncated=truncated)
        entry.effective = _effective(hdr, records, gnu, gnu_bodies)
        out.entries.append(entry)
        meta_start, pax, records, pax_body, gnu, gnu_bodies = None, None, [], b"", [], {}
        if truncated:
            out.trailer = b""
            break
        pos = data_off + padded
    return out


# -- the diff model --------------------------------------------------------------------------

@dataclass
class FieldDiff:
    field: str
    go: str
    ref: str
    rule: str = ""                # the Go archive/tar rule behind it, when known
    where: str = ""               # "PAX header", "header", "PAX records", "data", "end"


@dataclass
class TarDiff:
    go_label: str
    ref_label: str
    go_size: int
    ref_size: int
    go_count: int
    ref_count: int
    first_byte: int | None = None         # first offset where the streams differ
    first_byte_where: str = ""
    index: int | None = None              # first diverging entry (None: entries agree)
    name: str | None = None
    go_offset: int | None = None
    ref_offset: int | None = None
    go_line: str = ""                     # `tar tv` lines for the diverging entry
    ref_line: str = ""
    effective: list[FieldDiff] = field(default_factory=list)
    raw: list[FieldDiff] = field(default_factory=list)
    only_go: list[str] = field(default_factory=list)    # entries only one side has
    only_ref: list[str] = field(default_factory=list)
    next_go: list[str] = field(default_factory=list)    # the next few names on each side
    next_ref: list[str] = field(default_factory=list)
    hexdump: list[str] = field(default_factory=list)
    go_problem: str | None = None
    ref_problem: str | None = None
    reordered: tuple[str, str] | None = None   # (go's entry, ref's entry) at the first swap
    order_rule: str = ""                      # the ordering rule one side broke

    @property
    def headline(self) -> str:
        g, r = self.go_label, self.ref_label
        if self.reordered is not None:
            x, y = self.reordered
            return (f"tar differs at entry #{self.index}: the same entries in a different order: "
                    f"{g} writes {x} before {y}, {r} the other way round")
        if self.index is None:
            what = (self.raw[0].field if self.raw else "bytes")
            return f"tar differs after the last entry ({what}): {g} vs {r}"
        where = f"tar differs at entry #{self.index} {self.name}"
        if self.only_go or self.only_ref:
            parts = []
            if self.only_ref:
                parts.append(f"{g} lacks {', '.join(self.only_ref[:3])}")
            if self.only_go:
                parts.append(f"{g} has extra {', '.join(self.only_go[:3])}")
            return f"{where}: " + "; ".join(parts)
        if self.effective:
            d = self.effective[0]
            more = f" (+{len(self.effective) - 1} more)" if len(self.effective) > 1 else ""
            epoch = " (one side clamped it to SOURCE_DATE_EPOCH)" if d.rule.startswith(
                "SOURCE_DATE_EPOCH=") else ""
            return f"{where}: {d.field} {g}={_short(d.go)} {r}={_short(d.ref)}{epoch}{more}"
        if self.raw:
            d = next((x for x in self.raw if x.rule), self.raw[0])
            return f"{where}: same entry, different bytes ({d.field}{' in ' + d.where if d.where else ''})"
        return where

    def render(self, max_lines: int | None = 40) -> str:
        g, r = self.go_label, self.ref_label
        w = max(len(g), len(r))
        lines = [self.headline,
                 f"  {g:<{w}}: {_n(self.go_count, 'entry', 'entries')}, {self.go_size} bytes"
                 + (f"; problem: {self.go_problem}" if self.go_problem else ""),
                 f"  {r:<{w}}: {_n(self.ref_count, 'entry', 'entries')}, {self.ref_size} bytes"
                 + (f"; problem: {self.ref_problem}" if self.ref_problem else "")]
        if self.first_byte is not None:
            lines.append(f"first differing byte: offset {self.first_byte} ({self.first_byte_where})")
        if self.index is not None:
            lines.append(f"entry #{self.index} starts at {g} offset {self.go_offset}, "
                         f"{r} offset {self.ref_offset}")
            if self.go_line or self.ref_line:
                lines.append(f"  {g:<{w}}: {self.go_line or '(no entry)'}")
                lines.append(f"  {r:<{w}}: {self.ref_line or '(no entry)'}")
        if self.order_rule:
            lines += _rule_lines(self.order_rule)
        if self.only_ref:
            lines.append(f"only in {r}: " + ", ".join(self.only_ref))
        if self.only_go:
            lines.append(f"only in {g}: " + ", ".join(self.only_go))
        if self.next_go or self.next_ref:
            lines.append("next entries:")
            lines.append(f"  {g:<{w}}: " + (", ".join(self.next_go) or "(end)"))
            lines.append(f"  {r:<{w}}: " + (", ".join(self.next_ref) or "(end)"))
        if self.effective:
            lines.append("fields a tar reader sees differently:")
            last = None
            for d in self.effective:
                lines.append(f"  {d.field}: {g}={d.go}  {r}={d.ref}")
                lines += _rule_lines(d.rule) if d.rule != last else []
                last = d.rule
        if self.raw:
            lines.append("raw bytes that differ" + (" (the entry reads the same):"
                                                    if not self.effective and self.index is not None
                                                    else ":"))
            last = None
            for d in self.raw:
                where = f"{d.where} " if d.where and d.where != "end" else ""
                lines.append(f"  {where}{d.field}: {g}={d.go}  {r}={d.ref}")
                lines += _rule_lines(d.rule) if d.rule != last else []
                last = d.rule
        lines += self.hexdump
        if max_lines is not None and len(lines) > max_lines:
            cut = len(lines) - (max_lines - 1)
            lines = lines[:max_lines - 1] + [f"... ({cut} more lines)"]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


# -- formatting helpers ----------------------------------------------------------------------

def _rule_lines(rule: str, width: int = 100) -> list[str]:
    if not rule:
        return []
    return textwrap.wrap(rule, width, initial_indent="    rule: ", subsequent_indent="      ",
                         break_on_hyphens=False)


def _q(b: bytes, limit: int = 120) -> str:
    """Go-style quoting: printable UTF-8 kept, invalid bytes as \\xNN."""
    out = []
    for ch in b.decode("utf-8", "surrogateescape"):
        c = ord(ch)
        if 0xDC80 <= c <= 0xDCFF:
            out.append(f"\\x{c - 0xDC00:02x}")
        elif ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\0":
            out.append("\\x00")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}")
    s = "".join(out)
    if len(s) > limit:
        s = s[:limit] + f"...(+{len(s) - limit} chars)"
    return f'"{s}"'


def _n(k: int, one: str, many: str) -> str:
    return f"{k} {one if k == 1 else many}"


def _short(s: str, n: int = 40) -> str:
    return s if len(s) <= n else s[:n - 3] + "..."


def fmt_time(v: str | None) -> str:
    if v is None:
        return "(unset)"
    try:
        sec = Decimal(v)
        t = datetime.datetime.fromtimestamp(int(sec), datetime.timezone.utc)
        return f"{v} ({t:%Y-%m-%d %H:%M:%S} UTC)"
    except (InvalidOperation, ValueError, OverflowError, OSError):
        return v


def fmt_value(key: str, v) -> str:
    """A field value as shown in explanations."""
    if v is None:
        return "(unset)" if key in ("atime", "ctime") or key.startswith(("xattr ", "pax ")) \
            else "(invalid)"
    if key == "typeflag":
        return f"{_q(v)} ({TYPE_NAMES.get(v, 'unknown')})"
    if key == "mode" and isinstance(v, int):
        return f"{v:04o}"
    if key in ("mtime", "atime", "ctime"):
        return fmt_time(v)
    if isinstance(v, bytes):
        return _q(v, 60)
    return str(v)


def fmt_raw(b: bytes) -> str:
    return _q(b, 60)


STRING_FIELDS = ("name", "linkname", "uname", "gname", "prefix")


def fmt_cstr(b: bytes) -> str:
    """A NUL-padded string field: the C string, plus what hides after its NUL, if anything."""
    c = _cstr(b)
    rest = b[len(c) + 1:]
    return _q(c, 60) + (f" + {_q(rest.rstrip(bytes(1)), 20)} after the NUL" if any(rest) else "")


# -- listing ---------------------------------------------------------------------------------

_TV_TYPE = {b"0": "-", b"\0": "-", b"7": "-", b"1": "h", b"2": "l", b"3": "c", b"4": "b",
            b"5": "d", b"6": "p", b"g": "g"}


def _perm(mode: int | None) -> str:
    if mode is None:
        return "?????????"
    s = ""
    for shift in (6, 3, 0):
        bits = mode >> shift & 7
        s += ("r" if bits & 4 else "-") + ("w" if bits & 2 else "-") + ("x" if bits & 1 else "-")
    s = list(s)
    if mode & 0o4000:
        s[2] = "s" if s[2] == "x" else "S"
    if mode & 0o2000:
        s[5] = "s" if s[5] == "x" else "S"
    if mode & 0o1000:
        s[8] = "t" if s[8] == "x" else "T"
    return "".join(s)


def entry_line(e: TarEntry) -> str:
    """`tar tv` style: type+mode, uid/gid, size (or major,minor), mtime, name (-> link)."""
    ef = e.effective
    t = ef.get("typeflag", b"?")
    kind = _TV_TYPE.get(t, "?")
    owner = f"{ef.get('uid')}/{ef.get('gid')}"
    un, gn = ef.get("uname") or b"", ef.get("gname") or b""
    if un or gn:
        owner += f"({un.decode('utf-8', 'replace')}/{gn.decode('utf-8', 'replace')})"
    size = (f"{ef.get('devmajor')},{ef.get('devminor')}" if t in (b"3", b"4")
            else str(ef.get("size")))
    mt = ef.get("mtime")
    when = fmt_time(mt).split(" (")[-1].rstrip(")").replace(" UTC", "") if mt else "(unset)"
    line = f"{kind}{_perm(ef.get('mode'))} {owner:>9} {size:>8} {when} {_q(ef.get('name', b''), 200)[1:-1]}"
    if t == b"2":
        line += " -> " + _q(ef.get("linkname", b""), 200)[1:-1]
    elif t == b"1":
        line += " link to " + _q(ef.get("linkname", b""), 200)[1:-1]
    extra = [r.key.decode("utf-8", "backslashreplace") for r in e.pax_records]
    if extra:
        line += "  [pax: " + ", ".join(extra) + "]"
    if e.gnu:
        line += "  [gnu: " + ", ".join(h.typeflag.decode() for h in e.gnu) + "]"
    if e.truncated:
        line += "  [truncated]"
    return line


# -- diffing ---------------------------------------------------------------------------------

RULE_FORMAT = ("USTAR vs PAX format choice: Go uses USTAR when every field fits and PAX only "
               "when a field needs it (non-ASCII or unsplittable long name, long link, "
               f"uid/gid >= 2097152, size >= 8 GiB, mtime out of range, any xattr) ({SPEC})")
RULE_ORDER = f"PAX record order: Go sorts the records by key in byte order ({SPEC})"
RULE_LENGTH = ("PAX record length: \"%d %s=%s\\n\", the length counts the whole record "
               f"including its own digits ({SPEC})")
RULE_RECORDS = ("PAX records: Go writes a record only for a value that does not fit the "
                f"header field, plus SCHILY.xattr.security.capability ({SPEC})")
RULE_CHKSUM = f"checksum encoding: 6 octal digits, NUL, space (e.g. \"010263\\x00 \") ({SPEC})"
RULE_NUMERIC = ("numeric field encoding: octal zero-padded to width-1 digits, then one NUL "
                f"(e.g. \"0000644\\x00\") ({SPEC})")
RULE_OVERFLOW = ("numeric overflow: Go writes 0 in the header field and the real value in a "
                 f"PAX record ({SPEC})")
RULE_PAXNAME = ("PaxHeaders.0 name: the PAX header is named path.Join(dir, \"PaxHeaders.0\", "
                f"file), toASCII, at most 100 bytes ({SPEC})")
RULE_PAXDEV = f"devmajor/devminor NUL in PAX header: Go leaves them as 8 NUL bytes ({SPEC})"
RULE_PAXNUM = ("PAX header fields: mode/uid/gid/mtime octal 0, size = length of the records, "
               f"uname/gname empty ({SPEC})")
RULE_DEV = ("devmajor/devminor: Go writes \"0000000\\x00\" in every entry header, the real "
            f"numbers only for char/block devices ({SPEC})")
RULE_SPLIT = ("USTAR prefix split at the last '/' within 156 bytes: only for ASCII names over "
              f"100 bytes; prefix <= 155, name 1..100, the cut '/' dropped ({SPEC})")
RULE_PAXMAIN = ("name under a PAX header: toASCII(name) truncated to 100 bytes, prefix empty "
                f"({SPEC})")
RULE_STRING = f"string field: raw bytes, NUL-terminated when shorter than the field ({SPEC})"
RULE_MAGIC = ("magic/version: Go writes \"ustar\\x00\" \"00\" for USTAR and PAX; "
              f"\"ustar \" \" \\x00\" is GNU, never used for containerd's entries ({SPEC})")
RULE_PAD = f"header bytes 500-511 are NUL ({SPEC})"
RULE_GNU = ("GNU long name/link header ('L'/'K'): Go writes PAX, never GNU, for containerd's "
            f"entries ({SPEC})")
RULE_DATAPAD = f"file data is followed by NUL bytes up to the next 512 multiple ({SPEC})"
RULE_REGA = ("typeflag: Go writes '0' for a regular file; '\\0' (TypeRegA) is the legacy "
             "spelling that readers take as '0' ('5' with a trailing '/')")
RULE_END = "two 512-byte end blocks, no 10 KiB record padding (spec §3.2)"
RULE_UNAME = "uname/gname stay empty: containerd does no user/group lookups (spec §3.1)"

HINTS = {
    "mode": "Mode = st_mode & 07777, no file-type bits (spec §3.1)",
    "mtime": "mtime floored to whole seconds; whiteouts carry 0 (spec §3.1)",
    "uname": RULE_UNAME, "gname": RULE_UNAME,
    "atime": "atime/ctime are never written (spec §3.5)",
    "ctime": "atime/ctime are never written (spec §3.5)",
}


def _raw_rule(fld: str, a: RawHeader, b: RawHeader, in_pax: bool, has_pax: bool) -> str:
    fa, fb = a.fields[fld], b.fields[fld]
    na, nb = parse_numeric(fa), parse_numeric(fb)
    if fld == "chksum":
        if not a.checksum_ok or not b.checksum_ok:
            bad = a if not a.checksum_ok else b
            return (f"bad checksum: stored {fmt_raw(bad.fields['chksum'])}, computed "
                    f"{bad.computed_chksum:06o}; Go's reader rejects the header "
                    "(archive/tar: invalid header)")
        if na == nb:
            return RULE_CHKSUM
        return "the checksum follows from the other differing bytes"
    if in_pax:
        if fld == "name":
            return RULE_PAXNAME
        if fld in ("devmajor", "devminor"):
            return RULE_PAXDEV
        if fld in ("mode", "uid", "gid", "mtime", "size", "uname", "gname"):
            return RULE_NUMERIC if na == nb and fld in NUMERIC else RULE_PAXNUM
    if fld in ("name", "prefix", "linkname"):
        if fld != "linkname" and (_cstr(a.fields["prefix"]) or _cstr(b.fields["prefix"])):
            return RULE_SPLIT
        if has_pax:
            return RULE_PAXMAIN
        return RULE_STRING
    if fld in NUMERIC:
        if na == nb:
            if fld in ("devmajor", "devminor") and (not any(fa) or not any(fb)):
                return RULE_DEV
            return RULE_NUMERIC
        return RULE_OVERFLOW
    if fld in ("magic", "version"):
        return RULE_MAGIC
    if fld in ("uname", "gname"):
        return RULE_UNAME
    if fld == "pad":
        return RULE_PAD
    if fld == "typeflag":
        return RULE_REGA
    return ""


def _header_diffs(a: RawHeader, b: RawHeader, where: str, in_pax: bool,
                  has_pax: bool) -> list[FieldDiff]:
    out = []
    for fld, _, _ in FIELDS:
        fa, fb = a.fields[fld], b.fields[fld]
        if fa != fb:
            show = fmt_cstr if fld in STRING_FIELDS else fmt_raw
            out.append(FieldDiff(fld, show(fa), show(fb),
                                 _raw_rule(fld, a, b, in_pax, has_pax), where))
    # a checksum that merely follows from the other bytes shows in the hexdump only
    return [d for d in out if not d.rule.startswith("the checksum")]


def _records_diffs(a: TarEntry, b: TarEntry) -> list[FieldDiff]:
    ra, rb = a.pax_records, b.pax_records
    ka, kb = [r.key for r in ra], [r.key for r in rb]
    keys = lambda rs: ", ".join(r.key.decode("utf-8", "backslashreplace") for r in rs) or "(none)"
    out = []
    if set(ka) != set(kb):
        out.append(FieldDiff("PAX records", keys(ra), keys(rb), RULE_RECORDS, "PAX"))
    elif ka != kb:
        out.append(FieldDiff("PAX record order", keys(ra), keys(rb), RULE_ORDER, "PAX"))
    else:
        for x, y in zip(ra, rb):
            if x.raw != y.raw:
                rule = RULE_LENGTH if x.value == y.value else ""
                out.append(FieldDiff(f"PAX record {x.key.decode('utf-8', 'backslashreplace')}",
                                     _q(x.raw, 60), _q(y.raw, 60), rule, "PAX"))
    if not out and a.pax_body != b.pax_body:
        out.append(FieldDiff("PAX body padding", f"{len(a.pax_body)} bytes",
                             f"{len(b.pax_body)} bytes", "PAX data is padded with NUL to 512",
                             "PAX"))
    return out


def _compare_effective(a: TarEntry, b: TarEntry) -> list[FieldDiff]:
    ea, eb = dict(a.effective), dict(b.effective)
    ea["data"] = None if a.truncated else a.data_digest
    eb["data"] = None if b.truncated else b.data_digest
    out = []
    keys = list(ea) + [k for k in eb if k not in ea]
    for k in keys:
        va, vb = ea.get(k), eb.get(k)
        if va == vb:
            continue
        if k == "data":
            first = next((i for i, (x, y) in enumerate(zip(a.data, b.data)) if x != y),
                         min(len(a.data), len(b.data)))
            fa = f"{len(a.data)} bytes {a.data_digest[:19]}" + (" (truncated)" if a.truncated else "")
            fb = f"{len(b.data)} bytes {b.data_digest[:19]}" + (" (truncated)" if b.truncated else "")
            out.append(FieldDiff("data", fa, fb, f"contents differ from byte {first}", "data"))
            continue
        out.append(FieldDiff(k, fmt_value(k, va), fmt_value(k, vb), HINTS.get(k, "")))
    return out


RULE_WALK_ORDER = ("entry order: containerd writes entries in the order of its directory walk: "
                   "pre-order (a directory before its contents), names sorted by their raw bytes "
                   "within each directory (Go's sort.Strings), spec §2.1")
RULE_WHITEOUT_ORDER = ("whiteout order: the spec puts a directory's whiteouts before its other "
                       "entries; containerd sorts them by name like any other entry (quirk "
                       "whiteout-sorted-by-name)")


def _hexb(b: bytes) -> str:
    return b.hex(" ").upper()


def order_rule(x: bytes, y: bytes, xl: str, yl: str) -> str:
    """Which ordering rule tells x (first on side xl) and y (first on side yl) apart, and which
    side follows it."""
    cx, cy = x.rstrip(b"/").split(b"/"), y.rstrip(b"/").split(b"/")
    k = next((i for i, (p, q) in enumerate(zip(cx, cy)) if p != q), min(len(cx), len(cy)))
    if k >= len(cx) or k >= len(cy):
        parent, child = (xl, yl) if len(cx) < len(cy) else (yl, xl)
        return (f"{RULE_WALK_ORDER}. {parent} follows it (the directory first); {child} writes "
                "the directory after its contents")
    p, q = cx[k], cy[k]
    if p.startswith(b".wh.") != q.startswith(b".wh."):
        first = xl if p.startswith(b".wh.") else yl
        return f"{RULE_WHITEOUT_ORDER}. {first} puts the whiteout first"
    follows, breaks = (xl, yl) if p < q else (yl, xl)
    lo, hi = (p, q) if p < q else (q, p)
    text = (f"{RULE_WALK_ORDER}. {follows} follows it: {_q(lo, 40)} (bytes {_hexb(lo)}) sorts "
            f"before {_q(hi, 40)} (bytes {_hexb(hi)}); {breaks} does not")
    tl, th = (v.decode("utf-8", "surrogateescape") for v in (lo, hi))
    if th < tl:
        text += (" — it sorted by decoded text (code points, undecodable bytes as "
                 f"U+DC80..U+DCFF: U+{ord(th[0]):04X}... before U+{ord(tl[0]):04X}...), not by bytes")
    return text


def _epoch_hint(diff: FieldDiff, a: TarEntry, b: TarEntry, epoch: int, gl: str, rl: str) -> FieldDiff:
    """An mtime that equals SOURCE_DATE_EPOCH on one side and is later on the other was clamped
    by one side only: that is the epoch rule (and quirk epoch-ignored), not second flooring."""
    if diff.field != "mtime":
        return diff
    try:
        ta, tb = (float(dict(e.effective).get("mtime")) for e in (a, b))
    except (TypeError, ValueError):
        return diff
    if (ta == epoch) == (tb == epoch) or max(ta, tb) <= epoch:
        return diff
    clamped, kept = (gl, rl) if ta == epoch else (rl, gl)
    try:
        from ..reference.profiles import QUIRKS_BY_NAME
        q = QUIRKS_BY_NAME["epoch-ignored"]
        quirk = f"quirk epoch-ignored ({q.reference}: {q.description})"
    except (ImportError, KeyError):
        quirk = "quirk epoch-ignored"
    rule = (f"SOURCE_DATE_EPOCH={epoch}: {clamped} clamped this mtime to the epoch, {kept} kept "
            f"the file's later time. The spec clamps times later than the epoch; containerd's "
            f"erofs differ ignores the epoch: {quirk}")
    return FieldDiff(diff.field, diff.go, diff.ref, rule, diff.where)


def _hexdump(a: RawHeader, b: RawHeader, title: str, labels: tuple[str, str],
             max_fields: int = 5, max_rows: int = 2) -> list[str]:
    """The two blocks where they differ: per differing field, rows of up to 16 bytes labelled
    with the field's offset range and name, differing bytes marked with ^^."""
    ga, gb = labels
    w = max(len(ga), len(gb), 3)
    diff = [i for i in range(BLOCK) if a.block[i] != b.block[i]]
    if not diff:
        return []
    lines = [f"{title} ({ga} @{a.offset}, {gb} @{b.offset}); differing bytes marked ^^:"]
    shown = 0
    for fld, off, ln in FIELDS:
        idx = [i for i in diff if off <= i < off + ln]
        if not idx:
            continue
        if shown == max_fields:
            rest = len({f for f, o, l in FIELDS for i in diff if o <= i < o + l}) - shown
            lines.append(f"  ... {rest} more differing field(s)")
            break
        shown += 1
        rows = sorted({off + (i - off) // 16 * 16 for i in idx})
        label = f"{off}-{off + ln - 1} {fld}"
        for n_row, r in enumerate(rows[:max_rows]):
            end = min(r + 16, off + ln)
            cols = range(r, end)
            hx = lambda blk: " ".join(f"{blk[i]:02x}" for i in cols)
            asc = lambda blk: "".join(chr(blk[i]) if 32 <= blk[i] < 127 else "." for i in cols)
            mark = " ".join("^^" if a.block[i] != b.block[i] else "  " for i in cols)
            head = label if n_row == 0 else f"  +{r - off}"
            lines.append(f"  {head:<16} {ga:<{w}} {hx(a.block)}  |{asc(a.block)}|")
            lines.append(f"  {'':<16} {gb:<{w}} {hx(b.block)}  |{asc(b.block)}|")
            lines.append(f"  {'':<16} {'':<{w}} {mark.rstrip()}")
        if len(rows) > max_rows:
            lines.append(f"  {'':<16} ... {len(rows) - max_rows} more differing row(s) in {fld}")
    return lines


def _locate(p: ParsedTar, off: int) -> str:
    """Which entry, block and field an offset falls in."""
    for e in p.entries:
        if not e.start <= off < e.end:
            continue
        name = _q(e.name, 60)
        for h, what in [(e.pax, "PAX header"), *[(g, "GNU header") for g in e.gnu],
                        (e.header, "header")]:
            if h is not None and h.offset <= off < h.offset + BLOCK:
                rel = off - h.offset
                fld = next(f for f, o, ln in FIELDS if o <= rel < o + ln)
                return f"entry #{e.index} {name}, {what} field {fld}"
        if e.pax is not None and e.pax.offset + BLOCK <= off < e.header.offset:
            return f"entry #{e.index} {name}, PAX records"
        if off < e.data_offset + len(e.data):
            return f"entry #{e.index} {name}, data byte {off - e.data_offset}"
        return f"entry #{e.index} {name}, data padding"
    if p.end_offset is not None and off >= p.end_offset:
        return "end blocks" if off < p.end_offset + 2 * BLOCK else "after the end blocks"
    return "beyond the parsed entries"


def _trailer_desc(p: ParsedTar) -> str:
    if p.end_offset is None:
        return f"no end blocks ({len(p.trailer)} trailing bytes)"
    extra = len(p.trailer) - 2 * BLOCK
    if extra <= 0:
        return "two end blocks (1024 bytes)"
    rest = p.trailer[2 * BLOCK:]
    kind = "zero bytes" if not any(rest) else "bytes, not all zero"
    return f"two end blocks + {extra} {kind} (total archive {p.size} bytes)"


def diff_tars(go: bytes, ref: bytes, go_label: str = "go",
              ref_label: str = "ref", epoch: int | None = None) -> TarDiff | None:
    """None when identical; else where and how the two tar streams differ. `epoch` is the
    SOURCE_DATE_EPOCH the layer was made with (None: unset), to recognise clamped mtimes."""
    if go == ref:
        return None
    pa, pb = parse_tar(go), parse_tar(ref)
    d = TarDiff(go_label, ref_label, len(go), len(ref), len(pa.entries), len(pb.entries),
                go_problem=pa.problem, ref_problem=pb.problem)
    first = next((i for i, (x, y) in enumerate(zip(go, ref)) if x != y), min(len(go), len(ref)))
    d.first_byte = first
    d.first_byte_where = (f"{go_label}: {_locate(pa, first)}" if first < len(go)
                          else f"{go_label} ends here")
    ea, eb = pa.entries, pb.entries
    i = next((k for k, (x, y) in enumerate(zip(ea, eb))
              if go[x.start:x.end] != ref[y.start:y.end]), None)
    if i is None and len(ea) != len(eb):
        i = min(len(ea), len(eb))
    if i is None:
        # same entries: the end differs
        if pa.trailer != pb.trailer:
            d.raw.append(FieldDiff("end of archive", _trailer_desc(pa), _trailer_desc(pb),
                                   RULE_END, "end"))
        return d
    d.index = i
    a = ea[i] if i < len(ea) else None
    b = eb[i] if i < len(eb) else None
    d.go_offset = a.start if a else (pa.end_offset if pa.end_offset is not None else len(go))
    d.ref_offset = b.start if b else (pb.end_offset if pb.end_offset is not None else len(ref))
    d.go_line = entry_line(a) if a else ""
    d.ref_line = entry_line(b) if b else ""
    names = lambda es, k: [_q(e.name, 60) for e in es[k:k + 4]]
    if a is None or b is None or a.name != b.name:
        d.name = _q((a or b).name, 80) if (a is None or b is None) else \
            f"{_q(a.name, 60)} vs {_q(b.name, 60)}"
        # an insertion or a deletion realigns the lists within a few entries
        an, bn = [e.name for e in ea], [e.name for e in eb]
        j = next((k for k in range(i, min(len(bn), i + 8)) if a is not None and bn[k] == a.name), None)
        k = next((k for k in range(i, min(len(an), i + 8)) if b is not None and an[k] == b.name), None)
        if a is None:
            d.only_ref = names(eb, i)
            if len(eb) - i > 4:
                d.only_ref.append(f"(+{len(eb) - i - 4} more)")
        elif b is None:
            d.only_go = names(ea, i)
            if len(ea) - i > 4:
                d.only_go.append(f"(+{len(ea) - i - 4} more)")
        elif j is not None and (k is None or j - i <= k - i):
            d.only_ref = [_q(e.name, 60) for e in eb[i:j]]
        elif k is not None:
            d.only_go = [_q(e.name, 60) for e in ea[i:k]]
        d.next_go, d.next_ref = names(ea, i), names(eb, i)
        if a is not None and b is not None and Counter(an) == Counter(bn):
            # nothing is missing: the same entries come in another order
            d.only_go, d.only_ref = [], []
            d.reordered = (_q(a.name, 80), _q(b.name, 80))
            d.order_rule = order_rule(a.name, b.name, go_label, ref_label)
            return d
        if a is None or b is None or d.only_go or d.only_ref:
            return d
    else:
        d.name = _q(a.name, 80)
    d.effective = _compare_effective(a, b)
    if epoch is not None:
        d.effective = [_epoch_hint(x, a, b, epoch, go_label, ref_label) for x in d.effective]
    has_pax = a.pax is not None or b.pax is not None
    # the raw view: meta headers, records, main header, data padding
    if (a.pax is None) != (b.pax is None):
        withp = a if a.pax is not None else b
        keys = ", ".join(r.key.decode("utf-8", "backslashreplace") for r in withp.pax_records)
        d.raw.append(FieldDiff("format", "PAX" if a.pax else "USTAR", "PAX" if b.pax else "USTAR",
                               RULE_FORMAT + (f"; PAX records: {keys}" if keys else ""),
                               "entry"))
    elif a.pax is not None and b.pax is not None:
        d.raw += _header_diffs(a.pax, b.pax, "PAX header", True, True)
        d.raw += _records_diffs(a, b)
    if bool(a.gnu) != bool(b.gnu) or [g.block for g in a.gnu] != [g.block for g in b.gnu]:
        d.raw.append(FieldDiff("GNU long name headers", str(len(a.gnu)), str(len(b.gnu)),
                               RULE_GNU, "entry"))
    d.raw += _header_diffs(a.header, b.header, "header", False, has_pax)
    if a.padding != b.padding and a.data == b.data:
        d.raw.append(FieldDiff("data padding", f"{len(a.padding)} bytes" + ("" if not any(a.padding) else ", not all NUL"),
                               f"{len(b.padding)} bytes" + ("" if not any(b.padding) else ", not all NUL"),
                               RULE_DATAPAD, "data"))
    if d.effective:
        # the reader-visible difference explains the raw one; keep only the rules that add
        # something (format choice, encodings)
        d.raw = [x for x in d.raw if x.rule and x.rule not in (RULE_OVERFLOW, RULE_STRING)
                 and not x.rule.startswith("the checksum") and x.field not in
                 {k.field for k in d.effective}
                 and not (x.where == "header" and x.field in ("name", "prefix")
                          and any(k.field == "name" for k in d.effective))]
    labels = (go_label, ref_label)
    if a.header.block != b.header.block:
        d.hexdump = _hexdump(a.header, b.header, "header block", labels)
    elif a.pax is not None and b.pax is not None and a.pax.block != b.pax.block:
        d.hexdump = _hexdump(a.pax, b.pax, "PAX header block", labels)
    return d
