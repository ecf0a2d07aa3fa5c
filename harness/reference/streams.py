"""DecompressStream with Go's semantics, streamed (pkg/archive/compression as containerd's
erofs Apply reads it; spec §5; docs/apply.md).

    iter_stream(source, reject_reserved_gzip_flags=False) -> chunks of the decoded stream

gzip and zstd (detected by magic, as DetectCompression does) are decoded with the exact errors
and partial output of Go's readers; anything else passes through. Memory stays bounded whatever
the blob size: the blob is read in chunks from a seekable binary file and the decoded stream is
handed on in chunks of at most 1 MiB. The one exception is corrupt or truncated deflate data:
what Go hands on before such an error is found by replaying the member with Go's input
discipline (``_GoInflate``), in memory.
"""
from __future__ import annotations

import hashlib
import io
import zlib
from collections import deque
from collections.abc import Iterator

READ = 1 << 16           # bytes read from the blob at a time
OUT = 1 << 20            # largest decoded chunk handed on
HOLD = 1 << 20           # decoded gzip bytes held back until Go's partial output is certain
GZIP_HEADER_MAX = 10 + 2 + 65535 + 512 + 512 + 2 + 1024   # FEXTRA, FNAME, FCOMMENT, FHCRC, slack

# -- stream detection (pkg/archive/compression.DetectCompression) ------------------------------
GZIP_MAGIC = b"\x1f\x8b\x08"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_SKIPPABLE_START = 0x184D2A50
ZSTD_SKIPPABLE_MASK = 0xFFFFFFF0


def detect_compression(data: bytes) -> str:
    """'gzip', 'zstd' or '' from the first bytes, exactly as DecompressStream decides (it peeks
    10 bytes; a skippable zstd frame needs at least 8)."""
    head = data[:10]
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if len(head) >= 8 and int.from_bytes(head[:4], "little") & ZSTD_SKIPPABLE_MASK == ZSTD_SKIPPABLE_START:
        return "zstd"
    return ""


class DecompressError(Exception):
    """A stream that DecompressStream accepted by magic but that does not decode.

    ``message`` is Go's error text where known; ``partial`` is what decoded before the failure
    (Go streams it to mkfs before the error surfaces); ``header`` is True when Go fails while
    building the stream processor (gzip header), not while reading."""

    def __init__(self, message: str, partial: bytes = b"", header: bool = False):
        super().__init__(message)
        self.message = message
        self.partial = partial
        self.header = header


class _GoInflate:
    """RFC 1951 decoding with the exact input discipline of Go's compress/flate (and
    klauspost's, which copies it), used only when zlib reports a truncated or corrupt stream:
    it yields what Go hands on before the error and Go's error text ('unexpected EOF', 'flate:
    corrupt input before offset N'). The one behaviour that makes its output differ from
    zlib's on truncation: a literal/length symbol is only decoded once at least as many bits
    as the end-of-block code's length are available.

    ``klauspost`` (containerd v2.4.0+, klauspost/compress/flate) adds three differences: in a
    non-final dynamic block it waits for 10 more bits than that before a literal/length symbol,
    and a stored block takes the whole bytes of that read-ahead as its first LEN/NLEN bytes and
    counts them a second time in the offset of a later 'corrupt input' error; an empty code
    keeps the lookup table the decoder held before (an empty literal/length code decodes with
    the block's code-length code, an empty distance code with the last dynamic block's)."""

    _ORDER = (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15)
    _LEN_BASE = (3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83,
                 99, 115, 131, 163, 195, 227, 258)
    _LEN_EXTRA = (0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5,
                  5, 0)

    class _Stop(Exception):
        def __init__(self, message):
            self.message = message

    def __init__(self, data: bytes, klauspost: bool = False):
        self.data, self.pos, self.b, self.nb = data, 0, 0, 0
        self.out = bytearray()
        self.klauspost = klauspost
        self.recounted = 0          # bytes klauspost counts twice (stored blocks after read-ahead)
        self.last_hd = (0, {})      # klauspost: the distance table an empty distance code keeps

    def _corrupt(self):
        raise self._Stop(f"flate: corrupt input before offset {self.pos + self.recounted}")

    def _more(self):
        if self.pos >= len(self.data):
            raise self._Stop("unexpected EOF")
        self.b |= self.data[self.pos] << self.nb
        self.pos += 1
        self.nb += 8

    def _bits(self, n):
        while self.nb < n:
            self._more()
        v = self.b & ((1 << n) - 1)
        self.b >>= n
        self.nb -= n
        return v

    @staticmethod
    def _table(lengths):
        """(min, {(length, reversed code): symbol}) or None when the code is incomplete."""
        count = [0] * 16
        for n in lengths:
            if n:
                count[n] += 1
        used = [n for n in lengths if n]
        if not used:
            return (0, {})
        lo, hi = min(used), max(used)
        code, nextcode = 0, [0] * 16
        for i in range(lo, hi + 1):
            code <<= 1
            nextcode[i] = code
            code += count[i]
        if code != 1 << hi and not (code == 1 and hi == 1):
            return None
        table = {}
        for sym, n in enumerate(lengths):
            if n:
                c = nextcode[n]
                nextcode[n] += 1
                rev = int(format(c, f"0{n}b")[::-1], 2)
                table[(n, rev)] = sym
        return (lo, table)

    def _sym(self, h, start=None):
        lo, table = h
        n = start if start is not None else lo
        while True:
            while self.nb < n:
                self._more()
            # the shortest code that matches the available bits, as Go's chunk lookup finds it
            for k in range(lo, min(self.nb, 15) + 1):
                sym = table.get((k, self.b & ((1 << k) - 1)))
                if sym is not None:
                    self.b >>= k
                    self.nb -= k
                    return sym
            # Go's lookup entry is empty: an empty code, the unused half of a lone one-bit
            # code, or no code of up to 15 bits matches
            if not table or (len(table) == 1 and lo == 1 and self.nb >= 1) or self.nb >= 15:
                self._corrupt()
            n = self.nb + 1

    _FIXED = None

    def run(self) -> str | None:
        """Decode to the end; returns None or Go's error text. self.out holds the output and
        self.pos the input bytes consumed."""
        try:
            final = False
            while not final:
                final = self._bits(1) == 1
                typ = self._bits(2)
                if typ == 0:
                    self.b >>= self.nb & 7                 # the rest of the current byte
                    held = (self.nb >> 3) if self.klauspost else 0
                    head = self.b.to_bytes(held, "little")   # b holds just those bytes
                    self.b = self.nb = 0
                    self.recounted += held
                    need = 4 - held
                    if len(self.data) - self.pos < need:
                        self.pos = len(self.data)
                        raise self._Stop("unexpected EOF")
                    lens = head + self.data[self.pos:self.pos + need]
                    n = int.from_bytes(lens[:2], "little")
                    nn = int.from_bytes(lens[2:4], "little")
                    self.pos += need
                    if nn != (~n & 0xFFFF):
                        self._corrupt()
                    chunk = self.data[self.pos:self.pos + n]
                    self.out += chunk
                    self.pos += len(chunk)
                    if len(chunk) < n:
                        raise self._Stop("unexpected EOF")
                    continue
                if typ == 1:
                    if _GoInflate._FIXED is None:
                        _GoInflate._FIXED = self._table([8] * 144 + [9] * 112 + [7] * 24 + [8] * 8)
                    hl, hd, eob = _GoInflate._FIXED, None, 7
                elif typ == 2:
                    hl, hd, eob = self._dynamic()
                    if self.klauspost and not final:
                        eob += 10   # the smallest next block: a fixed one with only end-of-block
                else:
                    self._corrupt()
                self._block(hl, hd, max(hl[0], eob))
        except self._Stop as stop:
            return stop.message
        return None

    def _dynamic(self):
        while self.nb < 14:
            self._more()
        nlit = self._bits(5) + 257
        if nlit > 286:
            self._corrupt()
        ndist = self._bits(5) + 1
        if ndist > 30:
            self._corrupt()
        nclen = self._bits(4) + 4
        codebits = [0] * 19
        for i in range(nclen):
            codebits[self._ORDER[i]] = self._bits(3)
        h1 = self._table(codebits)
        if h1 is None:
            self._corrupt()
        lengths = []
        while len(lengths) < nlit + ndist:
            x = self._sym(h1)
            if x < 16:
                lengths.append(x)
                continue
            if x == 16:
                if not lengths:
                    self._corrupt()
                rep, val = 3 + self._bits(2), lengths[-1]
            elif x == 17:
                rep, val = 3 + self._bits(3), 0
            else:
                rep, val = 11 + self._bits(7), 0
            if len(lengths) + rep > nlit + ndist:
                self._corrupt()
            lengths += [val] * rep
        hl, hd = self._table(lengths[:nlit]), self._table(lengths[nlit:])
        if hl is None or hd is None:
            self._corrupt()
        if self.klauspost:
            if not hl[1]:
                hl = h1
            if hd[1]:
                self.last_hd = hd
            else:
                hd = self.last_hd
        return hl, hd, lengths[256]

    def _block(self, hl, hd, lit_min):
        out = self.out
        while True:
            v = self._sym(hl, lit_min)
            if v < 256:
                out.append(v)
                continue
            if v == 256:
                return
            if v > 285:
                self._corrupt()
            length = self._LEN_BASE[v - 257] + self._bits(self._LEN_EXTRA[v - 257])
            if hd is None:
                dist = int(format(self._bits(5), "05b")[::-1], 2)
            else:
                dist = self._sym(hd)
            if dist < 4:
                dist += 1
            elif dist < 30:
                nb = (dist - 2) >> 1
                dist = (1 << (nb + 1)) + 1 + (((dist & 1) << nb) | self._bits(nb))
            else:
                self._corrupt()
            if dist > len(out):
                self._corrupt()
            for _ in range(length):
                out.append(out[-dist])


def _gzip_header_len(data: bytes, reject_reserved: bool) -> int:
    """Length of the gzip member header at the start of ``data`` (Go's gzip.Reader.readHeader),
    or DecompressError (header=True) with Go's text."""
    if len(data) < 10:
        raise DecompressError("unexpected EOF", header=True)
    if data[:3] != GZIP_MAGIC:
        raise DecompressError("gzip: invalid header", header=True)
    flg = data[3]
    if reject_reserved and flg & 0xE0:
        raise DecompressError("gzip: invalid header", header=True)
    pos = 10
    if flg & 0x04:                                            # FEXTRA
        if len(data) < pos + 2:
            raise DecompressError("unexpected EOF", header=True)
        xlen = int.from_bytes(data[pos:pos + 2], "little")
        pos += 2 + xlen
        if len(data) < pos:
            raise DecompressError("unexpected EOF", header=True)
    for bit in (0x08, 0x10):                                  # FNAME, FCOMMENT
        if flg & bit:
            nul = data.find(b"\0", pos, pos + 512)
            if nul < 0:
                raise DecompressError("unexpected EOF" if len(data) < pos + 512
                                      else "gzip: invalid header", header=True)
            pos = nul + 1
    if flg & 0x02:                                            # FHCRC
        if len(data) < pos + 2:
            raise DecompressError("unexpected EOF", header=True)
        if int.from_bytes(data[pos:pos + 2], "little") != zlib.crc32(data[:pos]) & 0xFFFF:
            raise DecompressError("gzip: invalid header", header=True)
        pos += 2
    return pos



class Source:
    """A seekable binary file read forward in chunks, with bytes pushed back in front."""

    def __init__(self, f):
        self.f = f
        self.buf = b""
        f.seek(0, io.SEEK_END)
        self.size = f.tell()
        f.seek(0)

    def tell(self) -> int:
        return self.f.tell() - len(self.buf)

    def seek(self, pos: int):
        self.buf = b""
        self.f.seek(pos)

    def remaining(self) -> int:
        return self.size - self.tell()

    def read(self, n: int) -> bytes:
        if self.buf:
            out, self.buf = self.buf[:n], self.buf[n:]
            if len(out) < n:
                out += self.f.read(n - len(out))
            return out
        return self.f.read(n)

    def peek(self, n: int) -> bytes:
        if len(self.buf) < n:
            self.buf += self.f.read(n - len(self.buf))
        return self.buf[:n]

    def unread(self, data: bytes):
        self.buf = data + self.buf

    def chunks(self) -> Iterator[bytes]:
        while True:
            c = self.read(READ)
            if not c:
                return
            yield c


def check_processor(source: Source, *, reject_reserved_gzip_flags: bool = False):
    """The errors Go reports while building the stream processor (the first gzip header), as
    DecompressError(header=True); reads nothing."""
    if detect_compression(source.peek(10)) == "gzip":
        _gzip_header_len(source.peek(GZIP_HEADER_MAX), reject_reserved_gzip_flags)


def iter_stream(source: Source, *, reject_reserved_gzip_flags: bool = False,
                klauspost_inflate: bool = False) -> Iterator[bytes]:
    """DecompressStream read to the end, in chunks. A decoding error is raised as
    DecompressError (Go's text) after every chunk Go hands on before it; its ``partial`` is
    empty (the chunks were already yielded). ``klauspost_inflate``: see _GoInflate."""
    kind = detect_compression(source.peek(10))
    if kind == "gzip":
        yield from _iter_gunzip(source, reject_reserved_gzip_flags, klauspost_inflate)
    elif kind == "zstd":
        yield from _iter_unzstd(source)
    else:
        yield from source.chunks()


def decompress_stream(data: bytes, *, reject_reserved_gzip_flags: bool = False,
                      klauspost_inflate: bool = False) -> bytes:
    """iter_stream over bytes, joined; a DecompressError carries the output decoded before it.

    harness/reference/compression.py's ``decompress`` decodes the same valid streams (the tests
    check that) but is lenient the way Python's gzip is (trailing zero padding is accepted) and
    raises without the partial output, so Apply uses this decoder."""
    out: list[bytes] = []
    try:
        for chunk in iter_stream(Source(io.BytesIO(data)),
                                 reject_reserved_gzip_flags=reject_reserved_gzip_flags,
                                 klauspost_inflate=klauspost_inflate):
            out.append(chunk)
    except DecompressError as e:
        raise DecompressError(e.message, b"".join(out), e.header) from None
    return b"".join(out)


class StreamMismatch(RuntimeError):
    """The streamed output and Go's replay disagree (an engine bug, never a result)."""


def _iter_gunzip(src: Source, reject_reserved: bool, klauspost: bool) -> Iterator[bytes]:
    """Multi-member gzip exactly as Go's gzip.Reader reads it. After a member, EOF ends the
    stream, 1–9 bytes are 'unexpected EOF' and anything that is not a gzip header is 'gzip:
    invalid header' (so zero padding after the last member fails, unlike Python's gzip).
    The first member's header errors are header=True (Go fails building the processor)."""
    first = True
    while True:
        try:
            hlen = _gzip_header_len(src.peek(GZIP_HEADER_MAX), reject_reserved)
        except DecompressError as e:
            raise DecompressError(e.message, header=first) from None
        src.read(hlen)
        body_start = src.tell()
        d = zlib.decompressobj(-15)
        crc = size = 0
        held: deque[bytes] = deque()
        held_size = given = 0
        given_hash = hashlib.sha256()
        try:
            for chunk in src.chunks():
                data = chunk
                while data and not d.eof:
                    out = d.decompress(data, OUT)
                    data = d.unconsumed_tail
                    if not out:
                        continue
                    crc, size = zlib.crc32(out, crc), size + len(out)
                    held.append(out)
                    held_size += len(out)
                    # zlib may decode a little further than Go before an error: hold the end back
                    while held_size - len(held[0]) >= HOLD:
                        c = held.popleft()
                        held_size -= len(c)
                        given += len(c)
                        given_hash.update(c)
                        yield c
                if d.eof:
                    break
            ok = d.eof
        except zlib.error:
            ok = False
        if not ok:
            # Truncated or corrupt: replay with Go's discipline for its partial output and text.
            src.seek(body_start)
            go = _GoInflate(src.read(src.remaining()), klauspost)
            message = go.run() or "unexpected EOF"
            out = bytes(go.out)
            if len(out) < given or hashlib.sha256(out[:given]).digest() != given_hash.digest():
                raise StreamMismatch("gzip: the streamed output is not a prefix of Go's partial "
                                     "output (raise HOLD)")
            if len(out) > given:
                yield out[given:]
            raise DecompressError(message)
        yield from held
        src.unread(d.unused_data)
        tail = src.read(8)
        if len(tail) < 8:
            raise DecompressError("unexpected EOF")
        if int.from_bytes(tail[:4], "little") != crc or \
                int.from_bytes(tail[4:8], "little") != size & 0xFFFFFFFF:
            raise DecompressError("gzip: invalid checksum")
        first = False
        if not src.remaining():
            return


def _zstd_message(err: Exception) -> str:
    text = str(err)
    return "CRC check failed" if "checksum" in text else f"zstd: {text}"


def _frame_slices(src: Source) -> Iterator[bytes]:
    """The zstd frame at src as input slices of one block each (3-byte header + content), so one
    decompress call makes at most one block (<= 128 KiB) of output whatever the ratio (an RLE
    block is 4 bytes for 128 KiB). Where the structure is not what it should be, the rest goes
    in READ-sized slices and the decoder reports the problem. Slicing never changes what the
    decoder outputs in total, only how it is cut."""
    head = src.peek(18)
    if len(head) < 5:
        yield from src.chunks()
        return
    fhd = head[4]
    single = (fhd >> 5) & 1
    size = 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + (single, 2, 4, 8)[fhd >> 6]
    yield src.read(size)
    while True:
        bh = src.peek(3)
        if len(bh) < 3:
            yield from src.chunks()
            return
        v = int.from_bytes(bh, "little")
        kind = (v >> 1) & 3
        if kind == 3:                                  # reserved block type
            yield from src.chunks()
            return
        yield src.read(3 + (1 if kind == 1 else v >> 3))
        if v & 1:                                      # last block
            if fhd & 4:                                # content checksum
                yield src.read(4)
            return


def _iter_unzstd(src: Source) -> Iterator[bytes]:
    """zstd frames (and skippable frames) as klauspost's decoder reads them: after a frame, EOF
    ends the stream, 1–3 bytes are 'unexpected EOF', another magic is 'invalid input: magic
    number mismatch'; a truncated frame is 'unexpected EOF'; a bad content checksum is 'CRC
    check failed' (after the frame's data was handed on)."""
    import zstandard  # dependency of the harness (pyproject)

    while src.remaining():
        head = src.peek(8)
        if len(head) < 4:
            raise DecompressError("unexpected EOF")
        magic = int.from_bytes(head[:4], "little")
        if magic & ZSTD_SKIPPABLE_MASK == ZSTD_SKIPPABLE_START:
            if len(head) < 8:
                raise DecompressError("unexpected EOF")
            skip = 8 + int.from_bytes(head[4:8], "little")
            if src.remaining() < skip:
                raise DecompressError("unexpected EOF")
            src.seek(src.tell() + skip)
            continue
        if head[:4] != ZSTD_MAGIC:
            raise DecompressError("invalid input: magic number mismatch")
        frame_start = src.tell()
        d = zstandard.ZstdDecompressor().decompressobj()
        fed = 0
        for piece in _frame_slices(src):
            try:
                out = d.decompress(piece)
            except Exception:  # noqa: BLE001 - the decoder's own error type
                # The failing piece's output is lost with the exception: decode the frame again
                # up to that piece (output already handed on), then the piece byte by byte.
                d = yield from _zstd_replay(src, frame_start, fed, piece)
                break
            fed += len(piece)
            if out:
                yield out
            if d.eof:
                break
        if not d.eof:
            raise DecompressError("unexpected EOF")
        src.unread(d.unused_data)


def _zstd_replay(src: Source, frame_start: int, fed: int, piece: bytes):
    import zstandard
    src.seek(frame_start)
    d = zstandard.ZstdDecompressor().decompressobj()
    done = 0
    for part in _frame_slices(src):
        if done >= fed:
            break
        d.decompress(part)
        done += len(part)
    for i in range(len(piece)):
        try:
            out = d.decompress(piece[i:i + 1])
        except Exception as e:  # noqa: BLE001 - the decoder's own error type
            raise DecompressError(_zstd_message(e)) from None
        if out:
            yield out
        if d.eof:                    # pragma: no cover - the error did not recur
            src.seek(frame_start + fed + i + 1)
            return d
    raise StreamMismatch("zstd: the decoder error did not recur on replay")  # pragma: no cover
