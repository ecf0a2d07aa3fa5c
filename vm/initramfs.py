#!/usr/bin/env python3
"""Build the guest initramfs: static busybox + the kernel's modules (boot and extra) + vm/init.sh
as /init + the guest's python and vm/agent.py, so the agent is already running in a saved guest.

    python3 vm/initramfs.py [6.1|6.12|all]      # normally done by fetch_kernel.py / the VM

The python comes with what it needs before the host's tree is mounted: its binary, the shared
libraries `ldd` names and the few standard-library modules the agent imports at start, each at
its host path (so the same modules, later read from the host, are the same files).

The archive is an uncompressed newc cpio (it boots ~0.2 s faster than gzip under TCG), written
by this module in pure Python. It is cached next to the kernel as `initramfs-<hash>.cpio`, the
hash covering busybox, init.sh, the modules and this builder, so editing init.sh rebuilds it.
When the kernel cache is not writable (a non-root user, cache made by root) the archive goes
to a per-user folder instead. Stdlib only.
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

VM_DIR = Path(__file__).resolve().parent
INIT = VM_DIR / "init.sh"
BUILDER_VERSION = 4
AGENT = VM_DIR / "agent.py"
# what the agent imports before the host is mounted (the rest comes from the host afterwards)
AGENT_START_IMPORTS = "import __future__, ctypes, json, os, sys, time, fcntl"


class InitramfsError(RuntimeError):
    pass


class CpioWriter:
    """Minimal SVR4 'newc' cpio writer (what the kernel's initramfs unpacker reads)."""

    def __init__(self, out: io.BufferedIOBase):
        self.out = out
        self.ino = 1000

    def _entry(self, name: str, mode: int, data: bytes = b"", nlink: int = 1, mtime: int = 0) -> None:
        self.ino += 1
        nameb = name.encode() + b"\x00"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, nlink, mtime, len(data), 0, 0, 0, 0, len(nameb), 0))
        self.out.write(hdr.encode() + nameb)
        self.out.write(b"\x00" * ((4 - (110 + len(nameb)) % 4) % 4))
        self.out.write(data)
        self.out.write(b"\x00" * ((4 - len(data) % 4) % 4))

    def dir(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | perm, nlink=2)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self.ino += 1
        nameb = name.encode() + b"\x00"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, stat.S_IFCHR | perm, 0, 0, 1, 0, 0, 0, 0, major, minor, len(nameb), 0))
        self.out.write(hdr.encode() + nameb)
        self.out.write(b"\x00" * ((4 - (110 + len(nameb)) % 4) % 4))

    def trailer(self) -> None:
        self._entry("TRAILER!!!", 0, nlink=1)
        pad = (512 - self.out.tell() % 512) % 512 if hasattr(self.out, "tell") else 0
        self.out.write(b"\x00" * pad)


def find_busybox() -> Path:
    for cand in (os.environ.get("LAYERCONF_VM_BUSYBOX"), "/bin/busybox", "/usr/bin/busybox"):
        if cand and os.path.isfile(cand):
            p = Path(cand)
            head = p.read_bytes()[:4096]
            if b"\x7fELF" == head[:4] and b"ld-linux" not in p.read_bytes()[:65536]:
                return p
    raise InitramfsError("no static busybox found (apt-get install busybox-static)")


def busybox_applets(busybox: Path) -> list[str]:
    p = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise InitramfsError(f"{busybox} --list failed: {p.stderr.strip()}")
    return sorted(set(p.stdout.split()) - {"busybox"})


def python_files(python: str) -> list[str]:
    """Host paths the guest's python needs to start the agent: its binary, shared libraries
    (the dynamic loader included) and the standard-library modules of AGENT_START_IMPORTS."""
    binary = os.path.realpath(python)
    code = (f"{AGENT_START_IMPORTS}\nprint('\\n'.join(sorted({{m.__file__ for m in "
            "list(sys.modules.values()) if getattr(m, '__file__', None)} | {os.__file__})))")
    try:
        p = subprocess.run([binary, "-S", "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise InitramfsError(f"cannot run the guest python {python}: {e}") from None
    if p.returncode != 0:
        raise InitramfsError(f"the guest python {python} failed: {p.stderr.strip()[-300:]}")
    files = [binary] + p.stdout.split()
    for obj in [binary] + [f for f in files if f.endswith(".so")]:
        files += _shared_libraries(obj)
    return sorted(set(files))


def _shared_libraries(obj: str) -> list[str]:
    try:
        p = subprocess.run(["ldd", obj], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    libs = []
    for line in p.stdout.splitlines():       # "libm.so.6 => /lib/.../libm.so.6 (0x...)" or
        parts = line.split()                 # "/lib64/ld-linux-x86-64.so.2 (0x...)"
        path = parts[2] if "=>" in parts and len(parts) > 3 else parts[0] if parts else ""
        if path.startswith("/"):
            libs.append(path)
    return libs


def _digest(busybox: Path, modules_dir: Path, order: list[str], extra: list[str],
            pyfiles: list[str]) -> str:
    h = hashlib.sha256(f"v{BUILDER_VERSION}\n".encode())
    h.update(INIT.read_bytes())
    h.update(AGENT.read_bytes())
    for f in pyfiles:
        h.update(f.encode() + b"\0")
        h.update(hashlib.sha256(Path(f).read_bytes()).digest())
    h.update(hashlib.sha256(busybox.read_bytes()).digest())
    for group in (order, extra):
        h.update(b"modules\0")
        for m in group:
            h.update(m.encode() + b"\0")
            h.update(hashlib.sha256((modules_dir / f"{m}.ko").read_bytes()).digest())
    return h.hexdigest()[:16]


def build(out_path: Path, modules_dir: Path, order: list[str], extra: list[str],
          busybox: Path, python: str, pyfiles: list[str]) -> None:
    buf = io.BytesIO()
    w = CpioWriter(buf)
    dirs = {"bin", "sbin", "dev", "proc", "sys", "tmp", "run", "etc", "root", "mnt",
            "lib", "lib/modules", "lib/layerconf", "usr", "usr/bin", "usr/sbin"}
    for f in pyfiles:      # every parent of the python's files, made real folders
        parent = os.path.dirname(f.lstrip("/"))
        while parent:
            dirs.add(parent)
            parent = os.path.dirname(parent)
    for d in sorted(dirs):
        w.dir(d)
    for f in pyfiles:      # each at its host path, as a plain file (symlinks resolved)
        w.file(f.lstrip("/"), Path(f).read_bytes(), 0o755)
    w.file("lib/layerconf/python", os.path.realpath(python).encode())
    w.file("lib/layerconf/agent.py", AGENT.read_bytes())
    w.chardev("dev/console", 5, 1)
    w.chardev("dev/null", 1, 3, 0o666)
    w.file("bin/busybox", busybox.read_bytes(), 0o755)
    for a in busybox_applets(busybox):
        w.symlink(f"bin/{a}", "busybox")
    for m in order + extra:
        w.file(f"lib/modules/{m}.ko", (modules_dir / f"{m}.ko").read_bytes())
    w.file("lib/modules/order", "".join(m + "\n" for m in order).encode())
    w.file("lib/modules/extra", "".join(m + "\n" for m in extra).encode())
    w.file("init", INIT.read_bytes(), 0o755)
    w.trailer()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=".initramfs-")
    with os.fdopen(fd, "wb") as f:
        f.write(buf.getvalue())
    os.chmod(tmp, 0o644)
    os.replace(tmp, out_path)


def user_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"layerconf-vm-{os.getuid()}"


def ensure_initramfs(art, python: str = sys.executable) -> Path:
    """The initramfs for KernelArtifacts `art` (fetch_kernel.py) and the guest's `python`,
    built if missing or stale."""
    busybox = find_busybox()
    order = (art.modules_dir / "order").read_text().split()
    # kernels.toml's extra_modules (ext4) too: init loads them before the state is saved
    extra_file = art.modules_dir / "extra"
    extra = extra_file.read_text().split() if extra_file.is_file() else []
    pyfiles = python_files(python)
    digest = _digest(busybox, art.modules_dir, order, extra, pyfiles)
    name = f"initramfs-{digest}.cpio"
    for d in (art.dir, user_dir() / art.name):
        if (d / name).is_file():
            return d / name
    target = art.dir if os.access(art.dir, os.W_OK) else user_dir() / art.name
    build(target / name, art.modules_dir, order, extra, busybox, python, pyfiles)
    # keep the newest few: worktrees sharing a cache, or two pythons, would rebuild each other's
    olds = sorted(target.glob("initramfs-*.cpio"), key=lambda p: p.stat().st_mtime)
    for old in olds[:-4]:
        try:
            old.unlink()
        except OSError:
            pass
    return target / name


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(VM_DIR))
    import fetch_kernel
    spec = (argv if argv is not None else sys.argv[1:]) or ["all"]
    for name in fetch_kernel.kernel_names(spec[0]):
        art = fetch_kernel.cached(name)
        if art is None:
            print(f"{name}: not in the cache; run python3 vm/fetch_kernel.py {name}", file=sys.stderr)
            return 1
        print(f"{name}: {ensure_initramfs(art)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
