"""A tar reader with the semantics of Go's archive/tar Reader (Go 1.26), as containerd reads a
layer: the same headers, the same content (sparse holes as zeros) and the same error text at the
same entry.

Pure: it reads from any object with `read(n)` (a file, a pipe, a decompressor), one block at a
time, so a multi-GB layer never sits in memory. `TarReader(f)` iterates `(Header, Content)`;
`read_all(bytes)` is the convenience for tests. Errors raise `TarError` whose text is Go's
(`archive/tar: invalid tar header`, `unexpected EOF`, ...). Like Go's Reader, an error is sticky.

Every format rule lives in one function below, each with a one-line comment saying what Go does.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

BLOCK = 512
MAX_SPECIAL_FILE = 1 << 20          # PAX records, GNU long names: Go's (and libarchive's) limit
MAX_SPARSE_ENTRIES = 1 << 20
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
ZERO_TIME_NS = -62135596800 * 10**9  # Go's zero time.Time as Unix nanoseconds
S = 10**9

# Go's error values (their Error() text).
ERR_HEADER = "archive/tar: invalid tar header"
ERR_FIELD_TOO_LONG = "archive/tar: header field too long"
ERR_MISS_DATA = "archive/tar: sparse file references non-existent data"
ERR_UNREF_DATA = "archive/tar: sparse file contains unreferenced data"
ERR_SPARSE_TOO_LONG = "archive/tar: sparse map too long"
ERR_UNEXPECTED_EOF = "unexpected EOF"

# Typeflags.
TYPE_REG, TYPE_REGA, TYPE_LINK, TYPE_SYMLINK = ord("0"), 0, ord("1"), ord("2")
TYPE_CHAR, TYPE_BLOCK, TYPE_DIR, TYPE_FIFO = ord("3"), ord("4"), ord("5"), ord("6")
TYPE_CONT, TYPE_XHEADER, TYPE_XGLOBAL = ord("7"), ord("x"), ord("g")
TYPE_GNU_SPARSE, TYPE_GNU_LONGNAME, TYPE_GNU_LONGLINK = ord("S"), ord("L"), ord("K")
HEADER_ONLY = frozenset((TYPE_LINK, TYPE_SYMLINK, TYPE_CHAR, TYPE_BLOCK, TYPE_DIR, TYPE_FIFO))

# Format bits, numerically as Go's tar.Format.
FORMAT_UNKNOWN, FORMAT_V7, FORMAT_USTAR, FORMAT_PAX, FORMAT_GNU, FORMAT_STAR = 0, 1, 2, 4, 8, 16

MAGIC_GNU, VERSION_GNU = b"ustar ", b" \x00"
MAGIC_USTAR, TRAILER_STAR = b"ustar\x00", b"tar\x00"

SCHILY_XATTR = b"SCHILY.xattr."
SPARSE_MAP, SPARSE_OFFSET, SPARSE_NUMBYTES = b"GNU.sparse.map", b"GNU.sparse.offset", b"GNU.sparse.numbytes"


class TarError(Exception):
    """Go's error text; `index` is the entry (0-based, counting headers Next returned) at which
    it happened."""

    def __init__(self, text: str, index: int = -1):
        super().__init__(text)
        self.text, self.index = text, index


@dataclass
class Header:
    """Go's tar.Header as Next returns it. Times are Unix nanoseconds (ZERO_TIME_NS = unset)."""
    name: bytes = b""
    linkname: bytes = b""
    typeflag: int = TYPE_REG
    size: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0
    uname: bytes = b""
    gname: bytes = b""
    mtime_ns: int = ZERO_TIME_NS
    atime_ns: int = ZERO_TIME_NS
    ctime_ns: int = ZERO_TIME_NS
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict | None = None             # SCHILY.xattr.<name> records, name -> value
    pax: dict | None = None                # every PAX record of the entry (None: no 'x' header)
    format: int = FORMAT_UNKNOWN


class _Fail(Exception):
    """Internal: a Go error value on its way to TarError."""


# --- numbers and strings ------------------------------------------------------------------------

def parse_string(b: bytes) -> bytes:
    """A NUL-terminated C string; the whole field when there is no NUL."""
    i = b.find(b"\0")
    return b if i < 0 else b[:i]


def parse_int(s: bytes, bits: int = 64) -> int:
    """strconv.ParseInt(s, 10, bits): optional sign, ASCII digits only, range-checked."""
    body = s[1:] if s[:1] in (b"+", b"-") else s
    if not body or not all(0x30 <= c <= 0x39 for c in body):
        raise _Fail(ERR_HEADER)
    v = int(body) * (-1 if s[:1] == b"-" else 1)
    if not -(1 << (bits - 1)) <= v < (1 << (bits - 1)):
        raise _Fail(ERR_HEADER)
    return v


def parse_octal(b: bytes) -> int:
    """Octal, with leading/trailing spaces and NULs trimmed and cut at the first inner NUL;
    an empty field is 0; anything but octal digits is ErrHeader (uint64, then as int64)."""
    b = parse_string(b.strip(b" \x00"))
    if not b:
        return 0
    if not all(0x30 <= c <= 0x37 for c in b) or int(b, 8) >= 1 << 64:
        raise _Fail(ERR_HEADER)
    return _int64(int(b, 8))


def parse_numeric(b: bytes) -> int:
    """Base-256 when the top bit of the first byte is set (two's complement, sign in bit 6,
    must fit int64), else octal."""
    if b and b[0] & 0x80:
        inv = 0xFF if b[0] & 0x40 else 0
        x = 0
        for i, c in enumerate(b):
            c ^= inv
            if i == 0:
                c &= 0x7F
            if x >> 56:
                raise _Fail(ERR_HEADER)
            x = (x << 8) | c
        if x >> 63:
            raise _Fail(ERR_HEADER)
        return ~x if inv else x
    return parse_octal(b)


def _int64(x: int) -> int:
    """Wrap to int64, as Go's integer conversions do."""
    return ((x + (1 << 63)) % (1 << 64)) - (1 << 63)


def unix_ns(sec: int, nsec: int) -> int:
    """time.Unix(sec, nsec) as nanoseconds: nsec normalised into [0, 1e9) by moving whole
    seconds into sec, with int64 wrap-around like Go."""
    if not 0 <= nsec < S:
        n = -(-nsec // S) if nsec < 0 else nsec // S   # Go's division truncates toward zero
        sec, nsec = _int64(sec + n), nsec - n * S
        if nsec < 0:
            nsec, sec = nsec + S, _int64(sec - 1)
    return sec * S + nsec


def parse_pax_time(s: bytes) -> int:
    """"%d.%d": whole seconds as int64; any number of fraction digits, all must be digits,
    only the first 9 count (no rounding); a leading '-' makes the fraction negative too."""
    ss, dot, sn = s.partition(b".")
    secs = parse_int(ss)
    if not sn:
        return unix_ns(secs, 0)
    if not all(0x30 <= c <= 0x39 for c in sn):
        raise _Fail(ERR_HEADER)
    nsecs = int((sn[:9] + b"000000000")[:9])
    return unix_ns(secs, -nsecs if ss[:1] == b"-" else nsecs)


def valid_pax_record(k: bytes, v: bytes) -> bool:
    """Key non-empty, no '=' and no NUL; values of path/linkpath/uname/gname have no NUL."""
    if not k or b"=" in k:
        return False
    if k in (b"path", b"linkpath", b"uname", b"gname"):
        return b"\0" not in v
    return b"\0" not in k


def parse_pax_record(s: bytes) -> tuple[bytes, bytes, bytes]:
    """"%d %s=%s\\n": the length (decimal, >= 5, within the buffer) counts the whole record;
    the record must end in a newline; the key ends at the first '='."""
    nstr, sp, rest = s.partition(b" ")
    if not sp:
        raise _Fail(ERR_HEADER)
    n = parse_int(nstr)
    if n < 5 or n > len(s):
        raise _Fail(ERR_HEADER)
    n -= len(nstr) + 1
    if n <= 0:
        raise _Fail(ERR_HEADER)
    rec, nl, rem = rest[:n - 1], rest[n - 1:n], rest[n:]
    if nl != b"\n":
        raise _Fail(ERR_HEADER)
    k, eq, v = rec.partition(b"=")
    if not eq or not valid_pax_record(k, v):
        raise _Fail(ERR_HEADER)
    return k, v, rem


def parse_pax(buf: bytes) -> dict:
    """All records of an 'x'/'g' body, later keys win; GNU sparse 0.0 offset/numbytes pairs (in
    strict alternation, no commas) are joined into one GNU.sparse.map record as 0.1 has it."""
    recs: dict = {}
    smap: list[bytes] = []
    while buf:
        k, v, buf = parse_pax_record(buf)
        if k in (SPARSE_OFFSET, SPARSE_NUMBYTES):
            want = SPARSE_OFFSET if len(smap) % 2 == 0 else SPARSE_NUMBYTES
            if k != want or b"," in v:
                raise _Fail(ERR_HEADER)
            smap.append(v)
        else:
            recs[k] = v
    if smap:
        recs[SPARSE_MAP] = b",".join(smap)
    return recs


def merge_pax(h: Header, recs: dict | None) -> None:
    """PAX records override the header fields they name (an empty value keeps the header's);
    numbers are decimal int64; SCHILY.xattr.* become xattrs; all records stay in h.pax."""
    for k, v in (recs or {}).items():
        if not v:
            continue
        if k == b"path":
            h.name = v
        elif k == b"linkpath":
            h.linkname = v
        elif k == b"uname":
            h.uname = v
        elif k == b"gname":
            h.gname = v
        elif k == b"uid":
            h.uid = parse_int(v)
        elif k == b"gid":
            h.gid = parse_int(v)
        elif k == b"atime":
            h.atime_ns = parse_pax_time(v)
        elif k == b"mtime":
            h.mtime_ns = parse_pax_time(v)
        elif k == b"ctime":
            h.ctime_ns = parse_pax_time(v)
        elif k == b"size":
            h.size = parse_int(v)
        elif k.startswith(SCHILY_XATTR):
            if h.xattrs is None:
                h.xattrs = {}
            h.xattrs[k[len(SCHILY_XATTR):]] = v
    h.pax = recs


# --- the header block ---------------------------------------------------------------------------

def checksums(blk: bytes) -> tuple[int, int]:
    """Unsigned and signed (Sun tar) byte sums, the checksum field counted as 8 spaces."""
    body = blk[:148] + b" " * 8 + blk[156:]
    unsigned = sum(body)
    return unsigned, unsigned - 256 * sum(1 for c in body if c >= 0x80)


def block_format(blk: bytes) -> int:
    """The checksum (octal, either sum) must match, else the block is no header; then the magic
    picks STAR ("ustar\\0" + "tar\\0" trailer), USTAR|PAX, GNU ("ustar " " \\0") or V7."""
    try:
        value = parse_octal(blk[148:156])
    except _Fail:
        return FORMAT_UNKNOWN
    if value not in checksums(blk):
        return FORMAT_UNKNOWN
    magic, version = blk[257:263], blk[263:265]
    if magic == MAGIC_USTAR and blk[508:512] == TRAILER_STAR:
        return FORMAT_STAR
    if magic == MAGIC_USTAR:
        return FORMAT_USTAR | FORMAT_PAX
    if magic == MAGIC_GNU and version == VERSION_GNU:
        return FORMAT_GNU
    return FORMAT_V7


def parse_header(blk: bytes) -> Header:
    """One non-zero header block: V7 fields, then per format uname/gname/devices, the USTAR
    prefix, STAR times, or GNU atime/ctime (a GNU block whose times do not parse is read as
    a pre-Go-1.8 file: prefix as name prefix if ASCII, format unknown)."""
    fmt = block_format(blk)
    if fmt == FORMAT_UNKNOWN:
        raise _Fail(ERR_HEADER)
    err = False

    def num(b: bytes) -> int:
        nonlocal err
        try:
            return parse_numeric(b)
        except _Fail:
            err = True
            return 0

    h = Header(typeflag=blk[156], name=parse_string(blk[0:100]),
               linkname=parse_string(blk[157:257]))
    h.size, h.mode = num(blk[124:136]), num(blk[100:108])
    h.uid, h.gid = num(blk[108:116]), num(blk[116:124])
    h.mtime_ns = num(blk[136:148]) * S
    if fmt > FORMAT_V7:
        h.uname, h.gname = parse_string(blk[265:297]), parse_string(blk[297:329])
        h.devmajor, h.devminor = num(blk[329:337]), num(blk[337:345])
        prefix = b""
        if fmt & (FORMAT_USTAR | FORMAT_PAX):
            h.format = fmt
            prefix = parse_string(blk[345:500])
            if any(c >= 0x80 for c in blk):
                h.format = FORMAT_UNKNOWN          # non-ASCII: not strictly USTAR
            if any(blk[end - 1] != 0 for end in (136, 108, 116, 124, 148, 337, 345)):
                h.format = FORMAT_UNKNOWN          # USTAR numeric fields end in NUL
        elif fmt & FORMAT_STAR:
            prefix = parse_string(blk[345:476])
            h.atime_ns, h.ctime_ns = num(blk[476:488]) * S, num(blk[488:500]) * S
        elif fmt & FORMAT_GNU:
            h.format = fmt
            try:
                if blk[345]:
                    h.atime_ns = parse_numeric(blk[345:357]) * S
                if blk[357]:
                    h.ctime_ns = parse_numeric(blk[357:369]) * S
            except _Fail:
                h.atime_ns = h.ctime_ns = ZERO_TIME_NS
                s = parse_string(blk[345:500])
                if all(c < 0x80 for c in s):
                    prefix = s
                h.format = FORMAT_UNKNOWN
        if prefix:
            h.name = prefix + b"/" + h.name
    if err:
        raise _Fail(ERR_HEADER)
    return h


# --- sparse maps --------------------------------------------------------------------------------

def validate_sparse(spd: list, size: int) -> bool:
    """Offsets/lengths non-negative, no overflow, within size, in order, not overlapping."""
    if size < 0:
        return False
    pre_end = 0
    for off, length in spd:
        if off < 0 or length < 0 or off > INT64_MAX - length or off + length > size \
                or pre_end > off:
            return False
        pre_end = off + length
    return True


def invert_sparse(spd: list, size: int) -> list:
    """Data fragments -> holes (Go's normalised form: empty fragments dropped, adjacent ones
    coalesced, the last hole ends at size and may be empty)."""
    holes, pre_off = [], 0
    for off, length in spd:
        if length == 0:
            continue
        if off - pre_off > 0:
            holes.append((pre_off, off - pre_off))
        pre_off = off + length
    holes.append((pre_off, size - pre_off))
    return holes


def sparse_map_0x1(recs: dict) -> list:
    """GNU.sparse.numblocks entries of "offset,length" pairs in GNU.sparse.map (decimal)."""
    n = parse_int(recs.get(b"GNU.sparse.numblocks", b""))
    if n < 0:
        raise _Fail(ERR_HEADER)
    parts = recs.get(SPARSE_MAP, b"").split(b",")
    if parts == [b""]:
        parts = []
    if len(parts) != 2 * n:
        raise _Fail(ERR_HEADER)
    spd = []
    for i in range(0, len(parts), 2):
        spd = _append_sparse(spd, (parse_int(parts[i]), parse_int(parts[i + 1])))
    return spd


def _append_sparse(spd: list, ent: tuple) -> list:
    """At most 2^20 sparse entries."""
    if len(spd) >= MAX_SPARSE_ENTRIES:
        raise _Fail(ERR_SPARSE_TOO_LONG)
    spd.append(ent)
    return spd


# --- the stream ---------------------------------------------------------------------------------

def _read_full(f: BinaryIO, n: int) -> bytes:
    """Up to n bytes, fewer only at end of stream (pipes return short reads)."""
    parts, got = [], 0
    while got < n:
        b = f.read(n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


class _Physical:
    """The entry's data section as stored (Go's regFileReader): nb bytes; a stream that ends
    first is `unexpected EOF`."""

    def __init__(self, f: BinaryIO, nb: int):
        self.f, self.nb = f, nb

    def read(self, n: int) -> tuple[bytes, bool]:
        """(bytes, at_end): at_end when the section is exhausted (Go's io.EOF)."""
        n = min(n, self.nb)
        b = _read_full(self.f, n) if n else b""
        self.nb -= len(b)
        if len(b) < n:
            raise _Fail(ERR_UNEXPECTED_EOF)
        return b, self.nb == 0


class _Sparse:
    """Go's sparseFileReader: data fragments from the physical section, holes as zeros; too
    little stored data is errMissData, data left when the logical size is reached errUnrefData."""

    def __init__(self, phys: _Physical, holes: list):
        self.phys, self.holes, self.pos, self.i = phys, holes, 0, 0   # i: the current hole

    def remaining(self) -> int:
        off, length = self.holes[-1]
        return off + length - self.pos

    def read(self, n: int) -> tuple[bytes, bool]:
        n = min(n, self.remaining())
        out = []
        end = self.pos + n
        while end > self.pos:
            hole_start, hole_len = self.holes[self.i]
            hole_end = hole_start + hole_len
            if self.pos < hole_start:
                want = min(end, hole_start) - self.pos
                b, _ = self.phys.read(want)
                if len(b) < want:
                    raise _Fail(ERR_MISS_DATA)
            else:
                b = bytes(min(end, hole_end) - self.pos)
            out.append(b)
            self.pos += len(b)
            if self.pos >= hole_end and self.i < len(self.holes) - 1:
                self.i += 1                         # the last hole always remains
        if self.remaining() == 0 and self.phys.nb > 0:
            raise _Fail(ERR_UNREF_DATA)
        return b"".join(out), self.remaining() == 0


class Content:
    """The current entry's content, as Go's Reader.Read gives it (sparse holes as zeros).
    Valid until the next header is read."""

    def __init__(self, reader: "TarReader", gen: int):
        self._r, self._gen = reader, gen

    def read(self, n: int = -1) -> bytes:
        r = self._r
        if self._gen != r._gen:
            return b""
        if n < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        return r._read_content(n)

    def hash(self, chunk: int = 1 << 20) -> tuple[str, int]:
        """(sha256 hex, length) of the rest of the content, streamed."""
        h, total = hashlib.sha256(), 0
        while b := self.read(chunk):
            h.update(b)
            total += len(b)
        return h.hexdigest(), total


class TarReader:
    """Go's tar.Reader over a stream: `next()` -> Header or None at the end; `content()` reads
    the current entry; iteration yields (Header, Content). Errors raise TarError (sticky)."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.pad = 0
        self.curr: _Physical | _Sparse = _Physical(f, 0)
        self.err: TarError | None = None
        self.eof = False
        self.count = 0                     # headers returned so far
        self._gen = 0

    def __iter__(self) -> Iterator[tuple[Header, Content]]:
        while (h := self.next()) is not None:
            yield h, Content(self, self._gen)

    def next(self) -> Header | None:
        if self.err:
            raise self.err
        if self.eof:
            return None                    # Next after the end keeps saying EOF
        try:
            h = self._next()
        except _Fail as e:
            self.err = TarError(str(e), self.count)
            raise self.err from None
        self._gen += 1
        if h is not None:
            self.count += 1
        else:
            self.eof = True
        return h

    def _read_content(self, n: int) -> bytes:
        if self.err:
            raise self.err
        try:
            b, _ = self.curr.read(n)
        except _Fail as e:
            self.err = TarError(str(e), self.count - 1)
            raise self.err from None
        return b

    def _phys_remaining(self) -> int:
        return self.curr.phys.nb if isinstance(self.curr, _Sparse) else self.curr.nb

    def _skip(self, n: int) -> None:
        """Discard the rest of the data section: a short stream is `unexpected EOF`."""
        while n > 0:
            b = self.f.read(min(n, 1 << 20))
            if not b:
                raise _Fail(ERR_UNEXPECTED_EOF)
            n -= len(b)

    def _read_block(self) -> bytes | None:
        """The next 512 bytes: None at a clean end of stream (0 bytes), `unexpected EOF` when
        the stream ends inside the block."""
        b = _read_full(self.f, BLOCK)
        if not b:
            return None
        if len(b) < BLOCK:
            raise _Fail(ERR_UNEXPECTED_EOF)
        return b

    def _read_header(self) -> tuple[Header, bytes] | None:
        """End of archive (None): no bytes, one zero block then end of stream, or two zero
        blocks (nothing after them is read). A zero block followed by anything else is
        ErrHeader."""
        blk = self._read_block()
        if blk is None:
            return None
        if blk == bytes(BLOCK):
            blk = self._read_block()
            if blk is None or blk == bytes(BLOCK):
                return None
            raise _Fail(ERR_HEADER)
        return parse_header(blk), blk

    def _set_regular(self, h: Header) -> None:
        """Header-only types have no data section whatever their size; a negative size is
        ErrHeader; data is padded to the block."""
        nb = 0 if h.typeflag in HEADER_ONLY else h.size
        if nb < 0:
            raise _Fail(ERR_HEADER)
        self.pad = -nb % BLOCK
        self.curr = _Physical(self.f, nb)

    def _read_special(self) -> bytes:
        """A PAX/long-name body: more than 1 MiB is ErrFieldTooLong."""
        b, _ = self.curr.read(MAX_SPECIAL_FILE + 1)
        if len(b) > MAX_SPECIAL_FILE:
            raise _Fail(ERR_FIELD_TOO_LONG)
        return b

    def _next(self) -> Header | None:
        recs: dict | None = None
        long_name = long_link = b""
        fmt = FORMAT_USTAR | FORMAT_PAX | FORMAT_GNU
        while True:
            self._skip(self._phys_remaining())
            # A stream ending inside the padding is a clean end, as in Go (tryReadFull).
            if self.pad and len(_read_full(self.f, self.pad)) < self.pad:
                return None
            self.pad = 0
            got = self._read_header()
            if got is None:
                return None
            h, raw = got
            self._set_regular(h)
            fmt &= h.format
            if h.typeflag in (TYPE_XHEADER, TYPE_XGLOBAL):
                fmt &= FORMAT_PAX
                recs = parse_pax(self._read_special())
                if h.typeflag == TYPE_XGLOBAL:
                    # Returned as its own entry; Go does not apply it to later headers. Go
                    # ignores a merge error here, having merged the records its random map
                    # order reached first; this reader then merges none.
                    g = Header(name=h.name, typeflag=h.typeflag)
                    try:
                        merge_pax(g, recs)
                        h = g
                    except _Fail:
                        pass
                    return Header(name=h.name, typeflag=h.typeflag, xattrs=h.xattrs,
                                  pax=h.pax, format=fmt)
                continue
            if h.typeflag in (TYPE_GNU_LONGNAME, TYPE_GNU_LONGLINK):
                fmt &= FORMAT_GNU
                s = parse_string(self._read_special())
                if h.typeflag == TYPE_GNU_LONGNAME:
                    long_name = s
                else:
                    long_link = s
                continue
            merge_pax(h, recs)
            if long_name:
                h.name = long_name
            if long_link:
                h.linkname = long_link
            if h.typeflag == TYPE_REGA:
                # Legacy archives mark directories with a trailing slash.
                h.typeflag = TYPE_DIR if h.name.endswith(b"/") else TYPE_REG
            self._set_regular(h)                   # PAX may have changed the size
            self._handle_sparse(h, raw)
            if fmt & FORMAT_USTAR and fmt & FORMAT_PAX:
                fmt &= FORMAT_USTAR
            h.format = fmt
            return h

    def _handle_sparse(self, h: Header, raw: bytes) -> None:
        """Old GNU 'S' entries or PAX GNU.sparse.* records make the content a sparse view;
        a sparse header-only type or an invalid map is ErrHeader."""
        if h.typeflag == TYPE_GNU_SPARSE:
            spd = self._old_gnu_sparse(h, raw)
        else:
            spd = self._pax_sparse(h)
        if spd is not None:
            if h.typeflag in HEADER_ONLY or not validate_sparse(spd, h.size):
                raise _Fail(ERR_HEADER)
            self.curr = _Sparse(self.curr, invert_sparse(spd, h.size))

    def _old_gnu_sparse(self, h: Header, blk: bytes) -> list:
        """Old GNU sparse: only in a GNU block; real size at 483; 4 entries of 12+12 bytes at
        386, an entry whose offset starts with NUL ends the list; byte 482 set means an
        extension block follows (21 entries, flag at 504), read from the raw stream."""
        if block_format(blk) != FORMAT_GNU:
            raise _Fail(ERR_HEADER)
        h.size = parse_numeric(blk[483:495])
        s = blk[386:483]
        spd: list = []
        total = len(s)
        while total < MAX_SPECIAL_FILE:
            for i in range(len(s) // 24):
                e = s[i * 24:i * 24 + 24]
                if e[0] == 0:
                    break
                spd = _append_sparse(spd, (parse_numeric(e[:12]), parse_numeric(e[12:24])))
            if s[24 * (len(s) // 24)] > 0:
                ext = _read_full(self.f, BLOCK)
                if len(ext) < BLOCK:
                    raise _Fail(ERR_UNEXPECTED_EOF)
                s = ext
                total += len(s)
                continue
            return spd
        raise _Fail(ERR_SPARSE_TOO_LONG)

    def _pax_sparse(self, h: Header) -> list | None:
        """PAX sparse: major/minor 0.0 or 0.1 (map in records) or 1.0 (map at the start of the
        data); no version but a GNU.sparse.map means 0.x; other versions are not sparse.
        GNU.sparse.name replaces the name, GNU.sparse.size (else realsize) the size."""
        recs = h.pax or {}
        major, minor = recs.get(b"GNU.sparse.major", b""), recs.get(b"GNU.sparse.minor", b"")
        if major == b"0" and minor in (b"0", b"1"):
            v1 = False
        elif major == b"1" and minor == b"0":
            v1 = True
        elif major or minor:
            return None
        elif recs.get(SPARSE_MAP, b""):
            v1 = False
        else:
            return None
        if name := recs.get(b"GNU.sparse.name", b""):
            h.name = name
        size = recs.get(b"GNU.sparse.size", b"") or recs.get(b"GNU.sparse.realsize", b"")
        if size:
            h.size = parse_int(size)
        return self._sparse_map_1x0() if v1 else sparse_map_0x1(recs)

    def _sparse_map_1x0(self) -> list:
        """Sparse 1.0: newline-terminated decimal numbers in whole blocks at the start of the
        data section: a count, then offset/length pairs; at most 1 MiB of blocks."""
        buf = bytearray()
        newlines = total = 0

        def feed(n: int) -> None:
            nonlocal newlines, total
            while newlines < n:
                total += BLOCK
                if total > MAX_SPECIAL_FILE:
                    raise _Fail(ERR_SPARSE_TOO_LONG)
                b, _ = self.curr.read(BLOCK)
                if len(b) < BLOCK:
                    raise _Fail(ERR_UNEXPECTED_EOF)
                buf.extend(b)
                newlines += b.count(b"\n")

        def token() -> bytes:
            nonlocal newlines
            newlines -= 1
            i = buf.index(b"\n")
            tok = bytes(buf[:i])
            del buf[:i + 1]
            return tok

        feed(1)
        try:
            n = parse_int(token())
        except _Fail:
            raise _Fail(ERR_HEADER) from None
        if n < 0 or _int64(2 * n) < n:
            raise _Fail(ERR_HEADER)
        feed(2 * n)
        spd: list = []
        for _ in range(n):
            off, length = token(), token()
            spd = _append_sparse(spd, (parse_int(off), parse_int(length)))
        return spd


@dataclass
class Entry:
    header: Header
    content: bytes | None            # None when reading it failed


@dataclass
class Archive:
    entries: list = field(default_factory=list)
    error: str | None = None          # Go's error text, None at a clean end
    error_index: int = 0              # the entry whose Next or content read failed


def read_all(data: bytes) -> Archive:
    """Every header and its whole content, stopping at the first error (tests only: it holds
    the contents in memory)."""
    import io
    r = TarReader(io.BytesIO(data))
    out = Archive()
    try:
        for h, c in r:
            out.entries.append(Entry(h, None))
            out.entries[-1].content = c.read()
    except TarError as e:
        out.error, out.error_index = e.text, e.index
    return out
