"""harness.reference.tarread: exact-bytes tests of single rules, then differential tests against
Go's archive/tar Reader (tests/gotarread, built once per session): every fixture under
fixtures/dialects/, hand-built malformed archives, and Hypothesis-generated ones."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from harness.reference.tarread import (
    ERR_FIELD_TOO_LONG, ERR_HEADER, ERR_MISS_DATA, ERR_UNEXPECTED_EOF, ERR_UNREF_DATA,
    FORMAT_GNU, FORMAT_PAX, FORMAT_USTAR, TYPE_DIR, TYPE_REG, TYPE_XGLOBAL, ZERO_TIME_NS,
    TarError, TarReader, parse_numeric, parse_pax_record, parse_pax_time, read_all,
)

ROOT = Path(__file__).resolve().parent.parent
DIALECTS = ROOT / "fixtures" / "dialects"
GO_DIR = Path(__file__).parent / "gotarread"
S = 10**9


# --- an independent block builder: literal field bytes in, 512-byte header out ---------------

def block(name=b"", mode=b"0000644\0", uid=b"0000000\0", gid=b"0000000\0",
          size=b"00000000000\0", mtime=b"14524770400\0", typeflag=b"0", linkname=b"",
          magic=b"ustar\x0000", uname=b"", gname=b"", devmajor=b"0000000\0",
          devminor=b"0000000\0", prefix=b"", at: dict | None = None, chksum=None) -> bytes:
    b = bytearray(512)
    for off, val in ((0, name), (100, mode), (108, uid), (116, gid), (124, size), (136, mtime),
                     (156, typeflag), (157, linkname), (257, magic), (265, uname),
                     (297, gname), (329, devmajor), (337, devminor), (345, prefix),
                     *(at or {}).items()):
        b[off:off + len(val)] = val
    b[148:156] = chksum if chksum is not None else b"%06o\0 " % (sum(b[:148]) + sum(b[156:]) + 256)
    return bytes(b)


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def rec(k: bytes, v: bytes) -> bytes:
    """One PAX record with its correct length prefix."""
    n = len(k) + len(v) + 3
    n += len(str(n))
    if len(str(n)) + len(k) + len(v) + 3 != n:
        n += 1
    return b"%d %s=%s\n" % (n, k, v)


def xhdr(records: bytes, flag=b"x", name=b"PaxHeader") -> bytes:
    return block(name=name, size=b"%011o\0" % len(records), typeflag=flag) + pad(records)


def reg(name: bytes, data: bytes = b"", **kw) -> bytes:
    return block(name=name, size=b"%011o\0" % len(data), **kw) + pad(data)


END = bytes(1024)


# --- single rules -----------------------------------------------------------------------------

def test_octal_fields_trim_spaces_and_nuls():
    assert parse_numeric(b"0000644\0") == 0o644
    assert parse_numeric(b" 644 \0\0") == 0o644
    assert parse_numeric(b"\0\0\0\0\0\0\0\0") == 0          # all-NUL uid/gid (npm) is 0
    assert parse_numeric(b"        ") == 0
    assert parse_numeric(b"12\x0034\0") == 0o12              # cut at the inner NUL


def test_base256_positive_and_negative():
    assert parse_numeric(b"\x80\0\0\0\xb2\xd0\x5e\x00") == 3000000000
    assert parse_numeric(b"\xff" * 12) == -1
    with pytest.raises(Exception):
        parse_numeric(b"\x80\x01" + bytes(10))               # > int64 is ErrHeader


def test_pax_time_fraction_digits():
    assert parse_pax_time(b"1795983873.66737128") == 1795983873 * S + 667371280
    assert parse_pax_time(b"1.5") == S + 500000000
    assert parse_pax_time(b"1.1234567899999") == S + 123456789   # truncated, not rounded
    assert parse_pax_time(b"-1.5") == -S - 500000000
    assert parse_pax_time(b"-0.5") == -500000000
    for bad in (b"1.2.3", b".5", b"1.5x", b"", b"x"):
        with pytest.raises(Exception):
            parse_pax_time(bad)


def test_pax_record_lengths():
    assert parse_pax_record(b"11 path=ab\nrest") == (b"path", b"ab", b"rest")
    for bad in (b"10 path=ab\n", b"12 path=ab\n", b"4 a=\n", b"11path=ab\n", b"11 pathab\n",
                b"11 =path1\n"):
        with pytest.raises(Exception):
            parse_pax_record(bad)


def test_checksum_signed_and_unsigned():
    b = bytearray(block(name=b"\xe9t\xe9"))
    unsigned = sum(b[:148]) + sum(b[156:]) + 256
    signed = unsigned - 256 * sum(1 for c in b if c >= 0x80)
    b[148:156] = b"%06o\0 " % signed
    a = read_all(bytes(b) + END)
    assert a.error is None and a.entries[0].header.name == b"\xe9t\xe9"
    b[148:156] = b"%06o\0 " % (signed + 1)
    assert read_all(bytes(b) + END).error == ERR_HEADER


def test_end_of_archive_variants():
    one = reg(b"a", b"hi")
    assert read_all(one).error is None                          # no end blocks at all
    assert read_all(one + bytes(512)).error is None             # one zero block
    assert read_all(one + END + b"garbage").error is None       # after two: never read
    assert read_all(one + bytes(512) + reg(b"b")).error == ERR_HEADER
    assert read_all(one + bytes(700)).error == ERR_UNEXPECTED_EOF   # partial second block
    got = read_all(one[:513])                                   # inside the data
    assert got.error == ERR_UNEXPECTED_EOF and got.error_index == 0
    assert read_all(one[:600]).error is None                    # inside the padding: a clean end
    assert read_all(one[:514]).error is None                    # data complete, no padding
    assert read_all(one[:100]).error == ERR_UNEXPECTED_EOF      # inside the header


def test_global_header_is_its_own_entry_and_not_merged():
    data = xhdr(rec(b"path", b"everything") + rec(b"uid", b"7"), flag=b"g") + \
        reg(b"a", b"1") + reg(b"b", b"2") + END
    a = read_all(data)
    assert [e.header.name for e in a.entries] == [b"everything", b"a", b"b"]
    g = a.entries[0].header
    assert g.typeflag == TYPE_XGLOBAL and g.uid == 0 and g.format == FORMAT_PAX
    assert a.entries[1].header.uid == 0


def test_local_pax_fields_and_xattrs():
    recs = rec(b"path", b"long/name") + rec(b"mtime", b"1700000000.000000005") + \
        rec(b"uid", b"3000000000") + rec(b"SCHILY.xattr.user.k", b"v\0w") + \
        rec(b"LIBARCHIVE.xattr.user.l", b"dg==")
    a = read_all(xhdr(recs) + reg(b"short", b"x") + END)
    h = a.entries[0].header
    assert (h.name, h.mtime_ns, h.uid) == (b"long/name", 1700000000 * S + 5, 3000000000)
    assert h.xattrs == {b"user.k": b"v\0w"}                     # LIBARCHIVE.* stays a record
    assert h.pax[b"LIBARCHIVE.xattr.user.l"] == b"dg=="
    assert h.format == FORMAT_PAX


def test_rega_with_trailing_slash_is_a_dir():
    a = read_all(block(name=b"d/", typeflag=b"\0") + block(name=b"f", typeflag=b"\0") + END)
    assert [e.header.typeflag for e in a.entries] == [TYPE_DIR, TYPE_REG]


def test_sparse_1_0_holes_are_zeros():
    # GNU sparse 1.0: map "2\n0\n2\n6\n2\n" in the first data block, then the 4 data bytes.
    smap = pad(b"2\n0\n2\n6\n2\n")
    recs = rec(b"GNU.sparse.major", b"1") + rec(b"GNU.sparse.minor", b"0") + \
        rec(b"GNU.sparse.name", b"sparse") + rec(b"GNU.sparse.realsize", b"10")
    body = smap + b"abcd"
    data = xhdr(recs) + reg(b"GNUSparseFile.0/sparse", body) + END
    a = read_all(data)
    assert a.error is None
    assert a.entries[0].header.name == b"sparse" and a.entries[0].header.size == 10
    assert a.entries[0].content == b"ab\0\0\0\0cd\0\0"
    short = xhdr(recs) + reg(b"GNUSparseFile.0/sparse", smap + b"abc") + END
    assert read_all(short).error == ERR_MISS_DATA
    extra = xhdr(recs) + reg(b"GNUSparseFile.0/sparse", smap + b"abcde") + END
    assert read_all(extra).error == ERR_UNREF_DATA


def test_field_too_long_and_error_is_sticky():
    big = rec(b"comment", b"x" * (1 << 20))
    a = read_all(xhdr(big) + reg(b"a") + END)
    assert a.error == ERR_FIELD_TOO_LONG and a.error_index == 0
    r = TarReader(io.BytesIO(reg(b"a", b"x" * 600)[:700]))
    h = r.next()
    with pytest.raises(TarError):
        r.next()
    with pytest.raises(TarError, match="unexpected EOF"):
        r.next()


def test_streaming_reads_in_blocks():
    """The reader never asks for more than 1 MiB at a time."""
    class Probe(io.RawIOBase):
        def __init__(self, data):
            self.b, self.max = io.BytesIO(data), 0

        def readable(self):
            return True

        def read(self, n=-1):
            self.max = max(self.max, n)
            return self.b.read(n)

    p = Probe(reg(b"big", bytes(3 << 20)) + END)
    for h, c in TarReader(p):
        assert c.hash()[1] == 3 << 20
    assert 0 < p.max <= (1 << 20) + 1


# --- differential against Go ---------------------------------------------------------------------

@pytest.fixture(scope="session")
def gotarread(tmp_path_factory) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip("the Go toolchain (`go`) is not on PATH; cannot build tests/gotarread")
    exe = tmp_path_factory.mktemp("gotarread") / "gotarread"
    env = dict(os.environ, GOTOOLCHAIN="local", CGO_ENABLED="0")   # stdlib only, offline
    subprocess.run([go, "build", "-o", str(exe), "."], cwd=GO_DIR, env=env, check=True,
                   timeout=300)
    return exe


def _b(s: str) -> bytes:
    return base64.b64decode(s)


def _ns(t) -> int:
    return t[0] * S + t[1]


def _map(m):
    return None if m is None else {_b(k): _b(v) for k, v in m.items()}


def go_read(exe: Path, data: bytes) -> dict:
    p = subprocess.run([str(exe)], input=data, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    entries = [dict(name=_b(e["name"]), linkname=_b(e["linkname"]), typeflag=e["typeflag"],
                    size=e["size"], mode=e["mode"], uid=e["uid"], gid=e["gid"],
                    uname=_b(e["uname"]), gname=_b(e["gname"]), mtime_ns=_ns(e["mtime"]),
                    atime_ns=_ns(e["atime"]), ctime_ns=_ns(e["ctime"]),
                    devmajor=e["devmajor"], devminor=e["devminor"], xattrs=_map(e["xattrs"]),
                    pax=_map(e["pax"]), format=e["format"],
                    content=(e["content_sha256"], e["content_len"])
                    if e["content_sha256"] is not None else None)
               for e in r["entries"]]
    return dict(entries=entries, error=r["error"],
                error_index=r["error_index"] if r["error"] is not None else None)


def py_read(data: bytes) -> dict:
    a = read_all(data)
    entries = []
    for e in a.entries:
        d = dict(vars(e.header))
        d["content"] = (hashlib.sha256(e.content).hexdigest(), len(e.content)) \
            if e.content is not None else None
        entries.append(d)
    return dict(entries=entries, error=a.error,
                error_index=a.error_index if a.error is not None else None)


def assert_same(exe: Path, data: bytes, label: str) -> None:
    go, py = go_read(exe, data), py_read(data)
    assert py["error"] == go["error"] and py["error_index"] == go["error_index"], \
        f"{label}: error: Go {go['error']!r} at {go['error_index']}, " \
        f"Python {py['error']!r} at {py['error_index']}"
    assert len(py["entries"]) == len(go["entries"]), label
    for i, (p, g) in enumerate(zip(py["entries"], go["entries"])):
        keys = list(g)
        if g["typeflag"] == ord("g") and g["pax"] is None:
            # A global header with a bad record: Go merged the records its random map order
            # reached before the bad one, so only these fields are determined.
            keys = ["typeflag", "format", "pax", "content"]
        for k in keys:
            assert p[k] == g[k], f"{label}: entry {i} ({g['name']!r}) field {k}: " \
                                 f"Go {g[k]!r}, Python {p[k]!r}"


DIALECT_TARS = sorted(p.name for p in DIALECTS.glob("*.tar"))


@pytest.mark.parametrize("name", DIALECT_TARS)
def test_dialect_fixture_against_go(gotarread, name):
    assert_same(gotarread, (DIALECTS / name).read_bytes(), name)


def _malformed() -> dict[str, bytes]:
    """Hand-built archives, each aimed at one rule of the reader."""
    cases: dict[str, bytes] = {}
    base = reg(b"dir/file", b"hello world") + block(name=b"dir/", typeflag=b"5") + \
        xhdr(rec(b"path", b"p" * 150) + rec(b"mtime", b"1700000000.5")) + reg(b"x", b"12345") + END
    # Truncation at every boundary: inside a header, inside data, inside padding, before the
    # end blocks, inside the end blocks, and a few bytes around each.
    for cut in sorted({0, 1, 100, 511, 512, 513, 523, 524, 600, 1023, 1024, 1025, 1535, 1536,
                       1537, 2047, 2048, 2560, 3071, 3072, 3077, 3100, 3583, 3584, 3585, 4095,
                       4096, 4607, 4608, len(base) - 1}):
        if cut < len(base):
            cases[f"truncated-at-{cut}"] = base[:cut]
    cases["bad-checksum"] = block(name=b"a", chksum=b"0000000\0") + END
    cases["checksum-spaces"] = block(name=b"a", chksum=b"        ") + END
    cases["checksum-octal-garbage"] = block(name=b"a", chksum=b"01x345\0 ") + END
    cases["checksum-no-nul"] = (lambda b: b[:148] + b"%07o " % (sum(b[:148]) + sum(b[156:]) + 256)
                                + b[156:])(block(name=b"a", chksum=b"        ")) + END
    cases["uid-all-nul"] = reg(b"npm", b"{}", uid=bytes(8), gid=bytes(8), mode=bytes(8)) + END
    cases["uid-all-space"] = reg(b"sp", b"", uid=b" " * 8, gid=b"  7    ") + END
    cases["uid-space-terminated"] = reg(b"sp", b"", uid=b"000012 \0", gid=b"0000012 ") + END
    cases["size-no-nul"] = block(name=b"n", size=b"000000000005") + pad(b"12345") + END
    cases["uid-base256"] = reg(b"u", uid=b"\x80\0\0\0\0\x98\x96\x80") + END
    cases["uid-base256-negative"] = reg(b"u", uid=b"\xff" * 8) + END
    cases["mtime-base256-negative"] = reg(b"m", mtime=b"\xff" * 12) + END
    cases["size-base256"] = block(name=b"s", size=b"\x80" + bytes(10) + b"\x03") + pad(b"abc") + END
    cases["size-base256-negative"] = block(name=b"s", size=b"\xff" * 12) + END
    cases["size-base256-overflow"] = block(name=b"s", size=b"\x80\x80" + bytes(10)) + END
    cases["mode-octal-garbage"] = reg(b"m", mode=b"06z4\0\0\0\0") + END
    cases["devmajor-garbage"] = block(name=b"c", typeflag=b"3", devmajor=b"zz\0") + END
    cases["zero-then-header"] = reg(b"a") + bytes(512) + reg(b"b") + END
    cases["v7"] = reg(b"v7file", b"v7", magic=b"") + END
    cases["v7-dir-slash"] = block(name=b"olddir/", typeflag=b"\0", magic=b"") + END
    cases["gnu-atime"] = reg(b"g", magic=b"ustar  \0", at={345: b"14524770400\0",
                                                         357: b"14524770401\0"}) + END
    cases["gnu-atime-garbage-prefix"] = reg(b"g", magic=b"ustar  \0",
                                            at={345: b"pre/fix\0"}) + END
    cases["star"] = reg(b"s", prefix=b"pre", at={476: b"14524770400\0", 488: b"1\0",
                                                 508: b"tar\0"}) + END
    cases["ustar-prefix"] = reg(b"name", b"x", prefix=b"some/prefix") + END
    cases["non-ascii-ustar"] = reg(b"caf\xc3\xa9", b"x") + END
    cases["gnu-longname"] = block(name=b"././@LongLink", typeflag=b"L",
                                  size=b"%011o\0" % 201, magic=b"ustar  \0") + \
        pad(b"L" * 200 + b"\0") + reg(b"short", b"z", magic=b"ustar  \0") + END
    cases["gnu-longlink-empty"] = block(name=b"././@LongLink", typeflag=b"K",
                                        magic=b"ustar  \0") + \
        block(name=b"ln", typeflag=b"2", linkname=b"t", magic=b"ustar  \0") + END
    cases["gnu-longname-too-long"] = block(name=b"L", typeflag=b"L",
                                           size=b"%011o\0" % ((1 << 20) + 1)) + \
        pad(b"a" * ((1 << 20) + 1)) + END
    cases["gnu-longname-truncated"] = block(name=b"L", typeflag=b"L", size=b"%011o\0" % 300) + b"a" * 100
    for i, digits in enumerate(["5", "66", "667", "6673", "66737", "667371", "6673712",
                                "66737128", "667371289", "6673712891", "66737128912345678"]):
        cases[f"pax-mtime-{len(digits)}-digits"] = \
            xhdr(rec(b"mtime", b"1795983873." + digits.encode())) + reg(b"t%d" % i) + END
    cases["pax-negative-mtime"] = xhdr(rec(b"mtime", b"-1.25") + rec(b"atime", b"-0.000000001") +
                                       rec(b"ctime", b"+5.5")) + reg(b"neg") + END
    for label, body in {
        "pax-len-too-small": b"10 path=abc\n",
        "pax-len-too-large": b"99 path=abc\n",
        "pax-len-not-number": b"x1 path=abc\n",
        "pax-len-negative": b"-5 path=abc\n",
        "pax-no-space": b"12path=abc\n\n",
        "pax-no-equals": b"11 pathabc\n",
        "pax-no-newline": b"12 path=abcX",
        "pax-empty-key": b"8 =abcd\n",
        "pax-nul-in-path": b"12 path=a\0bc\n",
        "pax-nul-in-comment": rec(b"comment", b"a\0b"),
        "pax-bad-uid": rec(b"uid", b"12x"),
        "pax-uid-overflow": rec(b"uid", b"9223372036854775808"),
        "pax-uid-plus": rec(b"uid", b"+12"),
        "pax-bad-size": rec(b"size", b"-1"),
        "pax-empty-path-keeps-header": rec(b"path", b""),
        "pax-bad-mtime": rec(b"mtime", b"1.2.3"),
        "pax-sparse-0.0-bad-order": rec(b"GNU.sparse.numbytes", b"1"),
    }.items():
        cases[label] = xhdr(body) + reg(b"target", b"abc") + END
    cases["pax-size-override"] = xhdr(rec(b"size", b"3")) + \
        block(name=b"f", size=b"00000000000\0") + pad(b"abc") + END
    cases["pax-global-bad-record"] = xhdr(b"5 a=\n", flag=b"g") + reg(b"a") + END
    cases["pax-global-then-local-lost"] = xhdr(rec(b"path", b"lost")) + \
        xhdr(rec(b"comment", b"g"), flag=b"g") + reg(b"kept") + END
    cases["pax-x-twice"] = xhdr(rec(b"path", b"first")) + xhdr(rec(b"uid", b"5")) + reg(b"f") + END
    cases["pax-xattr-schily-and-libarchive"] = \
        xhdr(rec(b"SCHILY.xattr.user.a", b"1") + rec(b"SCHILY.xattr.security.capability", CAPV) +
             rec(b"LIBARCHIVE.xattr.user.b", b"Mg")) + reg(b"x") + END
    cases["header-only-with-size"] = block(name=b"d/", typeflag=b"5", size=b"00000001000\0") + \
        reg(b"after") + END
    cases["symlink-with-data-size"] = block(name=b"l", typeflag=b"2", linkname=b"t",
                                            size=b"00000000005\0") + reg(b"next") + END
    cases["unknown-typeflag-with-data"] = block(name=b"v", typeflag=b"V", size=b"00000000003\0") + \
        pad(b"abc") + reg(b"w") + END
    # Sparse: PAX 0.0, 0.1, 1.0 and old GNU with an extension block.
    cases["sparse-0.0"] = xhdr(rec(b"GNU.sparse.size", b"10") + rec(b"GNU.sparse.numblocks", b"2") +
                               rec(b"GNU.sparse.offset", b"0") + rec(b"GNU.sparse.numbytes", b"2") +
                               rec(b"GNU.sparse.offset", b"8") + rec(b"GNU.sparse.numbytes", b"2") +
                               rec(b"GNU.sparse.name", b"s00")) + reg(b"x", b"abcd") + END
    cases["sparse-0.1"] = xhdr(rec(b"GNU.sparse.major", b"0") + rec(b"GNU.sparse.minor", b"1") +
                               rec(b"GNU.sparse.size", b"10") + rec(b"GNU.sparse.numblocks", b"1") +
                               rec(b"GNU.sparse.map", b"4,3")) + reg(b"s01", b"xyz") + END
    cases["sparse-0.1-count-mismatch"] = xhdr(rec(b"GNU.sparse.numblocks", b"2") +
                                              rec(b"GNU.sparse.map", b"4,3")) + reg(b"s", b"xyz") + END
    cases["sparse-1.0-bad-count"] = xhdr(rec(b"GNU.sparse.major", b"1") + rec(b"GNU.sparse.minor", b"0")) + \
        reg(b"s", pad(b"x\n")) + END
    cases["sparse-1.0-overlap"] = xhdr(rec(b"GNU.sparse.major", b"1") + rec(b"GNU.sparse.minor", b"0") +
                                       rec(b"GNU.sparse.realsize", b"10")) + \
        reg(b"s", pad(b"2\n0\n4\n2\n4\n") + b"abcdefgh") + END
    cases["sparse-1.0-map-truncated"] = xhdr(rec(b"GNU.sparse.major", b"1") + rec(b"GNU.sparse.minor", b"0") +
                                             rec(b"GNU.sparse.realsize", b"10")) + \
        reg(b"s", b"1\n0\n") + END
    cases["sparse-unknown-version"] = xhdr(rec(b"GNU.sparse.major", b"2") +
                                           rec(b"GNU.sparse.map", b"0,1")) + reg(b"s", b"a") + END
    cases["sparse-on-dir"] = xhdr(rec(b"GNU.sparse.map", b"0,1") + rec(b"GNU.sparse.numblocks", b"1")) + \
        block(name=b"d/", typeflag=b"5") + END
    ext = bytearray(512)
    for i in range(3):
        ext[i * 24:i * 24 + 24] = b"%011o\0%011o\0" % (4096 * (i + 5), 512)
    old = block(name=b"oldsparse", typeflag=b"S", size=b"%011o\0" % (512 * 7), magic=b"ustar  \0",
                at={386 + i * 24: b"%011o\0%011o\0" % (4096 * i, 512) for i in range(4)} |
                {482: b"\1", 483: b"%011o\0" % (4096 * 8)})
    cases["old-gnu-sparse-extended"] = old + bytes(ext) + b"".join(bytes([65 + i]) * 512 for i in range(7)) + END
    cases["old-gnu-sparse-ext-truncated"] = old + bytes(ext[:100])
    cases["old-gnu-sparse-not-gnu"] = block(name=b"s", typeflag=b"S") + END
    return cases


CAPV = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
MALFORMED = _malformed()


@pytest.mark.parametrize("label", sorted(MALFORMED))
def test_malformed_against_go(gotarread, label):
    assert_same(gotarread, MALFORMED[label], label)


# --- Hypothesis: archives assembled from parts that exercise the rules --------------------------

_names = st.sampled_from([b"a", b"d/", b"d/f", b"./x", b"../up", b"/abs", b"caf\xc3\xa9", b"\xff",
                          b"n" * 99, b"n" * 100, b"sp ace", b""])
_num8 = st.one_of(st.sampled_from([b"0000644\0", b"0000755 ", b"\0" * 8, b" " * 8, b"7777777\0",
                                   b"\x80\0\0\0\0\0\x10\0", b"\xff" * 8, b"12\x0034\0", b"9\0"]),
                  st.binary(min_size=8, max_size=8))
_num12 = st.one_of(st.sampled_from([b"00000000003\0", b"14524770400\0", b"\0" * 12,
                                    b"\x80" + bytes(10) + b"\x03", b"\xff" * 12, b"00000000003 "]),
                   st.binary(min_size=12, max_size=12))
_flags = st.sampled_from([b"0", b"\0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"S", b"V", b"M"])
_magic = st.sampled_from([b"ustar\x0000", b"ustar  \0", b"", b"ustar\x00xx"])
_pax_keys = st.sampled_from([b"path", b"linkpath", b"size", b"uid", b"gid", b"uname", b"gname",
                             b"mtime", b"atime", b"ctime", b"comment", b"SCHILY.xattr.user.x",
                             b"LIBARCHIVE.xattr.user.y", b"GNU.sparse.major", b"GNU.sparse.minor",
                             b"GNU.sparse.map", b"GNU.sparse.numblocks", b"GNU.sparse.size",
                             b"GNU.sparse.offset", b"GNU.sparse.numbytes", b"GNU.sparse.name"])
_pax_vals = st.one_of(st.sampled_from([b"", b"0", b"1", b"3", b"-1", b"1.5", b"1.123456789123",
                                       b"-2.5", b"0,1", b"0,1,4,2", b"x", b"9223372036854775808",
                                       b"a/b", b"a\0b"]),
                      st.binary(max_size=6))


@st.composite
def _member(draw) -> bytes:
    kind = draw(st.sampled_from(["reg", "reg", "hdr", "pax", "global", "long", "zero", "raw",
                                 "sparse1", "oldsparse"]))
    data = draw(st.binary(max_size=40))
    if kind == "sparse1":
        # PAX sparse 1.0: a drawn map text (numbers, newlines, junk) then drawn data.
        nums = draw(st.lists(st.sampled_from([b"0", b"1", b"2", b"4", b"512", b"-1", b"x", b""]),
                             max_size=7))
        smap = pad(b"\n".join(nums) + draw(st.sampled_from([b"\n", b""])))
        recs = rec(b"GNU.sparse.major", b"1") + rec(b"GNU.sparse.minor", b"0") + \
            rec(b"GNU.sparse.realsize", draw(st.sampled_from([b"10", b"600", b"0", b"x"])))
        return xhdr(recs) + reg(b"GNUSparseFile.0/s", smap + data)
    if kind == "oldsparse":
        ents = draw(st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 600)), max_size=6))
        at = {386 + i * 24: b"%011o\0%011o\0" % e for i, e in enumerate(ents[:4])}
        ext = bytearray(512)
        for i, e in enumerate(ents[4:]):
            ext[i * 24:i * 24 + 24] = b"%011o\0%011o\0" % e
        at[482] = b"\1" if len(ents) > 4 else b"\0"
        at[483] = b"%011o\0" % draw(st.integers(0, 3000))
        blk = block(name=b"old", typeflag=b"S", size=b"%011o\0" % len(data), magic=b"ustar  \0",
                    at=at)
        return blk + (bytes(ext) if len(ents) > 4 else b"") + pad(data)
    if kind == "raw":
        return draw(st.binary(min_size=1, max_size=600))
    if kind == "zero":
        return bytes(512)
    if kind in ("pax", "global"):
        recs = b"".join(rec(k, v) for k, v in draw(st.lists(st.tuples(_pax_keys, _pax_vals),
                                                            max_size=4)))
        if draw(st.booleans()):
            recs = draw(st.sampled_from([b"5 a=\n", b"3 x\n", b"20 path=x\n"])) + recs
        return xhdr(recs, flag=b"g" if kind == "global" else b"x")
    if kind == "long":
        return block(name=b"././@LongLink", typeflag=draw(st.sampled_from([b"L", b"K"])),
                     size=b"%011o\0" % len(data), magic=b"ustar  \0") + pad(data)
    size = draw(st.one_of(st.just(b"%011o\0" % len(data)), _num12))
    fields = dict(name=draw(_names), typeflag=draw(_flags), magic=draw(_magic), size=size,
                  mode=draw(_num8), uid=draw(_num8), gid=draw(_num8), mtime=draw(_num12),
                  linkname=draw(_names), devmajor=draw(_num8))
    if kind == "hdr":
        fields["at"] = {draw(st.integers(0, 511)): draw(st.binary(min_size=1, max_size=4))}
    return block(**fields) + pad(data)


@st.composite
def _archive(draw) -> bytes:
    data = b"".join(draw(st.lists(_member(), min_size=1, max_size=5)))
    data += draw(st.sampled_from([END, bytes(512), b"", END + b"junk"]))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return data


@settings(max_examples=int(os.environ.get("TARREAD_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=_archive())
def test_hypothesis_against_go(gotarread, data):
    assert_same(gotarread, data, "generated archive")


def test_sparse_map_with_many_entries_is_linear():
    """100k fragments (a 1 MiB PAX 0.1 map) read in well under the time a quadratic walk takes."""
    import time
    n = 100_000
    smap = b",".join(b"%d,1" % (2 * i) for i in range(n))
    recs = rec(b"GNU.sparse.major", b"0") + rec(b"GNU.sparse.minor", b"1") + \
        rec(b"GNU.sparse.size", b"%d" % (2 * n)) + rec(b"GNU.sparse.numblocks", b"%d" % n) + \
        rec(b"GNU.sparse.map", smap)
    t = time.monotonic()
    a = read_all(xhdr(recs) + reg(b"s", b"d" * n) + END)
    assert a.error is None and a.entries[0].content == b"d\0" * n
    assert time.monotonic() - t < 20


class _Dribble(io.RawIOBase):
    """A pipe-like stream: every read returns at most a few bytes."""

    def __init__(self, data: bytes, most: int):
        self.b, self.most = io.BytesIO(data), most

    def readable(self):
        return True

    def read(self, n=-1):
        return self.b.read(min(self.most, n) if n >= 0 else self.most)


def _summary(r: TarReader) -> tuple:
    out, err = [], None
    try:
        for h, c in r:
            out.append((vars(h).copy(), c.hash(chunk=777)))
    except TarError as e:
        err = (e.text, e.index)
    return out, err


@settings(max_examples=int(os.environ.get("TARREAD_EXAMPLES", "300")), deadline=None)
@given(data=_archive(), most=st.integers(1, 700))
def test_short_reads_change_nothing(data, most):
    """Headers, contents and errors are the same whether the stream returns whole blocks or a
    few bytes per read."""
    assert _summary(TarReader(_Dribble(data, most))) == _summary(TarReader(io.BytesIO(data)))
