"""Turn outcomes into checks: Go vs the reference (must be identical), Go vs `spec` (each
difference attributed to named quirks), and the three-way view with the walking differ."""
from __future__ import annotations

import hashlib
import re
import struct
import zlib

from .result import Check, Outcome, Status
from .report.worddiff import word_diff
from .spool import bytes_equal

GO_GZIP_HEADER = bytes.fromhex("1f8b08000000000000ff")   # no name, mtime 0, XFL 0, OS unknown
ZSTD_MAGIC = bytes.fromhex("28b52ffd")
UNCOMPRESSED_LABEL = "containerd.io/uncompressed"


def normalise_error(text: str, lower_root: str | None = None) -> str:
    """Error texts carry mount paths that differ between runs; replace them by <lower>."""
    if lower_root:
        text = text.replace(lower_root, "<lower>")
    return re.sub(r"/[^\s:]*containerd-mount\d+", "<lower>", text)


def explain_tar(go: bytes, ref: bytes, go_label: str, ref_label: str,
                epoch: int | None = None) -> str:
    try:
        from .report.explain import explain_tar as explain
    except ImportError:  # the report package is optional for the core path
        return f"{go_label} and {ref_label} tars differ ({len(go)} vs {len(ref)} bytes)"
    return explain(go, ref, labels=(go_label, ref_label), epoch=epoch)


def descriptor_diff(gd: dict | None, rd: dict | None, labels: tuple[str, str]) -> str:
    """Two descriptors: each differing field with both values on one line, then both in full."""
    gd, rd = gd or {}, rd or {}
    g, r = labels
    fields = [f"{k} {g}={gd.get(k)!r} {r}={rd.get(k)!r}"
              for k in dict.fromkeys([*gd, *rd]) if gd.get(k) != rd.get(k)]
    return (f"descriptor differs: {'; '.join(fields)}\n  {g}: {gd or '(none)'}\n"
            f"  {r}: {rd or '(none)'}")


def same(a: Outcome, b: Outcome, lower_root: str | None = None) -> bool:
    if a.error or b.error:
        return bool(a.error and b.error) and \
            normalise_error(a.error, lower_root) == normalise_error(b.error, lower_root)
    return bytes_equal(a.tar, b.tar)


def check_pair(go: Outcome, ref: Outcome, expect_error: str | None, lower_root: str,
               epoch: int | None = None) -> Check:
    """Go vs the reference in the containerd profile: identical output, descriptor and labels.
    `epoch` (the scenario's SOURCE_DATE_EPOCH) lets the explanation recognise clamped mtimes."""
    name = f"compare {go.media_type}: {go.producer} vs {ref.producer}"
    problems = []
    if expect_error is not None:
        if not go.error:
            problems.append(f"expected containerd to fail with {expect_error!r}, but it produced a layer")
        elif expect_error not in go.error:
            problems.append(f"expected containerd's error to contain {expect_error!r}, got {go.error!r}")
    if go.error or ref.error:
        if not same(go, ref, lower_root):
            problems.append(f"errors differ ({go.producer} vs {ref.producer}):\n" + word_diff(
                normalise_error(go.error or "(no error)", lower_root),
                normalise_error(ref.error or "(no error)", lower_root), (go.producer, ref.producer)))
        return Check(name, Status.FAIL if problems else Status.PASS, "\n".join(problems))
    if not bytes_equal(go.tar, ref.tar):
        problems.append(explain_tar(go.tar, ref.tar, go.producer, ref.producer, epoch))
    problems += descriptor_problems(go, ref)
    problems += compression_problems(go)
    problems += framing_problems(go, ref)
    return Check(name, Status.FAIL if problems else Status.PASS, "\n".join(problems))


def descriptor_problems(go: Outcome, ref: Outcome) -> list[str]:
    out = []
    gd, rd = go.descriptor or {}, ref.descriptor or {}
    if gd.get("mediaType") != rd.get("mediaType"):
        out.append(f"descriptor mediaType: {go.producer}={gd.get('mediaType')!r} "
                   f"{ref.producer}={rd.get('mediaType')!r}")
    if not go.media_type.endswith(("+gzip", "+zstd")):
        for field in ("digest", "size"):
            if gd.get(field) != rd.get(field):
                out.append(f"descriptor {field}: {go.producer}={gd.get(field)!r} "
                           f"{ref.producer}={rd.get(field)!r}")
    gl, rl = go.labels.get(UNCOMPRESSED_LABEL), ref.labels.get(UNCOMPRESSED_LABEL)
    if gl != rl:
        out.append(f"label {UNCOMPRESSED_LABEL}: {go.producer}={gl!r} {ref.producer}={rl!r}")
    if gl is not None and go.tar is not None and gl != "sha256:" + hashlib.sha256(go.tar).hexdigest():
        out.append(f"label {UNCOMPRESSED_LABEL}={gl} is not the digest of the decompressed tar")
    if go.blob is not None and gd.get("digest") != "sha256:" + hashlib.sha256(go.blob).hexdigest():
        out.append(f"{go.producer} descriptor digest {gd.get('digest')} is not the blob's digest")
    return out


def compression_problems(go: Outcome) -> list[str]:
    """Compressed bytes differ between implementations; check the parts that must not."""
    blob, tar = go.blob, go.tar
    if blob is None or tar is None:
        return []
    if go.media_type.endswith("+gzip"):
        out = []
        if blob[:10] != GO_GZIP_HEADER:
            out.append(f"gzip header {blob[:10].hex()} is not Go's {GO_GZIP_HEADER.hex()}")
        crc, isize = struct.unpack("<II", blob[-8:])
        if crc != zlib.crc32(tar) or isize != len(tar) % 2**32:
            out.append(f"gzip trailer CRC32/ISIZE {crc:08x}/{isize} does not match the tar "
                       f"({zlib.crc32(tar):08x}/{len(tar) % 2**32})")
        return out
    if go.media_type.endswith("+zstd"):
        import zstandard
        out = []
        if blob[:4] != ZSTD_MAGIC:
            out.append(f"zstd magic {blob[:4].hex()} is not {ZSTD_MAGIC.hex()}")
        params = zstandard.get_frame_parameters(blob)
        if not params.has_checksum:
            out.append("zstd frame has no content checksum (klauspost's default writes one)")
        return out
    return []


def _gzip_members(blob) -> int:
    """How many gzip members a blob holds (a member ends where its deflate stream ends). The
    output is discarded in bounded pieces, so a large layer costs time, not memory."""
    n, rest = 0, memoryview(blob)
    while bytes(rest[:3]) == b"\x1f\x8b\x08":
        d = zlib.decompressobj(wbits=31)
        data = rest
        try:
            while data and not d.eof:
                d.decompress(data, 1 << 20)
                data = d.unconsumed_tail
                if not d.unconsumed_tail:
                    break
            while not d.eof and d.decompress(b"", 1 << 20):
                pass
        except zlib.error:
            break
        if not d.eof:
            break
        n += 1
        rest = memoryview(d.unused_data)
    return n


def _zstd_frames(blob) -> list[dict]:
    """The frames of a zstd blob, read from their headers (RFC 8878 §3.1) without decoding:
    content checksum flag and dictionary id per frame; skippable frames named as such."""
    out, pos, b = [], 0, memoryview(blob)
    while len(b) - pos >= 4:
        magic = int.from_bytes(b[pos:pos + 4], "little")
        if magic & 0xFFFFFFF0 == 0x184D2A50:
            out.append({"frame": "skippable"})
            pos += 8 + int.from_bytes(b[pos + 4:pos + 8], "little")
            continue
        if magic != 0xFD2FB528 or len(b) - pos < 5:
            out.append({"frame": "not zstd"})
            break
        fhd = b[pos + 4]
        single, checksum, dict_flag, fcs_flag = fhd >> 5 & 1, fhd >> 2 & 1, fhd & 3, fhd >> 6
        pos += 5 + (0 if single else 1)
        dsize = (0, 1, 2, 4)[dict_flag]
        dict_id = int.from_bytes(b[pos:pos + dsize], "little")
        pos += dsize + ((1 if single else 0), 2, 4, 8)[fcs_flag]
        while True:                                  # blocks: 3-byte headers
            if len(b) - pos < 3:
                out.append({"frame": "truncated"})
                return out
            h = int.from_bytes(b[pos:pos + 3], "little")
            last, btype, size = h & 1, h >> 1 & 3, h >> 3
            pos += 3 + (1 if btype == 1 else size)
            if last:
                break
        pos += 4 if checksum else 0
        out.append({"frame": "zstd", "checksum": bool(checksum), "dict_id": dict_id})
    return out


def framing_problems(go: Outcome, ref: Outcome) -> list[str]:
    """The reference's compressed blob against Go's: the parts that do not depend on the
    encoder must be equal (gzip: the whole 10-byte header, which carries the level in XFL and
    the OS byte, and one member; zstd: frames, content checksum, dictionary id). The deflate and
    zstd block bytes come from different encoders and are not compared."""
    gb, rb = go.blob, ref.blob
    if gb is None or rb is None:
        return []
    mt = go.media_type
    out = []
    if mt.endswith("+gzip"):
        gh, rh = bytes(gb[:10]), bytes(rb[:10])
        if gh != rh:
            fields = [f"{n} {g:#04x} vs {r:#04x}" for n, g, r in
                      zip(("ID1", "ID2", "CM", "FLG", "MTIME0", "MTIME1", "MTIME2", "MTIME3",
                           "XFL", "OS"), gh, rh) if g != r]
            out.append(f"gzip header: {go.producer} {gh.hex()} vs {ref.producer} {rh.hex()} "
                       f"({', '.join(fields)}; XFL carries the compression level: 0 = Go's "
                       f"default level 6, 2 = level 9, 4 = level 1; OS 0xff = unknown, as Go writes)")
        gm, rm = _gzip_members(gb), _gzip_members(rb)
        if gm != rm:
            out.append(f"gzip members: {go.producer} {gm} vs {ref.producer} {rm}")
        if ref.tar is not None and len(rb) >= 18:
            crc, isize = struct.unpack("<II", bytes(rb[-8:]))
            if (crc, isize) != (zlib.crc32(ref.tar), len(ref.tar) % 2**32):
                out.append(f"{ref.producer} gzip trailer CRC32/ISIZE {crc:08x}/{isize} does not "
                           "match its tar")
    elif mt.endswith("+zstd"):
        gf, rf = _zstd_frames(gb), _zstd_frames(rb)
        if gf != rf:
            out.append(f"zstd framing: {go.producer} {gf} vs {ref.producer} {rf}")
    return out


def name_quirk(check: Check, go: Outcome, ref: Outcome, profile, run_ref,
               lower_root: str | None) -> Check:
    """A failing Go-vs-reference check whose layer (or error) one registered quirk would
    produce: if the reference with that quirk toggled (added or removed) gives containerd's
    tar or error, say so first. run_ref(profile) -> Outcome runs the reference on the same
    state. Differences outside the tar (descriptor, compression framing) are left alone."""
    from .reference import profiles
    if check.status != Status.FAIL or (go.tar is None and not go.error) or same(go, ref, lower_root):
        return check
    for q in profiles.QUIRKS:
        if q.scope not in ("compare", "mounts"):
            continue
        on = profile.has(q.name)
        toggled = profile.without(q.name) if on else profile.with_quirks(q.name)
        if same(go, run_ref(toggled), lower_root):
            verb = ("without" if on else "with")
            head = (f"this difference is quirk {q.name}: the reference {verb} it matches "
                    f"containerd byte for byte, so the {profile.name} profile should "
                    f"{'not ' if on else ''}have it ({q.reference}: {q.description})")
            return Check(check.name, check.status, head + "\n" + check.explanation,
                         [q.name])
    return check


def check_walking(erofs: Outcome, walking: Outcome) -> Check:
    """Informational: where containerd's two differs disagree on the same change."""
    name = f"three-way {erofs.media_type}: {erofs.producer} vs {walking.producer}"
    failed = [f"{o.producer} failed: {o.error}" for o in (erofs, walking) if o.error]
    if failed:
        # A comparison that could not run is no agreement: say so, never pass.
        return Check(name, Status.SKIP, "not compared: " + "; ".join(failed), info=True)
    if same(erofs, walking):
        return Check(name, Status.PASS, "the erofs and walking differs agree", info=True)
    text = explain_tar(erofs.tar, walking.tar, erofs.producer, walking.producer)
    # The walking differ is not under test: a disagreement is information, not a failure.
    return Check(name, Status.PASS, "the erofs and walking differs disagree:\n" + text, info=True)
