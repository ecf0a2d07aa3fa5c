"""VM backend: scenarios run inside a QEMU guest with a pinned Debian kernel; no root on the host.

    with VM("6.12") as vm:                       # restores a saved ready guest (vm/README.md)
        vm.run("uname -r")["stdout"]             # agent op `run`
        vm.call("probe")                         # kernel capability probes (vm/probe.py)

    backend = VMBackend(kernel="6.1")            # one long-lived VM per process and kernel
    result = backend.run_file("scenarios/whiteout/root-file.yaml")   # harness.runner.run_file in the guest

The guest (see vm/init.sh) is `-M microvm` booting the uncompressed vmlinux through PVH, with the
host's root read-only over 9p under a tmpfs overlay, and vm/agent.py on a virtio-serial port
spoken to as JSON lines over a UNIX socket. Guests start from a saved state of the booted machine
whose agent waits for its setup line (the per-guest values); the state is saved once per key
(VM.state_key) and restored with `-incoming`. TCG is used unless a quick probe shows that KVM
really boots (the /dev/kvm on PVM hosts does not). Every failure of the machine itself (qemu
would not start, boot timeout, kernel panic, a hung or lost agent) raises VMError with one
paragraph that says what happened and where the console log is; the runner reports it as an
error. qemu runs in its own process group and is killed on close(), at exit, on SIGTERM/SIGHUP,
and, if this process dies in any way (SIGKILL too), by a watchdog `sh` in qemu's process group
that waits on a pipe only this process holds open (plus PR_SET_PDEATHSIG where delivered).

Two more virtio-serial ports carry the guest's tar-mode mkfs.erofs runs to the host, where a
thread per port runs them natively (harness/backends/mkfs_forward.py, docs/vm.md).

Environment knobs: LAYERCONF_VM_CACHE (kernel cache), LAYERCONF_VM_ACCEL (auto|tcg|kvm),
LAYERCONF_VM_PYTHON (the python the guest runs), LAYERCONF_VM_LOGS (console logs),
LAYERCONF_QEMU (the qemu-system-x86_64 binary), LAYERCONF_VM_MKFS_FORWARD (0: mkfs in the guest).
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import functools
import hashlib
import importlib.util
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import mkfs_forward

REPO = Path(__file__).resolve().parents[2]
VM_DIR = REPO / "vm"
PORT_NAME = "layerconf.agent"
STATE_FORMAT = 1          # bump when the meaning of a saved state changes
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"   # vm/agent.py
SAVE_TIMEOUT_FACTOR = 5   # the boot that saves a state may take this many boot_timeouts
CACHE_CLOCK_SLACK = 1.0   # file times come from a coarse clock: a change this much "before" may be after
PANIC_RE = re.compile(r"Kernel panic - not syncing[^\n]*|LAYERCONF-INIT-FAIL[^\n]*|"
                      r"LAYERCONF-AGENT-EXIT[^\n]*")


class VMError(RuntimeError):
    """The VM failed (boot, panic, hang, lost agent, setup). str() is one paragraph.

    kind: "setup" (missing qemu/kernel), "boot", "panic", "timeout", "lost", "op" (the guest op
    raised; the VM is still usable). console_log: the kept serial log, when there is one.
    """

    def __init__(self, message: str, *, kind: str = "error", console_log: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.console_log = console_log


class GuestOpError(VMError):
    """An agent op raised inside the guest; the VM is fine. .guest_traceback has the details."""

    def __init__(self, message: str, traceback: str = "", **kw):
        super().__init__(message, kind="op", **kw)
        self.guest_traceback = traceback


# ---------------------------------------------------------------- vm/ helpers, loaded by path

_LOAD_LOCK = threading.RLock()


def _load(name: str):
    # locked: guests started from several threads (run_files) must not see a half-run module
    key = f"layerconf_vm_{name}"
    with _LOAD_LOCK:
        if key in sys.modules:
            return sys.modules[key]
        spec = importlib.util.spec_from_file_location(key, VM_DIR / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[key] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules[key]
            raise
        return mod


def fetch_kernel():
    return _load("fetch_kernel")


def kernel_names(spec: str | None = None) -> list[str]:
    """'6.1' | '6.12' | 'all' | '6.1,6.12' -> pinned kernel names (ValueError if unknown)."""
    fk = fetch_kernel()
    try:
        return fk.kernel_names(spec or "default")
    except fk.FetchError as e:
        raise ValueError(str(e)) from None


def qemu_binary() -> str | None:
    q = os.environ.get("LAYERCONF_QEMU") or "qemu-system-x86_64"
    return shutil.which(q)


def unavailable_reason(kernel: str = "6.1", *, fetch: bool = False) -> str | None:
    """None when a VM with `kernel` can boot here, else why not and what to do (for test skips)."""
    if qemu_binary() is None:
        return "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
    fk = fetch_kernel()
    try:
        if kernel not in fk.load_pins()["kernels"]:
            return f"kernel {kernel} is not pinned in vm/kernels.toml"
        if fk.cached(kernel) is None:
            if not fetch:
                return (f"kernel {kernel} is not in the cache {fk.cache_root()}; "
                        f"run `python3 -m vm.fetch_kernel {kernel}` (or make bootstrap)")
            fk.ensure_kernel(kernel, log=lambda *a: None)
        _load("initramfs").find_busybox()
    except Exception as e:  # noqa: BLE001
        return str(e)
    return None


def _host_khz() -> int | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return int(float(line.split(":")[1]) * 1000)
    except (OSError, ValueError):
        pass
    return None


def _host_cpu() -> str:
    """The host CPU's model and flags (a saved state needs the same CPU features)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f.read().split("\n\n")[0].splitlines()
                     if ln.startswith(("model name", "flags"))]
    except OSError:
        return "?"
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _mke2fs() -> str | None:
    return shutil.which("mke2fs") or shutil.which("mke2fs", path="/usr/sbin:/sbin")


def _qarg(path) -> str:
    """A path inside a qemu option value (commas are doubled)."""
    return str(path).replace(",", ",,")


def _size_bytes(size: str) -> int:
    m = re.fullmatch(r"(\d+)([KMGT]?)", str(size).strip().upper())
    if not m:
        raise ValueError(f"bad size {size!r} (e.g. 8G)")
    return int(m.group(1)) << (10 * " KMGT".index(m.group(2) or " "))


def _writable_dir(preferred: Path, fallback_name: str) -> Path:
    for d in (preferred, Path(tempfile.gettempdir()) / f"layerconf-vm-{os.getuid()}" / fallback_name):
        try:
            d.mkdir(parents=True, exist_ok=True)
            if os.access(d, os.W_OK | os.X_OK):
                return d
        except OSError:
            continue
    raise VMError(f"no writable folder for VM {fallback_name} (tried {preferred})", kind="setup")


def _log_dir() -> Path:
    env = os.environ.get("LAYERCONF_VM_LOGS")
    if env:
        return _writable_dir(Path(env), "logs")
    return _writable_dir(fetch_kernel().cache_root() / "logs", "logs")


def _states_dir(kernel: str) -> Path:
    return _writable_dir(fetch_kernel().cache_root() / "states" / kernel, f"states-{kernel}")


def _prune_states(d: Path, keep: int = 6) -> None:
    """Keep the newest saved states of a kernel (one per machine layout in use), and probes."""
    try:
        for pattern, n in (("*.vmstate", keep), ("probe-*.json", 4 * keep)):
            files = sorted(d.glob(pattern), key=lambda p: p.stat().st_mtime)
            for p in files[:-n]:
                p.unlink()
    except OSError:
        pass


def _prune_logs(d: Path, keep: int = 200) -> None:
    try:
        files = sorted(d.glob("*.log"), key=lambda p: p.stat().st_mtime)
        for p in files[:-keep]:
            p.unlink()
    except OSError:
        pass


_SITE_CACHE: dict[str, list[str]] = {}


def _python_site_dirs(python: str) -> list[str]:
    if python not in _SITE_CACHE:
        if os.path.realpath(python) == os.path.realpath(sys.executable) and python == sys.executable:
            import site
            dirs = list(site.getsitepackages())
            if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
                dirs.append(site.getusersitepackages())
        else:
            p = subprocess.run([python, "-c", "import site,json;print(json.dumps(site.getsitepackages()))"],
                               capture_output=True, text=True, timeout=30)
            dirs = json.loads(p.stdout) if p.returncode == 0 else []
        _SITE_CACHE[python] = [d for d in dirs if os.path.isdir(d)]
    return _SITE_CACHE[python]


def default_python() -> str:
    """The python the guest runs: $LAYERCONF_VM_PYTHON, else this interpreter when this user can
    read it (through 9p the guest sees files with the host user's rights), else /usr/bin/python3."""
    env = os.environ.get("LAYERCONF_VM_PYTHON")
    if env:
        return env
    if sys.executable and os.access(sys.executable, os.X_OK):
        return sys.executable
    return "/usr/bin/python3"


# ---------------------------------------------------------------- process safety net

_LIVE: set = set()
_LIVE_LOCK = threading.Lock()
_HANDLERS_INSTALLED = False


def _kill_all() -> None:
    with _LIVE_LOCK:
        vms = list(_LIVE)
    for vm in vms:
        try:
            vm.kill()
        except Exception:  # noqa: BLE001
            pass


def _on_signal(signum, frame):  # SIGTERM/SIGHUP: no qemu outlives us, then die as asked
    _kill_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED or threading.current_thread() is not threading.main_thread():
        return
    _HANDLERS_INSTALLED = True
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_signal)
        except (ValueError, OSError):
            pass


atexit.register(_kill_all)


def _pdeathsig_preexec(parent: int):
    def fn():
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except Exception:  # noqa: BLE001
            pass
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)
    return fn


# ---------------------------------------------------------------- KVM probe

_KVM: dict[str, bool] = {}


@functools.lru_cache(maxsize=None)
def _qemu_version(qemu: str) -> str:
    try:
        return subprocess.run([qemu, "--version"], capture_output=True, text=True,
                              timeout=10).stdout.split("\n")[0]
    except (OSError, subprocess.SubprocessError):
        return "?"


def kvm_usable(art, initrd: Path, qemu: str, timeout: float = 8.0) -> bool:
    """Whether a KVM guest really boots here (to user space: the probe init prints a marker).

    /dev/kvm existing proves nothing: on PVM hosts stock kernels hang or qemu aborts. A real
    KVM guest reaches user space in well under a second; the answer is cached on disk per host
    kernel and qemu version (the probe costs `timeout` seconds once where KVM does not work)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        os.close(fd)
    except OSError:
        return False
    key = f"{os.uname().release}|{_qemu_version(qemu)}"
    if key in _KVM:
        return _KVM[key]
    cache = _writable_dir(fetch_kernel().cache_root(), "state") / "kvm-probe.json"
    import fcntl
    with open(cache.with_suffix(".lock"), "a") as lock:   # one probe at a time (xdist workers)
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            known = json.loads(cache.read_text())
        except (OSError, ValueError):
            known = {}
        if key not in known:
            known[key] = _kvm_probe(art, initrd, qemu, timeout)
            try:
                cache.write_text(json.dumps(known, indent=1))
            except OSError:
                pass
    _KVM[key] = bool(known[key])
    return _KVM[key]


def _kvm_probe(art, initrd: Path, qemu: str, timeout: float) -> bool:
    """Boot the probe init under KVM; True when it printed its marker in time."""
    tmp = Path(tempfile.mkdtemp(prefix="lcvm-kvm-"))
    log = tmp / "console.log"
    cmd = [qemu, "-M", "microvm", "-accel", "kvm", "-cpu", "host", "-smp", "1", "-m", "256M",
           "-no-reboot", "-nodefaults", "-nographic", "-no-user-config",
           "-kernel", str(art.vmlinux), "-initrd", str(initrd),
           "-append", "console=ttyS0 quiet panic=-1 layerconf.mode=probe",
           "-chardev", f"file,id=con,path={_qarg(log)}", "-serial", "chardev:con"]
    ok = False
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if log.exists() and "LAYERCONF-PROBE-OK" in log.read_text(errors="replace"):
                ok = True
                break
            if p.poll() is not None:
                ok = log.exists() and "LAYERCONF-PROBE-OK" in log.read_text(errors="replace")
                break
            time.sleep(0.05)
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return ok


# ---------------------------------------------------------------- QMP (saving a guest)

class _Qmp:
    """A minimal QMP client: one command at a time, events skipped. OSError on any failure."""

    def __init__(self, path: str, deadline: float):
        self.path, self.deadline = path, deadline
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.file = None

    def __enter__(self):
        while True:
            try:
                self.sock.connect(self.path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > self.deadline:
                    raise OSError("qemu's QMP socket did not open") from None
                time.sleep(0.01)
        self.sock.settimeout(max(0.1, self.deadline - time.monotonic()))
        self.file = self.sock.makefile("rwb")
        self._read()                               # the greeting
        self.execute("qmp_capabilities")
        return self

    def __exit__(self, *exc):
        with contextlib.suppress(OSError):
            self.sock.close()

    def _read(self) -> dict:
        while True:
            line = self.file.readline()
            if not line:
                raise OSError("qemu closed its QMP socket")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def execute(self, command: str, **arguments):
        self.file.write(json.dumps({"execute": command, "arguments": arguments}).encode() + b"\n")
        self.file.flush()
        msg = self._read()
        if "error" in msg:
            raise OSError(f"QMP {command}: {msg['error'].get('desc', msg['error'])}")
        return msg.get("return", {})


# ---------------------------------------------------------------- the VM

class _Lost(Exception):
    pass


def overdue(waited: float, cpu: float, budget: float) -> bool:
    """Whether a guest that has been waited for `waited` s, in which qemu used `cpu` s of CPU
    (inf: unknown), has had its `budget`: that much CPU time (a spinning or slow guest used it
    up), or BOOT_WALL_FACTOR times that much wall time (a guest that waits on nothing). Under
    TCG on cores shared with other heavy jobs a guest gets a fraction of a core, so a wall-clock
    budget fails guests that are slow, not hung."""
    return waited > budget * BOOT_WALL_FACTOR or (waited > budget and cpu > budget)


class _Timeout(Exception):
    pass


BOOT_WALL_FACTOR = 5    # wall time a boot or an op may take, as a multiple of its CPU-time budget
# Without ERMS/FSRM, glibc's and the kernel's memcpy use vector loops instead of `rep movsb`,
# which TCG runs byte by byte: measured in a guest (docs/vm.md), copying 800 MB took 2.7x less
# CPU, mkfs.erofs of the 201 MiB rootfs tar 1.9x less.
TCG_CPU = "max,-erms,-fsrm"
IDLE_SHARE = 0.02        # a guest starting with less CPU than this share of its wait was idle
DEFAULT_MEMORY = "1G"   # a guest's RAM, unless a scenario's inputs need more (_guest_needs)


class VM:
    """One QEMU guest with the agent. Context manager; start() boots, close() kills.

    kernel: a name from vm/kernels.toml ("6.1", "6.12"; None: its default). accel: "auto" (KVM only if a probe
    boots, else TCG), "tcg" or "kvm". rw_dirs: host folders mounted read-write at the same path
    in the guest (everything else of the host is read-only there). boot_timeout: seconds of
    qemu's CPU time from its start to the agent's ready message (wall time: at most
    BOOT_WALL_FACTOR times that); a failed boot is retried `retries` times.
    network: QEMU user-mode networking (slirp: a virtio-net device, 10.0.2.15 via 10.0.2.2, DNS
    10.0.2.3, no root needed), off unless asked: a guest is offline by default; such a guest
    always boots (no saved state).
    """

    _seq = itertools.count(1)

    def __init__(self, kernel: str | None = None, *, accel: str | None = None, memory: str = DEFAULT_MEMORY,
                 smp: int = 1, boot_timeout: float = 60.0, retries: int = 1,
                 python: str | None = None, rw_dirs=(), append: str = "",
                 scratch: str = "ext4", scratch_size: str = "8G",
                 log_dir: str | os.PathLike | None = None, fetch: bool = True,
                 saved_state: bool | None = None, network: bool = False):
        self.kernel = kernel_names(kernel)[0] if kernel in (None, "", "default") else kernel
        self.accel_wanted = (accel or os.environ.get("LAYERCONF_VM_ACCEL") or "auto").lower()
        self.memory, self.smp = memory, smp
        self.boot_timeout, self.retries = boot_timeout, retries
        self.python = python or default_python()
        self.rw_dirs = [str(Path(d).resolve()) for d in rw_dirs]
        self.append = append
        self.scratch, self.scratch_size = scratch, scratch_size
        if scratch not in ("ext4", "tmpfs"):
            raise ValueError(f"scratch must be ext4 or tmpfs, not {scratch!r}")
        self.fetch = fetch
        if saved_state is None:
            saved_state = os.environ.get("LAYERCONF_VM_SAVED_STATE", "1") != "0"
        self.network = bool(network)
        # a networked guest is rare: it boots rather than keep a second saved state per kernel
        self.use_saved_state = saved_state and not self.network
        self.started_by: str | None = None       # "restore" (a saved state) or "boot"
        self.boot_stages: dict = {}
        self._log_dir = Path(log_dir) if log_dir else None
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self._buf = b""
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._tmp: str | None = None
        self.console_log: Path | None = None
        self.qemu_log: Path | None = None
        self.accel: str | None = None
        self.boot_seconds: float | None = None
        self.ready: dict = {}
        self.art = None
        self.initrd: Path | None = None
        self.dead_reason: str | None = None
        self.boots = 0
        # host wall time since which the guest may have cached host files (through 9p's
        # cache=loose, which never revalidates): its start, then its last cache drop
        self.host_cache_since = time.time()
        self._idled = False      # the last start attempt's guest used < IDLE_SHARE of its wait
        # tar-mode mkfs.erofs runs of the guest run on the host (harness/backends/mkfs_forward.py)
        self.mkfs_ports = mkfs_forward.PORTS if mkfs_forward.enabled() else 0
        self._mkfs_server: mkfs_forward.MkfsServer | None = None

    # -- lifecycle

    def __enter__(self) -> "VM":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.kill()
        except Exception:  # noqa: BLE001
            pass

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.sock is not None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _prepare(self) -> None:
        if self.art is not None:
            return
        qemu = qemu_binary()
        if qemu is None:
            raise VMError("cannot start a VM: qemu-system-x86_64 is not installed (apt-get install "
                          "qemu-system-x86, or set LAYERCONF_QEMU).", kind="setup")
        self.qemu = qemu
        if not os.access(self.python, os.X_OK):
            raise VMError(f"cannot start a VM: the guest python {self.python} is not executable by "
                          "this user (set LAYERCONF_VM_PYTHON=/usr/bin/python3).", kind="setup")
        fk = fetch_kernel()
        try:
            art = fk.cached(self.kernel)
            if art is None:
                if not self.fetch:
                    raise fk.FetchError(f"kernel {self.kernel} is not in the cache {fk.cache_root()}")
                art = fk.ensure_kernel(self.kernel, log=lambda *a: None)
            self.initrd = _load("initramfs").ensure_initramfs(art, self.python)
        except Exception as e:  # FetchError, InitramfsError, OSError
            raise VMError(f"cannot start a VM with kernel {self.kernel}: {e}. Run `python3 -m "
                          f"vm.fetch_kernel {self.kernel}` (as root during bootstrap) and retry.",
                          kind="setup") from None
        self.art = art
        for p in [self.python, *self.rw_dirs, str(VM_DIR), str(art.modules_dir),
                  *_python_site_dirs(self.python)]:
            if re.search(r"[\s,:\"']", p):
                raise VMError(f"cannot start a VM: the path {p!r} has a space, comma, colon or quote, "
                              "which the guest's setup line cannot carry.", kind="setup")
        if self.accel_wanted == "auto":
            self.accel = "kvm" if kvm_usable(art, self.initrd, qemu) else "tcg"
        elif self.accel_wanted in ("tcg", "kvm"):
            self.accel = self.accel_wanted
        else:
            raise VMError(f"unknown accelerator {self.accel_wanted!r} (auto, tcg or kvm)", kind="setup")

    def command(self, sock_path: str, console: Path, scratch_img: str | None = None) -> list[str]:
        """qemu's argv. It names the machine only: what varies from guest to guest (the python,
        rw folders, the clock) goes in the setup line, so one saved state serves every guest."""
        khz = _host_khz()
        append = ["console=ttyS0", "quiet", "panic=-1", "cryptomgr.notests", "mitigations=off"]
        if self.accel == "tcg":
            # TCG's TSC follows the host's clock. Without tsc=reliable the clocksource watchdog
            # of a guest starved of CPU at boot sees it skew against jiffies (which lose the
            # ticks a descheduled vCPU misses), marks it unstable and falls back to jiffies:
            # guest time then ran 3.4x slower than the host's under load (1003 s of a scenario
            # took 3373 s), timers lost their resolution. nowatchdog: the lockup detectors
            # report a vCPU the host did not schedule, not a hang.
            append += ["tsc=reliable", "nowatchdog"]
            if khz:
                append.append(f"tsc_early_khz={khz}")
        if self.append:
            append.append(self.append)
        if len(" ".join(append)) >= 2048:
            raise VMError("cannot start a VM: the kernel command line would exceed 2048 bytes "
                          f"({' '.join(append)[:200]}...); shorten `append`.", kind="setup")
        cmd = [self.qemu, "-M", "microvm", "-accel", self.accel,
               "-cpu", "host" if self.accel == "kvm" else TCG_CPU,
               "-smp", str(self.smp), "-m", self.memory,
               "-no-reboot", "-nodefaults", "-nographic", "-no-user-config",
               "-kernel", str(self.art.vmlinux), "-initrd", str(self.initrd),
               "-append", " ".join(append),
               "-chardev", f"file,id=con,path={_qarg(console)}", "-serial", "chardev:con",
               "-fsdev", "local,id=fs0,path=/,security_model=none,readonly=on,multidevs=remap",
               "-device", "virtio-9p-device,fsdev=fs0,mount_tag=hostroot",
               "-device", "virtio-serial-device,id=vs0",
               "-chardev", f"socket,id=agent,path={_qarg(sock_path)},server=on,wait=off",
               "-device", f"virtserialport,bus=vs0.0,chardev=agent,name={PORT_NAME}"]
        if scratch_img:
            cmd += ["-drive", f"file={_qarg(scratch_img)},if=none,id=scratch,format=raw,cache=unsafe",
                    "-device", "virtio-blk-device,drive=scratch"]
        if self.network:
            cmd += ["-netdev", "user,id=net0", "-device", "virtio-net-device,netdev=net0"]
        for i, path in enumerate(self._mkfs_socks(sock_path)):
            cmd += ["-chardev", f"socket,id=mkfs{i},path={_qarg(path)},server=on,wait=off",
                    "-device", f"virtserialport,bus=vs0.0,chardev=mkfs{i},"
                    f"name={mkfs_forward.PORT_PREFIX}{i}"]
        for i, d in enumerate(self.rw_dirs):
            cmd += ["-fsdev", f"local,id=rwfs{i},path={_qarg(d)},security_model=none,multidevs=remap",
                    "-device", f"virtio-9p-device,fsdev=rwfs{i},mount_tag=rw{i}"]
        return cmd

    def _mkfs_socks(self, agent_sock: str) -> list[str]:
        """The host sockets of the mkfs ports, beside the agent's."""
        d = os.path.dirname(agent_sock)
        return [os.path.join(d, f"mkfs{i}.sock") for i in range(self.mkfs_ports)]

    def setup_line(self, scratch: str) -> str:
        """What init reads on the agent port before it mounts the host (vm/init.sh)."""
        site = _python_site_dirs(self.python)
        fields = {"python": self.python, "agent": str(VM_DIR / "agent.py"),
                  "pythonpath": ":".join(site), "modules": str(self.art.modules_dir),
                  "rw": ",".join(f"rw{i}:{d}" for i, d in enumerate(self.rw_dirs)),
                  "scratch": scratch, "time": str(int(time.time())),
                  "seed": os.urandom(32).hex(), "net": "user" if self.network else ""}
        return "setup " + " ".join(f"{k}={v}" for k, v in fields.items() if v) + "\n"

    def start(self) -> "VM":
        """Start the guest: restore the saved ready state of this machine (saving it first when
        there is none yet), or boot it. A state that fails to restore is deleted and the next
        attempt boots; a restore that timed out is retried as one (a loaded host, not a bad
        state), unless the guest idled through its wait: a restored guest has work to do until
        it is ready, so one that waits on nothing came from a bad save (seen once under heavy
        load: qemu "running", the guest never woke to read its setup line)."""
        with self._lock:
            if self.alive:
                return self
            self._prepare()
            state = self._saved_state() if self.use_saved_state else None
            self.host_cache_since = time.time()     # the guest mounts the host after this
            errors = []
            for attempt in range(1 + max(0, self.retries)):
                try:
                    self._boot(attempt, restore=state)
                    return self
                except VMError as e:
                    self.kill()
                    errors.append(e)
                    if e.kind == "setup":
                        raise
                    if state is not None and (e.kind != "timeout" or self._idled):
                        with contextlib.suppress(OSError):
                            state.unlink()
                        state = None
            first = errors[0]
            msg = str(errors[-1])
            if len(errors) > 1:
                msg += f" (the first attempt failed too: {first}; console log {first.console_log})"
            raise VMError(msg, kind=errors[-1].kind, console_log=errors[-1].console_log)

    # -- saved states

    def state_key(self) -> str:
        """Everything that shapes the guest up to the point where its state is saved (init
        waiting for its setup line): qemu and its machine arguments, the kernel, the initramfs
        (its name is its content hash: init.sh, busybox, modules), the agent, the scratch disk's
        size, the host CPU. Per-guest paths (sockets, logs, disk images, rw folders) do not
        matter to a restored guest and are left out."""
        argv = self.command("AGENT-SOCKET", Path("CONSOLE"),
                            "SCRATCH" if self._scratch_kind() == "ext4" else None)
        for i, d in enumerate(self.rw_dirs):
            argv = [a.replace(_qarg(d), f"RW{i}") for a in argv]
        qemu = os.stat(self.qemu)
        vmlinux = os.stat(self.art.vmlinux)
        parts = {"format": STATE_FORMAT, "argv": argv[1:], "qemu": _qemu_version(self.qemu),
                 "qemu_binary": [self.qemu, qemu.st_size, qemu.st_mtime_ns],
                 "kernel": self.art.info, "vmlinux": [vmlinux.st_size, vmlinux.st_mtime_ns],
                 "initrd": [self.initrd.name, self.initrd.stat().st_size],
                 "agent": hashlib.sha256((VM_DIR / "agent.py").read_bytes()).hexdigest(),
                 "scratch_size": self.scratch_size, "cpu": _host_cpu()}
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]

    def _saved_state(self) -> Path | None:
        """The saved state for this machine, saved now if missing; None when it cannot be (the
        guest then boots). While another process saves a state of this kernel, wait for it
        (a restore after the wait beats a boot)."""
        d = _states_dir(self.kernel)
        path = d / f"{self.state_key()}.vmstate"
        if path.is_file():
            return path
        import fcntl
        with open(d / "saving.lock", "a") as lock:
            deadline = time.monotonic() + SAVE_TIMEOUT_FACTOR * self.boot_timeout
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        return None
                    time.sleep(0.2)
            if not path.is_file():
                try:
                    self._boot(0, save_to=path)
                except VMError:
                    return None       # the console log says why; booting will say it again
                finally:
                    self.kill()
                _prune_states(d)
        return path if path.is_file() else None

    def _save(self, path: Path, qmp_path: str, deadline: float) -> None:
        """Wait until init waits for its setup line, then let qemu write the guest's state to
        `path` (atomically: a partial file is never used)."""
        while "LAYERCONF-INIT-WAIT" not in self._console_text():
            if self.proc.poll() is not None:
                raise self._failure("boot", "qemu exited before init was ready to be saved")
            if time.monotonic() > deadline:
                raise self._failure("timeout", "the agent did not wait for its setup line within "
                                    f"{SAVE_TIMEOUT_FACTOR * self.boot_timeout:.0f} s (boot hang?)")
            time.sleep(0.01)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            with _Qmp(qmp_path, deadline) as qmp:
                qmp.execute("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
                qmp.execute("migrate", uri="exec:cat > " + shlex.quote(str(tmp)))
                while True:
                    status = qmp.execute("query-migrate").get("status")
                    if status == "completed":
                        break
                    if status in ("failed", "cancelled"):
                        raise OSError(f"qemu could not save the guest (migration {status})")
                    if time.monotonic() > deadline:
                        raise OSError("saving the guest did not finish in time")
                    time.sleep(0.02)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError as e:
            raise self._failure("boot", f"saving the ready guest failed: {e}") from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _console_text(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except OSError:
            return ""

    def _scratch_kind(self) -> str:
        return "ext4" if self.scratch == "ext4" and _mke2fs() else "tmpfs"

    # -- booting

    def _boot(self, attempt: int, restore: Path | None = None, save_to: Path | None = None) -> None:
        """Start qemu: a fresh boot, or `restore` a saved state, or boot to save into `save_to`
        (then qemu is left for the caller to kill)."""
        self._idled = False
        log_dir = self._log_dir or _log_dir()
        log_dir.mkdir(parents=True, exist_ok=True)
        _prune_logs(log_dir)
        how = "-save" if save_to else "-restore" if restore else ""
        stem = (f"{time.strftime('%Y%m%d-%H%M%S')}-{self.kernel}-{os.getpid()}-{next(self._seq)}"
                f"{how}{'-retry' if attempt else ''}")
        self.console_log = log_dir / f"{stem}.console.log"
        self.qemu_log = log_dir / f"{stem}.qemu.log"
        self._tmp = tempfile.mkdtemp(prefix="lcvm-")
        sock_path = os.path.join(self._tmp, "agent.sock")
        scratch = self._scratch_kind()
        scratch_img = self._make_scratch(empty=bool(save_to)) if scratch == "ext4" else None
        cmd = self.command(sock_path, self.console_log, scratch_img)
        qmp_path = os.path.join(self._tmp, "qmp.sock")
        if save_to:
            cmd += ["-qmp", f"unix:{_qarg(qmp_path)},server=on,wait=off"]
        if restore:
            cmd += ["-incoming", "exec:cat " + shlex.quote(str(restore))]
        _install_handlers()
        preexec = (_pdeathsig_preexec(os.getpid())
                   if threading.current_thread() is threading.main_thread() else None)
        t0 = time.monotonic()
        self._buf = b""
        self.dead_reason = None
        with open(self.qemu_log, "wb") as qlog:
            qlog.write((" ".join(cmd) + "\n").encode())
            qlog.flush()
            try:
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qlog,
                                             stderr=subprocess.STDOUT, process_group=0,
                                             preexec_fn=preexec, close_fds=True)
            except OSError as e:
                raise VMError(f"cannot start qemu ({self.qemu}): {e}", kind="setup") from None
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._start_watchdog()
        if save_to:      # once per machine: a loaded host gets more time before it counts as a hang
            self._save(save_to, qmp_path, t0 + SAVE_TIMEOUT_FACTOR * self.boot_timeout)
            return
        self.boots += 1         # guests started (a boot that only saves a state is not one)
        # 1. the agent socket (qemu creates it before the guest runs)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        while True:
            try:
                s.connect(sock_path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if self.proc.poll() is not None:
                    s.close()
                    raise self._failure("boot", "qemu exited before opening the agent socket")
                if self._boot_overdue(t0):
                    s.close()
                    raise self._failure("timeout", "qemu did not open the agent socket "
                                        + self._boot_waited(t0))
                time.sleep(0.005)
        self.sock = s
        t_socket = time.monotonic()
        if self.mkfs_ports:
            self._mkfs_server = mkfs_forward.MkfsServer(self._mkfs_socks(sock_path))
            try:
                self._mkfs_server.start(alive=lambda: self.proc.poll() is None)
            except OSError as e:
                raise self._failure("boot", f"the mkfs ports: {e}") from None
        # 2. the setup line; init reads it when it reaches its wait (a restored guest is there)
        try:
            self._send_raw(self.setup_line(scratch).encode())
        except _Lost:
            raise self._failure("boot", "the agent socket closed before the setup line") from None
        # 3. the agent's ready message
        while True:
            try:
                msg = self._recv(time.monotonic() + 0.5)
            except _Timeout:
                if not self._boot_overdue(t0):
                    continue
                raise self._failure("timeout", "the guest agent was not ready "
                                    + self._boot_waited(t0) + " (boot hang?)") from None
            except _Lost:
                raise self._failure("boot", "the guest went away during boot") from None
            if msg.get("event") == "ready":
                self.ready = msg
                break
        self.boot_seconds = time.monotonic() - t0
        self.started_by = "restore" if restore else "boot"
        self.boot_stages = {"qemu": round(t_socket - t0, 4),
                            "guest": round(self.boot_seconds - (t_socket - t0), 4)}
        self.scratch_used = scratch

    def _start_watchdog(self) -> None:
        """A `sh` in qemu's process group that kills the group when this process dies.

        It waits on a pipe whose only write end this process holds; any death (SIGKILL too)
        closes it. PR_SET_PDEATHSIG alone is not enough: some sandboxes (this Firecracker host)
        never deliver it. Being in the group keeps the group id from being reused while qemu
        may still run. qemu has its own process group (not session: a process may only join a
        group of its own session), so a terminal's Ctrl-C does not reach it directly."""
        r, w = os.pipe()   # both non-inheritable: only the watchdog gets r, as its stdin
        try:
            self._watchdog = subprocess.Popen(
                ["/bin/sh", "-c", f"read _ ; kill -9 -{self.proc.pid}"],
                stdin=r, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                process_group=self.proc.pid, close_fds=True)
            self._watchdog_fd = w
        except OSError:
            os.close(w)
            self._watchdog = None
        finally:
            os.close(r)

    def _make_scratch(self, empty: bool = False) -> str:
        """A sparse ext4 image for the guest's scratch (/run/layerconf on /dev/vda), made by
        mke2fs on the host (no root needed; ~30 ms). `empty`: only the sparse file (a guest
        being saved never mounts it; the restored guest gets a fresh one)."""
        img = os.path.join(self._tmp, "scratch.ext4")
        with open(img, "wb") as f:
            f.truncate(_size_bytes(self.scratch_size))
        if empty:
            return img
        mke2fs = _mke2fs()
        p = subprocess.run([mke2fs, "-q", "-F", "-t", "ext4", "-O", "^has_journal", "-m", "0",
                            "-E", "nodiscard,lazy_itable_init=1,root_owner=0:0", img],
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise VMError(f"cannot make the guest's ext4 scratch image ({mke2fs} exited "
                          f"{p.returncode}: {p.stderr.strip()}); use scratch='tmpfs'.", kind="setup")
        return img

    # -- failure reporting

    def _console_tail(self, n: int = 12) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except (OSError, AttributeError):
            return ""
        lines = [ln.rstrip("\r") for ln in text.splitlines() if ln.strip()]
        return " | ".join(lines[-n:])

    def _qemu_cpu_seconds(self) -> float:
        """CPU time qemu has used (user + system); inf when /proc cannot tell."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return float("inf")

    def _boot_overdue(self, t0: float) -> bool:
        """A boot is given boot_timeout seconds of qemu's own CPU time, not of wall time: on a
        host whose cores are shared with other heavy jobs a TCG guest gets a fraction of a core,
        and a wall-clock deadline then fails boots that are slow, not hung (a spinning guest
        still uses up its CPU budget). BOOT_WALL_FACTOR x boot_timeout of wall time is the
        hard limit, for a qemu that waits without using CPU."""
        waited, cpu = time.monotonic() - t0, self._qemu_cpu_seconds()
        self._idled = cpu < IDLE_SHARE * waited
        return overdue(waited, cpu, self.boot_timeout)

    def _cpu_since(self, cpu0: float) -> float:
        """qemu's CPU seconds since it had used cpu0 (inf: unknown)."""
        cpu = self._qemu_cpu_seconds()
        return cpu - cpu0 if cpu != float("inf") and cpu0 != float("inf") else float("inf")

    def _op_waited(self, t0: float, cpu0: float, budget: float) -> str:
        cpu = self._cpu_since(cpu0)
        used = f"{cpu:.0f} s of CPU time in " if cpu != float("inf") else ""
        return (f"{used}{time.monotonic() - t0:.0f} s; at most {budget * BOOT_WALL_FACTOR:.0f} s "
                "of wall time")

    def _boot_waited(self, t0: float) -> str:
        cpu = self._qemu_cpu_seconds()
        used = f", {cpu:.0f} s of qemu CPU time" if cpu != float("inf") else ""
        return (f"after {time.monotonic() - t0:.0f} s{used} (budget {self.boot_timeout:.0f} s "
                f"of CPU time, at most {self.boot_timeout * BOOT_WALL_FACTOR:.0f} s of wall time)")

    def _failure(self, kind: str, what: str) -> VMError:
        """Build a VMError, refine its kind from the console, kill the VM."""
        time.sleep(0.05)  # let qemu flush the console file
        try:
            console = self.console_log.read_text(errors="replace") if self.console_log else ""
        except OSError:
            console = ""
        m = PANIC_RE.search(console)
        if m and "panic" in m.group(0).lower():
            kind, what = "panic", f"{what}: kernel panic ({m.group(0).strip()})"
        elif m:
            what = f"{what}: {m.group(0).strip()}"
        rc = self.proc.poll() if self.proc else None
        qemu_err = ""
        if rc is not None and self.qemu_log:
            try:
                lines = self.qemu_log.read_text(errors="replace").splitlines()[1:]
                qemu_err = " ".join(lines[-4:]).strip()
            except OSError:
                pass
        self.kill()
        state = f"qemu exited with {rc}" if rc is not None else "qemu was killed"
        art = self.art.info if self.art else {}
        msg = (f"VM {kind} (kernel {self.kernel} = {art.get('package', '?')} {art.get('version', '')}, "
               f"{(self.accel or '?').upper()}): {what}; {state}"
               f"{' (' + qemu_err + ')' if qemu_err else ''}. Console log: {self.console_log}"
               f"{' (last lines: ' + self._console_tail() + ')' if self._console_tail() else ''}. "
               "A boot failure is retried once; if it keeps failing, run `python3 bench/vm_bench.py "
               "--boots 5` to reproduce and read the console log.")
        self.dead_reason = msg
        return VMError(msg, kind=kind, console_log=str(self.console_log) if self.console_log else None)

    # -- the channel

    def _send(self, obj) -> None:
        self._send_raw(json.dumps(obj).encode() + b"\n")

    def _send_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            raise _Lost() from None

    def _recv(self, deadline: float) -> dict:
        """The next JSON line. Chunks are collected in a list and only new data is searched
        for the newline, so a large answer costs linear time."""
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line, self._buf = self._buf[:nl], self._buf[nl + 1:]
                if line.strip():
                    return json.loads(line)
                continue
            chunks = [self._buf]
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._buf = b"".join(chunks)
                    raise _Timeout()
                self.sock.settimeout(min(remaining, 0.25))
                try:
                    data = self.sock.recv(1 << 20)
                except socket.timeout:
                    if self.proc.poll() is not None:
                        self._buf = b"".join(chunks)
                        raise _Lost() from None
                    continue
                except OSError:
                    self._buf = b"".join(chunks)
                    raise _Lost() from None
                if not data:
                    self._buf = b"".join(chunks)
                    raise _Lost()
                chunks.append(data)
                if b"\n" in data:
                    self._buf = b"".join(chunks)
                    break

    def call(self, op: str, timeout: float = 120.0, **args):
        """Run agent op `op` with `args`; its result. VMError on a VM failure (the VM is then
        killed; the next start() boots a fresh one), GuestOpError if the op raised in the guest.
        `timeout` is the host's wait for the answer."""
        return self._call(op, timeout, args)

    def _call(self, op: str, timeout: float, args: dict):
        with self._lock:
            if not self.alive:
                if self.dead_reason:
                    raise VMError(f"the VM is gone: {self.dead_reason}", kind="lost",
                                  console_log=str(self.console_log))
                if self.proc is not None and self.proc.poll() is not None:
                    raise self._failure("lost", f"qemu exited between agent ops (before {op!r})")
                raise VMError("the VM is not running (call start() first)", kind="lost")
            rid = next(self._ids)
            t0, cpu0 = time.monotonic(), self._qemu_cpu_seconds()
            try:
                self._send({"id": rid, "op": op, "args": args})
                deadline = t0 + timeout
                while True:
                    try:
                        msg = self._recv(deadline)
                    except _Timeout:      # hung, or starved of CPU? (overdue())
                        if overdue(time.monotonic() - t0, self._cpu_since(cpu0), timeout):
                            raise
                        deadline = time.monotonic() + 1.0
                        continue
                    if msg.get("id") == rid:
                        break
            except _Timeout:
                raise self._failure("timeout", f"agent op {op!r} did not answer within {timeout:.0f} s "
                                    f"of qemu's CPU time ({self._op_waited(t0, cpu0, timeout)}; guest "
                                    "hang)") from None
            except _Lost:
                raise self._failure("lost", f"the guest agent went away during op {op!r}") from None
            if not msg.get("ok"):
                raise GuestOpError(f"agent op {op!r} failed in the guest: {msg.get('error')}",
                                   msg.get("traceback", ""), console_log=str(self.console_log))
            return msg.get("result")

    def run(self, cmd, timeout: float = 60.0, **kw) -> dict:
        """Shell command (str) or argv (list) in the guest -> {rc, stdout, stderr, timed_out,
        truncated, seconds}. The guest kills the command after `timeout` s (timed_out=True, rc
        -9); the host waits 15 s more before it declares the guest hung."""
        return self._call("run", timeout + 15, dict(kw, cmd=cmd, timeout=timeout))

    def info(self) -> dict:
        a = self.art.info if self.art else {}
        return {"kernel": self.kernel, "package": a.get("package"), "version": a.get("version"),
                "release": a.get("release"), "accel": self.accel, "boot_seconds": self.boot_seconds,
                "console_log": str(self.console_log) if self.console_log else None,
                "python": self.python, "scratch": getattr(self, "scratch_used", self.scratch),
                "started_by": self.started_by,
                "network": "user" if self.network else None}

    def shutdown(self, timeout: float = 10.0) -> None:
        """Ask the guest to power off (flushes rw shares), then make sure qemu is gone."""
        try:
            if self.alive:
                self.call("shutdown", timeout=timeout)
                self.proc.wait(timeout=timeout)
        except (VMError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def kill(self) -> None:
        """SIGKILL qemu's process group and wait for it; idempotent."""
        p = self.proc
        fd, self._watchdog_fd = getattr(self, "_watchdog_fd", None), None
        wd, self._watchdog = getattr(self, "_watchdog", None), None
        if p is not None:
            if p.poll() is None or (wd is not None and wd.poll() is None):
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                try:
                    p.kill()
                except OSError:
                    pass
            for q in (p, wd):
                if q is None:
                    continue
                try:
                    q.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        server, self._mkfs_server = getattr(self, "_mkfs_server", None), None
        if server is not None:       # after qemu: its mkfs runs end with the guest
            server.stop()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        with _LIVE_LOCK:
            _LIVE.discard(self)

    close = kill


# ---------------------------------------------------------------- the backend

_SHARED: dict[tuple, VM] = {}
_PROBES: dict[tuple, dict] = {}
_SHARED_LOCK = threading.Lock()
_HOST_READY: list = []        # _prepare_host() ran in this process


def _prepare_host() -> None:
    """Make here, natively, what a guest would otherwise make under TCG, once per process:
    - the recording mkfs.erofs (harness/mkfs_shim.py), rebuilt when its sources changed (the
      guest has no Go on its PATH). ShimError (an OracleError) when there is none and it cannot
      be built;
    - the harness's bytecode (__pycache__ beside the sources, as any import on the host writes
      it): without it every guest compiles the harness, seconds of emulated CPU per guest. A
      read-only checkout just goes without."""
    with _SHARED_LOCK:
        if _HOST_READY:
            return
        from .. import mkfs_shim
        mkfs_shim.ensure_built()
        import compileall
        with contextlib.suppress(OSError):
            compileall.compile_dir(str(REPO / "harness"), quiet=2)
            compileall.compile_dir(str(VM_DIR), quiet=2, maxlevels=0)
        _HOST_READY.append(True)


def _probe_cache(vm: VM) -> Path:
    """Where the kernel probe of this machine is kept: what it depends on is in the name."""
    mkfs = shutil.which("mkfs.erofs", path=GUEST_PATH)
    st = os.stat(mkfs) if mkfs else None
    parts = [vm.state_key(), hashlib.sha256((VM_DIR / "probe.py").read_bytes()).hexdigest(),
             mkfs, st and st.st_size, st and st.st_mtime_ns, getattr(vm, "scratch_used", None)]
    key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]
    return _states_dir(vm.kernel) / f"probe-{key}.json"


def _keep_console(result: dict, console, keep) -> None:
    """An engine error in the guest: keep the guest's console log (its last 256 KiB) beside the
    scenario's artifacts, where the person reading them looks."""
    if not keep or not console or not os.path.isfile(str(console)):
        return
    from ..report.artifacts import folder_name
    folder = result.get("artifacts") or os.path.join(str(keep), folder_name(result["scenario"]))
    try:
        os.makedirs(folder, exist_ok=True)
        with open(str(console), "rb") as src:
            src.seek(max(0, os.path.getsize(str(console)) - (256 << 10)))
            data = src.read()
        with open(os.path.join(folder, "console.log"), "wb") as dst:
            dst.write(data)
        result["artifacts"] = folder
    except OSError:
        pass          # the result still names the console log in its message


def _add_phases_to_kept(result: dict) -> None:
    """The kept result.json (written in the guest) with the VM's phases added on the host."""
    path = os.path.join(str(result.get("artifacts") or ""), "result.json")
    if not result.get("artifacts") or not os.path.isfile(path):
        return
    try:
        with open(path) as f:
            kept = json.load(f)
        kept["phases"] = result["phases"]
        with open(path, "w") as f:
            f.write(json.dumps(kept, indent=2, sort_keys=True, default=str) + "\n")
    except (OSError, ValueError):
        pass          # the result itself still carries them


def _options_dict(options) -> dict:
    if options is None:
        return {}
    if dataclasses.is_dataclass(options):
        return dataclasses.asdict(options)
    return dict(options)


class VMBackend:
    """Scenarios through harness.runner.run_file inside a guest of one pinned kernel.

    One VM per process and (kernel, VM options, rw folders) is shared by every VMBackend
    (`reuse=True`), so a pytest-xdist worker boots once per kernel. A VM failure during a
    scenario gives that scenario status "error" (or raises VMError with raise_errors=True) and
    the broken VM is replaced by a fresh one for the next scenario.
    `options`: harness.runner.RunOptions or a dict of its fields; host paths in `keep` are
    shared read-write with the guest; `workdir` is replaced by the guest's scratch fs.
    kernel: a name from vm/kernels.toml (None: its default); for `all` use backends_for().
    run_files() spreads many scenarios over `guests` VMs (default: one per CPU).
    """

    name = "vm"

    def __init__(self, kernel: str | None = None, options=None, *, reuse: bool = True,
                 scenario_timeout: float = 1800.0, drop_caches: bool = True,
                 raise_errors: bool = False, guests: int | None = None, **vm_options):
        names = kernel_names(kernel)
        if len(names) != 1:
            raise ValueError(f"VMBackend runs one kernel; for {kernel!r} use backends_for({kernel!r})")
        self.kernel = names[0]
        self.options = _options_dict(options)
        self.reuse = reuse
        self.scenario_timeout = scenario_timeout
        self.drop_caches = drop_caches
        self.raise_errors = raise_errors
        self.guests = guests or len(os.sched_getaffinity(0))   # for run_files
        self.vm_options = vm_options
        self._vm: VM | None = None
        self._used: list[VM] = []       # every VM this backend ran on (offline, networked)

    def _rw_dirs(self, options: dict) -> list[str]:
        dirs = list(self.vm_options.get("rw_dirs", ()))
        if options.get("keep"):
            Path(options["keep"]).mkdir(parents=True, exist_ok=True)
            dirs.append(str(Path(options["keep"]).resolve()))
        # a folder inside a shared one is shared with it (and needs no VM of its own)
        return sorted(d for d in set(dirs) if not any(d.startswith(o + "/") for o in dirs))

    def vm(self, options: dict | None = None, *, network: bool = False,
           memory: str | None = None) -> VM:
        """The VM for these options; `network`: one with the user-mode network, `memory`: one
        of that size (each a VM of its own, shared like the others, so scenarios without the
        need stay offline and small)."""
        rw = self._rw_dirs(options if options is not None else self.options)
        kw = dict(self.vm_options, rw_dirs=rw)
        if network:
            kw["network"] = True
        if memory and _size_bytes(memory) > _size_bytes(kw.get("memory", DEFAULT_MEMORY)):
            kw["memory"] = memory
        key = (self.kernel, json.dumps(kw, sort_keys=True, default=str))
        if (self._vm is not None and self._vm.alive and self._vm.rw_dirs == rw
                and self._vm.network == bool(kw.get("network"))
                and self._vm.memory == kw.get("memory", DEFAULT_MEMORY)):
            return self._vm
        if self.reuse:
            with _SHARED_LOCK:
                vm = _SHARED.get(key)
                if vm is None or not vm.alive:
                    vm = VM(self.kernel, **kw)
                    _SHARED[key] = vm
        else:
            if self._vm is not None:
                self._vm.kill()
            vm = VM(self.kernel, **kw)
        vm.start()
        self._vm = vm
        if vm not in self._used:
            self._used.append(vm)
        return vm

    def kernel_probe(self, vm: VM | None = None) -> dict:
        """vm/probe.py's kernel capabilities of the guest: cached per booted VM, and on disk per
        machine (saved-state key), probe.py, mkfs.erofs and scratch kind; a probe with crashed
        steps is not kept."""
        vm = vm or self.vm()
        key = (id(vm), vm.boots)
        if key not in _PROBES:
            path = _probe_cache(vm)
            try:
                _PROBES[key] = json.loads(path.read_text())
            except (OSError, ValueError):
                _PROBES[key] = vm.call("probe", timeout=300)
                if not _PROBES[key].get("errors"):
                    with contextlib.suppress(OSError):
                        tmp = path.with_name(f".{path.name}.{os.getpid()}")
                        tmp.write_text(json.dumps(_PROBES[key]))
                        os.replace(tmp, path)
        return _PROBES[key]

    def probe_capabilities(self) -> dict:
        """harness.capabilities as seen in the guest, plus `vm` = the kernel probe."""
        vm = self.vm()
        caps = dict(vm.call("capabilities", timeout=120))
        caps["vm"] = self.kernel_probe()
        return caps

    def run(self, cmd, timeout: float = 60.0, **kw) -> dict:
        return self.vm().run(cmd, timeout=timeout, **kw)

    def run_file(self, path, options=None) -> dict:
        """harness.runner.run_file(path, options) in the guest -> its result dict, with
        environment.backend = "vm" and environment.vm = the VM and its kernel probe.

        A VM failure (or the runner raising in the guest) becomes a result with status "error"
        and the VMError paragraph as message (raise_errors=True raises the VMError instead);
        the broken VM is replaced by a fresh one for the next scenario."""
        t0 = time.monotonic()
        opts = dict(self.options)
        opts.update(_options_dict(options))
        guest_opts = dict(opts)
        guest_opts["workdir"] = None        # the guest's TMPDIR: the scratch fs, never the 9p root
        guest_opts["build"] = False         # the oracle is built on the host (bootstrap), not in TCG
        path = str(Path(path).resolve())
        _prepare_host()
        scenario = _load_on_host(path)
        vm = None
        times = {}
        _fetch_corpus(scenario)
        try:
            t = time.monotonic()
            vm = self.vm(opts, **_guest_needs(path, scenario))
            times["vm_start"] = time.monotonic() - t
            # the guest's deadlines are wall-clock; under TCG they get the wall-time factor the
            # host grants its ops (overdue())
            guest_opts["timeout_scale"] = BOOT_WALL_FACTOR if vm.accel == "tcg" else 1.0
            # Dropping the guest's caches makes it read everything again over 9p (binaries,
            # libraries, python): done only when this scenario's host files changed since the
            # guest could have cached them (or cannot be named: a file the host cannot load).
            if self.drop_caches and (scenario is None or changed_since(
                    scenario.inputs, vm.host_cache_since - CACHE_CLOCK_SLACK)):
                t = time.monotonic()
                since = time.time()
                vm.call("drop_caches", timeout=60)
                vm.host_cache_since = since
                times["vm_drop_caches"] = time.monotonic() - t
            t, cpu = time.monotonic(), vm._qemu_cpu_seconds()
            result = vm.call("scenario", timeout=self.scenario_timeout, path=path, options=guest_opts)
            times["vm_call"] = time.monotonic() - t
            cpu = vm._cpu_since(cpu)   # what the op cost qemu: a loaded machine inflates it
            if cpu != float("inf"):    # far less than wall time
                times["vm_cpu"] = cpu
            t = time.monotonic()
            caps = self.kernel_probe(vm)
            times["vm_probe"] = time.monotonic() - t
        except VMError as e:
            if not isinstance(e, GuestOpError):
                self._vm = None
            if self.raise_errors:
                raise
            result = self._error_result(path, e, vm, time.monotonic() - t0)
            _keep_console(result, e.console_log or (vm and vm.console_log), opts.get("keep"))
            return result
        if isinstance(result, dict):
            env = result.get("environment")
            if not isinstance(env, dict):
                env = result["environment"] = {}
            env["backend"] = "vm"
            env["vm"] = dict(vm.info(), capabilities=caps)
            # the guest's own phases plus what the VM cost around them (vm_transfer: the
            # scenario op beyond the scenario's run: loading its file, JSON both ways)
            times["vm_transfer"] = times["vm_call"] - float(result.get("duration") or 0.0)
            result["phases"] = dict(result.get("phases") or {},
                                    **{k: round(v, 4) for k, v in times.items()})
            _add_phases_to_kept(result)
            if result.get("status") == "error":
                _keep_console(result, vm.console_log, opts.get("keep"))
        return result

    def run_files(self, paths, on_result=None) -> list[dict]:
        """run_file for each path, spread over `guests` VMs of this kernel at once (TCG runs a
        guest on one host thread, so one guest per CPU uses the machine); `on_result(dict)` as
        each one finishes; the results in the order of `paths`."""
        paths = [str(p) for p in paths]
        n = max(1, min(self.guests, len(paths)))
        if n == 1:
            results = []
            for p in paths:
                results.append(self.run_file(p))
                if on_result:
                    on_result(results[-1])
            return results
        _install_handlers()       # threads cannot install them; Ctrl-C still reaches us here
        helpers = [VMBackend(self.kernel, self.options, reuse=False, guests=1,
                             scenario_timeout=self.scenario_timeout, drop_caches=self.drop_caches,
                             raise_errors=self.raise_errors, **self.vm_options)
                   for _ in range(n - 1)]
        results: list = [None] * len(paths)
        todo = iter(enumerate(paths))
        lock, stop, failures = threading.Lock(), threading.Event(), []

        def work(backend):
            try:
                while not stop.is_set():
                    with lock:
                        item = next(todo, None)
                    if item is None:
                        return
                    d = backend.run_file(item[1])
                    with lock:
                        results[item[0]] = d
                        if on_result and not stop.is_set():
                            on_result(d)
            except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
                failures.append(e)
                stop.set()

        threads = [threading.Thread(target=work, args=(b,), name=f"vm-guest-{i}", daemon=True)
                   for i, b in enumerate([self] + helpers)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(0.5)
        finally:
            stop.set()
            for b in helpers:
                b.close()
        if failures:
            raise failures[0]
        return results

    def _error_result(self, path: str, e: VMError, vm, seconds: float) -> dict:
        name = path
        try:
            if os.path.isfile(path):   # never open a FIFO or device here
                from ..scenario import load
                name = load(path).name
        except Exception:  # noqa: BLE001
            pass
        msg = str(e)
        if isinstance(e, GuestOpError) and e.guest_traceback:
            msg += "\n" + e.guest_traceback
        vm_info = vm.info() if vm is not None else {"kernel": self.kernel}
        return {"scenario": name, "path": path, "status": "error", "checks": [], "outcomes": [],
                "message": msg, "duration": seconds,
                "environment": {"backend": "vm", "kernel": vm_info.get("release") or self.kernel,
                                "vm": dict(vm_info, error_kind=e.kind)},
                "artifacts": None}

    def close(self) -> None:
        """Kill this backend's VMs (shared ones too: other users boot a fresh one if needed)."""
        used, self._used, self._vm = self._used, [], None
        for vm in used:
            with _SHARED_LOCK:
                for k in [k for k, v in _SHARED.items() if v is vm]:
                    del _SHARED[k]
            vm.kill()


def _fetch_corpus(scenario) -> None:
    """The pinned corpus files the scenario names, fetched on the host: the guest sees the cache
    read-only through 9p, so its own fetch would land in its tmpfs and be lost."""
    if scenario is None:
        return
    from .. import corpus
    try:
        corpus.fetch(corpus.names_in(scenario.raw), log=lambda message: None)
    except Exception:  # noqa: BLE001  (the runner in the guest fetches again and reports why)
        pass


def _load_on_host(path: str):
    """The scenario as the host reads it, or None when it cannot be read here (the runner in
    the guest reports a bad file)."""
    try:
        if not os.path.isfile(path):   # never open a FIFO or device here
            return None
        from ..scenario import load
        return load(path)
    except Exception:  # noqa: BLE001
        return None


def changed_since(paths, since: float) -> bool:
    """Whether any of the host paths, or anything in a folder among them, changed (ctime or
    mtime) at or after wall time `since`, or is missing: then a guest that cached them since
    may hold a stale copy (9p's cache=loose never asks the host again)."""
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            return True
        if max(st.st_ctime, st.st_mtime) >= since:
            return True
        if stat.S_ISDIR(st.st_mode):
            for root, dirs, files in os.walk(p):
                for name in dirs + files:
                    try:
                        st = os.lstat(os.path.join(root, name))
                    except OSError:
                        return True
                    if max(st.st_ctime, st.st_mtime) >= since:
                        return True
    return False


BIG_INPUT = 64 << 20          # an input file this large gets a guest of BIG_GUEST_MEMORY
BIG_GUEST_MEMORY = "3G"


def _input_sizes(scenario) -> list[int]:
    """Sizes of the scenario's input files: tar lower layers and Apply blobs (missing: left out)."""
    from ..applycheck import FIXTURES
    from ..scenario.model import LayerSource
    paths = [lo.path for lo in scenario.lowers if isinstance(lo, LayerSource) and lo.kind == "tar"]
    paths += [str(FIXTURES / c.fixture) for c in scenario.apply_cases if c.fixture]
    sizes = []
    for p in paths:
        with contextlib.suppress(OSError):
            sizes.append(os.path.getsize(p))
    return sizes


def _guest_needs(path: str, scenario=None) -> dict:
    """What the scenario's guest needs beyond the default one, as VM keyword arguments:
    `network` when it requires a capability probed over the network (capabilities.NETWORK);
    `memory` when an input file is BIG_INPUT or more (an Apply holds the blob and both images in
    memory, about 600 MB for the 201 MiB rootfs tar, and the guest's page cache carries them
    on their way: a 1 GiB guest spends its time reclaiming pages)."""
    from ..capabilities import NETWORK
    scenario = scenario or _load_on_host(path)
    if scenario is None:             # a bad file is reported by the runner in the guest
        return {}
    needs = {}
    if NETWORK.intersection(scenario.requires):
        needs["network"] = True
    if max(_input_sizes(scenario), default=0) >= BIG_INPUT:
        needs["memory"] = BIG_GUEST_MEMORY
    return needs


def backends_for(spec: str, options=None, **kw) -> list[VMBackend]:
    """One VMBackend per kernel of `--kernel 6.1|6.12|all`."""
    return [VMBackend(k, options, **kw) for k in kernel_names(spec)]


def close_all() -> None:
    with _SHARED_LOCK:
        vms = list(_SHARED.values())
        _SHARED.clear()
    for vm in vms:
        vm.kill()


# ---------------------------------------------------------------- testinfra over the agent

def testinfra_host(vm: VM, timeout: float = 120.0):
    """A testinfra Host whose commands run in `vm` through the agent's `run` op, so that
    host.run, host.file, host.mount_point, host.package ... all work against the guest."""
    import testinfra.host
    from testinfra.backend import base

    class AgentBackend(base.BaseBackend):
        NAME = "layerconf-vm"

        def __init__(self, vm: VM, **kwargs):
            self.vm = vm
            super().__init__(f"vm-{vm.kernel}", **kwargs)
            self._encoding = "utf-8"   # skip testinfra's python round trip to ask the guest

        def get_pytest_id(self) -> str:
            return f"layerconf-vm://{self.vm.kernel}"

        def run(self, command: str, *args: str, **kwargs) -> base.CommandResult:
            cmd = self.get_command(command, *args)
            r = self.vm.run(cmd, timeout=kwargs.get("timeout", timeout))
            return self.result(r["rc"], self.encode(cmd),
                               r["stdout"].encode("utf-8", "surrogateescape"),
                               r["stderr"].encode("utf-8", "surrogateescape"))

    return testinfra.host.Host(AgentBackend(vm))
