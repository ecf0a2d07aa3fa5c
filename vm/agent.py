"""layerconf guest agent: JSON lines over a virtio-serial port. Stdlib only.

Started by vm/init.sh from the initramfs (a copy of this file and of the guest's python) before
anything of the host is mounted, so a saved guest state has it running already. It finds the
port named `layerconf.agent` through /sys/class/virtio-ports/*/name and waits there for the
host's setup line (`setup key=value ...`: python, agent, pythonpath, rw, scratch, modules, time,
seed; no spaces in values); then it mounts the host's tree (mount_host), chroots into it,
announces itself with {"event": "ready", ...} and serves one request per line, in order:

  request:  {"id": N, "op": "<op>", "args": {...}}
  response: {"id": N, "ok": true, "result": ...}  or  {"id": N, "ok": false, "error": "...",
            "traceback": "..."}

Ops:
  ping                          -> {"uptime": float}
  run      cmd (str: /bin/sh -c; list: exec), timeout=None, cwd=None, env=None (added to the
           agent's), input=None (str)
                                -> {"rc", "stdout", "stderr", "timed_out", "seconds"}; output is
           decoded with surrogateescape (encode back the same way for the exact bytes)
  scenario path, options        -> harness.runner.run_file(path, options), in this process
  capabilities                  -> harness.runner.probe_capabilities()
  probe    (kernel probes of vm/probe.py)
  drop_caches                   -> drop the guest page/dentry caches (host files edited since)
  modprobe name                 -> load an extra module (e.g. ext4) from the kernel cache (init
                                   loads kernels.toml's extra_modules already: then a no-op)
  shutdown                      -> replies, then the agent exits and init powers off

Ports named `layerconf.mkfsN` (harness/backends/mkfs_forward.py) are put in
LAYERCONF_MKFS_HOST for the recording shim, which sends tar-mode mkfs.erofs runs there.

Lines are whole JSON documents (json.dumps escapes every newline), so any output size is
framed safely. The python is started with -S (site .pth hooks are slow under TCG); the host's
site-packages folders come from the setup line's pythonpath. A guest restored from a saved state
shares its random pool with every other guest restored from it: the agent mixes the setup
line's seed into the pool and reseeds before anything draws from it.
"""
from __future__ import annotations

import json
import os
import sys
import time

# Modules imported at start-up come from the initramfs: vm/initramfs.py copies those that
# AGENT_START_IMPORTS names. The rest (subprocess, signal, traceback...) are imported where used,
# from the host's tree once the agent is in it.

PORT_NAME = "layerconf.agent"
MKFS_PORT_PREFIX = "layerconf.mkfs"   # harness/backends/mkfs_forward.py
VM_DIR = os.path.dirname(os.path.abspath(__file__))   # the host's vm/ once the setup line came
REPO = os.path.dirname(VM_DIR)
MAX_OUTPUT = 256 << 20
MODULES_DIR = ""     # the kernel's extracted modules on the host (the setup line's modules)
GUEST_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb", "TMPDIR": "/run/layerconf/tmp",
             "LAYERCONF_SCRATCH": "/run/layerconf", "LAYERCONF_IN_VM": "1",
             "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}


def _mount(source: str, target: str, fstype: str, data: str = "", flags: int = 0) -> None:
    os.makedirs(target, exist_ok=True)
    if _libc().mount(source.encode(), target.encode(), fstype.encode(), flags,
                     data.encode() or None) != 0:
        import ctypes
        e = ctypes.get_errno()
        raise OSError(e, f"mount -t {fstype} {source} {target} -o {data or '-'}: {os.strerror(e)}")


def _libc():
    import ctypes   # imported before the guest is saved (vm/initramfs.py AGENT_START_IMPORTS)
    return ctypes.CDLL(None, use_errno=True)


MS_RDONLY, MS_NOATIME = 1, 1024
P9 = "trans=virtio,version=9p2000.L,msize=262144"


def mount_host(setup: dict, root: str = "/newroot") -> None:
    """The guest's root: the host's `/` read-only over 9p (tag hostroot, cache=loose) as the
    lower layer of an overlay with a tmpfs upper, so the host's tree at the same paths and
    writable; fresh proc/sys/dev/run; the scratch fs at /run/layerconf, ext4 on /dev/vda (a
    host-made image) or tmpfs. Whiteouts and trusted.* xattrs need a real local fs (never use
    9p paths as scratch), and 6.12's file-backed erofs needs a fs with read_folio, which tmpfs
    lacks (ENOTBLK). Then the read-write 9p shares (rw=tag:/path,...) at their host paths."""
    _mount("hostroot", "/host", "9p", P9 + ",cache=loose", MS_RDONLY)
    _mount("tmpfs", "/ovl", "tmpfs", "mode=0755")
    os.makedirs("/ovl/u")
    os.makedirs("/ovl/w")
    _mount("overlay", root, "overlay", "lowerdir=/host,upperdir=/ovl/u,workdir=/ovl/w")
    _mount("proc", root + "/proc", "proc")
    _mount("sys", root + "/sys", "sysfs")
    _mount("dev", root + "/dev", "devtmpfs")
    _mount("devpts", root + "/dev/pts", "devpts", "newinstance,ptmxmode=0666")
    _mount("tmpfs", root + "/dev/shm", "tmpfs", "mode=1777")
    _mount("tmpfs", root + "/run", "tmpfs", "mode=0755")
    scratch = root + "/run/layerconf"
    if setup.get("scratch") == "ext4":
        _mount("/dev/vda", scratch, "ext4", "", MS_NOATIME)
    else:
        _mount("scratch", scratch, "tmpfs", "mode=1777,size=80%")
    os.chmod(scratch, 0o1777)
    os.makedirs(scratch + "/tmp", exist_ok=True)
    os.chmod(scratch + "/tmp", 0o1777)
    if os.path.isdir("/sys/fs/fuse/connections"):
        try:
            _mount("fusectl", root + "/sys/fs/fuse/connections", "fusectl")
        except OSError:
            pass
    for spec in filter(None, setup.get("rw", "").split(",")):
        tag, path = spec.split(":", 1)
        _mount(tag, root + path, "9p", P9 + ",cache=none")


def network_up() -> None:
    """QEMU's user-mode network (net=user on the setup line; only for scenarios that need the
    mirror): virtio_net from the initramfs (init loaded it with the extra modules), eth0 as
    slirp's default guest 10.0.2.15/24 via 10.0.2.2, and slirp's DNS 10.0.2.3 in the guest's
    resolv.conf. Run after the chroot (subprocess is not among the initramfs' modules), with the
    host's `ip` (iproute2) or its busybox."""
    import shutil
    import subprocess
    ip = [shutil.which("ip")] if shutil.which("ip") else [shutil.which("busybox") or "busybox", "ip"]
    if not os.path.isdir("/sys/class/net/eth0"):
        raise OSError("user-mode network: no eth0 (virtio_net not loaded, or no virtio-net "
                      "device)")
    for argv in (["ip", "link", "set", "lo", "up"], ["ip", "link", "set", "eth0", "up"],
                 ["ip", "addr", "add", "10.0.2.15/24", "dev", "eth0"],
                 ["ip", "route", "add", "default", "via", "10.0.2.2"]):
        try:
            p = subprocess.run(ip + argv[1:], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError) as e:
            raise OSError(f"user-mode network: {' '.join(argv)}: {e}") from None
        if p.returncode:
            raise OSError(f"user-mode network: {' '.join(argv)}: {p.stderr.strip()}")
    resolv = "/etc/resolv.conf"
    if os.path.lexists(resolv):
        os.unlink(resolv)
    with open(resolv, "w") as f:
        f.write("nameserver 10.0.2.3\n")


def enter_host(setup: dict) -> None:
    """Mount the host's tree (mount_host), chroot into it and take the environment, paths and
    python of the setup line, as if started there."""
    global VM_DIR, REPO, MODULES_DIR
    time.clock_settime(time.CLOCK_REALTIME, float(setup.get("time", time.time())))
    t0 = uptime()
    if setup.get("scratch") == "ext4":   # a restored guest may cache blocks of an older disk
        import fcntl
        fd = os.open("/dev/vda", os.O_RDONLY)
        try:
            fcntl.ioctl(fd, 0x1261)          # BLKFLSBUF
        finally:
            os.close(fd)
    mount_host(setup)
    with open("/proc/sys/kernel/hostname", "w") as f:
        f.write("layerconf-vm")
    os.chroot("/newroot")
    os.chdir("/")
    python = setup.get("python", sys.executable)
    if not os.access(python, os.X_OK):
        raise SystemExit(f"python {python} is not executable in the guest (not readable by the "
                         "host user that runs qemu?)")
    print(f"LAYERCONF-INIT-READY setup={t0} ready={uptime()} scratch={setup.get('scratch')}",
          flush=True)
    os.environ.clear()
    os.environ.update(GUEST_ENV)
    mkfs_ports = ports_named(MKFS_PORT_PREFIX)
    if mkfs_ports:      # the recording shim sends tar-mode mkfs runs there (oracle/mkfsshim/)
        os.environ["LAYERCONF_MKFS_HOST"] = ",".join(mkfs_ports)
    MODULES_DIR = setup.get("modules", "")
    sys.executable = python             # what child pythons run
    sys.dont_write_bytecode = True
    sys.path_importer_cache.clear()     # folders read so far were the initramfs' ones
    VM_DIR = os.path.dirname(setup["agent"])
    REPO = os.path.dirname(VM_DIR)


def read_setup(lines) -> dict:
    """The host's setup line (the first line on the port) as a dict; "line" is the line."""
    print(f"LAYERCONF-INIT-WAIT uptime={uptime()}", flush=True)   # the host may save from here
    line = next(lines).decode()
    words = line.split()
    if not words or words[0] != "setup":
        raise SystemExit(f"layerconf agent: expected the setup line, got {line[:200]!r}")
    fields = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    fields["line"] = line
    return fields


def setup_path(pythonpath: str) -> None:
    """Repo first, then the host python's site dirs (without running their .pth hooks)."""
    extra = [REPO, VM_DIR]
    for d in filter(None, pythonpath.split(":")):
        extra.append(d)
        try:  # plain-path lines of .pth files (editable installs); skip `import` lines
            for pth in sorted(n for n in os.listdir(d) if n.endswith(".pth")):
                with open(os.path.join(d, pth)) as f:
                    for line in f:
                        line = line.strip()
                        if line and not line.startswith(("#", "import ", "import\t")):
                            p = os.path.join(d, line)
                            if os.path.isdir(p):
                                extra.append(p)
        except OSError:
            pass
    for p in reversed(extra):
        if p not in sys.path:
            sys.path.insert(0, p)


def _ports() -> dict[str, str]:
    """The virtio-serial ports present now: name -> /dev path."""
    base, found = "/sys/class/virtio-ports", {}
    for port in (os.listdir(base) if os.path.isdir(base) else []):
        try:
            with open(os.path.join(base, port, "name")) as f:
                found[f.read().strip()] = "/dev/" + port
        except OSError:
            pass
    return found


def find_port(timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        dev = _ports().get(PORT_NAME)
        if dev:
            return dev
        if time.monotonic() > deadline:
            raise SystemExit(f"layerconf agent: no virtio port named {PORT_NAME}")
        time.sleep(0.01)


def ports_named(prefix: str) -> list[str]:
    """The virtio-serial ports whose names start with `prefix`, as /dev paths, by name."""
    return [dev for name, dev in sorted(_ports().items()) if name.startswith(prefix)]


def uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def _dec(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def op_run(cmd, timeout=None, cwd=None, env=None, input=None):
    import signal
    import subprocess
    t0 = time.monotonic()
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.Popen(cmd, shell=isinstance(cmd, str), cwd=cwd, env=e,
                         stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    timed_out = False
    try:
        out, err = p.communicate(None if input is None else input.encode("utf-8", "surrogateescape"),
                                 timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = p.communicate()
    trunc = len(out) > MAX_OUTPUT or len(err) > MAX_OUTPUT
    return {"rc": p.returncode, "stdout": _dec(out[:MAX_OUTPUT]), "stderr": _dec(err[:MAX_OUTPUT]),
            "timed_out": timed_out, "truncated": trunc, "seconds": time.monotonic() - t0}


def op_scenario(path, options=None):
    from harness import mkfs_shim, runner
    mkfs_shim.forward_in_process()   # the reference's mkfs runs reach the host as containerd's do
    return runner.run_file(path, dict(options or {}))


def op_capabilities():
    from harness import runner
    return runner.probe_capabilities()


def op_probe():
    import probe  # vm/probe.py
    return probe.probe()


def op_drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    return True


def op_modprobe(name):
    """Load an extra module (kernels.toml extra_modules) and its dependencies from the host's
    kernel cache (MODULES_DIR, read through 9p)."""
    name = name.replace("-", "_")
    if os.path.isdir(f"/sys/module/{name}"):
        return {"loaded": [], "already": True}
    moddir = MODULES_DIR
    if not moddir:
        raise RuntimeError("no modules= in the host's setup line")
    with open(os.path.join(moddir, "extra")) as f:
        extra = f.read().split()
    if name not in extra:
        raise ValueError(f"module {name} is not in extra_modules of vm/kernels.toml ({' '.join(extra)})")
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    loaded = []
    for m in extra[:extra.index(name) + 1]:   # dependency order; a prefix holds every dependency
        if os.path.isdir(f"/sys/module/{m}"):
            continue
        fd = os.open(os.path.join(moddir, m + ".ko"), os.O_RDONLY)
        try:
            if libc.syscall(313, fd, b"", 0) != 0:   # finit_module
                e = ctypes.get_errno()
                if e != 17:  # EEXIST
                    raise OSError(e, f"finit_module({m}): {os.strerror(e)}")
        finally:
            os.close(fd)
        loaded.append(m)
    return {"loaded": loaded, "already": False}


OPS = {
    "modprobe": op_modprobe,
    "ping": lambda: {"uptime": uptime()},
    "run": op_run,
    "scenario": op_scenario,
    "capabilities": op_capabilities,
    "probe": op_probe,
    "drop_caches": op_drop_caches,
}


class Channel:
    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDWR)

    def send(self, obj) -> None:
        data = json.dumps(obj, default=str).encode() + b"\n"
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def lines(self):
        chunks = []
        while True:
            d = os.read(self.fd, 1 << 20)
            if not d:            # host side not connected (yet, or any more)
                time.sleep(0.02)
                continue
            if b"\n" not in d:  # only new data is searched: linear in the request size
                chunks.append(d)
                continue
            chunks.append(d)
            buf = b"".join(chunks)
            *lines, rest = buf.split(b"\n")
            chunks = [rest] if rest else []
            for line in lines:
                if line.strip():
                    yield line


def reseed(seed: str) -> None:
    """Mix the host's seed into the kernel's random pool and reseed the CRNG now, so guests
    restored from one saved state draw different random numbers (temp names, uuids)."""
    if not seed:
        return
    import fcntl
    try:
        with open("/dev/urandom", "wb") as f:
            f.write(bytes.fromhex(seed))
            f.flush()
            fcntl.ioctl(f.fileno(), 0x5207)   # RNDRESEEDCRNG
    except (OSError, ValueError) as e:
        print(f"layerconf agent: reseeding the random pool failed: {e}", file=sys.stderr)


def main() -> int:
    ch = Channel(find_port())
    lines = ch.lines()
    setup = read_setup(lines)
    try:
        enter_host(setup)
    except (OSError, SystemExit) as e:
        print(f"LAYERCONF-INIT-FAIL {e}", flush=True)
        return 1
    reseed(setup.get("seed", ""))
    setup_path(setup.get("pythonpath", ""))
    if setup.get("net") == "user":
        try:
            network_up()
        except OSError as e:
            print(f"LAYERCONF-INIT-FAIL {e}", flush=True)
            return 1
    try:
        os.chdir(REPO)   # as on the host, where the harness runs from the repo
    except OSError:
        pass
    ch.send({"event": "ready", "pid": os.getpid(), "uptime": uptime(), "uname": os.uname().release,
             "python": sys.version.split()[0], "executable": sys.executable})
    for line in lines:
        rid = None
        try:
            req = json.loads(line)
            rid = req.get("id")
            op = req.get("op")
            if op == "shutdown":
                ch.send({"id": rid, "ok": True, "result": True})
                os.sync()
                return 0
            fn = OPS.get(op)
            if fn is None:
                raise ValueError(f"unknown op {op!r} (known: {', '.join(sorted(OPS))}, shutdown)")
            result = fn(**(req.get("args") or {}))
            ch.send({"id": rid, "ok": True, "result": result})
        except BaseException as e:  # report, keep serving (even SystemExit from a scenario)
            import traceback
            tb = traceback.format_exc()
            print(f"layerconf agent: request {rid}: {tb}", file=sys.stderr)
            ch.send({"id": rid, "ok": False, "error": f"{type(e).__name__}: {e}", "traceback": tb})
    return 0


if __name__ == "__main__":
    sys.exit(main())
