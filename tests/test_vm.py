"""Integration tests of the VM backend: real QEMU guests with the pinned kernels (TCG).

Skipped, with the reason, when qemu or a kernel is missing (`python3 -m vm.fetch_kernel` makes
the cache). One VM per kernel serves the module (via VMBackend's shared VM); the failure tests
boot their own. The `vm_host` fixture is a testinfra Host whose commands run in the guest.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness.backends import vm as vmb

KERNELS = vmb.kernel_names("all")
PINS = vmb.fetch_kernel().load_pins()["kernels"]

pytestmark = pytest.mark.skipif(vmb.qemu_binary() is None,
                                reason="qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")


def _first_available() -> str:
    for k in KERNELS:
        if vmb.unavailable_reason(k) is None:
            return k
    pytest.skip(vmb.unavailable_reason(KERNELS[0]) or "no kernel available")


@pytest.fixture(scope="module", params=KERNELS)
def kernel(request):
    reason = vmb.unavailable_reason(request.param)
    if reason:
        pytest.skip(reason)
    return request.param


@pytest.fixture(scope="module")
def backend(kernel):
    # Closed when pytest moves to the other kernel or leaves the module: no idle VM lingers
    # in a pytest-xdist worker that goes on with other tests.
    b = vmb.VMBackend(kernel)
    yield b
    b.close()


@pytest.fixture(scope="module")
def vm(backend):
    return backend.vm()


@pytest.fixture(scope="module")
def vm_host(vm):
    pytest.importorskip("testinfra")
    return vmb.testinfra_host(vm)


def _qemu_pids(marker: str) -> list[int]:
    """Live processes whose command line mentions `marker` (a VM's unique console log path)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd and "qemu" in cmd:
                pids.append(int(d.name))
    return pids


def _mounts_and_loops(vm) -> tuple[str, str]:
    r = vm.run("cat /proc/self/mounts; echo --; for f in /sys/block/loop*/loop/backing_file; do "
               "[ -e $f ] && echo $f $(cat $f); done; true")
    assert r["rc"] == 0, r
    mounts, loops = r["stdout"].split("--\n")
    return mounts, loops


# ---------------------------------------------------------------- the guest as pinned

def test_guest_kernel_matches_pin(vm_host, kernel):
    pin = PINS[kernel]
    assert vm_host.run("uname -r").stdout.strip() == pin["release"]
    assert f"Debian {pin['version']}" in vm_host.file("/proc/version").content_string


def test_guest_has_erofs_and_overlay(vm_host):
    fs = vm_host.file("/proc/filesystems").content_string.split()
    assert "erofs" in fs and "overlay" in fs


def test_guest_mkfs_erofs_is_recent(vm_host):
    out = vm_host.run("mkfs.erofs --version")
    assert out.rc == 0, out.stderr
    m = re.search(r"(\d+)\.(\d+)", out.stdout)
    assert m and (int(m.group(1)), int(m.group(2))) >= (1, 8), out.stdout
    if shutil.which("mkfs.erofs"):  # the host's binary, through the 9p root
        assert vm_host.run("command -v mkfs.erofs").stdout.strip() == shutil.which("mkfs.erofs")


def test_guest_layout(vm_host, vm):
    assert vm_host.mount_point("/").filesystem == "overlay"
    scratch = vm_host.mount_point("/run/layerconf")
    assert scratch.filesystem == vm.info()["scratch"] in ("ext4", "tmpfs")
    assert vm_host.run("echo $TMPDIR").stdout.strip() == "/run/layerconf/tmp"
    assert vm_host.file("/etc/os-release").exists
    # the root is writable in the guest (tmpfs upper) and the host does not see it
    name = f"/etc/layerconf-vm-test-{os.getpid()}"
    assert vm_host.run(f"echo x > {name} && cat {name}").stdout == "x\n"
    assert not os.path.exists(name)
    vm_host.run(f"rm -f {name}")


# ---------------------------------------------------------------- the agent

def test_agent_run_exact_bytes_and_large_output(vm):
    blob = bytes(range(256)) * 64
    r = vm.run(["python3", "-c", "import sys; sys.stdout.buffer.write(bytes(range(256)) * 64)"])
    assert r["rc"] == 0 and r["stdout"].encode("utf-8", "surrogateescape") == blob
    r = vm.run("head -c 5000000 /dev/zero | tr '\\0' x; echo err >&2; exit 3")
    assert (r["rc"], len(r["stdout"]), r["stderr"]) == (3, 5_000_000, "err\n")
    assert vm.run("cat", input="héllo\n")["stdout"] == "héllo\n"
    assert vm.run("pwd; echo $FOO", cwd="/usr", env={"FOO": "bar"})["stdout"] == "/usr\nbar\n"


def test_agent_command_timeout_keeps_vm(vm):
    r = vm.run("sleep 30", timeout=1)
    assert r["timed_out"] and r["rc"] != 0
    assert vm.call("ping")["uptime"] > 0


def test_agent_op_error_keeps_vm(vm):
    with pytest.raises(vmb.GuestOpError, match="unknown op"):
        vm.call("no-such-op")
    assert vm.alive and vm.call("ping")


def test_modprobe_extra_module(vm, vm_host):
    vm.call("modprobe", name="ext4")
    assert "ext4" in vm_host.file("/proc/filesystems").content_string.split()


def test_guest_is_offline_unless_asked(vm):
    assert "eth0" not in vm.run("cat /proc/net/dev")["stdout"]


def test_user_mode_network_when_asked():
    """The opt-in network: eth0 with slirp's address, its DNS, and its gateway answering TCP
    (slirp's own DNS port: nothing outside the host is needed)."""
    with vmb.VM(_first_available(), network=True) as vm:
        r = vm.run("ip -4 -o addr show eth0; ip route; cat /etc/resolv.conf", timeout=60)
        assert "10.0.2.15/24" in r["stdout"] and "default via 10.0.2.2" in r["stdout"], r
        assert "nameserver 10.0.2.3" in r["stdout"]
        probe = ("import socket; s = socket.create_connection(('10.0.2.3', 53), timeout=10); "
                 "print('connected')")
        r = vm.run(["python3", "-c", probe], timeout=60)
        assert r["stdout"].strip() == "connected", r


# ---------------------------------------------------------------- capabilities

def test_kernel_probe(backend, vm, kernel):
    p = vm.call("probe", timeout=300)
    cfg = vmb.fetch_kernel().cached(kernel).info["config"]
    assert p["errors"] == {}
    assert p["kernel"]["release"] == PINS[kernel]["release"]
    assert p["mkfs_erofs"] and "erofs-utils" in p["mkfs_erofs"]
    file_backed = cfg.get("CONFIG_EROFS_FS_BACKED_BY_FILE") == "y"
    assert p["erofs_file_backed"] == ("ok" if file_backed and p["scratch_fs"] != "tmpfs" else "ENOTBLK")
    assert p["erofs_file_backed_tmpfs"] == "ENOTBLK"       # tmpfs has no read_folio
    assert p["erofs_loop"] == "ok"
    for alg in ("lzma", "deflate", "zstd"):
        assert (p["erofs_compressors"][alg] == "ok") == (cfg.get(f"CONFIG_EROFS_FS_ZIP_{alg.upper()}") == "y")
    assert p["erofs_compressors"]["lz4"] == "ok"
    assert p["overlay_whiteout"] == "char-0/0"
    assert p["overlay_opaque_xattr"] == "y"
    major, minor = map(int, PINS[kernel]["release"].split(".")[:2])
    assert p["overlay_xwhiteout"]["opaque-x"] is ((major, minor) >= (6, 8))
    assert p["user_xattr"]["tmpfs"] is ((major, minor) >= (6, 6))
    assert p["overlay_userxattr"] == "ok"
    assert "erofs" in p["filesystems"] and p["erofs_features"]


def test_recorded_capabilities_are_current(backend, vm, kernel):
    """vm/capabilities/KERNEL.json is what this kernel shows now (regenerate with
    `python3 -m vm.record_capabilities KERNEL` after a bump)."""
    rc = vmb._load("record_capabilities")
    path = rc.path_for(kernel)
    assert path.is_file(), f"no capability record for {kernel}: run python3 -m vm.record_capabilities {kernel}"
    saved = json.loads(path.read_text())
    art = vmb.fetch_kernel().cached(kernel)
    live = rc.record(PINS[kernel], backend.kernel_probe(vm), (art.dir / "config").read_text())
    assert json.loads(json.dumps(live)) == saved, \
        f"{path.name} is stale: run python3 -m vm.record_capabilities {kernel}"


def test_no_mount_or_loop_left_after_probe(vm):
    before = _mounts_and_loops(vm)
    vm.call("probe", timeout=300)
    assert _mounts_and_loops(vm) == before


def test_backend_capabilities(backend):
    caps = backend.probe_capabilities()
    assert caps["root"] and caps["erofs"] and caps["overlay"] and caps["trusted-xattr"]
    assert caps["vm"]["kernel"]["release"] == PINS[backend.kernel]["release"]


def _scenario_file() -> Path | None:
    """A scenario that loads (a whiteout one if there is one): its checks are not this test's
    business, the VM path is."""
    from harness.scenario import ScenarioError, load
    files = sorted((vmb.REPO / "scenarios").rglob("*.yaml"), key=lambda p: ("whiteout" not in str(p), p))
    for f in files:
        try:
            s = load(f)
        except (ScenarioError, OSError):
            continue
        if not s.requires:
            return f
    return None


def test_scenario_through_vm_leaves_no_mount_or_loop(backend, vm):
    try:
        from harness import oracle
    except ImportError as e:
        pytest.skip(f"harness.runner is not importable: {e}")
    if not oracle.binary_path(oracle.default_version()).exists():
        pytest.skip("the Go oracle is not built (bash oracle/build.sh default)")
    path = _scenario_file()
    if path is None:
        pytest.skip("no scenario file under scenarios/")
    before = _mounts_and_loops(vm)
    r = backend.run_file(str(path))
    assert r["status"] in ("pass", "fail", "xfail", "xpass", "skip"), r["message"]
    assert r["environment"]["backend"] == "vm"
    assert r["environment"]["vm"]["release"] == PINS[backend.kernel]["release"]
    assert r["environment"]["vm"]["capabilities"]["overlay_whiteout"] == "char-0/0"
    assert _mounts_and_loops(vm) == before


@pytest.mark.slow          # about a minute under TCG; make test's budget is tight
def test_go_erofs_writer_runs_in_the_guest():
    """--writer go-erofs through the VM: the host's build of the writer runs in the guest, and
    the guest's kernel mounts its image and containerd's layer.erofs. On the oldest kernel only,
    which mounts an image only through a loop device, unlike the host (each kernel costs about a
    minute under TCG; docs/writer.md has the run on all three)."""
    from harness import goerofs, oracle
    if not oracle.binary_path(oracle.default_version()).exists() or not goerofs.BINARY.exists():
        pytest.skip("the Go oracle or the go-erofs writer is not built (make bootstrap)")
    kernel = KERNELS[0]
    if vmb.unavailable_reason(kernel):
        pytest.skip(vmb.unavailable_reason(kernel))
    path = Path(__file__).resolve().parent.parent / "scenarios/apply/mkfs-defects/implied-parent.yaml"
    backend = vmb.VMBackend(kernel, reuse=False)     # its own guest: close() kills it
    try:
        r = backend.run_file(str(path), {"writer": "go-erofs"})
    finally:
        backend.close()
    assert r["environment"]["vm"]["release"] == PINS[kernel]["release"]
    go = [c for c in r["checks"] if c["name"].startswith("go-erofs writer apply")]
    assert [c["status"] for c in go] == ["pass"], r["checks"]
    assert "go-erofs image and mkfs.erofs image" in go[0]["explanation"], go[0]["explanation"]


# ---------------------------------------------------------------- failures

def test_kill_mid_operation():
    """qemu dies during an agent op: VMError, the console log kept, no qemu left, and through
    VMBackend the scenario gets status error."""
    k = _first_available()
    vm = vmb.VM(k, retries=0)
    vm.start()
    pid, log = vm.pid, vm.console_log
    killer = threading.Timer(1.0, lambda: os.killpg(pid, signal.SIGKILL))
    killer.start()
    t0 = time.monotonic()
    with pytest.raises(vmb.VMError) as ei:
        vm.run("sleep 30", timeout=60)
    killer.join()
    assert time.monotonic() - t0 < 20
    assert ei.value.kind == "lost"
    assert "went away" in str(ei.value) and str(log) in str(ei.value)
    assert ei.value.console_log == str(log)
    assert log.is_file() and log.stat().st_size > 0
    assert not Path(f"/proc/{pid}").exists()
    assert _qemu_pids(str(log)) == []
    with pytest.raises(vmb.VMError, match="the VM is gone"):
        vm.call("ping")


def test_kill_mid_scenario_gives_status_error(tmp_path):
    k = _first_available()
    b = vmb.VMBackend(k, reuse=False)
    vm = b.vm()
    pid, log = vm.pid, vm.console_log
    fifo = tmp_path / "blocks.yaml"      # the guest's open() of a FIFO blocks: a hung scenario
    os.mkfifo(fifo)
    killer = threading.Timer(1.5, lambda: os.killpg(pid, signal.SIGKILL))
    killer.start()
    try:
        r = b.run_file(str(fifo))
    finally:
        killer.join()
        b.close()
    assert r["status"] == "error"
    assert r["environment"]["vm"]["error_kind"] == "lost"
    assert "went away" in r["message"] and str(log) in r["message"]
    assert _qemu_pids(str(log)) == []


def test_a_starved_op_waits_and_a_spinning_one_is_a_hang():
    """The host's wait for an op is a budget of qemu's CPU time: an op that outlasts its budget
    in wall time while the guest idles (as a guest starved of CPU does) is answered; one that
    spins through its budget is a hang (kind timeout) long before the guest's own deadline, and
    kills the VM."""
    k = _first_available()
    vm = vmb.VM(k, retries=0)
    try:
        vm.start()
        vm.run("true")              # the first command starts cold
        t0 = time.monotonic()
        r = vm._call("run", 4.0, {"cmd": "sleep 6", "timeout": 60})
        assert r["rc"] == 0 and time.monotonic() - t0 >= 6
        t0 = time.monotonic()
        with pytest.raises(vmb.VMError) as ei:
            vm._call("run", 4.0, {"cmd": "while :; do :; done", "timeout": 300})
        assert ei.value.kind == "timeout" and "of qemu's CPU time" in str(ei.value)
        assert time.monotonic() - t0 < 4.0 * vmb.BOOT_WALL_FACTOR + 5
        assert not vm.alive
    finally:
        vm.kill()


def test_kernel_panic_is_reported_and_retried():
    k = _first_available()
    vm = vmb.VM(k, append="rdinit=/nonexistent", retries=1, boot_timeout=90)
    with pytest.raises(vmb.VMError) as ei:
        vm.start()
    e = ei.value
    assert e.kind == "panic" and "Kernel panic" in str(e) and "first attempt failed too" in str(e)
    assert Path(e.console_log).is_file() and "Kernel panic" in Path(e.console_log).read_text()
    assert vm.boots == 2 and not vm.alive
    assert _qemu_pids(e.console_log) == []


def test_boot_timeout_is_reported():
    k = _first_available()
    vm = vmb.VM(k, boot_timeout=0.3, retries=0)
    with pytest.raises(vmb.VMError) as ei:
        vm.start()
    # which deadline it meets depends on how busy the host is: qemu's socket or the agent
    assert ei.value.kind == "timeout" and ("not ready after" in str(ei.value)
                                           or "did not open the agent socket" in str(ei.value))
    assert not vm.alive and _qemu_pids(ei.value.console_log) == []


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root (to switch to an unprivileged user) and setpriv")
def test_vm_as_unprivileged_host_user():
    """The whole VM path as `nobody`: cache readable, logs and scratch in the user's tmp, TCG."""
    k = _first_available()
    script = (
        "import json, sys; sys.path.insert(0, %r)\n"
        "from harness.backends.vm import VM\n"
        "with VM(%r, python='/usr/bin/python3') as vm:\n"
        "    r = vm.run('id -u; cat /proc/filesystems')\n"
        "    print(json.dumps({'out': r['stdout'], 'log': str(vm.console_log), 'accel': vm.accel}))\n"
    ) % (str(vmb.REPO), k)
    env = {k2: v for k2, v in os.environ.items() if not k2.startswith(("LAYERCONF_VM_LOGS", "PYTHON"))}
    env["HOME"] = "/tmp"
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "/usr/bin/python3", "-c", script], capture_output=True, text=True,
                       timeout=300, env=env, cwd="/tmp")
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["out"].splitlines()[0] == "0"          # root inside the guest
    assert "erofs" in out["out"] and out["accel"] == "tcg"
    assert out["log"].startswith(("/tmp/", str(vmb.fetch_kernel().cache_root())))


def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a killed qemu whose parent died is a zombie
    until init reaps it: no longer running)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.split()[1] != "Z"
    except OSError:
        return False
    return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_qemu_dies_with_its_host_process(sig):
    """No qemu outlives the Python process that started it, even if that one is SIGKILLed."""
    k = _first_available()
    script = ("import os, sys, time; sys.path.insert(0, %r)\n"
              "from harness.backends.vm import VM\n"
              "vm = VM(%r); vm.start(); print(vm.pid, flush=True); time.sleep(600)\n") % (str(vmb.REPO), k)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        qpid = int(p.stdout.readline())
        assert _running(qpid)
        p.send_signal(sig)
        p.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _running(qpid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(qpid), f"qemu {qpid} outlived its host process (signal {sig.name})"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root (to switch to an unprivileged user) and setpriv")
def test_layerconf_run_as_unprivileged_user_goes_through_the_vm():
    """`layerconf run` with no backend flag, as `nobody`, with a bare environment: a real
    scenario runs in the guest against containerd's Go differ and passes."""
    import tempfile
    tmp_path = Path(tempfile.mkdtemp(prefix="layerconf-nobody-"))
    os.chmod(tmp_path, 0o777)
    try:
        p = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", "-i",
             "PATH=/usr/bin:/bin", "HOME=/tmp", str(vmb.REPO / ".venv" / "bin" / "layerconf"),
             "run", "--keep", str(tmp_path / "artifacts"),
             str(vmb.REPO / "scenarios/whiteout/root-file.yaml")],
            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)     # also when it fails or times out
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "1 passed, 0 failed, 0 error" in p.stdout


@pytest.mark.slow          # two guests (one boots to save a state of its own) and two Apply runs
def test_apply_with_mkfs_on_the_host_gives_the_same_result(monkeypatch):
    """An Apply scenario in a guest with its tar-mode mkfs.erofs runs forwarded to the host
    (harness/backends/mkfs_forward.py) and without: the same checks and outcomes, and the
    forwarded guest's runs did reach the host."""
    from harness import oracle
    if not oracle.binary_path(oracle.default_version()).exists():
        pytest.skip("the Go oracle is not built (bash oracle/build.sh default)")
    kernel = _first_available()
    path = Path(__file__).resolve().parent.parent / "scenarios/apply/mkfs-defects/implied-parent.yaml"
    results, runs = {}, {}
    for forward in ("1", "0"):
        monkeypatch.setenv("LAYERCONF_VM_MKFS_FORWARD", forward)
        backend = vmb.VMBackend(kernel, reuse=False)     # its own guest: close() kills it
        try:
            results[forward] = backend.run_file(str(path))
            server = backend.vm()._mkfs_server
            runs[forward] = server.runs if server else 0
            assert backend.vm().mkfs_ports == (2 if forward == "1" else 0)
        finally:
            backend.close()
    # containerd's run and the reference's, for each Apply case
    assert runs["0"] == 0 and runs["1"] >= 2, runs

    def verdict(r):
        return (r["status"], [(c["name"], c["status"]) for c in r["checks"]],
                json.dumps(r.get("outcomes"), sort_keys=True, default=str))

    assert verdict(results["1"]) == verdict(results["0"])
    assert any(c["name"].startswith("mkfs ") and c["status"] == "pass" for c in results["1"]["checks"])
