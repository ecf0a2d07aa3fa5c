"""mkfs forwarding (harness/backends/mkfs_forward.py, oracle/mkfsshim/forward.go): the shim
sends a tar-mode run to the host server, here over a unix socket standing in for the guest's
virtio-serial port, with a fake mkfs.erofs that writes an image; and the server alone, spoken
to frame by frame over a socketpair."""
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from harness import mkfs_shim
from harness.backends import mkfs_forward as fwd
from shimbinary import shim_binary  # noqa: F401 - a fixture

FAKE = """#!/usr/bin/env python3
import os, signal, sys, time
time.sleep(float(os.environ.get('PAUSE', '0')))
n = int(os.environ.get('READ', '-1'))
data = sys.stdin.buffer.read() if n < 0 else sys.stdin.buffer.read(n)
image = [a for a in sys.argv[1:] if not a.startswith('-')][0]
if os.environ.get('PIDFILE'):
    open(os.environ['PIDFILE'], 'w').write(str(os.getpid()))
with open(image, 'wb') as f:
    f.write(b'IMG' + data[:1000])
    if 'sparse' in os.path.basename(image):   # as a failed mkfs leaves its device size
        f.seek(1 << 20)
        f.write(b'MID')
        f.truncate(1 << 40)
print('out', sys.argv[0], len(data), image, os.environ.get('SOURCE_DATE_EPOCH', '-'), flush=True)
print('err', image, file=sys.stderr, flush=True)
if 'hang' in os.path.basename(image): time.sleep(600)
if os.environ.get('SIG'): os.kill(os.getpid(), int(os.environ['SIG']))
sys.exit(int(os.environ.get('RC', '0')))
"""


@pytest.fixture
def fake_mkfs(tmp_path):
    d = tmp_path / "real"
    d.mkdir()
    fake = d / "mkfs.erofs"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    return str(fake)


class Host:
    """The host server on a listening unix socket: each connection is one port."""

    def __init__(self, path):
        self.path, self.stop = str(path), threading.Event()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(4)
        self.listener.settimeout(0.2)
        self.requests = 0
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            self.requests += 1
            threading.Thread(target=fwd.serve, args=(conn, self.stop), daemon=True).start()

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


@pytest.fixture
def host(tmp_path):
    h = Host(tmp_path / "port.sock")
    yield h
    h.close()


@pytest.fixture
def guest(tmp_path, shim_binary, fake_mkfs, host, monkeypatch):
    """The shim's variables as in a guest: the port, the real mkfs, a log. The fake's controls
    (RC, SIG, READ...) go in os.environ: the host's mkfs gets the host's environment (this
    process's) with only the guest's mkfs-relevant variables."""
    out = tmp_path / "guest"
    out.mkdir()
    monkeypatch.setenv("LAYERCONF_MKFS_HOST", f"unix:{host.path}")
    monkeypatch.setenv("LAYERCONF_MKFS_REAL", fake_mkfs)
    monkeypatch.setenv("LAYERCONF_MKFS_LOG", str(tmp_path / "calls.jsonl"))
    return monkeypatch, out, tmp_path / "calls.jsonl"


def shim(mp, argv, stdin=b"", cwd=None, **controls):
    for k, v in controls.items():
        mp.setenv(k, v)
    try:
        return subprocess.run([str(mkfs_shim.BINARY)] + argv, input=stdin, capture_output=True,
                              timeout=60, cwd=cwd)
    finally:
        for k in controls:
            mp.delenv(k)


def last_record(log):
    return json.loads(log.read_text().splitlines()[-1])


def test_whole_stream_runs_on_the_host(guest, host):
    env, out, log = guest
    image = str(out / "layer.erofs")
    p = shim(env, ["--tar=f", "-T0", image], b"x" * 3_000_000, SOURCE_DATE_EPOCH="7")
    assert p.returncode == 0, p.stderr
    assert host.requests == 1
    # the guest's image path in the messages, SOURCE_DATE_EPOCH passed on (argv[0] of a
    # script is its path, whatever the caller's)
    words = p.stdout.decode().split()
    assert words[:1] + words[2:] == ["out", "3000000", image, "7"]
    assert p.stderr.decode().split() == ["err", image]
    assert (out / "layer.erofs").read_bytes() == b"IMG" + b"x" * 1000
    rec = last_record(log)
    assert (rec["argv"], rec["fed"], rec["eof"], rec["returncode"]) == \
        (["--tar=f", "-T0", image], 3_000_000, True, 0)


def test_combined_output_keeps_its_order(guest, host):
    env, out, _ = guest
    image = str(out / "layer.erofs")
    p = subprocess.run([str(mkfs_shim.BINARY), "--tar=f", image], input=b"abc",
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    assert p.stdout.decode().splitlines() == [f"out {os.environ['LAYERCONF_MKFS_REAL']} 3 {image} -",
                                              f"err {image}"]
    assert host.requests == 1


def test_exit_status_and_signal(guest):
    env, out, log = guest
    image = str(out / "layer.erofs")
    p = shim(env, ["--tar=i", image], b"abc", RC="3")
    assert p.returncode == 3 and last_record(log)["returncode"] == 3
    p = shim(env, ["--tar", image], b"abc", SIG=str(int(signal.SIGTERM)))
    assert p.returncode == -signal.SIGTERM and last_record(log)["returncode"] == -signal.SIGTERM


def feed_until_epipe(argv, total, at=None):
    """Write `total` bytes to the shim as containerd does; (bytes written before EPIPE or the
    end, bytes written at `at` seconds, rc)."""
    p = subprocess.Popen([str(mkfs_shim.BINARY)] + argv, stdin=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    written, seen, t0 = 0, None, time.monotonic()
    block = b"y" * (32 << 10)
    try:
        while written < total:
            if at is not None and seen is None and time.monotonic() - t0 > at:
                seen = written
            os.write(p.stdin.fileno(), block)
            written += len(block)
        p.stdin.close()
    except BrokenPipeError:
        pass
    return written, seen, p.wait(60)


def test_stops_reading_when_mkfs_does(guest):
    env, out, log = guest
    total = 16 << 20
    env.setenv("READ", "1000")
    written, _, rc = feed_until_epipe(["--tar=f", str(out / "l.erofs")], total)
    assert rc == 0
    rec = last_record(log)
    assert rec["eof"] is False and rec["fed"] < (1 << 20)
    # the shim read no further than the credit and the pipes allow: containerd met EPIPE
    assert written < fwd.CREDIT + 8 * (64 << 10)


def test_credit_bounds_read_ahead(guest):
    env, out, log = guest
    total = 8 << 20
    env.setenv("PAUSE", "1.5")
    written, seen, rc = feed_until_epipe(["--tar=f", str(out / "l.erofs")], total, at=1.0)
    assert rc == 0 and written == total and last_record(log)["fed"] == total
    # while mkfs took nothing, the shim read at most the credit (plus pipe buffers and a chunk)
    assert seen is not None and seen <= fwd.CREDIT + 4 * (64 << 10)


def test_other_runs_and_missing_ports_stay_local(guest, host, tmp_path):
    env, out, log = guest
    image = str(out / "layer.erofs")
    p = shim(env, ["-T0", image, str(tmp_path)])          # directory mode: two positionals
    assert p.returncode == 0 and host.requests == 0
    p = shim(env, ["--tar=f", "layer.erofs"], b"abc", cwd=out)   # a relative image path
    assert p.returncode == 0 and host.requests == 0
    p = shim(env, ["--tar=f", image], b"abc", LAYERCONF_MKFS_HOST=f"unix:{tmp_path}/none")
    assert p.returncode == 0 and p.stdout.split()[2] == b"3" and host.requests == 0
    assert last_record(log)["eof"] is True


def test_refused_request_runs_locally(guest, host, tmp_path):
    env, out, log = guest
    other = tmp_path / "other"
    other.mkdir()
    real = other / "mkfs.other"          # the host runs only files named mkfs.erofs
    shutil.copy(os.environ["LAYERCONF_MKFS_REAL"], real)
    p = shim(env, ["--tar=f", str(out / "l.erofs")], b"abcd", LAYERCONF_MKFS_REAL=str(real))
    assert p.returncode == 0 and host.requests == 1
    assert p.stdout.split()[2] == b"4"


# -- the server alone, frame by frame

def frames_until(sock, rid, kind, timeout=20):
    reader, got, deadline = fwd.FrameReader(), [], time.monotonic() + timeout
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(1 << 16)
        except socket.timeout:
            continue
        reader.feed(data)
        for f in reader.frames():
            if f[1] == rid:
                got.append(f)
                if f[0] == kind:
                    return got
    raise AssertionError(f"no {kind!r} frame for request {rid}: {got}")


def request(fake, image, **env):
    return json.dumps({"argv": ["--tar=f", image], "env": env, "real": fake, "image": image,
                       "combined": False}).encode()


def alive(pid):
    """Whether pid is a running process (not gone, not a zombie). The process may go between
    any two steps: reading /proc of a reaped task fails with ESRCH (ProcessLookupError)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def wait_for(cond, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    stop = threading.Event()
    t = threading.Thread(target=fwd.serve, args=(theirs, stop), daemon=True)
    t.start()
    yield ours
    stop.set()
    t.join(10)
    ours.close()
    assert not t.is_alive()


def test_new_request_abandons_the_running_one(pair, fake_mkfs, tmp_path, monkeypatch):
    pidfile = tmp_path / "pid"
    monkeypatch.setenv("PIDFILE", str(pidfile))
    monkeypatch.setenv("READ", "3")
    # the first mkfs hangs after its stdin, as a host mkfs of a vanished shim would
    pair.sendall(fwd.frame(b"R", 1, request(fake_mkfs, str(tmp_path / "hang.erofs"))))
    frames_until(pair, 1, b"A")
    pair.sendall(fwd.frame(b"D", 1, b"abc") + fwd.frame(b"X", 0) + b"garbage")
    assert wait_for(pidfile.exists)
    pid = int(pidfile.read_text())
    pair.sendall(fwd.frame(b"R", 2, request(fake_mkfs, str(tmp_path / "l.erofs")))
                 + fwd.frame(b"E", 2))
    got = frames_until(pair, 2, b"F")
    assert not alive(pid)
    fin = json.loads(got[-1][2])
    assert (fin["returncode"], fin["fed"], fin["eof"], fin["image"]) == (0, 0, True, True)


def test_idle_request_is_abandoned(pair, fake_mkfs, tmp_path, monkeypatch):
    monkeypatch.setenv("PIDFILE", str(tmp_path / "pid"))
    monkeypatch.setenv("READ", "3")
    pair.sendall(fwd.frame(b"R", 5, request(fake_mkfs, str(tmp_path / "hang.erofs"))))
    frames_until(pair, 5, b"A")
    pair.sendall(fwd.frame(b"D", 5, b"abc"))
    assert wait_for((tmp_path / "pid").exists)
    pid = int((tmp_path / "pid").read_text())
    assert alive(pid)
    # the guest says nothing more (its shim was killed): mkfs goes after IDLE_TIMEOUT
    monkeypatch.setattr(fwd, "IDLE_TIMEOUT", 0.5)
    assert wait_for(lambda: not alive(pid))


def test_stop_kills_the_run(fake_mkfs, tmp_path, monkeypatch):
    monkeypatch.setenv("PIDFILE", str(tmp_path / "pid"))
    ours, theirs = socket.socketpair()
    stop = threading.Event()
    t = threading.Thread(target=fwd.serve, args=(theirs, stop), daemon=True)
    t.start()
    ours.sendall(fwd.frame(b"R", 9, request(fake_mkfs, str(tmp_path / "hang.erofs")))
                 + fwd.frame(b"E", 9))
    assert wait_for((tmp_path / "pid").exists)
    pid = int((tmp_path / "pid").read_text())
    stop.set()                      # the VM is going
    t.join(20)
    assert not t.is_alive() and not alive(pid)
    ours.close()


def test_frame_reader_skips_garbage_and_waits_for_whole_frames():
    r = fwd.FrameReader()
    data = b"xxLC" + fwd.frame(b"D", 1, b"12345") + fwd.frame(b"E", 2)
    r.feed(data[:12])
    assert list(r.frames()) == []
    r.feed(data[12:-3])
    assert list(r.frames()) == [(b"D", 1, b"12345")]
    r.feed(data[-3:] + b"LCMF" + struct.pack(">cII", b"D", 3, fwd.MAX_PAYLOAD + 1))
    assert list(r.frames()) == [(b"E", 2, b"")]


def test_real_mkfs_image_is_the_same_forwarded(guest, host, tmp_path):
    """The real mkfs.erofs, forwarded and local: the same image bytes (a fixed UUID: mkfs
    draws a random one)."""
    import io
    import tarfile
    real = shutil.which("mkfs.erofs")
    if real is None:
        pytest.skip("mkfs.erofs is not installed (make bootstrap)")
    env, out, log = guest
    env.setenv("LAYERCONF_MKFS_REAL", real)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(20):
            data = os.urandom(5000 * i)
            ti = tarfile.TarInfo(f"d{i % 3}/f{i}")
            ti.size, ti.mtime = len(data), 1_000_000 + i
            tf.addfile(ti, io.BytesIO(data))
    layer = buf.getvalue()
    images = []
    for ports in (os.environ["LAYERCONF_MKFS_HOST"], ""):
        image = out / f"{len(images)}" / "layer.erofs"
        image.parent.mkdir()
        p = shim(env, ["--tar=f", "-T0", "-U", "6ba7b810-9dad-11d1-80b4-00c04fd430c8", str(image)], layer,
                 LAYERCONF_MKFS_HOST=ports, SOURCE_DATE_EPOCH="0")
        assert p.returncode == 0, p.stderr
        images.append(image.read_bytes())
    assert host.requests == 1
    assert images[0] == images[1] and len(images[0]) > 4096
    # mkfs stops after the end-of-archive blocks: the record's padding behind them reaches its
    # pipe or not, depending on whether the shim wrote it before mkfs exited
    assert len(layer) - tarfile.RECORDSIZE <= last_record(log)["fed"] <= len(layer)


@pytest.mark.parametrize("forwarded", [True, False])
def test_a_stdin_that_never_ends_does_not_keep_the_shim(guest, host, forwarded):
    """mkfs exits without reading to the end (a directory-mode run with the caller's terminal
    as stdin; a tar run that fails): the shim ends with it, not with its stdin."""
    env, out, log = guest
    env.setenv("READ", "0")
    argv = ["--tar=f", str(out / "l.erofs")] if forwarded else [str(out / "l.erofs"), str(out)]
    p = subprocess.Popen([str(mkfs_shim.BINARY)] + argv, stdin=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        p.stdin.write(b"z" * 1000)
        p.stdin.flush()
        assert p.wait(30) == 0
    finally:
        p.kill()
        p.stdin.close()
    assert host.requests == (1 if forwarded else 0)
    assert last_record(log)["eof"] is False


def test_sparse_image_keeps_its_holes(guest, host):
    """A failed mkfs leaves an image of its device size (2 TiB for 1.8.6), nearly all hole:
    only the data crosses, the size is set at the end."""
    env, out, log = guest
    image = out / "sparse.erofs"
    p = shim(env, ["--tar=f", str(image)], b"abc")
    assert p.returncode == 0 and host.requests == 1
    st = image.stat()
    assert st.st_size == 1 << 40 and st.st_blocks * 512 < (4 << 20)
    with open(image, "rb") as f:
        assert f.read(6) == b"IMGabc"
        f.seek(1 << 20)
        assert f.read(3) == b"MID"


def test_mkfs_check_allows_the_forwarding_read_ahead(monkeypatch):
    """In a guest with forwarding, the reference counts what its shim took, up to the credit
    ahead of mkfs: a gap that size is timing, not mkfs reading differently; beyond it, it is."""
    from harness.mkfscheck import PIPE_SLACK, check_mkfs
    argv = ["mkfs.erofs", "--tar=f", "/a/layer.erofs"]
    stream = 4 << 20
    for host_env, gap, status in ((None, PIPE_SLACK + 1000, "fail"),
                                  ("/dev/vport1p2", PIPE_SLACK + 1000, "pass"),
                                  ("/dev/vport1p2", PIPE_SLACK + fwd.CREDIT + 1000, "fail")):
        if host_env:
            monkeypatch.setenv("LAYERCONF_MKFS_HOST", host_env)
        else:
            monkeypatch.delenv("LAYERCONF_MKFS_HOST", raising=False)
        go = [{"argv": argv[1:], "fed": stream - gap, "eof": False}]
        check = check_mkfs("case", go, argv, stream, stream)
        assert check.status.value == status, (host_env, gap, check)
