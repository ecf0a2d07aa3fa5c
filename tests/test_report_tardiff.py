"""Pinned explanations of tar differences, on hand-built tars.

Go-correct tars come from the reference writer (harness.reference.gotar); the differing side
is built by editing raw header bytes (checksum recomputed unless the test is about it) or by
Python's tarfile, whose output differs from Go's in known ways.
"""
from __future__ import annotations

import io
import random
import tarfile

import pytest

from harness.reference.gotar import Format, Header, pax_record, write_tar
from harness.report.explain import explain_tar, list_entries
from harness.report.tardiff import BLOCK, FIELD_AT, diff_tars, parse_tar

T = 1700000000


def hdr(name: bytes, **kw) -> Header:
    kw.setdefault("mode", 0o644)
    kw.setdefault("mtime_ns", T * 10**9)
    kw.setdefault("format", Format.PAX)
    return Header(name=name, **kw)


def gotar(*entries) -> bytes:
    return write_tar([(h, c) for h, c in entries])


BASE = [(hdr(b"a/", typeflag=b"5", mode=0o755), b""),
        (hdr(b"a/f1", size=5, uid=1000, gid=1000), b"hello"),
        (hdr(b"b", size=0), b"")]


def base(**changes) -> bytes:
    es = list(BASE)
    for i, h in changes.items():
        k = int(i[1:])
        es[k] = (h, es[k][1])
    return gotar(*es)


def checksum(block: bytearray) -> None:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)


def set_field(tar: bytes, block_off: int, field: str, value: bytes, fix_sum: bool = True) -> bytes:
    t = bytearray(tar)
    off, ln = FIELD_AT[field]
    assert len(value) == ln, (field, value)
    t[block_off + off:block_off + off + ln] = value
    if fix_sum:
        blk = t[block_off:block_off + BLOCK]
        checksum(blk)
        t[block_off:block_off + BLOCK] = blk
    return bytes(t)


def raw_block(name: bytes, typeflag: bytes, size: int, **fields: bytes) -> bytes:
    """A PAX/USTAR header block, Go-style field encoding unless overridden."""
    b = bytearray(BLOCK)
    vals = {"name": name.ljust(100, b"\0"), "mode": b"0000000\0", "uid": b"0000000\0",
            "gid": b"0000000\0", "size": b"%011o\0" % size, "mtime": b"00000000000\0",
            "typeflag": typeflag, "magic": b"ustar\0", "version": b"00"}
    vals.update(fields)
    for k, v in vals.items():
        off, ln = FIELD_AT[k]
        b[off:off + len(v)] = v
    checksum(b)
    return bytes(b)


def pax_entry(name: bytes, records: list[bytes], **fields) -> bytes:
    body = b"".join(records)
    return raw_block(name, b"x", len(body), **fields) + body + bytes(-len(body) % BLOCK)


# -- identical / basic -----------------------------------------------------------------------

def test_identical_is_none():
    assert diff_tars(base(), base()) is None
    assert explain_tar(base(), base()).startswith("the tars are identical")


def test_uid_differs():
    go, ref = base(), base(e1=hdr(b"a/f1", size=5, uid=1001, gid=1000))
    d = diff_tars(go, ref, "go-erofs", "ref@containerd")
    assert d.index == 1 and d.name == '"a/f1"'
    assert [(f.field, f.go, f.ref) for f in d.effective] == [("uid", "1000", "1001")]
    text = d.render()
    assert text.splitlines()[0] == 'tar differs at entry #1 "a/f1": uid go-erofs=1000 ref@containerd=1001'
    for s in ("a/f1", "uid", "1000", "1001", "108-115 uid", "^^", "0001750", "0001751"):
        assert s in text
    assert len(text.splitlines()) <= 40


def test_name_differs():
    d = diff_tars(base(), base(e2=hdr(b"c", size=0)))
    assert d.index == 2
    text = d.render()
    assert '"b"' in text and '"c"' in text
    assert "next entries" in text


def test_mode_hint_and_format():
    d = diff_tars(base(), base(e1=hdr(b"a/f1", size=5, uid=1000, gid=1000, mode=0o100644)))
    text = d.render()
    assert "mode: go=0644  ref=100644" in text
    assert "no file-type bits" in text


def test_data_differs():
    d = diff_tars(base(), base(e1=(hdr(b"a/f1", size=5, uid=1000, gid=1000))).replace(b"hello", b"hellO"))
    assert [f.field for f in d.effective] == ["data"]
    assert "from byte 4" in d.render()


# -- missing / extra entries -----------------------------------------------------------------

def test_missing_entry():
    go = gotar(BASE[0], BASE[2])
    d = diff_tars(go, base())
    assert d.only_ref == ['"a/f1"'] and not d.only_go
    text = d.render()
    assert 'go lacks "a/f1"' in text.splitlines()[0]
    assert 'only in ref: "a/f1"' in text


def test_extra_entries_at_end():
    more = [(hdr(b"z%d" % i), b"") for i in range(6)]
    d = diff_tars(gotar(*BASE, *more), base())
    assert d.index == 3 and d.only_go[:2] == ['"z0"', '"z1"']
    assert "(+2 more)" in d.only_go[-1]
    assert "has extra" in d.render().splitlines()[0]


# -- same entry, different bytes: the Go rule behind it --------------------------------------

def test_ustar_vs_pax_same_entry():
    go = gotar((hdr(b"f", uid=1000), b""))
    main = go[:BLOCK]
    ref = pax_entry(b"PaxHeaders.0/f", [pax_record(b"uid", b"1000")]) + main + bytes(1024)
    d = diff_tars(go, ref)
    assert not d.effective
    assert d.raw[0].field == "format" and (d.raw[0].go, d.raw[0].ref) == ("USTAR", "PAX")
    text = d.render()
    assert "USTAR vs PAX format choice: Go uses USTAR when every field fits" in text
    assert "PAX records: uid" in text


def test_pax_header_name_and_devmajor():
    rec = [pax_record(b"uid", b"3000000")]
    h = hdr(b"bigid", uid=3000000)
    go = gotar((h, b""))
    main = go[2 * BLOCK:3 * BLOCK]
    ref = pax_entry(b"././@PaxHeader", rec, devmajor=b"0000000\0", devminor=b"0000000\0") + main + bytes(1024)
    d = diff_tars(go, ref)
    assert not d.effective
    fields = {(f.where, f.field): f for f in d.raw}
    assert "PaxHeaders.0 name" in fields[("PAX header", "name")].rule
    assert "devmajor/devminor NUL in PAX header" in fields[("PAX header", "devmajor")].rule
    text = d.render()
    assert "PAX header block" in text and "0-99 name" in text


def test_pax_record_order_and_length():
    h = hdr("ünï".encode(), uid=3000000)
    go = gotar((h, b""))
    parsed = parse_tar(go)
    e = parsed.entries[0]
    recs = [r.raw for r in e.pax_records]
    assert [r.key for r in e.pax_records] == [b"path", b"uid"]
    main = go[e.header.offset:e.header.offset + BLOCK]
    reordered = pax_entry(e.pax.fields["name"].rstrip(b"\0"), recs[::-1]) + main + bytes(1024)
    d = diff_tars(go, reordered)
    assert any("PAX record order: Go sorts the records by key" in f.rule for f in d.raw)
    text = d.render()
    assert "PAX record order" in text and "path, uid" in text and "uid, path" in text


def test_pax_record_length_prefix():
    go_body = [pax_record(b"path", b"x" * 120)]          # "130 path=xxx...\n"
    n = len(go_body[0])
    ref_body = [b"%04d" % n + go_body[0][go_body[0].index(b" "):]]   # "0130 path=..." is 1 longer
    ref_body = [b"%04d" % len(ref_body[0]) + ref_body[0][4:]]
    assert parse_tar(pax_entry(b"p", ref_body) + raw_block(b"a", b"0", 0) + bytes(1024)).problem is None
    main = raw_block(b"x" * 100, b"0", 0)
    go = pax_entry(b"PaxHeaders.0/xxx", go_body) + main + bytes(1024)
    ref = pax_entry(b"PaxHeaders.0/xxx", ref_body) + main + bytes(1024)
    d = diff_tars(go, ref)
    assert not d.effective
    assert any("PAX record length" in f.rule for f in d.raw)


def test_ustar_prefix_split():
    name = b"/".join([b"d" * 50, b"e" * 50, b"f" * 30])          # 132 bytes, ASCII
    go = gotar((hdr(name), b""))
    blk = parse_tar(go).entries[0].header
    assert blk.fields["prefix"].rstrip(b"\0") == b"d" * 50 + b"/" + b"e" * 50
    # cut at the first '/' instead of the last: prefix "ddd..", name "eee../fff.."
    ref = set_field(go, 0, "prefix", (b"d" * 50).ljust(155, b"\0"))
    ref = set_field(ref, 0, "name", (b"e" * 50 + b"/" + b"f" * 30).ljust(100, b"\0"))
    d = diff_tars(go, ref)
    assert not d.effective
    assert any("USTAR prefix split at the last '/' within 156 bytes" in f.rule for f in d.raw)


def test_checksum_encoding():
    go = base()
    stored = parse_tar(go).entries[1].header.num("chksum")
    ref = set_field(go, 512, "chksum", b"%07o\0" % stored, fix_sum=False)
    d = diff_tars(go, ref)
    assert not d.effective
    assert [f.field for f in d.raw] == ["chksum"]
    assert "checksum encoding: 6 octal digits, NUL, space" in d.render()


def test_bad_checksum():
    go = base()
    ref = set_field(go, 512, "chksum", b"000001\0 ", fix_sum=False)
    d = diff_tars(go, ref)
    assert d.ref_problem and "bad checksum" in d.ref_problem
    text = d.render()
    assert "bad checksum" in text and "a/f1" in text and "000001" in text


def test_numeric_encoding():
    go = base()
    ref = set_field(go, 512, "mode", b"000644 \0")
    d = diff_tars(go, ref)
    assert not d.effective
    assert d.raw[0].field == "mode" and "numeric field encoding" in d.raw[0].rule


def test_python_tarfile_devmajor_and_record_padding():
    go = gotar((hdr(b"a/f1", size=5, uid=1000), b"hello"))
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        ti = tarfile.TarInfo("a/f1")
        ti.size, ti.mtime, ti.mode, ti.uid = 5, T, 0o644, 1000
        tf.addfile(ti, io.BytesIO(b"hello"))
    d = diff_tars(go, bio.getvalue(), "go", "python")
    text = d.render()
    assert "devmajor/devminor" in text
    assert "record padding" in (d.ref_problem or "")
    # with the headers equalised, only the end differs
    fixed = bytearray(bio.getvalue())
    fixed[:BLOCK] = go[:BLOCK]
    d2 = diff_tars(go, bytes(fixed), "go", "python")
    assert d2.index is None
    assert "two 512-byte end blocks, no 10 KiB record padding" in d2.render()


# -- malformed input: never raise ------------------------------------------------------------

def test_trailing_garbage():
    go = base()
    d = diff_tars(go, go + b"garbage")
    assert d.index is None
    text = d.render()
    assert "trailing bytes" in text and "end of archive" in text
    assert "two 512-byte end blocks" in text


def test_missing_end_blocks():
    go = base()
    p = parse_tar(go[:-1024])
    assert "missing end blocks" in p.problem
    p1 = parse_tar(go[:-512])
    assert "only one end block" in p1.problem
    d = diff_tars(go, go[:-1024])
    assert d.index is None and "end of archive" in d.render()


def test_truncated_tar():
    go = base()
    for cut in (0, 1, 511, 512, 700, 1024 + 3, 1536 + 2):
        p = parse_tar(go[:cut])
        assert p.problem, cut
        text = explain_tar(go, go[:cut])
        assert text and len(text.splitlines()) <= 40
    assert "truncated" in parse_tar(go[:1024 + 3]).problem
    d = diff_tars(go, go[:1024 + 3])
    assert d.index == 1 and "truncated" in d.render()


@pytest.mark.parametrize("seed", range(40))
def test_fuzz_never_raises(seed):
    rnd = random.Random(seed)
    good = base()
    kind = seed % 4
    if kind == 0:
        data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 3000)))
    elif kind == 1:
        b = bytearray(good)
        for _ in range(rnd.randrange(1, 20)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        data = bytes(b)
    elif kind == 2:
        data = good[:rnd.randrange(len(good))] + bytes(rnd.randrange(256) for _ in range(rnd.randrange(600)))
    else:
        b = bytearray(good)
        off = 512 + FIELD_AT["size"][0]
        b[off:off + 12] = rnd.choice([b"77777777777\0", b"\xff" * 12, b"zzzzzzzzzzz\0", b"\x80" + bytes(10) + b"\x01"])
        data = bytes(b)
    parse_tar(data)
    list_entries(data)
    explain_tar(good, data)
    explain_tar(data, good)


# -- listing ---------------------------------------------------------------------------------

def test_list_entries():
    tar = gotar(
        (hdr(b"d/", typeflag=b"5", mode=0o755), b""),
        (hdr(b"d/f", size=3, uid=1000, gid=100, mode=0o4755), b"abc"),
        (hdr(b"d/l", typeflag=b"2", linkname=b"f", mode=0o777), b""),
        (hdr(b"d/h", typeflag=b"1", linkname=b"d/f"), b""),
        (hdr(b"chr", typeflag=b"3", devmajor=1, devminor=3), b""),
        (hdr(b"cap", pax={"SCHILY.xattr.security.capability": b"\x01\x00"}), b""),
        (hdr(b"d/.wh.x", mode=0, mtime_ns=0, format=Format.UNKNOWN), b""),
    )
    lines = list_entries(tar)
    assert lines[0] == "drwxr-xr-x       0/0        0 2023-11-14 22:13:20 d/"
    assert lines[1] == "-rwsr-xr-x  1000/100        3 2023-11-14 22:13:20 d/f"
    assert lines[2].startswith("lrwxrwxrwx") and lines[2].endswith("d/l -> f")
    assert lines[3].startswith("h") and lines[3].endswith("d/h link to d/f")
    assert lines[4].startswith("c") and " 1,3 " in lines[4]
    assert lines[5].endswith("cap  [pax: SCHILY.xattr.security.capability]")
    assert lines[6] == "----------       0/0        0 1970-01-01 00:00:00 d/.wh.x"
    assert list_entries(tar[:700])[-1].startswith("# problem: ")


def test_render_stays_one_screen():
    many = [(hdr(b"x/" + b"n" * 90 + b"%d" % i, size=1, uid=i), b"1") for i in range(5)]
    other = [(hdr(b"x/" + b"m" * 90 + b"%d" % i, size=1, uid=i + 7, gid=9, mode=0o600), b"2")
             for i in range(5)]
    text = explain_tar(gotar(*many), gotar(*other))
    assert len(text.splitlines()) <= 40
    full = diff_tars(gotar(*many), gotar(*other)).render(max_lines=None)
    assert len(full.splitlines()) >= len(text.splitlines())


def test_typeflag_rega():
    go = base()
    ref = set_field(go, 1536, "typeflag", b"\0")
    d = diff_tars(go, ref)
    assert not d.effective
    assert d.raw[0].field == "typeflag" and "TypeRegA" in d.render()
