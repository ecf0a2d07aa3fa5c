"""Reference Apply of containerd's EROFS differ (spec §5; docs/apply.md).

    apply(blob, descriptor, layer_dir, profile, mkfs_options=()) -> ApplyOutput

Pure parts (no I/O): ``classify`` (mediatypes.py), ``detect_compression``, ``layer_uuid``,
``default_mkfs_options``, ``mkfs_argv``, ``exit_status_text`` and the error wording. The only I/O
is writing ``<layer_dir>/layer.erofs`` and running ``mkfs.erofs`` with the decompressed stream on
its stdin (with a timeout; EPIPE ends the feed, as Go's os/exec does for Stdin, and the rest is
drained into the descriptor's digest).

The behaviour is read from ``profile.has(name)``; the switches are ``APPLY_SWITCHES`` in
mediatypes.py. What the reference does not model: custom stream processors (imgcrypt), dm-verity
(its superblock UUID is random), ApplyOpts, MountsToLayer and the content store.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import uuid as _uuid
import zlib
from dataclasses import dataclass, field

from .mediatypes import (APPLY_SWITCHES, ERROR, NATIVE_COPY, NATIVE_ZSTD, OCI_LAYER,  # noqa: F401
                         ApplyPath, HasSwitches, MediaTypeError, SwitchSet, classify,
                         diff_compression, switches_for_version)

MKFS = "mkfs.erofs"
LAYER_BLOB = "layer.erofs"
DEFAULT_TIMEOUT = 300.0
FEED_CHUNK = 32 << 10       # io.Copy's buffer size

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


def _feed_until_error(make, data: bytes, chunk: int = 4096):
    """Feed ``data`` to a fresh decompressor from ``make()`` and return (decompressor, output,
    consumed, exception). On an error, the output decoded before the failing input byte is kept
    (Go's decoders hand it on before they report the error); ``consumed`` is how many input
    bytes were fed when the error was raised."""
    d = make()
    out = []
    for off in range(0, len(data), chunk):
        try:
            out.append(d.decompress(data[off:off + chunk]))
        except Exception:
            break
        if getattr(d, "eof", False):
            return d, b"".join(out), off + chunk, None
    else:
        return d, b"".join(out), len(data), None
    # Replay: everything before the failing chunk, then that chunk byte by byte.
    d = make()
    out = [d.decompress(data[:off])] if off else []
    for i in range(off, min(off + chunk, len(data))):
        try:
            out.append(d.decompress(data[i:i + 1]))
        except Exception as e:  # noqa: BLE001 - the decoder's own error type
            return d, b"".join(out), i + 1, e
        if getattr(d, "eof", False):
            return d, b"".join(out), i + 1, None
    return d, b"".join(out), len(data), None  # pragma: no cover - the error did not recur


class _GoInflate:
    """RFC 1951 decoding with the exact input discipline of Go's compress/flate (and
    klauspost's, which copies it), used only when zlib reports a truncated or corrupt stream:
    it yields what Go hands on before the error and Go's error text ('unexpected EOF', 'flate:
    corrupt input before offset N'). The one behaviour that makes its output differ from
    zlib's on truncation: a literal/length symbol is only decoded once at least as many bits
    as the end-of-block code's length are available."""

    _ORDER = (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15)
    _LEN_BASE = (3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83,
                 99, 115, 131, 163, 195, 227, 258)
    _LEN_EXTRA = (0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5,
                  5, 0)

    class _Stop(Exception):
        def __init__(self, message):
            self.message = message

    def __init__(self, data: bytes):
        self.data, self.pos, self.b, self.nb = data, 0, 0, 0
        self.out = bytearray()

    def _corrupt(self):
        raise self._Stop(f"flate: corrupt input before offset {self.pos}")

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
        if n == 0:
            self._corrupt()
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
            if self.nb >= 15:
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
                    self.b = self.nb = 0
                    if len(self.data) - self.pos < 4:
                        self.pos = len(self.data)
                        raise self._Stop("unexpected EOF")
                    n = int.from_bytes(self.data[self.pos:self.pos + 2], "little")
                    nn = int.from_bytes(self.data[self.pos + 2:self.pos + 4], "little")
                    self.pos += 4
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


def _gunzip_go(data: bytes, reject_reserved: bool = False) -> bytes:
    """Multi-member gzip exactly as Go's gzip.Reader reads it. After a member, EOF ends the
    stream, 1–9 bytes are 'unexpected EOF' and anything that is not a gzip header is 'gzip:
    invalid header' (so zero padding after the last member fails, unlike Python's gzip).
    The first member's header errors happen when the stream processor is built."""
    out: list[bytes] = []
    rest = data
    first = True
    while True:
        try:
            hlen = _gzip_header_len(rest, reject_reserved)
        except DecompressError as e:
            raise DecompressError(e.message, b"".join(out), header=first) from None
        body = rest[hlen:]
        d = zlib.decompressobj(-15)
        try:
            chunk = d.decompress(body)
            ok = d.eof
        except zlib.error:
            ok = False
        if not ok:
            # Truncated or corrupt: replay with Go's discipline for its partial output and text.
            go = _GoInflate(body)
            message = go.run() or "unexpected EOF"
            out.append(bytes(go.out))
            raise DecompressError(message, b"".join(out))
        out.append(chunk)
        tail = d.unused_data
        if len(tail) < 8:
            raise DecompressError("unexpected EOF", b"".join(out))
        crc, isize = int.from_bytes(tail[:4], "little"), int.from_bytes(tail[4:8], "little")
        if crc != zlib.crc32(chunk) or isize != len(chunk) & 0xFFFFFFFF:
            raise DecompressError("gzip: invalid checksum", b"".join(out))
        rest = tail[8:]
        first = False
        if not rest:
            return b"".join(out)


def _unzstd_go(data: bytes) -> bytes:
    """zstd frames (and skippable frames) as klauspost's decoder reads them: after a frame, EOF
    ends the stream, 1–3 bytes are 'unexpected EOF', another magic is 'invalid input: magic
    number mismatch'; a truncated frame is 'unexpected EOF'; a bad content checksum is 'CRC
    check failed' (after the frame's data was handed on)."""
    import zstandard  # dependency of the harness (pyproject)

    out: list[bytes] = []
    rest = data
    while rest:
        if len(rest) < 4:
            raise DecompressError("unexpected EOF", b"".join(out))
        magic = int.from_bytes(rest[:4], "little")
        if magic & ZSTD_SKIPPABLE_MASK == ZSTD_SKIPPABLE_START:
            if len(rest) < 8:
                raise DecompressError("unexpected EOF", b"".join(out))
            size = int.from_bytes(rest[4:8], "little")
            if len(rest) < 8 + size:
                raise DecompressError("unexpected EOF", b"".join(out))
            rest = rest[8 + size:]
            continue
        if rest[:4] != ZSTD_MAGIC:
            raise DecompressError("invalid input: magic number mismatch", b"".join(out))
        d, chunk, consumed, err = _feed_until_error(
            lambda: zstandard.ZstdDecompressor().decompressobj(), rest)
        out.append(chunk)
        if err is not None:
            text = str(err)
            msg = "CRC check failed" if "checksum" in text else f"zstd: {text}"
            raise DecompressError(msg, b"".join(out))
        if not d.eof:
            raise DecompressError("unexpected EOF", b"".join(out))
        rest = d.unused_data if consumed >= len(rest) else d.unused_data + rest[consumed:]
    return b"".join(out)


def decompress_stream(data: bytes, *, reject_reserved_gzip_flags: bool = False) -> bytes:
    """DecompressStream + reading it to the end: gzip/zstd detected by magic are decoded with
    Go's semantics (errors: DecompressError with Go's text and the output decoded before the
    error); anything else passes through. ``reject_reserved_gzip_flags``: klauspost's gzip
    reader (containerd v2.4+) rejects a header with reserved FLG bits; Go's stdlib ignores them.

    harness/reference/compression.py's ``decompress`` decodes the same valid streams (the tests
    check that) but is lenient the way Python's gzip is (trailing zero padding is accepted) and
    raises without the partial output, so Apply uses this decoder."""
    kind = detect_compression(data)
    if kind == "gzip":
        return _gunzip_go(data, reject_reserved_gzip_flags)
    if kind == "zstd":
        return _unzstd_go(data)
    return data


# -- pure pieces of the tar conversion ---------------------------------------------------------
def layer_uuid(digest: str) -> str:
    """uuid.NewSHA1(uuid.NameSpaceURL, "erofs:blobs/" + desc.Digest): a version-5 UUID of the
    descriptor's (compressed) digest string, as given."""
    return str(_uuid.uuid5(_uuid.NAMESPACE_URL, "erofs:blobs/" + (digest or "")))


def default_mkfs_options(mkfs_options, profile: HasSwitches) -> list[str]:
    """NewErofsDiffer's AddDefaultMkfsOpts: '-b4096' first unless an option starts with '-b'."""
    opts = list(mkfs_options)
    if profile.has("mkfs-b4096") and not any(o.startswith("-b") for o in opts):
        return ["-b4096", *opts]
    return opts


def mkfs_argv(layer_path: str, mkfs_options, digest: str, profile: HasSwitches, *,
              tar_index: bool = False, mkfs: str = MKFS) -> list[str]:
    """The exact argv (argv[0] = ``mkfs``) of ConvertTarErofs / GenerateTarIndexAndAppendTar.
    Each mkfs option is one argv element: there is no shell splitting."""
    opts = default_mkfs_options(mkfs_options, profile)
    if tar_index:
        args = ["--tar=i", "--aufs", "--quiet", *opts]
        with_uuid = profile.has("tar-index-uuid")
    else:
        args = ["--tar=f", "--aufs", "--quiet", "-Enoinline_data", *opts]
        with_uuid = profile.has("mkfs-uuid")
    if with_uuid:
        args += ["-U", layer_uuid(digest)]
    return [mkfs, *args, layer_path]


# syscall.Signal.String() on Linux, for the signals mkfs can die of.
_GO_SIGNAL_NAMES = {
    signal.SIGABRT: "aborted", signal.SIGBUS: "bus error", signal.SIGFPE: "floating point exception",
    signal.SIGHUP: "hangup", signal.SIGILL: "illegal instruction", signal.SIGINT: "interrupt",
    signal.SIGKILL: "killed", signal.SIGPIPE: "broken pipe", signal.SIGQUIT: "quit",
    signal.SIGSEGV: "segmentation fault", signal.SIGTERM: "terminated", signal.SIGTRAP: "trace/breakpoint trap",
    signal.SIGXCPU: "CPU time limit exceeded", signal.SIGXFSZ: "file size limit exceeded",
}


def exit_status_text(returncode: int) -> str:
    """How Go's *exec.ExitError prints: 'exit status N' or 'signal: <name>'. (A core dump would
    add ' (core dumped)'; Python's subprocess cannot see that bit.)"""
    if returncode >= 0:
        return f"exit status {returncode}"
    sig = -returncode
    try:
        name = _GO_SIGNAL_NAMES.get(signal.Signals(sig)) or f"signal {sig}"
    except ValueError:
        name = f"signal {sig}"
    return f"signal: {name}"


def go_text(output: bytes) -> str:
    """mkfs's combined output as it appears in Go's error string sent through JSON (invalid
    UTF-8 becomes U+FFFD)."""
    return output.decode("utf-8", errors="replace")


def convert_error(output: bytes, status: str, profile: HasSwitches, *, tar_index: bool = False,
                  argv: list[str] | None = None) -> str:
    """Apply's error when mkfs fails: Go's ``fmt.Errorf("…: %s: %w", out, err)`` chain."""
    out = go_text(output)
    if tar_index:
        joined = " ".join((argv or [])[1:])
        return (f"failed to generate tar index: tar index generation failed with command "
                f"'mkfs.erofs {joined}': {out}: {status}")
    wrap = ("failed to convert tar to erofs" if profile.has("error-text-convert-tar-to-erofs")
            else "failed to convert erofs")
    return f"{wrap}: erofs apply failed: {out}: {status}"


def processor_error(media_type: str, message: str) -> str:
    return f"failed to get stream processor for {media_type}: {message}"


# -- the result --------------------------------------------------------------------------------
@dataclass
class ApplyOutput:
    """What reference Apply returned.

    descriptor   the returned descriptor ({mediaType, digest, size[, annotations]}) or None
    layer_path   <layer_dir>/layer.erofs when Apply got as far as writing it, else None
    argv         the mkfs argv (argv[0] as executed) for tar conversion, else None
    error        containerd's error text (None on success)
    path         the media-type classification
    stage        where it ended: 'media-type', 'processor', 'mkfs', 'decompress' or None
    mkfs_output  mkfs's combined stdout+stderr
    exit_status  Go's rendering of mkfs's exit ('exit status 1', 'signal: segmentation fault')
    uuid         the -U value passed to mkfs, if any
    fed          how many bytes of the stream mkfs took before it stopped reading
    """

    descriptor: dict | None
    layer_path: str | None
    argv: list[str] | None
    error: str | None
    path: ApplyPath | None = None
    stage: str | None = None
    mkfs_output: bytes | None = None
    exit_status: str | None = None
    uuid: str | None = None
    notes: list[str] = field(default_factory=list)
    fed: int | None = None          # stdin bytes mkfs took (None when mkfs did not run)

    @property
    def ok(self) -> bool:
        return self.error is None


class ApplyEngineError(RuntimeError):
    """The reference could not run (mkfs missing, timeout): an engine error, never a
    conformance result."""


def _descriptor(media_type: str, data: bytes) -> dict:
    return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
            "size": len(data)}


@dataclass
class MkfsRun:
    """One mkfs run: exit code, combined output, and how many stdin bytes mkfs took before it
    closed its end (``fed``; the whole stream unless it stopped reading early)."""

    returncode: int
    output: bytes
    fed: int


def run_mkfs(argv: list[str], stdin: bytes, *, timeout: float = DEFAULT_TIMEOUT,
             env: dict | None = None) -> MkfsRun:
    """Run mkfs with ``stdin`` on its standard input. A broken pipe (mkfs exited before reading
    everything) ends the feed and is not an error, as Go ignores EPIPE on Stdin. Raises
    ApplyEngineError on timeout or when mkfs cannot be started."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env)
    except OSError as e:
        raise ApplyEngineError(f"cannot run {argv[0]}: {e.strerror or e}; install erofs-utils "
                               ">= 1.8 (make bootstrap) or pass mkfs=/path/to/mkfs.erofs") from None
    pipe, proc.stdin = proc.stdin, None       # fed here; communicate() only reads the output
    fed = [0]

    def feed():
        view, fd = memoryview(stdin), pipe.fileno()
        try:
            while fed[0] < len(view):
                fed[0] += os.write(fd, view[fed[0]:fed[0] + FEED_CHUNK])
        except OSError:
            pass          # EPIPE: mkfs stopped reading; Go ignores it too
        finally:
            try:
                pipe.close()
            except OSError:
                pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise ApplyEngineError(f"{argv[0]} did not finish within {timeout:g}s "
                               f"({' '.join(argv)}); it was killed") from None
    finally:
        feeder.join(timeout=10)
    return MkfsRun(proc.returncode, out, fed[0])


def drain(stream: bytes, fed: int) -> bytes:
    """What Apply reads after mkfs returned (``io.Copy(io.Discard, rc)``): the bytes mkfs did
    not take. They pass through the digester like the rest, so the descriptor always covers
    the whole stream."""
    return stream[fed:]


def _read_descriptor(media_type: str, stream: bytes, fed: int) -> dict:
    """The descriptor of what Apply's digester read: the fed part, then the drain."""
    h = hashlib.sha256(memoryview(stream)[:fed])
    rest = drain(stream, fed)
    h.update(rest)
    return {"mediaType": media_type, "digest": "sha256:" + h.hexdigest(), "size": fed + len(rest)}


def apply(blob: bytes, descriptor: dict, layer_dir: str, profile: HasSwitches,
          mkfs_options=(), mkfs: str = MKFS, *, tar_index: bool = False,
          timeout: float = DEFAULT_TIMEOUT, env: dict | None = None) -> ApplyOutput:
    """Reference Apply of ``blob`` (the content-store bytes of ``descriptor``) into
    ``layer_dir`` (the snapshot directory that holds ``layer.erofs``).

    ``tar_index`` is the plugin's enable_tar_index (honoured only with the 'tar-index-mode'
    switch). ``env`` is mkfs's environment (None: inherited, as containerd does on Linux; note
    that SOURCE_DATE_EPOCH there changes the image)."""
    mt = descriptor.get("mediaType", "")
    path = classify(mt, profile)
    if path.kind == ERROR:
        return ApplyOutput(None, None, None, path.error, path=path, stage="media-type")

    layer_path = os.path.join(layer_dir, LAYER_BLOB)   # path.Join
    if path.kind == NATIVE_COPY:
        with open(layer_path, "wb") as f:
            f.write(blob)
        return ApplyOutput(dict(descriptor), layer_path, None, None, path=path)

    # The stream processor: raw pass-through when DiffCompression is '', else DecompressStream.
    error = None
    stage = None
    if path.decompress:
        try:
            stream = decompress_stream(
                blob, reject_reserved_gzip_flags=profile.has("gzip-reject-reserved-flags"))
        except DecompressError as e:
            if e.header:
                return ApplyOutput(None, None, None, processor_error(mt, e.message), path=path,
                                   stage="processor")
            stream, error, stage = e.partial, e.message, "decompress"
    else:
        stream = blob

    if path.kind == NATIVE_ZSTD:
        with open(layer_path, "wb") as f:
            f.write(stream)
        if error:
            return ApplyOutput(None, layer_path, None, error, path=path, stage=stage)
        return ApplyOutput(_descriptor(path.base, stream), layer_path, None, None, path=path)

    # Tar conversion (or tar-index mode).
    use_index = tar_index and profile.has("tar-index-mode")
    argv = mkfs_argv(layer_path, mkfs_options, descriptor.get("digest", ""), profile,
                     tar_index=use_index, mkfs=mkfs)
    u = argv[-2] if profile.has("tar-index-uuid" if use_index else "mkfs-uuid") else None
    run = run_mkfs(argv, stream, timeout=timeout, env=env)
    rc, out = run.returncode, run.output
    status = exit_status_text(rc)
    if rc != 0:
        return ApplyOutput(None, layer_path, argv,
                           convert_error(out, status, profile, tar_index=use_index, argv=argv),
                           path=path, stage="mkfs", mkfs_output=out, exit_status=status, uuid=u,
                           fed=run.fed)
    if error:
        # Go: mkfs succeeded but the stdin copy hit the decoder error, so Wait returns it (or,
        # when mkfs had already stopped reading, the drain returns it unwrapped: a race).
        wrapped = convert_error(out, error, profile, tar_index=use_index, argv=argv)
        return ApplyOutput(None, layer_path, argv, wrapped, path=path, stage=stage,
                           mkfs_output=out, exit_status=status, uuid=u, fed=run.fed,
                           notes=[f"Go may instead report {error!r} unwrapped (drain race)"])
    notes = []
    if use_index:
        # The whole stream is appended after the index. (Go appends what the stdin copy read,
        # which is the whole stream unless mkfs stops reading early; see docs/apply.md.)
        with open(layer_path, "ab") as f:
            f.write(stream)
        notes.append("tar-index: whole decompressed stream appended")
    return ApplyOutput(_read_descriptor(OCI_LAYER, stream, run.fed), layer_path, argv, None,
                       path=path, mkfs_output=out, exit_status=status, uuid=u, notes=notes,
                       fed=run.fed)


__all__ = ["APPLY_SWITCHES", "ApplyEngineError", "ApplyOutput", "ApplyPath", "DecompressError",
           "MediaTypeError", "SwitchSet", "apply", "classify", "convert_error",
           "decompress_stream", "default_mkfs_options", "detect_compression", "diff_compression",
           "drain", "exit_status_text", "layer_uuid", "mkfs_argv", "run_mkfs", "switches_for_version"]
