"""Go's ``archive/tar`` Writer (Go 1.23 … 1.26), reproduced byte for byte.

Header fields in, bytes out; no filesystem access. The authority is Go's
``src/archive/tar/{writer.go,common.go,format.go,strconv.go}``; every format
rule lives in this file, each with a short comment naming the Go function it
mirrors. Strings are raw bytes (Go strings hold arbitrary bytes). Integers must
fit Go's int64. Times are nanoseconds since the Unix epoch; ``ZERO_TIME_NS`` is
Go's zero ``time.Time`` (0001-01-01 UTC), which Go treats as "unset".

Error texts are Go's. Two liberties: times in messages print in UTC (Go prints
them in the local zone), and with several invalid PAX records the one named is
the first in sorted order (Go picks one at random, via map order).
"""
from __future__ import annotations

import enum
import posixpath
from dataclasses import dataclass, field, replace
from typing import Callable


class Format(enum.IntFlag):
    """Go's tar.Format bits: ``(1 << iota) / 4`` gives Unknown=0, V7=1, USTAR=2, PAX=4, GNU=8."""
    UNKNOWN = 0
    USTAR = 2
    PAX = 4
    GNU = 8


TYPE_REG, TYPE_REGA = b"0", b"\x00"
TYPE_LINK, TYPE_SYMLINK, TYPE_CHAR, TYPE_BLOCK = b"1", b"2", b"3", b"4"
TYPE_DIR, TYPE_FIFO, TYPE_CONT = b"5", b"6", b"7"
TYPE_XHEADER, TYPE_XGLOBAL = b"x", b"g"
TYPE_GNU_SPARSE, TYPE_GNU_LONGNAME, TYPE_GNU_LONGLINK = b"S", b"L", b"K"
HEADER_ONLY_TYPES = (TYPE_LINK, TYPE_SYMLINK, TYPE_CHAR, TYPE_BLOCK, TYPE_DIR, TYPE_FIFO)

ZERO_TIME_NS = -62135596800 * 10**9   # time.Time{}: IsZero() is true, so the field counts as unset
BLOCK = 512
NAME_SIZE, PREFIX_SIZE = 100, 155
MAX_SPECIAL_FILE_SIZE = 1 << 20       # cap on a PAX 'x' body (not on GNU long names)
BASIC_KEYS = {b"path", b"linkpath", b"size", b"uid", b"gid", b"uname", b"gname",
              b"mtime", b"atime", b"ctime"}

# Field (offset, length) in a header block (format.go headerV7/headerUSTAR/headerGNU).
NAME, MODE, UID, GID, SIZE, MTIME = (0, 100), (100, 8), (108, 8), (116, 8), (124, 12), (136, 12)
TYPEFLAG, LINKNAME = (156, 1), (157, 100)        # chksum (148, 8) and magic (257, 8): _set_format
UNAME, GNAME, DEVMAJOR, DEVMINOR = (265, 32), (297, 32), (329, 8), (337, 8)
PREFIX = (345, 155)                   # USTAR only
GNU_ATIME, GNU_CTIME = (345, 12), (357, 12)


@dataclass
class Header:
    name: bytes
    typeflag: bytes = TYPE_REG
    linkname: bytes = b""
    size: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0
    uname: bytes = b""
    gname: bytes = b""
    mtime_ns: int = 0              # nanoseconds since the Unix epoch (may be negative)
    atime_ns: int | None = None    # None = Go's zero time.Time (not written)
    ctime_ns: int | None = None
    devmajor: int = 0
    devminor: int = 0
    pax: dict[str, bytes] = field(default_factory=dict)   # Header.PAXRecords
    format: Format = Format.UNKNOWN


class TarError(Exception):
    """An error of Go's archive/tar; str() is Go's error text."""


ERR_WRITE_TOO_LONG = "archive/tar: write too long"
ERR_FIELD_TOO_LONG = "archive/tar: header field too long"
ERR_WRITE_AFTER_CLOSE = "archive/tar: write after close"


# --- strconv.go: strings, numbers, PAX records -------------------------------------------

def is_ascii(s: bytes) -> bool:
    """isASCII: an ASCII C string, so no NUL and no byte >= 0x80."""
    return all(0 < c < 0x80 for c in s)


def to_ascii(s: bytes) -> bytes:
    """toASCII: drop non-ASCII runes and NULs. Go ranges over runes, but every byte of a
    multi-byte or invalid sequence is >= 0x80, so dropping such bytes is the same thing."""
    return bytes(c for c in s if 0 < c < 0x80)


def fits_octal(n: int, x: int) -> bool:
    """fitsInOctal: n-1 octal digits plus a NUL; never negative."""
    return x >= 0 and (n >= 22 or x < 1 << (n - 1) * 3)


def fits_base256(n: int, x: int) -> bool:
    """fitsInBase256: GNU binary, first byte 0x80/0xff as sign; >= 9 bytes holds any int64."""
    return n >= 9 or -(1 << (n - 1) * 8) <= x < 1 << (n - 1) * 8


def _put_string(blk: bytearray, fld: tuple[int, int], s: bytes) -> None:
    """formatString: copy, truncate, NUL-terminate if shorter. When truncation leaves a '/'
    in the last byte, NUL out the trailing slash run (buggy readers take it for a dir);
    bytes after that NUL stay as copied."""
    off, size = fld
    blk[off:off + min(len(s), size)] = s[:size]
    if len(s) < size:
        blk[off + len(s)] = 0
    if len(s) > size and blk[off + size - 1] == 0x2F:
        blk[off + len(s[:size - 1].rstrip(b"/"))] = 0


def _put_octal(blk: bytearray, fld: tuple[int, int], x: int) -> None:
    """formatOctal: zero-padded octal with a NUL; a value that does not fit is written as 0."""
    if not fits_octal(fld[1], x):
        x = 0
    _put_string(blk, fld, b"%0*o" % (fld[1] - 1, x))


def _put_numeric(blk: bytearray, fld: tuple[int, int], x: int) -> None:
    """formatNumeric (GNU): octal if it fits, else base-256 two's complement with the top
    bit set, else 0."""
    off, size = fld
    if fits_octal(size, x) or not fits_base256(size, x):
        _put_octal(blk, fld, x)
    else:
        blk[off:off + size] = x.to_bytes(size, "big", signed=True)
        blk[off] |= 0x80


def pax_time(ns: int) -> bytes:
    """formatPAXTime: "<sec>[.<nanos, trailing zeros trimmed>]"; a negative time with a
    fraction borrows a second so the digits read as -(|t|) (-1.5 s is "-1.5")."""
    sec, nsec = divmod(ns, 10**9)
    if nsec == 0:
        return b"%d" % sec
    sign = b""
    if sec < 0:
        sign, sec, nsec = b"-", -(sec + 1), 10**9 - nsec
    return (b"%s%d.%09d" % (sign, sec, nsec)).rstrip(b"0")


def valid_pax_record(k: bytes, v: bytes) -> bool:
    """validPAXRecord: key non-empty, no '='; NUL banned in path/linkpath/uname/gname
    values and in every other key (other values may hold NUL)."""
    if not k or b"=" in k:
        return False
    if k in (b"path", b"linkpath", b"uname", b"gname"):
        return b"\0" not in v
    return b"\0" not in k


def pax_record(k: bytes, v: bytes) -> bytes:
    """formatPAXRecord: "%d %s=%s\\n", the length counting its own digits, fixed up once."""
    size = len(k) + len(v) + 3
    size += len(str(size))
    rec = b"%d %s=%s\n" % (size, k, v)
    if len(rec) != size:
        rec = b"%d %s=%s\n" % (len(rec), k, v)
    return rec


def split_ustar_path(name: bytes) -> tuple[bytes, bytes] | None:
    """splitUSTARPath: only names > 100 bytes and ASCII; cut at the last '/' within the
    first 156 bytes (a final '/' of a shorter name is not a cut point); prefix 1..155
    bytes, suffix 1..100 bytes; the cut slash itself is dropped."""
    length = len(name)
    if length <= NAME_SIZE or not is_ascii(name):
        return None
    if length > PREFIX_SIZE + 1:
        length = PREFIX_SIZE + 1
    elif name[length - 1] == 0x2F:
        length -= 1
    i = name.rfind(b"/", 0, length)
    nlen = len(name) - i - 1
    if i <= 0 or nlen > NAME_SIZE or nlen == 0 or i > PREFIX_SIZE:
        return None
    return name[:i], name[i + 1:]


def _path_join_clean(*elems: bytes) -> bytes:
    """path.Join: join non-empty elements with '/', then path.Clean. posixpath.normpath is
    Clean except that it keeps exactly two leading slashes, which Clean reduces to one."""
    joined = b"/".join(e for e in elems if e)
    if not joined:
        return b""
    out = posixpath.normpath(joined)
    return out[1:] if out.startswith(b"//") else out


# --- error text helpers (fmt %q, time.Time.String in UTC) --------------------------------

def go_quote(s: bytes) -> str:
    """strconv.Quote: invalid UTF-8 bytes as \\xNN, printable runes kept, others escaped."""
    out = ['"']
    for ch in s.decode("utf-8", "surrogateescape"):
        c = ord(ch)
        if 0xDC80 <= c <= 0xDCFF:
            out.append("\\x%02x" % (c - 0xDC00))
        elif ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif c < 0x20 or c == 0x7F:
            out.append("\\x%02x" % c)
        else:
            out.append("\\u%04x" % c if c < 0x10000 else "\\U%08x" % c)
    return "".join(out + ['"'])


def go_time(ns: int) -> str:
    """time.Time.String() for a UTC time: "2006-01-02 15:04:05.999999999 +0000 UTC"."""
    sec, nsec = divmod(ns, 10**9)
    days, rem = divmod(sec, 86400)
    z = days + 719468                       # civil-from-days (proleptic Gregorian)
    era, doe = divmod(z, 146097)
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day, month = doy - (153 * mp + 2) // 5 + 1, mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (month <= 2)
    ystr = "-%04d" % -year if year < 0 else "%04d" % year
    frac = ("." + ("%09d" % nsec).rstrip("0")) if nsec else ""
    return "%s-%02d-%02d %02d:%02d:%02d%s +0000 UTC" % (
        ystr, month, day, rem // 3600, rem // 60 % 60, rem % 60, frac)


def _header_error(*why: str) -> TarError:
    """headerError.Error: the prefix, then the non-empty reasons joined by "; and "."""
    ss = [s for s in why if s]
    return TarError("archive/tar: cannot encode header" + (": " + "; and ".join(ss) if ss else ""))


def _is_zero(ns: int | None) -> bool:
    return ns is None or ns == ZERO_TIME_NS


# --- common.go: Header.allowedFormats ----------------------------------------------------

def allowed_formats(h: Header) -> tuple[int, dict[bytes, bytes], TarError | None]:
    """Which formats can encode h, the PAX records it needs, and why nothing fits."""
    fmt = Format.USTAR | Format.PAX | Format.GNU
    pax: dict[bytes, bytes] = {}
    recs = {k.encode("utf-8", "surrogateescape") if isinstance(k, str) else k: v
            for k, v in h.pax.items()}
    why = {"ustar": "", "pax": "", "gnu": ""}
    prefer_pax = False

    def keep_matching(key: bytes, v: bytes) -> None:
        # A user record for a basic key survives only if it equals the derived value.
        if recs.get(key) == v:
            pax[key] = v

    def verify_string(s: bytes, size: int, name: str, key: bytes) -> None:
        nonlocal fmt
        too_long = len(s) > size
        # GNU: binary names of any length (path/linkpath via 'L'/'K'), but no NUL.
        if b"\0" in s or (too_long and key not in (b"path", b"linkpath")):
            why["gnu"] = "GNU cannot encode %s=%s" % (name, go_quote(s))
            fmt &= ~Format.GNU
        # USTAR: ASCII that fits (a name may also fit by prefix split); else a PAX record.
        if not is_ascii(s) or too_long:
            if key != b"path" or split_ustar_path(s) is None:
                why["ustar"] = "USTAR cannot encode %s=%s" % (name, go_quote(s))
                fmt &= ~Format.USTAR
            pax[key] = s
        keep_matching(key, s)

    def verify_numeric(n: int, size: int, name: str, key: bytes) -> None:
        nonlocal fmt
        if not fits_base256(size, n):
            why["gnu"] = "GNU cannot encode %s=%d" % (name, n)
            fmt &= ~Format.GNU
        # USTAR/PAX fields are octal; PAX carries an overflow only where a key exists.
        if not fits_octal(size, n):
            why["ustar"] = "USTAR cannot encode %s=%d" % (name, n)
            fmt &= ~Format.USTAR
            if not key:
                why["pax"] = "PAX cannot encode %s=%d" % (name, n)
                fmt &= ~Format.PAX
            else:
                pax[key] = b"%d" % n
        keep_matching(key, b"%d" % n)

    def verify_time(ns: int | None, size: int, name: str, key: bytes) -> None:
        nonlocal fmt, prefer_pax
        if _is_zero(ns):
            return                                      # an unset time always fits
        sec, nsec = divmod(ns, 10**9)          # (GNU's 12-byte base-256 fields hold any int64)
        # USTAR has only mtime, whole seconds, in octal; atime/ctime rule it out entirely.
        is_mtime, fits = key == b"mtime", fits_octal(size, sec)
        if not (is_mtime and fits):
            why["ustar"] = "USTAR cannot encode %s=%s" % (name, go_time(ns))
            fmt &= ~Format.USTAR
        # Anything USTAR would lose (including sub-second) goes to a PAX record and makes
        # an explicit Format=PAX stay PAX (see below).
        if not is_mtime or not fits or nsec:
            prefer_pax = True
            pax[key] = pax_time(ns)
        keep_matching(key, pax_time(ns))

    verify_string(h.name, NAME[1], "Name", b"path")
    verify_string(h.linkname, LINKNAME[1], "Linkname", b"linkpath")
    verify_string(h.uname, UNAME[1], "Uname", b"uname")
    verify_string(h.gname, GNAME[1], "Gname", b"gname")
    verify_numeric(h.mode, MODE[1], "Mode", b"")
    verify_numeric(h.uid, UID[1], "Uid", b"uid")
    verify_numeric(h.gid, GID[1], "Gid", b"gid")
    verify_numeric(h.size, SIZE[1], "Size", b"size")
    verify_numeric(h.devmajor, DEVMAJOR[1], "Devmajor", b"")
    verify_numeric(h.devminor, DEVMINOR[1], "Devminor", b"")
    verify_time(h.mtime_ns, MTIME[1], "ModTime", b"mtime")
    verify_time(h.atime_ns, GNU_ATIME[1], "AccessTime", b"atime")
    verify_time(h.ctime_ns, GNU_CTIME[1], "ChangeTime", b"ctime")

    # Type-specific rules.
    only_pax = ""
    if h.typeflag in (TYPE_REG, TYPE_CHAR, TYPE_BLOCK, TYPE_FIFO, TYPE_GNU_SPARSE):
        if h.name.endswith(b"/"):                       # links may name directories
            return Format.UNKNOWN, {}, _header_error("filename may not have trailing slash")
    elif h.typeflag in (TYPE_XHEADER, TYPE_GNU_LONGNAME, TYPE_GNU_LONGLINK):
        return Format.UNKNOWN, {}, _header_error(
            "cannot manually encode TypeXHeader, TypeGNULongName, or TypeGNULongLink headers")
    elif h.typeflag == TYPE_XGLOBAL:                    # a global header carries records only
        bare = Header(name=h.name, typeflag=h.typeflag, pax=h.pax, format=h.format,
                      mtime_ns=ZERO_TIME_NS)
        if h != bare:
            return Format.UNKNOWN, {}, _header_error(
                "only PAXRecords should be set for TypeXGlobalHeader")
        only_pax = "only PAX supports TypeXGlobalHeader"
        fmt &= Format.PAX
    if h.typeflag not in HEADER_ONLY_TYPES and h.size < 0:
        return Format.UNKNOWN, {}, _header_error("negative size on header-only type")

    # User records: never override derived ones; drop other basic keys and GNU.sparse.*
    # (a global header copies everything). Any user record means PAX only.
    if recs:
        for k, v in recs.items():
            if k in pax:
                continue
            if h.typeflag == TYPE_XGLOBAL or (k not in BASIC_KEYS and not k.startswith(b"GNU.sparse.")):
                pax[k] = v
        only_pax = "only PAX supports PAXRecords"
        fmt &= Format.PAX
    for k in sorted(pax):
        if not valid_pax_record(k, pax[k]):
            return Format.UNKNOWN, {}, _header_error(
                "invalid PAX record: %s" % go_quote(k + b" = " + pax[k]))

    # An explicit format restricts the choice; PAX also admits USTAR unless a time needs PAX.
    want = int(h.format)
    if want != Format.UNKNOWN:
        if want & Format.PAX and not prefer_pax:
            want |= Format.USTAR
        fmt &= want
    reasons = {Format.USTAR: ("Format specifies USTAR", why["ustar"], only_pax),
               Format.PAX: ("Format specifies PAX", why["pax"]),
               Format.GNU: ("Format specifies GNU", why["gnu"], only_pax),
               }.get(int(h.format), (why["ustar"], why["pax"], why["gnu"], only_pax))
    err = _header_error(*reasons) if fmt == Format.UNKNOWN else None
    return fmt, pax, err


# --- writer.go: Writer ---------------------------------------------------------------------

def _set_format(blk: bytearray, fmt: int) -> None:
    """setFormat: magic ("ustar\\0" "00", or GNU's "ustar " " \\0"), then the checksum: the
    unsigned byte sum with the checksum field counted as spaces, as 6 octal digits, NUL,
    space."""
    blk[257:265] = b"ustar  \0" if fmt & Format.GNU else b"ustar\x0000"
    chk = sum(blk[:148]) + sum(blk[156:]) + 8 * 0x20
    blk[148:156] = b"%06o\0 " % chk


class TarWriter:
    """tar.Writer. Go's errors become TarError; an error while writing a header is sticky."""

    def __init__(self, write: Callable[[bytes], object]):
        self._w = write
        self._pad = 0           # zero bytes owed after the current entry's data
        self._remaining = 0     # data bytes the current entry still expects
        self._err: TarError | None = None

    def flush(self) -> None:
        """Flush: the entry must be complete; then write its padding to 512."""
        if self._err:
            raise self._err
        if self._remaining > 0:
            raise TarError("archive/tar: missed writing %d bytes" % self._remaining)
        if self._pad:
            self._w(bytes(self._pad))
        self._pad = 0

    def write_header(self, hdr: Header) -> None:
        """WriteHeader: finish the previous entry, pick a format, write hdr's header(s)."""
        self.flush()
        for v in (hdr.size, hdr.mode, hdr.uid, hdr.gid, hdr.devmajor, hdr.devminor):
            if not -(1 << 63) <= v < 1 << 63:
                raise ValueError("Go's Header fields are int64; got %d" % v)
        h = replace(hdr)
        # The legacy TypeRegA ('\0') becomes TypeDir for a trailing '/', else TypeReg.
        if h.typeflag == TYPE_REGA:
            h.typeflag = TYPE_DIR if h.name.endswith(b"/") else TYPE_REG
        # No explicit format: round ModTime to the nearest second (halves up, toward the
        # future) and drop AccessTime/ChangeTime, so plain headers stay USTAR.
        if h.format == Format.UNKNOWN:
            h.mtime_ns = (h.mtime_ns + 500_000_000) // 10**9 * 10**9
            h.atime_ns = h.ctime_ns = None
        fmt, pax, err = allowed_formats(h)
        try:   # preference order USTAR, PAX, GNU; "nothing fits" is not sticky
            if fmt & Format.USTAR:
                self._write_ustar(h)
            elif fmt & Format.PAX:
                self._write_pax(h, pax)
            elif fmt & Format.GNU:
                self._write_gnu(h)
            else:
                raise err
        except TarError as e:
            if e is not err:
                self._err = e
            raise

    def _template(self, h: Header, put_str, put_num) -> bytearray:
        """templateV7Plus: the V7 fields plus uname/gname/devmajor/devminor; an unset
        ModTime is written as the epoch."""
        blk = bytearray(BLOCK)
        blk[TYPEFLAG[0]] = h.typeflag[0]
        put_str(blk, NAME, h.name)
        put_str(blk, LINKNAME, h.linkname)
        put_num(blk, MODE, h.mode)
        put_num(blk, UID, h.uid)
        put_num(blk, GID, h.gid)
        put_num(blk, SIZE, h.size)
        put_num(blk, MTIME, 0 if _is_zero(h.mtime_ns) else h.mtime_ns // 10**9)
        put_str(blk, UNAME, h.uname)
        put_str(blk, GNAME, h.gname)
        put_num(blk, DEVMAJOR, h.devmajor)
        put_num(blk, DEVMINOR, h.devminor)
        return blk

    def _write_ustar(self, h: Header) -> None:
        """USTAR: a long ASCII name goes through the prefix/suffix split."""
        name, prefix = h.name, b""
        if split := split_ustar_path(h.name):
            prefix, name = split
        blk = self._template(replace(h, name=name), _put_string, _put_octal)
        _put_string(blk, PREFIX, prefix)
        _set_format(blk, Format.USTAR)
        self._write_raw_header(blk, h.size, h.typeflag)

    def _write_pax(self, h: Header, pax: dict[bytes, bytes]) -> None:
        """PAX: an 'x' entry with the sorted records named <dir>/PaxHeaders.0/<file> (a 'g'
        entry named as given, or GlobalHead.0.0), then a main header whose strings are
        toASCII'd and truncated, numbers that overflow written as 0, and no prefix."""
        is_global = h.typeflag == TYPE_XGLOBAL
        if pax or is_global:
            data = b"".join(pax_record(k, pax[k]) for k in sorted(pax))
            if is_global:
                name, flag = h.name or b"GlobalHead.0.0", TYPE_XGLOBAL
            else:
                slash = h.name.rfind(b"/") + 1          # path.Split
                name = _path_join_clean(h.name[:slash], b"PaxHeaders.0", h.name[slash:])
                flag = TYPE_XHEADER
            if len(data) > MAX_SPECIAL_FILE_SIZE:
                raise TarError(ERR_FIELD_TOO_LONG)
            self._write_raw_file(name, data, flag, Format.PAX)
            if is_global:
                return
        blk = self._template(h, lambda b, f, s: _put_string(b, f, to_ascii(s)), _put_octal)
        _set_format(blk, Format.PAX)
        self._write_raw_header(blk, h.size, h.typeflag)

    def _write_gnu(self, h: Header) -> None:
        """GNU: names over 100 bytes go first in 'L'/'K' entries (NUL-terminated bodies);
        numbers may be base-256; atime/ctime have their own fields."""
        if len(h.name) > NAME_SIZE:
            self._write_raw_file(b"././@LongLink", h.name + b"\0", TYPE_GNU_LONGNAME, Format.GNU)
        if len(h.linkname) > NAME_SIZE:
            self._write_raw_file(b"././@LongLink", h.linkname + b"\0", TYPE_GNU_LONGLINK, Format.GNU)
        blk = self._template(h, _put_string, _put_numeric)
        if not _is_zero(h.atime_ns):
            _put_numeric(blk, GNU_ATIME, h.atime_ns // 10**9)
        if not _is_zero(h.ctime_ns):
            _put_numeric(blk, GNU_CTIME, h.ctime_ns // 10**9)
        _set_format(blk, Format.GNU)
        self._write_raw_header(blk, h.size, h.typeflag)

    def _write_raw_file(self, name: bytes, data: bytes, flag: bytes, fmt: int) -> None:
        """writeRawFile: a minimal meta entry: name toASCII'd, cut to 100, trailing '/'
        trimmed; mode/uid/gid/mtime octal 0, size = body length; uname, gname and
        devmajor/devminor stay all-NUL."""
        blk = bytearray(BLOCK)
        blk[TYPEFLAG[0]] = flag[0]
        _put_string(blk, NAME, to_ascii(name)[:NAME_SIZE].rstrip(b"/"))
        for fld in (MODE, UID, GID, MTIME):
            _put_octal(blk, fld, 0)
        _put_octal(blk, SIZE, len(data))
        _set_format(blk, fmt)
        self._write_raw_header(blk, len(data), flag)
        self.write(data)

    def _write_raw_header(self, blk: bytearray, size: int, flag: bytes) -> None:
        """writeRawHeader: header-only types ('1'..'6') get no data whatever Size says."""
        self.flush()
        self._w(bytes(blk))
        if flag in HEADER_ONLY_TYPES:
            size = 0
        self._remaining, self._pad = size, -size % BLOCK

    def write(self, data: bytes) -> int:
        """Write: entry data; bytes past Size are refused with "write too long" (not sticky)
        after the part that fits has been written."""
        if self._err:
            raise self._err
        n = min(len(data), self._remaining)
        if n:
            self._w(data if n == len(data) and isinstance(data, bytes) else bytes(data[:n]))
            self._remaining -= n
        if n < len(data):
            raise TarError(ERR_WRITE_TOO_LONG)
        return n

    def close(self) -> None:
        """Close: flush padding, write two zero blocks; afterwards everything fails with
        "write after close" except a second close, which is a no-op."""
        if self._err and str(self._err) == ERR_WRITE_AFTER_CLOSE:
            return
        if self._err:
            raise self._err
        try:
            self.flush()
            self._w(bytes(2 * BLOCK))
        finally:
            self._err = TarError(ERR_WRITE_AFTER_CLOSE)


def write_tar(headers_and_contents) -> bytes:
    """The archive for a list of (Header, content) pairs."""
    out = bytearray()
    tw = TarWriter(out.extend)
    for hdr, content in headers_and_contents:
        tw.write_header(hdr)
        if content:
            tw.write(content)
    tw.close()
    return bytes(out)
