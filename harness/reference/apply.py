"""Reference Apply of containerd's EROFS differ (spec §5; docs/apply.md).

    apply(blob, descriptor, layer_dir, profile, mkfs_options=()) -> ApplyOutput

    apply_file(path_or_file, ...)                                  -> the same, in bounded memory

Pure parts (no I/O): ``classify`` (mediatypes.py), ``detect_compression`` (streams.py), ``layer_uuid``,
``default_mkfs_options``, ``mkfs_argv``, ``exit_status_text`` and the error wording. The only I/O
is writing ``<layer_dir>/layer.erofs`` and running ``mkfs.erofs`` with the decompressed stream on
its stdin as it is decoded (streams.py; with a timeout; EPIPE is ignored, as Go's os/exec does
for Stdin).

The behaviour is read from ``profile.has(name)``; the switches are ``APPLY_SWITCHES`` in
mediatypes.py. What the reference does not model: custom stream processors (imgcrypt), dm-verity
(its superblock UUID is random), ApplyOpts, MountsToLayer and the content store.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid as _uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import streams
from .streams import (GZIP_MAGIC, ZSTD_MAGIC, DecompressError, _GoInflate,  # noqa: F401
                      decompress_stream, detect_compression)
from .mediatypes import (APPLY_SWITCHES, ERROR, NATIVE_COPY, NATIVE_ZSTD, OCI_LAYER,  # noqa: F401
                         ApplyPath, HasSwitches, MediaTypeError, SwitchSet, classify,
                         diff_compression, switches_for_version)

MKFS = "mkfs.erofs"
LAYER_BLOB = "layer.erofs"
DEFAULT_TIMEOUT = 300.0
FEED_CHUNK = 32 << 10       # io.Copy's buffer size


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


class _Digest:
    """sha256 and length of a stream seen in chunks."""

    def __init__(self):
        self.h, self.size = hashlib.sha256(), 0

    def update(self, chunk: bytes):
        self.h.update(chunk)
        self.size += len(chunk)

    def descriptor(self, media_type: str) -> dict:
        return {"mediaType": media_type, "digest": "sha256:" + self.h.hexdigest(),
                "size": self.size}


def feed(chunks: Iterable[bytes], write, digest, stop) -> int:
    """Write the chunks and digest every one of them; the bytes written. A broken pipe (mkfs
    stopped reading) ends the writing, not the reading: Go ignores EPIPE on Stdin and drains the
    rest through the digester, so the descriptor covers the whole stream."""
    fed, writing = 0, True
    for chunk in chunks:
        if stop.is_set():
            break
        digest.update(chunk)
        if writing:
            try:
                write(chunk)
                fed += len(chunk)
            except BrokenPipeError:
                writing = False
    return fed


def feed_mkfs(argv: list[str], chunks: Iterable[bytes], *, timeout: float = DEFAULT_TIMEOUT,
              env: dict | None = None):
    """Run mkfs with the chunks on its standard input, in bounded memory; return (returncode,
    combined output, digest of every chunk, the DecompressError that ended the chunks or None,
    the bytes written before mkfs stopped reading).
    A broken pipe (mkfs exited before reading everything) stops the writing, not the reading:
    Go ignores EPIPE on Stdin and the descriptor covers the whole stream. Raises
    ApplyEngineError on timeout or when mkfs cannot be started."""
    with tempfile.TemporaryFile() as output:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=output,
                                    stderr=subprocess.STDOUT, env=env)
        except OSError as e:
            raise ApplyEngineError(f"cannot run {argv[0]}: {e.strerror or e}; install erofs-utils "
                                   ">= 1.8 (make bootstrap) or pass mkfs=/path/to/mkfs.erofs") from None
        digest, state = _Digest(), {"error": None, "crash": None, "fed": 0}
        stop = threading.Event()

        def pump():
            try:
                state["fed"] = feed(chunks, proc.stdin.write, digest, stop)
            except DecompressError as e:
                state["error"] = e
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                state["crash"] = e
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()

        feeder = threading.Thread(target=pump, name="mkfs-stdin", daemon=True)
        feeder.start()
        deadline = time.monotonic() + timeout
        try:
            feeder.join(timeout)
            rc = proc.wait(max(0.0, deadline - time.monotonic()))
            if feeder.is_alive():
                raise subprocess.TimeoutExpired(argv, timeout)
        except subprocess.TimeoutExpired:
            stop.set()
            proc.kill()
            proc.wait()
            feeder.join(10)
            raise ApplyEngineError(f"{argv[0]} did not finish within {timeout:g}s "
                                   f"({' '.join(argv)}); it was killed") from None
        except BaseException:
            stop.set()
            proc.kill()
            proc.wait()
            raise
        if state["crash"] is not None:
            raise state["crash"]
        output.seek(0)
        return rc, output.read(), digest, state["error"], state["fed"]


def run_mkfs(argv: list[str], stdin: bytes, *, timeout: float = DEFAULT_TIMEOUT,
             env: dict | None = None) -> tuple[int, bytes]:
    """Run mkfs with ``stdin`` on its standard input; return (returncode, combined output)."""
    rc, out, _, _, _ = feed_mkfs(argv, [stdin], timeout=timeout, env=env)
    return rc, out


def apply(blob: bytes, descriptor: dict, layer_dir: str, profile: HasSwitches,
          mkfs_options=(), mkfs: str = MKFS, *, tar_index: bool = False,
          timeout: float = DEFAULT_TIMEOUT, env: dict | None = None) -> ApplyOutput:
    """Reference Apply of ``blob`` (the content-store bytes of ``descriptor``) into
    ``layer_dir`` (the snapshot directory that holds ``layer.erofs``).

    ``tar_index`` is the plugin's enable_tar_index (honoured only with the 'tar-index-mode'
    switch). ``env`` is mkfs's environment (None: inherited, as containerd does on Linux; note
    that SOURCE_DATE_EPOCH there changes the image). apply_file() is the same for a blob on
    disk, in bounded memory."""
    return _apply(io.BytesIO(blob), descriptor, layer_dir, profile, mkfs_options, mkfs,
                  tar_index=tar_index, timeout=timeout, env=env)


def apply_file(blob, descriptor: dict, layer_dir: str, profile: HasSwitches,
               mkfs_options=(), mkfs: str = MKFS, *, tar_index: bool = False,
               timeout: float = DEFAULT_TIMEOUT, env: dict | None = None) -> ApplyOutput:
    """apply() of a blob given as a path or a seekable binary file object: the blob is read in
    chunks and the decoded stream goes to mkfs.erofs as it is decoded, so memory stays bounded
    whatever the blob size (see streams.py for the one exception)."""
    if hasattr(blob, "read"):
        return _apply(blob, descriptor, layer_dir, profile, mkfs_options, mkfs,
                      tar_index=tar_index, timeout=timeout, env=env)
    with open(blob, "rb") as f:
        return _apply(f, descriptor, layer_dir, profile, mkfs_options, mkfs,
                      tar_index=tar_index, timeout=timeout, env=env)


def _apply(f, descriptor, layer_dir, profile, mkfs_options, mkfs, *, tar_index, timeout, env):
    mt = descriptor.get("mediaType", "")
    path = classify(mt, profile)
    if path.kind == ERROR:
        return ApplyOutput(None, None, None, path.error, path=path, stage="media-type")

    layer_path = os.path.join(layer_dir, LAYER_BLOB)   # path.Join
    if path.kind == NATIVE_COPY:
        with open(layer_path, "wb") as out:
            shutil.copyfileobj(f, out, streams.READ)
        return ApplyOutput(dict(descriptor), layer_path, None, None, path=path)

    # The stream processor: raw pass-through when DiffCompression is '', else DecompressStream.
    reject = profile.has("gzip-reject-reserved-flags")
    klauspost = profile.has("inflate-klauspost")

    def stream():
        source = streams.Source(f)
        if path.decompress:
            return streams.iter_stream(source, reject_reserved_gzip_flags=reject,
                                       klauspost_inflate=klauspost)
        return source.chunks()

    if path.decompress:
        try:
            streams.check_processor(streams.Source(f), reject_reserved_gzip_flags=reject)
        except DecompressError as e:
            return ApplyOutput(None, None, None, processor_error(mt, e.message), path=path,
                               stage="processor")

    if path.kind == NATIVE_ZSTD:
        digest, error = _Digest(), None
        with open(layer_path, "wb") as out:
            try:
                for chunk in stream():
                    out.write(chunk)
                    digest.update(chunk)
            except DecompressError as e:
                error = e.message
        if error:
            return ApplyOutput(None, layer_path, None, error, path=path, stage="decompress")
        return ApplyOutput(digest.descriptor(path.base), layer_path, None, None, path=path)

    # Tar conversion (or tar-index mode).
    use_index = tar_index and profile.has("tar-index-mode")
    argv = mkfs_argv(layer_path, mkfs_options, descriptor.get("digest", ""), profile,
                     tar_index=use_index, mkfs=mkfs)
    u = argv[-2] if profile.has("tar-index-uuid" if use_index else "mkfs-uuid") else None
    rc, out, digest, decode_error, fed = feed_mkfs(argv, stream(), timeout=timeout, env=env)
    error = decode_error.message if decode_error else None
    status = exit_status_text(rc)
    if rc != 0:
        return ApplyOutput(None, layer_path, argv,
                           convert_error(out, status, profile, tar_index=use_index, argv=argv),
                           path=path, stage="mkfs", mkfs_output=out, exit_status=status, uuid=u,
                           fed=fed)
    if error:
        # Go: mkfs succeeded but the stdin copy hit the decoder error, so Wait returns it (or,
        # when mkfs had already stopped reading, the drain returns it unwrapped: a race).
        wrapped = convert_error(out, error, profile, tar_index=use_index, argv=argv)
        return ApplyOutput(None, layer_path, argv, wrapped, path=path, stage="decompress",
                           mkfs_output=out, exit_status=status, uuid=u, fed=fed,
                           notes=[f"Go may instead report {error!r} unwrapped (drain race)"])
    notes = []
    if use_index:
        # The whole stream is appended after the index (decoded again: nothing is kept). (Go
        # appends what the stdin copy read, which is the whole stream unless mkfs stops reading
        # early; see docs/apply.md.)
        with open(layer_path, "ab") as image:
            for chunk in stream():
                image.write(chunk)
        notes.append("tar-index: whole decompressed stream appended")
    return ApplyOutput(digest.descriptor(OCI_LAYER), layer_path, argv, None, path=path,
                       mkfs_output=out, exit_status=status, uuid=u, notes=notes, fed=fed)


__all__ = ["APPLY_SWITCHES", "ApplyEngineError", "ApplyOutput", "ApplyPath", "DecompressError",
           "MediaTypeError", "SwitchSet", "apply", "apply_file", "classify", "convert_error",
           "decompress_stream", "default_mkfs_options", "detect_compression", "diff_compression",
           "exit_status_text", "feed_mkfs", "layer_uuid", "mkfs_argv", "run_mkfs",
           "switches_for_version"]
