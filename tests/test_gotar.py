"""harness.reference.gotar: pinned bytes for each rule of Go's archive/tar Writer, then a
differential test against real Go (tests/gotarvec, built once per session)."""
from __future__ import annotations

import base64
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.reference.gotar import (
    TYPE_BLOCK, TYPE_CHAR, TYPE_CONT, TYPE_DIR, TYPE_FIFO, TYPE_GNU_LONGLINK, TYPE_GNU_LONGNAME,
    TYPE_GNU_SPARSE, TYPE_LINK, TYPE_REG, TYPE_REGA, TYPE_SYMLINK, TYPE_XGLOBAL, TYPE_XHEADER,
    ZERO_TIME_NS, Format, Header, TarError, TarWriter, allowed_formats, go_quote, go_time,
    pax_record, pax_time, split_ustar_path, to_ascii, write_tar,
)

S = 10**9          # one second in nanoseconds
GIB = 1 << 30
ZERO2 = bytes(1024)
CAP = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"


# --- an independent block builder: literal field bytes in, 512-byte header out -----------

def block(name=b"", mode=b"0000000\0", uid=b"0000000\0", gid=b"0000000\0",
          size=b"00000000000\0", mtime=b"00000000000\0", typeflag=b"0", linkname=b"",
          magic=b"ustar\x0000", uname=b"", gname=b"", devmajor=b"0000000\0",
          devminor=b"0000000\0", prefix=b"", at: dict[int, bytes] | None = None) -> bytes:
    b = bytearray(512)
    for off, val in ((0, name), (100, mode), (108, uid), (116, gid), (124, size), (136, mtime),
                     (156, typeflag), (157, linkname), (257, magic), (265, uname),
                     (297, gname), (329, devmajor), (337, devminor), (345, prefix),
                     *(at or {}).items()):
        b[off:off + len(val)] = val
    b[148:156] = b"%06o\0 " % (sum(b[:148]) + sum(b[156:]) + 256)
    return bytes(b)


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def xhdr(name: bytes, records: bytes, flag=b"x") -> bytes:
    """A PAX 'x' entry as Go writes it: zeros in octal, devmajor/devminor all NUL."""
    return block(name=name, size=b"%011o\0" % len(records), typeflag=flag,
                 devmajor=bytes(8), devminor=bytes(8)) + pad(records)


def one(h: Header, content: bytes = b"") -> bytes:
    return write_tar([(h, content)])


def raises(h: Header, content: bytes = b"") -> str:
    with pytest.raises(TarError) as ei:
        one(h, content)
    return str(ei.value)


# --- archive framing -------------------------------------------------------------------------

def test_empty_archive_is_two_zero_blocks():
    # Close: no blocking factor, just two 512-byte zero blocks.
    assert write_tar([]) == ZERO2


def test_basic_ustar_entry_and_checksum():
    # Octal fields zero-padded to width-1 plus NUL; checksum 6 octal digits, NUL, space
    # (the literal 011106 is what Go 1.26 writes for this header); data padded to 512.
    got = one(Header(b"hello.txt", mode=0o644, size=5, mtime_ns=1700000000 * S), b"hello")
    assert got[148:156] == b"011106\0 "
    assert got == block(name=b"hello.txt", mode=b"0000644\0", size=b"00000000005\0",
                        mtime=b"14524770400\0") + pad(b"hello") + ZERO2


def test_all_numeric_fields_and_strings_ustar():
    h = Header(b"f", mode=0o4755, uid=1000, gid=2097151, uname=b"user", gname=b"g" * 32,
               mtime_ns=((1 << 33) - 1) * S, typeflag=TYPE_CHAR, devmajor=1, devminor=3)
    # A 32-byte gname fills its field without NUL; 2^21-1 and 2^33-1 are the largest octal fits.
    assert one(h) == block(name=b"f", mode=b"0004755\0", uid=b"0001750\0", gid=b"7777777\0",
                           mtime=b"77777777777\0", typeflag=b"3", uname=b"user", gname=b"g" * 32,
                           devmajor=b"0000001\0", devminor=b"0000003\0") + ZERO2


def test_header_only_types_carry_no_data():
    # writeRawHeader: '1'..'6' get no data and no padding even with Size > 0; writing fails.
    tw_out = bytearray()
    tw = TarWriter(tw_out.extend)
    tw.write_header(Header(b"d/", typeflag=TYPE_DIR, size=1000))
    with pytest.raises(TarError, match="^archive/tar: write too long$"):
        tw.write(b"x")
    tw.close()
    assert tw_out == block(name=b"d/", typeflag=b"5", size=b"00000001750\0") + ZERO2


# --- USTAR prefix split ------------------------------------------------------------------------

def test_split_ustar_path_rules():
    p155, s100 = b"p" * 154 + b"q", b"s" * 100
    assert split_ustar_path(b"a" * 100) is None                      # fits without a split
    assert split_ustar_path(b"a/" + b"b" * 99) == (b"a", b"b" * 99)   # 101 bytes
    assert split_ustar_path(p155 + b"/" + s100) == (p155, s100)       # 256: the maximum
    assert split_ustar_path(b"p" * 156 + b"/" + b"s") is None          # prefix 156
    assert split_ustar_path(b"p/" + b"s" * 101) is None               # suffix 101
    assert split_ustar_path(b"/" + b"s" * 100) is None                # empty prefix (cut at 0)
    assert split_ustar_path(b"a" * 101 + b"/") is None                 # only the trailing '/'
    assert split_ustar_path(b"a/" + b"b" * 99 + b"/") == (b"a", b"b" * 99 + b"/")  # dir keeps '/'
    assert split_ustar_path(b"\xc3\xbc/" + b"b" * 99) is None          # not ASCII
    # The cut is the last '/' within the first 156 bytes, not the last '/' overall.
    name = b"x" * 10 + b"/" + b"y" * 140 + b"/" + b"z" * 20 + b"/" + b"w" * 10
    assert split_ustar_path(name) == (name[:151], name[152:])


def test_ustar_split_written_to_prefix_field():
    name = b"L" * 60 + b"/" + b"M" * 60
    assert one(Header(name, mode=0o644)) == block(
        name=b"M" * 60, mode=b"0000644\0", prefix=b"L" * 60) + ZERO2


# --- PAX -----------------------------------------------------------------------------------------

def test_pax_long_name_without_slash():
    # path record; 'x' name = path.Join(dir, "PaxHeaders.0", file) cut to 100; main header
    # name = toASCII(name) truncated to 100 (no NUL), no prefix, PAX magic = USTAR magic.
    name = b"a" * 101
    rec = b"111 path=" + name + b"\n"
    assert one(Header(name)) == xhdr(b"PaxHeaders.0/" + b"a" * 87, rec) + block(name=b"a" * 100) + ZERO2


def test_pax_non_ascii_name_to_ascii():
    # toASCII drops non-ASCII runes (and NUL); the real name goes in "path" (spec §3.4's "ünï").
    name = "ünï".encode()
    assert one(Header(name)) == xhdr(b"PaxHeaders.0/n", b"14 path=" + name + b"\n") + block(name=b"n") + ZERO2


def test_to_ascii_and_invalid_utf8():
    assert to_ascii("aü€😀b".encode()) == b"ab"
    assert to_ascii(b"x\xff\xfe\x80y\x00z") == b"xyz"    # invalid bytes (RuneError) dropped too


@pytest.mark.parametrize("name, xname", [
    ("d/".encode(), b"d/PaxHeaders.0"),               # path.Split gives file="", Clean drops '/'
    ("dir/ü/".encode(), b"dir//PaxHeaders.0"),        # toASCII runs after Clean: "//" survives
    ("./aü".encode(), b"PaxHeaders.0/a"),              # Clean removes "./"
    ("/abs/aü".encode(), b"/abs/PaxHeaders.0/a"),
    ("a/../../aü".encode(), b"../PaxHeaders.0/a"),
    ("//x//aü".encode(), b"/x/PaxHeaders.0/a"),        # Go's Clean: one leading slash
])
def test_pax_header_name_is_cleaned(name, xname):
    typeflag = TYPE_DIR if name.endswith(b"/") else TYPE_REG
    got = one(Header(name, typeflag=typeflag, pax={"A.b": b"c"}))
    assert got[:100] == xname.ljust(100, b"\0")


def test_pax_header_name_trailing_slash_trimmed_after_cut():
    # writeRawFile: toASCII, cut to 100, then TrimRight "/".
    name = b"d" * 86 + b"/" + b"e" * 20 + "ü".encode()
    got = one(Header(name))
    assert got[:100] == (b"d" * 86 + b"/PaxHeaders.0").ljust(100, b"\0")[:100]
    name2 = b"d" * 87 + b"/" + "ü".encode()          # Join = d*87/PaxHeaders.0/ü, cut to 100
    assert one(Header(name2))[:100] == (b"d" * 87 + b"/PaxHeaders.0").ljust(100, b"\0")


def test_pax_record_length_fixup():
    # "%d %s=%s\n": the length includes its own digits; fixed up once when they grow.
    assert pax_record(b"path", b"x") == b"9 path=x\n"
    assert pax_record(b"k", b"v" * 5) == b"11 k=vvvvv\n"         # 9 -> 10, but 2 digits -> 11
    assert pax_record(b"X.k", b"v" * 92) == b"101 X.k=" + b"v" * 92 + b"\n"  # 98 -> 100 -> 101
    assert pax_record(b"X.k", b"v" * 91) == b"99 X.k=" + b"v" * 91 + b"\n"


def test_pax_records_sorted_and_binary_xattr():
    # Records sorted by key bytes; SCHILY.xattr values may contain NUL.
    h = Header(b"capfile", uid=3000000, pax={"SCHILY.xattr.security.capability": CAP,
                                              "LAYERCONF.z": b"1"})
    recs = (pax_record(b"LAYERCONF.z", b"1")
            + b"57 SCHILY.xattr.security.capability=" + CAP + b"\n" + b"15 uid=3000000\n")
    # uid >= 2^21 travels in the record; the field is written as octal 0.
    assert one(h) == xhdr(b"PaxHeaders.0/capfile", recs) + block(name=b"capfile") + ZERO2


def test_pax_user_basic_keys():
    # A user record for a basic key survives only if it equals the derived value; GNU.sparse.*
    # is dropped; any user record at all means PAX only.
    h = Header(b"f", uid=5, pax={"uid": b"5", "gid": b"7", "GNU.sparse.major": b"1"})
    assert one(h) == xhdr(b"PaxHeaders.0/f", b"8 uid=5\n") + block(name=b"f", uid=b"0000005\0") + ZERO2
    fmt, pax, err = allowed_formats(Header(b"f", pax={"gid": b"7"}))
    assert (fmt, pax, err) == (Format.PAX, {}, None)
    # Only PAX but no records left: the main header alone, PAX style (no 'x' entry).
    assert one(Header(b"f", pax={"gid": b"7"})) == block(name=b"f") + ZERO2


def test_pax_main_header_name_trailing_slash_rule():
    # formatString: a truncated name whose byte 100 is '/' has its trailing '/' run NUL'd;
    # later bytes stay as copied.
    name = b"a" * 50 + b"/" * 60 + b"x"
    got = one(Header(name, pax={"A.b": b"c"}))
    main = got[1024:1536]
    assert main[:100] == b"a" * 50 + b"\0" + b"/" * 49


@pytest.mark.parametrize("field, value, record, fieldpos, fieldval", [
    ("uid", 2097152, b"15 uid=2097152\n", 108, b"0000000\0"),
    ("gid", 2097152, b"15 gid=2097152\n", 116, b"0000000\0"),
    ("uid", -1, b"9 uid=-1\n", 108, b"0000000\0"),
    ("size", 8 * GIB, b"21 size=8589934592\n", 124, b"00000000000\0"),
    ("mtime_ns", -1 * S, b"11 mtime=-1\n", 136, b"00000000000\0"),
    ("mtime_ns", (1 << 33) * S, b"20 mtime=8589934592\n", 136, b"00000000000\0"),
])
def test_numeric_overflow_goes_to_pax(field, value, record, fieldpos, fieldval):
    h = Header(b"n", **{field: value})
    out = bytearray()
    tw = TarWriter(out.extend)
    tw.write_header(h)
    assert bytes(out[:512]) == xhdr(b"PaxHeaders.0/n", record)[:512]
    assert out[1024 + fieldpos:1024 + fieldpos + len(fieldval)] == fieldval


def test_largest_ustar_values_stay_ustar():
    h = Header(b"n", uid=2097151, gid=2097151, size=8 * GIB - 1, mtime_ns=((1 << 33) - 1) * S)
    fmt, pax, _ = allowed_formats(h)
    assert fmt == Format.USTAR | Format.PAX | Format.GNU and pax == {}


# --- times ---------------------------------------------------------------------------------------

def test_pax_time_format():
    # formatPAXTime: nanos with trailing zeros trimmed; negatives borrow a second.
    assert pax_time(0) == b"0"
    assert pax_time(-S) == b"-1"
    assert pax_time(1_500_000_000) == b"1.5"
    assert pax_time(1 * S + 1) == b"1.000000001"
    assert pax_time(-1_500_000_000) == b"-1.5"
    assert pax_time(-250_000_000) == b"-0.25"
    assert pax_time(-S - 1) == b"-1.000000001"


@pytest.mark.parametrize("ns, secs", [
    (1_499_999_999, 1), (1_500_000_000, 2), (-1_500_000_000, -1), (-1_500_000_001, -2),
    (-500_000_000, 0), (-400_000_000, 0),
])
def test_format_unknown_rounds_mtime_half_up(ns, secs):
    # FormatUnknown: ModTime.Round(time.Second) (halves toward the future), then no sub-second.
    got = one(Header(b"t", mtime_ns=ns))
    if secs >= 0:
        assert got[136:148] == b"%011o\0" % secs
    else:
        assert got[:512] == xhdr(b"PaxHeaders.0/t", pax_record(b"mtime", b"%d" % secs))[:512]


def test_format_unknown_drops_atime_ctime():
    # The containerd whiteout: FormatUnknown, ModTime=AccessTime=ChangeTime=epoch -> plain USTAR.
    h = Header(b"b/.wh.x", atime_ns=0, ctime_ns=0)
    assert one(h) == block(name=b"b/.wh.x") + ZERO2


def test_explicit_pax_with_subsecond_mtime_must_be_pax():
    # Format=PAX admits USTAR too, unless a time needs PAX (sub-second, atime, ctime).
    assert one(Header(b"t", mtime_ns=7 * S, format=Format.PAX)) == block(
        name=b"t", mtime=b"00000000007\0") + ZERO2
    assert one(Header(b"t", mtime_ns=7_250_000_000, format=Format.PAX)) == xhdr(
        b"PaxHeaders.0/t", b"14 mtime=7.25\n") + block(name=b"t", mtime=b"00000000007\0") + ZERO2
    assert one(Header(b"t", mtime_ns=7 * S, atime_ns=-S // 2, ctime_ns=0, format=Format.PAX)) == xhdr(
        b"PaxHeaders.0/t", b"14 atime=-0.5\n" + b"11 ctime=0\n") + block(
        name=b"t", mtime=b"00000000007\0") + ZERO2


def test_explicit_ustar_truncates_subsecond():
    assert one(Header(b"t", mtime_ns=-S // 2 + 8 * S, format=Format.USTAR))[136:148] == b"00000000007\0"


def test_zero_time_is_unset():
    # Go's zero time.Time: not encoded (never forces PAX) and written as epoch 0.
    assert one(Header(b"z", mtime_ns=ZERO_TIME_NS, format=Format.PAX)) == block(name=b"z") + ZERO2


# --- GNU -----------------------------------------------------------------------------------------

def test_gnu_when_only_gnu_fits():
    # devmajor >= 2^21 has no PAX key: FormatUnknown falls through to GNU: base-256 number,
    # magic "ustar " " \0", names over 100 bytes in 'L'/'K' entries.
    name, link = b"n" * 120, b"l" * 101
    h = Header(name, typeflag=TYPE_BLOCK, linkname=link, devmajor=1 << 21, devminor=2,
               mode=-1, mtime_ns=S)
    gnu = b"ustar  \0"

    def longlink(flag, data):
        return block(name=b"././@LongLink", size=b"%011o\0" % len(data), typeflag=flag,
                     magic=gnu, devmajor=bytes(8), devminor=bytes(8)) + pad(data)

    assert one(h) == (longlink(b"L", name + b"\0") + longlink(b"K", link + b"\0") + block(
        name=b"n" * 100, linkname=b"l" * 100, typeflag=b"4", magic=gnu, mode=b"\xff" * 8,
        mtime=b"00000000001\0", devmajor=b"\x80\x00\x00\x00\x00\x20\x00\x00",
        devminor=b"0000002\0") + ZERO2)


def test_explicit_gnu_writes_atime_ctime():
    h = Header(b"g", mtime_ns=(1 << 33) * S, atime_ns=-S, ctime_ns=1_999_999_999, format=Format.GNU)
    got = one(h)
    assert got[136:148] == b"\x80" + b"\0" * 6 + b"\x02" + b"\0" * 4   # 2^33 in base-256
    assert got[345:357] == b"\xff" * 12                                 # -1
    assert got[357:369] == b"00000000001\0"                             # floor(1.999…)
    assert got[257:265] == b"ustar  \0"


# --- typeflags -----------------------------------------------------------------------------------

def test_typerega_promoted():
    assert one(Header(b"d/", typeflag=TYPE_REGA))[156:157] == b"5"
    assert one(Header(b"f", typeflag=TYPE_REGA))[156:157] == b"0"


def test_global_header():
    # 'g': records only (every key copied), named as given or GlobalHead.0.0; nothing else.
    h = Header(b"", typeflag=TYPE_XGLOBAL, mtime_ns=ZERO_TIME_NS, pax={"path": b"p", "A.b": b"c"})
    assert one(h) == xhdr(b"GlobalHead.0.0", b"8 A.b=c\n9 path=p\n", flag=b"g") + ZERO2
    msg = raises(Header(b"", typeflag=TYPE_XGLOBAL, pax={"A": b"b"}))   # mtime epoch != zero time
    assert msg == "archive/tar: cannot encode header: only PAXRecords should be set for TypeXGlobalHeader"


# --- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("h, msg", [
    (Header(b"d/", typeflag=TYPE_REG), "filename may not have trailing slash"),
    (Header(b"d/", typeflag=TYPE_FIFO), "filename may not have trailing slash"),
    (Header(b"x", typeflag=TYPE_XHEADER),
     "cannot manually encode TypeXHeader, TypeGNULongName, or TypeGNULongLink headers"),
    (Header(b"x", size=-1), "negative size on header-only type"),
    (Header(b"a\0b"), 'invalid PAX record: "path = a\\x00b"'),
    (Header(b"x", pax={"a=b": b"c"}), 'invalid PAX record: "a=b = c"'),
    (Header(b"x", typeflag=TYPE_CHAR, devmajor=1 << 56),
     "USTAR cannot encode Devmajor=72057594037927936; and PAX cannot encode "
     "Devmajor=72057594037927936; and GNU cannot encode Devmajor=72057594037927936"),
    (Header(b"x", devminor=1 << 21, format=Format.PAX),
     "Format specifies PAX; and PAX cannot encode Devminor=2097152"),
    (Header(b"x", pax={"A": b"b"}, format=Format.USTAR),
     "Format specifies USTAR; and only PAX supports PAXRecords"),
    (Header(b"x", atime_ns=S, format=Format.USTAR),
     "Format specifies USTAR; and USTAR cannot encode AccessTime=1970-01-01 00:00:01 +0000 UTC"),
    (Header("ü".encode(), uname=b"u" * 33, format=Format.GNU),
     'Format specifies GNU; and GNU cannot encode Uname="uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu"'),
])
def test_header_errors(h, msg):
    assert raises(h) == "archive/tar: cannot encode header: " + msg


def test_go_quote_and_time():
    raw = b'a"\\\n\x00\x7f\xff' + "ü\u200b😀".encode()
    assert go_quote(raw) == r'"a\"\\\n\x00\x7f\xffü\u200b😀"'
    assert go_time(-1) == "1969-12-31 23:59:59.999999999 +0000 UTC"
    assert go_time(951782400 * S) == "2000-02-29 00:00:00 +0000 UTC"
    assert go_time(-62198755200 * S) == "-0001-01-01 00:00:00 +0000 UTC"


def test_writer_errors_and_stickiness():
    out = bytearray()
    tw = TarWriter(out.extend)
    with pytest.raises(TarError, match="write too long"):
        tw.write(b"x")                                      # no entry yet
    tw.write_header(Header(b"f", size=3))
    with pytest.raises(TarError, match="^archive/tar: write too long$"):
        tw.write(b"abcd")                                   # the 3 that fit are written
    assert out[512:515] == b"abc"
    with pytest.raises(TarError, match="cannot encode"):    # non-sticky
        tw.write_header(Header(b"d/", typeflag=TYPE_REG))
    tw.write_header(Header(b"g", size=2))
    tw.write(b"z")
    with pytest.raises(TarError, match="^archive/tar: missed writing 1 bytes$"):
        tw.close()
    tw.close()                                              # second close: no-op
    with pytest.raises(TarError, match="^archive/tar: write after close$"):
        tw.write_header(Header(b"h"))


def test_pax_body_too_long_is_sticky():
    tw = TarWriter(lambda b: None)
    with pytest.raises(TarError, match="^archive/tar: header field too long$"):
        tw.write_header(Header(b"f", pax={"A.b": bytes(1 << 20)}))
    with pytest.raises(TarError, match="header field too long"):
        tw.close()


# --- differential test against Go -----------------------------------------------------------------

GO_DIR = Path(__file__).parent / "gotarvec"


@pytest.fixture(scope="session")
def gotarvec(tmp_path_factory) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip("the Go toolchain (`go`) is not on PATH; cannot build tests/gotarvec")
    exe = tmp_path_factory.mktemp("gotarvec") / "gotarvec"
    env = dict(os.environ, GOTOOLCHAIN="local", CGO_ENABLED="0")   # stdlib only, offline
    subprocess.run([go, "build", "-o", str(exe), "."], cwd=GO_DIR, env=env, check=True)
    return exe


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def to_json(h: Header, content: bytes) -> dict:
    return {"name": _b64(h.name), "typeflag": _b64(h.typeflag), "linkname": _b64(h.linkname),
            "size": h.size, "mode": h.mode, "uid": h.uid, "gid": h.gid,
            "uname": _b64(h.uname), "gname": _b64(h.gname), "mtime_ns": h.mtime_ns,
            "atime_ns": h.atime_ns, "ctime_ns": h.ctime_ns, "devmajor": h.devmajor,
            "devminor": h.devminor, "pax": {k: _b64(v) for k, v in h.pax.items()},
            "format": int(h.format), "content": _b64(content)}


def run_go(exe: Path, entries) -> tuple[bytes, str | None]:
    p = subprocess.run([str(exe)], input=json.dumps([to_json(h, c) for h, c in entries]).encode(),
                       capture_output=True, timeout=60)
    assert p.returncode in (0, 1), p.stderr
    return p.stdout, (p.stderr.decode().rstrip("\n") if p.returncode else None)


def run_py(entries) -> tuple[bytes, str | None]:
    out = bytearray()
    tw = TarWriter(out.extend)
    try:
        for h, c in entries:
            tw.write_header(h)
            if c:
                tw.write(c)
        tw.close()
    except TarError as e:
        return bytes(out), str(e)
    return bytes(out), None


def assert_same(exe: Path, entries, label=""):
    go, py = run_go(exe, entries), run_py(entries)
    if go != py:
        (gb, ge), (pb, pe) = go, py
        at = next((i for i, (a, b) in enumerate(zip(gb, pb)) if a != b), min(len(gb), len(pb)))
        pytest.fail(f"{label}: Go {len(gb)} bytes err={ge!r}; Python {len(pb)} bytes err={pe!r}; "
                    f"first difference at {at} (block {at // 512}, offset {at % 512}): "
                    f"go={gb[at:at + 16]!r} py={pb[at:at + 16]!r}\nentries={entries!r}")


def _path(n: int, slash_every: int = 0, dir_: bool = False) -> bytes:
    """An n-byte name; with slash_every, a '/' every slash_every bytes; dir_ adds a final '/'."""
    body = bytearray(b"abcdefghij"[i % 10] for i in range(n - dir_))
    if slash_every:
        for i in range(slash_every, len(body) - 1, slash_every + 1):
            body[i] = 0x2F
    return bytes(body) + (b"/" if dir_ else b"")


def _cases():
    P = Format.PAX
    cap = {"SCHILY.xattr.security.capability": CAP}
    c = {}
    for n in (99, 100, 101, 155, 156, 256, 257):
        c[f"name{n}"] = [(Header(_path(n), mode=0o644, mtime_ns=S, format=P), b"")]
        c[f"name{n}/slashes"] = [(Header(_path(n, 30), mode=0o644, format=P), b"")]
        c[f"dir{n}/slashes"] = [(Header(_path(n, 30, True), typeflag=TYPE_DIR, mode=0o755, format=P), b"")]
    c["name256/maxsplit"] = [(Header(b"p" * 155 + b"/" + b"s" * 100), b"")]
    c["name257/prefix156"] = [(Header(b"p" * 156 + b"/" + b"s" * 100), b"")]
    c["dir/trailing-slash-only"] = [(Header(b"d" * 120 + b"/", typeflag=TYPE_DIR), b"")]
    c["utf8"] = [(Header("ünï".encode(), format=P), b"x")]
    c["invalid-utf8"] = [(Header(b"bad\xff\xfe\xc3name", linkname=b"l\x80", typeflag=TYPE_SYMLINK), b"")]
    c["nul-in-name"] = [(Header(b"a\0b"), b"")]
    c["nul-in-linkname"] = [(Header(b"a", typeflag=TYPE_LINK, linkname=b"x\0"), b"")]
    c["link100"] = [(Header(b"hl", typeflag=TYPE_LINK, linkname=_path(100, 9), format=P), b"")]
    c["link101"] = [(Header(b"hl", typeflag=TYPE_LINK, linkname=_path(101, 9), format=P), b"")]
    c["symlink-utf8"] = [(Header(b"sl", typeflag=TYPE_SYMLINK, linkname="tärget".encode(), mode=0o777, format=P), b"")]
    for v in (2097151, 2097152, -1):
        c[f"uid-gid{v}"] = [(Header(b"u", uid=v, gid=v, format=P), b"")]
    c["size8g-1"] = [(Header(b"big", size=8 * GIB - 1, format=P), b"")]
    c["size8g"] = [(Header(b"big", size=8 * GIB, format=P), b"")]
    c["size-negative-dir"] = [(Header(b"d/", typeflag=TYPE_DIR, size=-5), b"")]
    for label, ns in (("0", 0), ("neg", -S), ("2^33-1", ((1 << 33) - 1) * S), ("2^33", (1 << 33) * S),
                      ("subsec", 1_700_000_000_999_999_999), ("neg-subsec", -1_500_000_000),
                      ("zero-time", ZERO_TIME_NS), ("year-minus", -10**11 * S)):
        c[f"mtime-{label}/unknown"] = [(Header(b"t", mtime_ns=ns), b"")]
        c[f"mtime-{label}/pax"] = [(Header(b"t", mtime_ns=ns, format=P), b"")]
        c[f"mtime-{label}/ustar"] = [(Header(b"t", mtime_ns=ns, format=Format.USTAR), b"")]
        c[f"mtime-{label}/gnu"] = [(Header(b"t", mtime_ns=ns, format=Format.GNU), b"")]
    c["whiteouts"] = [(Header(n, atime_ns=0, ctime_ns=0), b"") for n in
                      (b"b/.wh.x", b".wh.c", b"d/.wh..wh..opq", _path(150, 0) + b"/.wh.long",
                       "ü/.wh.ï".encode())]
    c["atime-ctime/pax"] = [(Header(b"t", atime_ns=-1, ctime_ns=3 * S + 10, format=P), b"")]
    c["atime-ctime/gnu"] = [(Header(b"t", atime_ns=-1, ctime_ns=3 * S + 10, format=Format.GNU), b"")]
    c["capability"] = [(Header(b"capfile", mode=0o755, size=3, pax=cap, format=P), b"abc")]
    c["pax-records"] = [(Header(b"f", uid=7, pax={"uid": b"7", "gid": b"1", "GNU.sparse.size": b"9",
                                                  "LAYERCONF.k": b"v" * 92, "": b""}), b"")]
    c["pax-records-valid"] = [(Header(b"f", uid=7, pax={"uid": b"7", "gid": b"1", "Z": b"\0",
                                                        "LAYERCONF.k": b"v" * 92}), b"")]
    c["pax/ustar-requested"] = [(Header(b"f", pax=cap, format=Format.USTAR), b"")]
    c["pax/too-long"] = [(Header(b"f", pax={"A": bytes(1 << 20)}), b"")]
    c["pax-name-trailing-slash"] = [(Header(b"a" * 50 + b"/" * 60 + b"x", pax={"A.b": b"c"}), b"")]
    c["devices"] = [(Header(b"blk", typeflag=TYPE_BLOCK, devmajor=8, devminor=1, format=P), b""),
                    (Header(b"chr", typeflag=TYPE_CHAR, devmajor=1, devminor=3, format=P), b"")]
    c["dev2^21/unknown"] = [(Header(b"chr", typeflag=TYPE_CHAR, devmajor=1 << 21, devminor=1 << 40), b"")]
    c["dev2^21/pax"] = [(Header(b"chr", typeflag=TYPE_CHAR, devmajor=1 << 21, format=P), b"")]
    c["dev2^56"] = [(Header(b"chr", typeflag=TYPE_CHAR, devmajor=1 << 56, mtime_ns=-S), b"")]
    c["gnu-long"] = [(Header(_path(300, 50), typeflag=TYPE_SYMLINK, linkname=_path(200), devminor=1 << 21,
                             uname=b"u" * 32, mode=-2, uid=-5, size=1 << 40, mtime_ns=-S), b"")]
    c["uname-long"] = [(Header(b"f", uname=b"u" * 33, gname="grüp".encode()), b"")]
    c["every-typeflag"] = [(Header(b"t" + t, typeflag=t, size=3, mode=0o640, mtime_ns=5 * S), b"xyz"
                            if t in (TYPE_REG, TYPE_CONT, TYPE_GNU_SPARSE) else b"")
                           for t in (TYPE_REG, TYPE_LINK, TYPE_SYMLINK, TYPE_CHAR, TYPE_BLOCK,
                                     TYPE_DIR, TYPE_FIFO, TYPE_CONT, TYPE_GNU_SPARSE)]
    c["rega"] = [(Header(b"d/", typeflag=TYPE_REGA), b""), (Header(b"f", typeflag=TYPE_REGA, size=1), b"1")]
    for t in (TYPE_XHEADER, TYPE_GNU_LONGNAME, TYPE_GNU_LONGLINK):
        c[f"typeflag-{t.decode()}"] = [(Header(b"m", typeflag=t), b"")]
    c["global"] = [(Header(b"", typeflag=TYPE_XGLOBAL, mtime_ns=ZERO_TIME_NS, pax={"path": b"p", "x": b"y"}), b""),
                   (Header(b"f"), b"")]
    c["global-not-bare"] = [(Header(b"g", typeflag=TYPE_XGLOBAL, pax={"x": b"y"}), b"")]
    c["mode-2^21"] = [(Header(b"m", mode=1 << 21), b"")]
    c["write-too-long"] = [(Header(b"f", size=2), b"abc")]
    c["missed-writing"] = [(Header(b"f", size=2), b"a"), (Header(b"g"), b"")]
    c["reg-trailing-slash"] = [(Header(b"f/"), b"")]
    c["negative-size"] = [(Header(b"f", size=-1), b"")]
    c["worked-example"] = [
        (Header(_path(60) + b"/", typeflag=TYPE_DIR, mode=0o755, format=P), b""),
        (Header(_path(60) + b"/" + _path(60), mode=0o644, size=2, format=P), b"hi"),
        (Header(b"b/.wh.x", atime_ns=0, ctime_ns=0), b""),
        (Header(b"bigid", uid=3000000, gid=5, size=600, format=P), bytes(range(256)) * 2 + b"x" * 88),
        (Header(b"hl2", typeflag=TYPE_LINK, linkname=b"hl1", format=P), b""),
        (Header(b"suid", mode=0o4755, format=P), b""),
    ]
    return c


CASES = _cases()


@pytest.mark.parametrize("label", list(CASES))
def test_against_go(gotarvec, label):
    assert_same(gotarvec, CASES[label], label)


def _random_header(rng: random.Random) -> tuple[Header, bytes]:
    """Mostly ordinary values, each field with a small chance of an edge value."""
    def edge(common, *rare, p=0.12):
        return rng.choice(rare) if rng.random() < p else common

    def name() -> bytes:
        n = edge(rng.randrange(1, 40), 99, 100, 101, 120, 155, 156, 157, 200, 256, 257, 300, p=0.4)
        b = bytearray(rng.choice(b"abcxyz//._-") for _ in range(n))
        if rng.random() < 0.15:
            b[rng.randrange(n)] = rng.choice(b"\xc3\xff\x80\x00" if rng.random() < 0.1 else b"\xc3\xff\x80")
        if rng.random() < 0.1:
            b += "ü".encode()
        return bytes(b)

    def t_ns(common):
        return edge(common, 0, S, -S, 7_500_000_000, -7_500_000_000, 1_700_000_000 * S + 123,
                    (1 << 33) * S, ((1 << 33) - 1) * S, -1, ZERO_TIME_NS, rng.randrange(-10**19, 10**19))

    typeflag = edge(rng.choice((TYPE_REG, TYPE_DIR, TYPE_SYMLINK, TYPE_LINK, TYPE_CHAR, TYPE_BLOCK,
                                TYPE_FIFO)), TYPE_REGA, TYPE_CONT, TYPE_GNU_SPARSE)
    nm = name().rstrip(b"/") or b"n"
    if typeflag == TYPE_DIR or (typeflag == TYPE_REGA and rng.random() < 0.5):
        nm += b"/"
    size = edge(rng.choice((0, 1, 511, 512, 513, 2000)), 8 * GIB - 1, 8 * GIB, -1, p=0.05)
    pax = edge({}, {"SCHILY.xattr.security.capability": CAP}, {"uid": b"7"}, {"LAYERCONF.a": b"b\0c"},
               {"path": nm}, {"mtime": b"1"}, {"B.x": b"y" * rng.randrange(200)}, p=0.25)
    h = Header(
        name=nm, typeflag=typeflag,
        linkname=name() if typeflag in (TYPE_LINK, TYPE_SYMLINK) else edge(b"", b"l" * 101, p=0.03),
        size=size, mode=edge(rng.choice((0o644, 0o755, 0o4755, 0o7777)), 1 << 21, -1, p=0.05),
        uid=edge(rng.randrange(70000), 2097151, 2097152, -1, 1 << 40),
        gid=edge(rng.randrange(70000), 2097151, 2097152),
        uname=edge(b"", b"root", b"u" * 32, b"u" * 33, "ü".encode()),
        gname=edge(b"", b"wheel", b"g\0", p=0.05),
        mtime_ns=t_ns(rng.randrange(0, 2_000_000_000) * S + edge(0, 1, 999_999_999, 500_000_000, p=0.3)),
        atime_ns=edge(None, t_ns(0)), ctime_ns=edge(None, t_ns(0)),
        devmajor=edge(rng.randrange(300) if typeflag in (TYPE_CHAR, TYPE_BLOCK) else 0,
                      2097151, 2097152, 1 << 56, -1, p=0.06),
        devminor=edge(rng.randrange(300) if typeflag in (TYPE_CHAR, TYPE_BLOCK) else 0, 2097152, p=0.05),
        pax=pax, format=rng.choice((Format.UNKNOWN, Format.UNKNOWN, Format.PAX, Format.PAX, Format.PAX,
                                    Format.USTAR, Format.GNU, Format.USTAR | Format.PAX)))
    content = b""
    if typeflag in (TYPE_REG, TYPE_REGA, TYPE_CONT, TYPE_GNU_SPARSE) and not nm.endswith(b"/") and 0 < size <= 2000:
        n = edge(size, size - 1, size + 1, p=0.05)
        content = bytes(rng.randrange(256) for _ in range(n))
    return h, content


def test_random_headers_against_go(gotarvec):
    rng = random.Random(20240607)
    outcomes = {"ok": 0, "error": 0}
    for i in range(200):
        entries = [_random_header(rng) for _ in range(rng.choice((1, 1, 2, 3)))]
        assert_same(gotarvec, entries, f"random case {i}")
        outcomes["error" if run_py(entries)[1] else "ok"] += 1
    # The generator must exercise both successful archives and Go's error paths.
    assert outcomes["ok"] >= 60 and outcomes["error"] >= 20, outcomes
