"""The host side of mkfs forwarding: a guest's tar-mode mkfs.erofs runs here, natively.

mkfs.erofs in tar mode is pure user space: the image depends on its argv, its environment and
the bytes on its stdin, never on the kernel. Under TCG it is most of an Apply's time, so the
recording shim in the guest (oracle/mkfsshim/) sends such runs over a virtio-serial port
(`layerconf.mkfsN`, a unix socket here) and this server runs the same mkfs.erofs binary (the
guest sees the host's root, so a path names the same file in both) on a temp path with the
image's base name, then sends back its output, the image and the exit status.

Frames, both ways: b"LCMF", a type byte, the request id (u32, big endian), the payload length
(u32), the payload. A reader that meets anything else skips to the next magic (a request
abandoned half-way leaves a partial frame behind), and every side ignores frames of another
request id.

  guest -> host  R request (JSON: argv, env, real, image, combined)   D stdin bytes
                 E stdin ended                                        X abandoned
  host -> guest  A accepted (JSON: credit)   N refused (JSON: reason; the shim runs mkfs itself)
                 C more credit (u32)         S mkfs stopped reading (JSON: fed)
                 1 / 2 mkfs's stdout / stderr    I image bytes (u64 offset, then the bytes;
                 holes are not sent)    F finished (JSON: returncode, fed, eof, image =
                 whether mkfs left one, size = its size)

Flow control: the guest sends no more stdin than the credit granted (CREDIT at first, then
as much as mkfs took), so it never reads far ahead of mkfs. A run is abandoned, and its mkfs
killed, on a new request on the port, an X, IDLE_TIMEOUT seconds without a frame from the
guest while mkfs waits for its stdin, RUN_TIMEOUT seconds in all, or stop() (the VM is going).
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

from ..mkfs_shim import CREDIT

MAGIC = b"LCMF"
HEADER = struct.Struct(">4scII")
MAX_PAYLOAD = 1 << 20
CHUNK = 256 << 10             # image and output frames
IDLE_TIMEOUT = 120.0          # no frame from the guest while mkfs waits for stdin: abandoned
RUN_TIMEOUT = 3600.0          # a whole run, however it goes
SEND_TIMEOUT = 60.0           # the guest does not read what we send: abandoned
CONNECT_TIMEOUT = 10.0
EXIT_GRACE = 1.0              # a stream ending as mkfs exits: wait this long for its end
PORT_PREFIX = "layerconf.mkfs"
PORTS = 2                     # runs at once (the oracle's and the reference's may overlap)
OFF_ENV = "LAYERCONF_VM_MKFS_FORWARD"   # "0": guests run mkfs.erofs themselves
# what the shim may send in `env` and mkfs may see (mkfs.erofs reads SOURCE_DATE_EPOCH; its
# temp files follow TMPDIR, which stays the host's)
PASSED_ENV = ("SOURCE_DATE_EPOCH", "LANG", "LANGUAGE", "TZ")


def enabled() -> bool:
    return os.environ.get(OFF_ENV, "1") != "0"


_BROKEN = object()            # in a run's inbox: the guest's stream ended in a read error


def _guests(key: str) -> bool:
    """Whether mkfs sees the guest's value of this variable, not the host's."""
    return key in PASSED_ENV or key.startswith("LC_")


def frame(kind: bytes, rid: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(MAGIC, kind, rid, len(payload)) + payload


class FrameReader:
    """Frames from a byte stream fed in pieces; resynchronises on the magic after garbage."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data: bytes) -> None:
        self.buf += data

    def frames(self):
        while True:
            i = self.buf.find(MAGIC)
            if i < 0:
                del self.buf[:max(0, len(self.buf) - len(MAGIC) + 1)]
                return
            del self.buf[:i]
            if len(self.buf) < HEADER.size:
                return
            _, kind, rid, n = HEADER.unpack_from(self.buf)
            if n > MAX_PAYLOAD:
                del self.buf[:1]          # not a frame: look for the next magic
                continue
            if len(self.buf) < HEADER.size + n:
                return
            payload = bytes(self.buf[HEADER.size:HEADER.size + n])
            del self.buf[:HEADER.size + n]
            yield kind, rid, payload


class _Sender:
    """Frames onto a non-blocking socket, whole, each within SEND_TIMEOUT; OSError otherwise."""

    def __init__(self, sock: socket.socket):
        self.sock, self.lock = sock, threading.Lock()

    def send(self, kind: bytes, rid: int, payload: bytes = b"") -> None:
        data = memoryview(frame(kind, rid, payload))
        with self.lock:
            deadline = time.monotonic() + SEND_TIMEOUT
            while data:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise OSError("the guest did not read the mkfs port in time")
                _, w, _ = select.select([], [self.sock], [], min(left, 0.5))
                if w:
                    try:
                        data = data[self.sock.send(data):]
                    except BlockingIOError:
                        continue


def _rewrite(data: bytes, host_dir: str, guest_dir: str) -> bytes:
    return data.replace(host_dir.encode(), guest_dir.encode())


class Run:
    """One mkfs.erofs run for request `rid`: started at once, fed by feed()/end_input(), its
    answer sent by its own thread when mkfs exits."""

    def __init__(self, sender: _Sender, rid: int, req: dict):
        self.sender, self.rid = sender, rid
        self.guest_image = req["image"]
        self.tmp = tempfile.mkdtemp(prefix="lcmkfs-")
        image = os.path.join(self.tmp, os.path.basename(self.guest_image))
        argv = ["mkfs.erofs"] + [image if a == self.guest_image else a for a in req["argv"]]
        # the host's environment, but what changes mkfs's output is the guest's
        env = {k: v for k, v in os.environ.items() if not _guests(k) and not k.startswith("LAYERCONF_")}
        env.update({k: v for k, v in req.get("env", {}).items() if _guests(k)})
        self.image, self.combined = image, bool(req.get("combined"))
        self.out = tempfile.TemporaryFile(dir=self.tmp)
        self.err = self.out if self.combined else tempfile.TemporaryFile(dir=self.tmp)
        self.inbox: queue.Queue = queue.Queue()
        self.fed, self.eof, self.stopped = 0, False, False
        self.started = self.last_heard = time.monotonic()
        self.ended = threading.Event()     # the guest's stream ended or mkfs stopped reading
        self.done = threading.Event()
        try:
            self.proc = subprocess.Popen(argv, executable=req["real"], stdin=subprocess.PIPE, bufsize=0,
                                         stdout=self.out, stderr=self.err, env=env, cwd=self.tmp,
                                         start_new_session=True)
        except BaseException:
            self._cleanup()
            raise
        threading.Thread(target=self._pump, name=f"mkfs-stdin-{rid}", daemon=True).start()
        threading.Thread(target=self._finish, name=f"mkfs-wait-{rid}", daemon=True).start()

    # -- from the port's thread

    def feed(self, data: bytes) -> None:
        self.last_heard = time.monotonic()
        self.inbox.put(data)

    def end_input(self, broken: bool = False) -> None:
        self.last_heard = time.monotonic()
        self.inbox.put(_BROKEN if broken else None)

    def overdue(self) -> bool:
        now = time.monotonic()
        waiting = not self.ended.is_set() and now - self.last_heard > IDLE_TIMEOUT
        return waiting or now - self.started > RUN_TIMEOUT

    def kill(self) -> None:
        """Abandon the run: mkfs is killed and nothing more is sent."""
        self.sender = None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.inbox.put(None)
        self.done.wait(15)

    # -- its own threads

    def _send(self, kind: bytes, payload: bytes = b"") -> None:
        sender = self.sender
        if sender is None:
            raise OSError("abandoned")
        sender.send(kind, self.rid, payload)

    def _pump(self) -> None:
        """The guest's stdin bytes into mkfs; a credit for each piece mkfs took."""
        try:
            while True:
                data = self.inbox.get()
                if data is None or data is _BROKEN:
                    self.eof = data is None
                    break
                try:
                    view = memoryview(data)
                    while view:         # unbuffered: fed counts what the pipe took
                        n = self.proc.stdin.write(view)
                        self.fed += n
                        view = view[n:]
                except (BrokenPipeError, ValueError, OSError):
                    self.stopped = True
                    with contextlib.suppress(OSError):
                        self._send(b"S", json.dumps({"fed": self.fed}).encode())
                    break
                with contextlib.suppress(OSError):
                    self._send(b"C", struct.pack(">I", len(data)))
        finally:
            self.ended.set()
            with contextlib.suppress(OSError, ValueError):
                self.proc.stdin.close()

    def _finish(self) -> None:
        try:
            rc = self.proc.wait()
            if not self.ended.wait(EXIT_GRACE):
                # mkfs exited before the guest's stream ended: it reads no more, and a stdin
                # that never ends (a caller's terminal) must not keep the shim
                self.inbox.put(_BROKEN)
                with contextlib.suppress(OSError):
                    self._send(b"S", json.dumps({"fed": self.fed}).encode())
            self.ended.wait()
            self._answer(rc)
        except OSError:
            pass                     # abandoned, or the guest stopped reading: nothing to say
        finally:
            self._cleanup()
            self.done.set()

    def _answer(self, rc: int) -> None:
        guest_dir = os.path.dirname(self.guest_image)
        for kind, f in ((b"1", self.out), (b"2", None if self.combined else self.err)):
            if f is None:
                continue
            f.seek(0)
            data = _rewrite(f.read(), self.tmp, guest_dir)
            for i in range(0, len(data), CHUNK):
                self._send(kind, data[i:i + CHUNK])
        has_image, size = os.path.exists(self.image), 0
        if has_image:
            with open(self.image, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                for start, end in data_ranges(f.fileno(), size):
                    f.seek(start)
                    while start < end:
                        piece = f.read(min(CHUNK, end - start))
                        if not piece:
                            break
                        self._send(b"I", struct.pack(">Q", start) + piece)
                        start += len(piece)
        self._send(b"F", json.dumps({"returncode": rc, "fed": self.fed, "eof": self.eof,
                                     "image": has_image, "size": size}).encode())

    def _cleanup(self) -> None:
        for f in {getattr(self, "out", None), getattr(self, "err", None)}:
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def data_ranges(fd: int, size: int):
    """(start, end) of the parts of a file that hold data: a failed mkfs leaves a sparse image
    of terabytes (its device size) with next to nothing in it."""
    off = 0
    while off < size:
        try:
            start = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:          # ENXIO: no data after off
            return
        end = min(size, os.lseek(fd, start, os.SEEK_HOLE))
        yield start, end
        off = end


def refusal(req: dict) -> str | None:
    """Why this host cannot run the request as the guest would (None: it can)."""
    real, image = req.get("real", ""), req.get("image", "")
    if not isinstance(real, str) or os.path.basename(real) != "mkfs.erofs" or not os.path.isabs(real):
        return f"not a mkfs.erofs path: {real!r}"
    if not os.access(real, os.X_OK):
        return f"{real} is not executable on the host"
    if not isinstance(image, str) or not os.path.isabs(image):
        return f"the image path {image!r} is not absolute"
    if not isinstance(req.get("argv"), list) or image not in req["argv"]:
        return "the image path is not in argv"
    return None


def serve(sock: socket.socket, stop: threading.Event, on_run=lambda: None) -> None:
    """Serve one port until `stop` or the socket closes; one run at a time, a new request
    abandons the one before. on_run() for each run taken."""
    sock.setblocking(False)
    sender, reader, run = _Sender(sock), FrameReader(), None
    try:
        while not stop.is_set():
            r, _, _ = select.select([sock], [], [], 0.25)
            if r:
                try:
                    data = sock.recv(1 << 20)
                except BlockingIOError:
                    data = None
                if data == b"":
                    return                # qemu closed the socket: the VM is gone
                if data:
                    reader.feed(data)
            for kind, rid, payload in reader.frames():
                if kind == b"R":
                    if run is not None:
                        run.kill()
                    run = _start(sender, rid, payload)
                    if run is not None:
                        on_run()
                elif run is not None and rid == run.rid:
                    if kind == b"D":
                        run.feed(payload)
                    elif kind == b"E":
                        run.end_input(broken=payload == b"!")
                    elif kind == b"X":
                        run.kill()
                        run = None
            if run is not None and run.done.is_set():
                run = None
            elif run is not None and run.overdue():
                run.kill()
                run = None
    except OSError:
        pass
    finally:
        if run is not None:
            run.kill()


def _start(sender: _Sender, rid: int, payload: bytes) -> Run | None:
    try:
        req = json.loads(payload)
        why = refusal(req) if isinstance(req, dict) else "not a JSON object"
    except ValueError as e:
        req, why = None, f"bad request: {e}"
    run = None
    if why is None:
        try:
            run = Run(sender, rid, req)
        except OSError as e:
            why = f"cannot run {req.get('real')}: {e}"
    with contextlib.suppress(OSError):
        if run is None:
            sender.send(b"N", rid, json.dumps({"reason": why}).encode())
        else:
            sender.send(b"A", rid, json.dumps({"credit": CREDIT}).encode())
    return run


class MkfsServer:
    """The server of one VM's mkfs ports: start() connects to qemu's sockets (qemu is the
    socket's listening side) and starts a thread per port; stop() ends them and every mkfs
    they run. Started and stopped with the VM."""

    def __init__(self, sock_paths: list[str]):
        self.sock_paths = sock_paths
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.socks: list[socket.socket] = []
        self.runs = 0                 # runs taken (for tests and benches)

    def start(self, alive=lambda: True) -> None:
        for path in self.sock_paths:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            deadline = time.monotonic() + CONNECT_TIMEOUT
            while True:
                try:
                    s.connect(path)
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    if time.monotonic() > deadline or not alive():
                        s.close()
                        raise OSError(f"qemu's mkfs port socket {path} did not open") from None
                    time.sleep(0.005)
            self.socks.append(s)
            t = threading.Thread(target=serve, args=(s, self.stop_event, self._count),
                                 name=f"mkfs-port-{os.path.basename(path)}", daemon=True)
            t.start()
            self.threads.append(t)

    def _count(self) -> None:
        self.runs += 1

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(20)
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.close()
        self.threads, self.socks = [], []
