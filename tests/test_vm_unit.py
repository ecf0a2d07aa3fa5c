"""Unit tests of the VM tooling that need no VM: pins, vmlinux extraction, module resolution,
the cpio writer, the qemu command line. Fast; no qemu, no kernel cache, no network."""
from __future__ import annotations

import io
import lzma
import os
import stat
import struct
import subprocess
import sys
import time

import pytest

from harness.backends import vm as vmb

fk = vmb.fetch_kernel()
initramfs = vmb._load("initramfs")


def test_pins_are_exact():
    pins = fk.load_pins()
    assert pins["default"] in pins["kernels"]
    assert {"6.1", "6.12", "7.3"} <= set(pins["kernels"])
    for name, k in pins["kernels"].items():
        assert k["package"].startswith("linux-image-") and k["package"].endswith("-amd64")
        assert "cloud" not in k["package"], "cloud kernels have no 9p"
        assert k["release"] in k["package"]
        for deb in k["debs"]:
            assert len(deb["sha256"]) == 64 and deb["version"] == k["version"]
            assert k["release"] in deb["package"] and "cloud" not in deb["package"]
    assert pins["kernels"]["6.12"]["suite"] == "bookworm-backports"
    # one .deb before Debian split its kernels, three after (image, modules, base files)
    assert [d["package"] for d in pins["kernels"]["6.12"]["debs"]] == [pins["kernels"]["6.12"]["package"]]
    assert {d["package"].split("-7.3")[0] for d in pins["kernels"]["7.3"]["debs"]} == {
        "linux-binary", "linux-modules", "linux-base"}


def test_pins_refuse_a_deb_without_sha256(tmp_path):
    bad = tmp_path / "kernels.toml"
    bad.write_text('format = 1\n[kernels.x]\npackage = "linux-image-x"\nversion = "1"\n'
                   'release = "x"\ndebs = [{ package = "linux-binary-x", version = "1" }]\n')
    with pytest.raises(fk.FetchError, match=r"kernels.x.debs\[0\].sha256 is missing"):
        fk.load_pins(bad)


def test_unpacked_paths_both_layouts(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    for f in ("boot/vmlinuz-R", "boot/config-R", "lib/modules/R/modules.builtin"):
        (old / f).parent.mkdir(parents=True, exist_ok=True)
        (old / f).write_text("")
    for f in ("usr/lib/modules/R/vmlinuz", "usr/lib/modules/R/config"):
        (new / f).parent.mkdir(parents=True, exist_ok=True)
        (new / f).write_text("")
    assert fk.unpacked_paths(old, "R") == (old / "boot/vmlinuz-R", old / "lib/modules/R",
                                           old / "boot/config-R")
    assert fk.unpacked_paths(new, "R") == (new / "usr/lib/modules/R/vmlinuz",
                                           new / "usr/lib/modules/R", new / "usr/lib/modules/R/config")
    assert fk.unpacked_paths(tmp_path, "R") == (None, None, None)


def test_kernel_names():
    assert vmb.kernel_names("all") == list(fk.load_pins()["kernels"])
    assert vmb.kernel_names("6.1,6.12") == ["6.1", "6.12"]
    assert vmb.kernel_names(None) == [fk.load_pins()["default"]]
    with pytest.raises(ValueError, match="unknown kernel 5.10"):
        vmb.kernel_names("5.10")


def _fake_elf(size: int = 4096) -> bytes:
    body = bytearray(size)
    body[:4] = b"\x7fELF"
    body[4] = 2
    struct.pack_into("<Q", body, 0x28, 1024)   # e_shoff
    struct.pack_into("<H", body, 0x3A, 64)     # e_shentsize
    struct.pack_into("<H", body, 0x3C, 4)      # e_shnum -> ends at 1280 <= size
    return bytes(body)


def test_extract_vmlinux_xz_after_false_magic():
    elf = _fake_elf()
    payload = lzma.compress(elf, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    bz = b"MZ" + b"\0" * 100 + b"\xfd7zXZ\x00garbage" + b"\0" * 50 + payload + b"\0" * 64
    out, kind = fk.extract_vmlinux(bz)
    assert (out, kind) == (elf, "xz")


def test_extract_vmlinux_truncated_elf_rejected():
    elf = _fake_elf()[:1100]  # section headers cut off
    payload = lzma.compress(elf, format=lzma.FORMAT_XZ)
    with pytest.raises(fk.FetchError, match="no compressed ELF"):
        fk.extract_vmlinux(b"MZ" + payload)


@pytest.mark.skipif(not __import__("shutil").which("zstd"), reason="zstd not installed")
def test_extract_vmlinux_zstd():
    elf = _fake_elf()
    payload = subprocess.run(["zstd", "-q", "-c"], input=elf, capture_output=True, check=True).stdout
    out, kind = fk.extract_vmlinux(b"MZ\0\0" + payload + b"trailer")
    assert (out, kind) == (elf, "zstd")


def _ko(depends: str, softdep: str | None = None) -> bytes:
    info = b"\x00license=GPL\x00"
    if softdep:
        info += f"softdep={softdep}\x00".encode()
    info += f"depends={depends}\x00vermagic=6.1.0 SMP mod_unload\x00".encode()
    return b"\x7fELF" + b"\x01" * 64 + info + b"\xff" * 16


def test_resolve_modules_deps_softdeps_builtins(tmp_path):
    mods = {"9p": _ko("9pnet,netfs"), "9pnet": _ko(""), "netfs": _ko(""),
            "libcrc32c": _ko("", "pre: crc32c"), "crc32c_generic": _ko(""),
            "erofs": _ko("libcrc32c")}
    index = {}
    for name, data in mods.items():
        p = tmp_path / (name + (".ko.xz" if name == "erofs" else ".ko"))
        p.write_bytes(lzma.compress(data) if name == "erofs" else data)
        index[name] = p
    order, skipped, blobs = fk.resolve_modules(["virtio_console", "9p", "erofs"], index,
                                               {"virtio_console"}, {"crc32c": "crc32c_generic"})
    assert skipped == ["virtio_console"]
    assert order.index("9pnet") < order.index("9p") and order.index("netfs") < order.index("9p")
    assert order.index("crc32c_generic") < order.index("libcrc32c") < order.index("erofs")
    assert blobs["erofs"] == mods["erofs"]
    with pytest.raises(fk.FetchError, match="nor built in"):
        fk.resolve_modules(["nope"], index, set(), {})


def _parse_newc(data: bytes) -> list[tuple[str, int, bytes, int, int]]:
    out, off = [], 0
    while True:
        assert data[off:off + 6] == b"070701"
        f = [int(data[off + 6 + 8 * i: off + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize, mode = f[11], f[6], f[1]
        name = data[off + 110: off + 110 + namesize - 1].decode()
        off += 110 + namesize
        off += (4 - off % 4) % 4
        body = data[off: off + filesize]
        off += filesize
        off += (4 - off % 4) % 4
        if name == "TRAILER!!!":
            return out
        out.append((name, mode, body, f[9], f[10]))


def test_cpio_writer_roundtrip():
    buf = io.BytesIO()
    w = initramfs.CpioWriter(buf)
    w.dir("bin")
    w.file("bin/busybox", b"\x7fELF123", 0o755)
    w.symlink("bin/sh", "busybox")
    w.chardev("dev/console", 5, 1)
    w.file("init", b"#!/bin/sh\n", 0o755)
    w.trailer()
    data = buf.getvalue()
    assert len(data) % 512 == 0
    entries = {e[0]: e for e in _parse_newc(data)}
    assert entries["bin/busybox"][2] == b"\x7fELF123" and stat.S_IMODE(entries["bin/busybox"][1]) == 0o755
    assert stat.S_ISLNK(entries["bin/sh"][1]) and entries["bin/sh"][2] == b"busybox"
    assert stat.S_ISCHR(entries["dev/console"][1]) and entries["dev/console"][3:] == (5, 1)
    assert stat.S_ISDIR(entries["bin"][1])


@pytest.mark.skipif(not __import__("shutil").which("cpio"), reason="cpio not installed")
def test_cpio_writer_readable_by_gnu_cpio(tmp_path):
    buf = io.BytesIO()
    w = initramfs.CpioWriter(buf)
    w.dir("d")
    w.file("d/f", b"hello", 0o644)
    w.trailer()
    p = subprocess.run(["cpio", "-it", "--quiet"], input=buf.getvalue(), capture_output=True, check=True)
    assert p.stdout.split() == [b"d", b"d/f"]


def test_qemu_command_line(tmp_path, monkeypatch):
    vm = vmb.VM("6.1", accel="tcg", rw_dirs=[str(tmp_path)])
    vm.qemu = "qemu-system-x86_64"
    vm.accel = "tcg"
    vm.art = fk.KernelArtifacts("6.1", tmp_path, tmp_path / "vmlinux", tmp_path / "modules",
                                {"release": "6.1.0-56-amd64"})
    vm.initrd = tmp_path / "initramfs.cpio"
    cmd = vm.command(str(tmp_path / "a.sock"), tmp_path / "console.log", str(tmp_path / "s.img"))
    joined = " ".join(cmd)
    for part in ("-M microvm", "-accel tcg", "-cpu max,-erms,-fsrm", "-smp 1", "-m 1G", "-no-reboot",
                 "-nodefaults", "-nographic", "readonly=on", "mount_tag=hostroot",
                 f"name={vmb.PORT_NAME}", "virtio-blk-device,drive=scratch"):
        assert part in joined, part
    append = cmd[cmd.index("-append") + 1]
    for part in ("console=ttyS0", "quiet", "panic=-1", "cryptomgr.notests", "mitigations=off"):
        assert part in append, part
    if vmb._host_khz():
        assert f"tsc_early_khz={vmb._host_khz()}" in append
    assert "tsc=reliable" in append.split() and "nowatchdog" in append.split()   # TCG only
    assert len(append) < 2048  # the x86 kernel command line limit
    # what varies per guest is in the setup line, never in the saved machine
    assert str(tmp_path / "vmlinux") in joined and "layerconf." not in append
    setup = vm.setup_line("ext4")
    assert setup.startswith("setup ") and setup.endswith("\n") and setup.count("\n") == 1
    for part in (" agent=", " scratch=ext4", f" rw=rw0:{tmp_path}", f" python={vm.python}",
                 " time=", " seed="):
        assert part in setup, part


def test_saved_state_key_covers_the_machine_but_not_per_guest_paths(tmp_path, monkeypatch):
    """A stale state is never used: anything that shapes the saved guest changes the key;
    where a guest's sockets, logs, disks and rw folders live does not."""
    (tmp_path / "vmlinux").write_bytes(b"kernel")

    def machine(**kw):
        vm = vmb.VM("6.1", accel="tcg", **kw)
        vm.qemu = sys.executable           # any file: the key reads its size and mtime
        vm.accel = "tcg"
        vm.art = fk.KernelArtifacts("6.1", tmp_path, tmp_path / "vmlinux", tmp_path / "modules",
                                    {"release": "6.1.0-56-amd64"})
        vm.initrd = tmp_path / "initramfs-0123.cpio"
        return vm

    monkeypatch.setattr(vmb, "_qemu_version", lambda q: "QEMU emulator version 7.2.22")
    (tmp_path / "initramfs-0123.cpio").write_bytes(b"cpio")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    base = machine(rw_dirs=[str(tmp_path / "a")]).state_key()
    assert machine(rw_dirs=[str(tmp_path / "b")]).state_key() == base
    assert machine().state_key() != base                          # one 9p device fewer
    assert machine(rw_dirs=[str(tmp_path / "a")], memory="2G").state_key() != base
    assert machine(rw_dirs=[str(tmp_path / "a")], append="x=1").state_key() != base
    vm = machine(rw_dirs=[str(tmp_path / "a")])
    vm.initrd = tmp_path / "initramfs-4567.cpio"                  # another init.sh or module
    vm.initrd.write_bytes(b"cpio")
    assert vm.state_key() != base
    st = os.stat(tmp_path / "vmlinux")
    os.utime(tmp_path / "vmlinux", ns=(1, 1))                      # a re-extracted kernel
    assert machine(rw_dirs=[str(tmp_path / "a")]).state_key() != base
    os.utime(tmp_path / "vmlinux", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert machine(rw_dirs=[str(tmp_path / "a")]).state_key() == base
    monkeypatch.setattr(vmb, "_qemu_version", lambda q: "QEMU emulator version 8.2.2")
    assert machine(rw_dirs=[str(tmp_path / "a")]).state_key() != base


def test_network_only_when_asked(tmp_path, monkeypatch):
    """The netdev only on a guest that asks; it boots (no saved state) and its setup line tells
    the agent to bring eth0 up."""
    monkeypatch.setattr(vmb, "_python_site_dirs", lambda python: [])

    def guest(**kw):
        vm = vmb.VM("6.1", accel="tcg", **kw)
        vm.qemu, vm.accel, vm.initrd = "qemu-system-x86_64", "tcg", tmp_path / "initramfs.cpio"
        vm.art = fk.KernelArtifacts("6.1", tmp_path, tmp_path / "vmlinux", tmp_path / "modules", {})
        return vm, vm.command(str(tmp_path / "a.sock"), tmp_path / "console.log")
    (off, offline), (on, online) = guest(), guest(network=True)
    assert "-netdev" not in offline
    assert online[online.index("-netdev") + 1] == "user,id=net0"
    assert "virtio-net-device,netdev=net0" in online
    assert "net=user" in on.setup_line("ext4").split() and "net=user" not in off.setup_line("ext4")
    assert not on.use_saved_state


def test_scenarios_needing_the_mirror_get_the_network(tmp_path):
    base = "description: d\nlowers: [[{path: a, type: file}]]\nupper: [{op: rm, path: a}]\n"
    plain, mirror = tmp_path / "plain.yaml", tmp_path / "mirror.yaml"
    plain.write_text(base + "requires: [trusted-xattr]\n")
    mirror.write_text(base + "requires: [debian-mirror]\n")
    assert vmb._guest_needs(str(plain)) == {}
    assert vmb._guest_needs(str(mirror)) == {"network": True}
    assert vmb._guest_needs(str(tmp_path / "missing.yaml")) == {}


def test_scenarios_with_big_inputs_get_a_bigger_guest(tmp_path, monkeypatch):
    """An input file of BIG_INPUT bytes or more (a tar lower, an Apply blob) asks for a guest of
    BIG_GUEST_MEMORY; smaller or missing inputs leave the default guest."""
    monkeypatch.setattr(vmb, "BIG_INPUT", 1000)
    small, big = tmp_path / "small.tar", tmp_path / "big.tar"
    small.write_bytes(b"\0" * 999)
    big.write_bytes(b"\0" * 1000)
    lower, blob = tmp_path / "lower.yaml", tmp_path / "blob.yaml"
    lower.write_text("description: d\nlowers: [{tar: big.tar}]\nupper: [{op: rm, path: a}]\n")
    blob.write_text("description: d\napply:\n  cases:\n    - {media_type: application/vnd.oci."
                    "image.layer.v1.tar, blob: {file: small.tar}}\n")
    assert vmb._guest_needs(str(lower)) == {"memory": vmb.BIG_GUEST_MEMORY}
    assert vmb._guest_needs(str(blob)) == {}
    blob.write_text(blob.read_text().replace("small.tar", "big.tar"))
    assert vmb._guest_needs(str(blob)) == {"memory": vmb.BIG_GUEST_MEMORY}
    big.unlink()
    assert vmb._guest_needs(str(lower)) == {}


def test_an_op_is_overdue_after_its_cpu_budget_or_five_times_it_in_wall_time():
    """A starved guest (little CPU in a long wait) is not hung; a spinning one is once it used
    its budget; one that waits on nothing is at BOOT_WALL_FACTOR times the budget; with qemu's
    CPU time unknown the budget is wall time."""
    assert not vmb.overdue(waited=100, cpu=20, budget=60)
    assert vmb.overdue(waited=100, cpu=61, budget=60)
    assert not vmb.overdue(waited=59, cpu=59, budget=60)
    assert vmb.overdue(waited=60 * vmb.BOOT_WALL_FACTOR + 1, cpu=0, budget=60)
    assert vmb.overdue(waited=61, cpu=float("inf"), budget=60)


def test_a_restore_that_idled_through_its_wait_drops_the_state(tmp_path, monkeypatch):
    """A restore that runs out of time is retried as a restore when the guest was busy (a loaded
    host), but a guest that idled (a bad save: it never wakes) loses its state and boots."""
    state = tmp_path / "x.vmstate"
    for idle, want in ((False, [state, state]), (True, [state, None])):
        state.write_bytes(b"state")
        vm = vmb.VM("6.1", retries=1)
        monkeypatch.setattr(vm, "_prepare", lambda: None)
        monkeypatch.setattr(vm, "_saved_state", lambda: state)
        tried = []

        def boot(attempt, restore=None, idle=idle):
            tried.append(restore)
            vm._idled = idle
            raise vmb.VMError("VM timeout: not ready", kind="timeout")
        monkeypatch.setattr(vm, "_boot", boot)
        with pytest.raises(vmb.VMError):
            vm.start()
        assert tried == want and state.exists() == (not idle)


def test_setup_error_is_one_paragraph(monkeypatch):
    monkeypatch.setenv("LAYERCONF_QEMU", "/nonexistent/qemu")
    with pytest.raises(vmb.VMError) as ei:
        vmb.VM("6.1").start()
    assert ei.value.kind == "setup" and "\n" not in str(ei.value)
    assert vmb.unavailable_reason("6.1").startswith("qemu-system-x86_64 is not installed")


def test_backend_rejects_all():
    with pytest.raises(ValueError, match="backends_for"):
        vmb.VMBackend("all")
    assert [b.kernel for b in vmb.backends_for("all")] == vmb.kernel_names("all")


def test_agent_and_probe_are_stdlib_only():
    """The guest side may import only the standard library (it runs with python -S)."""
    import ast
    import sys
    for f in ("agent.py", "probe.py"):
        tree = ast.parse((vmb.VM_DIR / f).read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            for n in names:
                top = n.split(".")[0]
                assert top in sys.stdlib_module_names or top in ("harness", "probe"), (f, n)


def test_an_engine_error_in_the_guest_keeps_its_console_log(tmp_path):
    from harness.backends.vm import _keep_console
    console = tmp_path / "g.console.log"
    console.write_bytes(b"x" * (300 << 10) + b"\nkernel: the last words\n")
    result = {"scenario": "apply/hangs", "status": "error", "artifacts": None}
    _keep_console(result, console, tmp_path / "keep")
    kept = tmp_path / "keep" / "apply__hangs" / "console.log"
    assert result["artifacts"] == str(kept.parent)
    assert kept.read_bytes().endswith(b"kernel: the last words\n")
    assert len(kept.read_bytes()) == 256 << 10           # the tail, bounded
    nothing = {"scenario": "x", "status": "error", "artifacts": None}
    _keep_console(nothing, None, tmp_path / "keep")       # no console: nothing, no error
    assert nothing["artifacts"] is None


def test_changed_since_sees_files_folders_and_missing_paths(tmp_path):
    f, d = tmp_path / "s.yaml", tmp_path / "tree"
    f.write_text("x")
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "a").write_text("a")
    old = 1_600_000_000
    for p in (f, d, d / "sub", d / "sub" / "a"):
        os.utime(p, (old, old))
    since = os.stat(f).st_ctime + 1          # as if the guest started after they were made
    assert not vmb.changed_since([str(f), str(d)], since)
    (d / "sub" / "a").write_text("b")        # edited in place, deep in a folder, mtime kept old
    os.utime(d / "sub" / "a", (old, old))
    assert vmb.changed_since([str(d)], os.stat(f).st_ctime)   # its ctime moved
    assert vmb.changed_since([str(tmp_path / "gone.tar")], 0)  # missing: cannot tell
    assert not vmb.changed_since([], since)


class _FakeGuest:
    """Enough of a VM for VMBackend.run_file: records the ops it is asked for."""
    alive, rw_dirs, network, boots, accel = True, [], False, 1, "tcg"

    def __init__(self):
        self.ops, self.host_cache_since = [], time.time()

    def call(self, op, timeout=0, **args):
        self.ops.append(op)
        return {"scenario": "s", "status": "pass", "duration": 0.0} if op == "scenario" else True

    def info(self):
        return {}

    def _qemu_cpu_seconds(self):
        return 0.0

    def _cpu_since(self, start):
        return float("inf")


def test_guest_caches_dropped_only_when_the_scenarios_files_changed(tmp_path, monkeypatch):
    f = tmp_path / "s.yaml"
    f.write_text("description: d\nlowers: [[{path: a, type: file}]]\nupper: [{op: rm, path: a}]\n")
    os.utime(f, (1_600_000_000, 1_600_000_000))
    guest = _FakeGuest()
    guest.host_cache_since = os.stat(f).st_ctime + 5     # started after the file was written
    b = vmb.VMBackend("6.1")
    monkeypatch.setattr(vmb, "_prepare_host", lambda: None)
    monkeypatch.setattr(b, "vm", lambda *a, **k: guest)
    monkeypatch.setattr(b, "kernel_probe", lambda vm=None: {})
    assert b.run_file(str(f))["status"] == "pass"
    assert guest.ops == ["scenario"]                      # nothing of it can be stale
    guest.host_cache_since = os.stat(f).st_ctime - 0.5    # the guest may have read it before it changed
    b.run_file(str(f))
    assert guest.ops == ["scenario", "drop_caches", "scenario"]
    assert guest.host_cache_since > os.stat(f).st_ctime   # from the drop on, fresh again
    fifo = tmp_path / "blocks.yaml"                       # not loadable here: always dropped
    os.mkfifo(fifo)
    b.run_file(str(fifo))
    assert guest.ops[-2:] == ["drop_caches", "scenario"]


def test_guest_deadlines_scale_under_tcg(tmp_path):
    """RunOptions.timeout_scale (VMBackend sets BOOT_WALL_FACTOR under TCG) multiplies the
    session's deadline (the run's or the scenario's) and every run/copy/sync op's, given or
    default; other ops and a scale of 1 are left alone."""
    from harness import chroot, runner
    from harness.scenario import load
    f = tmp_path / "s.yaml"
    f.write_text("description: d\nlowers: [[{path: a, type: file}]]\nupper:\n"
                 "  - {op: run, command: 'true', timeout: 7}\n  - {op: run, command: 'true'}\n"
                 "  - {op: rm, path: a}\n")
    sc = load(str(f))
    scaled = runner.scaled_op_timeouts(sc, 5)
    assert [op.timeout for op in scaled.upper] == [35, 5 * chroot.DEFAULT_TIMEOUT, None]
    assert runner.scaled_op_timeouts(sc, 1) is sc
    session = runner.Session(runner.RunOptions(timeout=60, timeout_scale=5))
    try:
        assert session.timeout == 300
        session.set_timeout(1200)
        assert session.timeout == 6000
    finally:
        session.close()
