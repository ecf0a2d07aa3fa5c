"""Probe what this kernel and user can do; scenarios state what they need (`requires:`).

An expectation may depend on a capability, never on a kernel version string.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import shutil
import signal
import subprocess
import tempfile


class CapabilityError(Exception):
    pass


KNOWN = {
    "root": "running as root (mounts, trusted.* xattrs, device nodes)",
    "trusted-xattr": "trusted.* xattrs can be set (overlay opaque markers)",
    "mknod": "device nodes can be made",
    "erofs": "the kernel has erofs",
    "overlay": "the kernel has overlayfs",
    "file-backed-erofs": "erofs mounts a regular file without a loop device",
    "overlay-userxattr": "overlayfs accepts the userxattr mount option",
    "mkfs-erofs-tar": "mkfs.erofs supports --tar=",
    "large-scratch": "at least 48 GiB free for temporary files (layers of several GiB)",
    "tmpfs-scratch": "temporary files (so the overlay upper) are on tmpfs (directory sizes count entries)",
    "ext4-scratch": "temporary files (so the overlay upper) are on ext4 (a small directory is 4096 bytes)",
    "debian-mirror": "the Debian mirror (deb.debian.org) answers within 5 s",
    "npm-registry": "the npm registry (registry.npmjs.org) answers within 5 s",
    "pypi": "PyPI's file host (files.pythonhosted.org) answers within 5 s",
    "corpus": "the real-world corpus rootfs is built in .cache/corpus (layerconf corpus build; "
              "root and debian-mirror)",
}


def _lazy(name: str) -> bool:
    """Capabilities probed only when a scenario asks (a network probe must not slow every run)."""
    if name not in _LAZY_CACHE:
        from . import corpus
        if name in ("npm-registry", "pypi"):
            _LAZY_CACHE[name] = corpus.registry_reachable(name)
        else:
            fn = {"debian-mirror": corpus.mirror_reachable, "corpus": corpus.built}[name]
            _LAZY_CACHE[name] = bool(fn())
    return _LAZY_CACHE[name]


_LAZY_CACHE: dict[str, bool] = {}
LAZY = ("debian-mirror", "npm-registry", "pypi", "corpus")
# Probed over the network: a VM guest gets QEMU's user-mode network only for scenarios that
# require one of these (harness/backends/vm.py), so every other scenario runs offline.
NETWORK = frozenset({"debian-mirror", "npm-registry", "pypi"})


def _filesystems() -> set[str]:
    try:
        with open("/proc/filesystems") as f:
            return {line.split()[-1] for line in f if line.strip()}
    except OSError:
        return set()


def _try_trusted_xattr(d: str) -> bool:
    p = os.path.join(d, "x")
    open(p, "w").close()
    try:
        os.setxattr(p, "trusted.layerconf", b"1")
        return True
    except OSError:
        return False


def _try_mknod(d: str) -> bool:
    try:
        os.mknod(os.path.join(d, "c"), 0o600 | 0o020000, 0)
        return True
    except OSError:
        return False


def _mount(source: str, target: str, fstype: str, flags: int, data: str) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode())
    return 0 if rc == 0 else ctypes.get_errno()


def _umount(target: str):
    ctypes.CDLL(None, use_errno=True).umount2(target.encode(), 2)  # MNT_DETACH


@contextlib.contextmanager
def _signals_deferred():
    """Ctrl-C/SIGTERM wait until the probe's mount is undone (they arrive right after)."""
    sigs = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _try_file_backed_erofs(d: str) -> bool:
    mkfs = shutil.which("mkfs.erofs")
    if not mkfs:
        return False
    src, img, mp = os.path.join(d, "src"), os.path.join(d, "img"), os.path.join(d, "mp")
    os.mkdir(src)
    os.mkdir(mp)
    if subprocess.run([mkfs, "--quiet", img, src], capture_output=True, timeout=60).returncode:
        return False
    with _signals_deferred():
        ok = _mount(img, mp, "erofs", 1, "") == 0   # MS_RDONLY, a plain file as the source
        _umount(mp)
    return ok


def _try_overlay_userxattr(d: str) -> bool:
    for sub in ("lo", "up", "wk", "mp"):
        os.mkdir(os.path.join(d, sub))
    opts = f"lowerdir={d}/lo,upperdir={d}/up,workdir={d}/wk,userxattr"
    with _signals_deferred():
        ok = _mount("overlay", f"{d}/mp", "overlay", 0, opts) == 0
        _umount(f"{d}/mp")
    return ok


def scratch_fstype(path: str | None = None) -> str:
    """The filesystem type holding `path` (the temp dir by default), from mountinfo."""
    path = os.path.realpath(path or tempfile.gettempdir())
    best, fstype = "", ""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                mp = left.split()[4].encode().decode("unicode_escape")
                if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                    best, fstype = mp, right.split()[0]
    except OSError:
        pass
    return fstype


@functools.lru_cache(maxsize=1)
def probe() -> dict:
    fs = _filesystems()
    caps = {"kernel": platform.release(), "root": os.geteuid() == 0,
            "erofs": "erofs" in fs, "overlay": "overlay" in fs}
    mkfs = shutil.which("mkfs.erofs")
    try:
        helptext = subprocess.run([mkfs, "--help"], capture_output=True, text=True,
                                  timeout=10).stdout if mkfs else ""
    except (OSError, subprocess.TimeoutExpired):
        helptext = ""
    caps["mkfs-erofs-tar"] = "--tar=" in helptext
    caps["large-scratch"] = shutil.disk_usage(tempfile.gettempdir()).free >= 48 << 30
    fstype = scratch_fstype()
    caps["tmpfs-scratch"], caps["ext4-scratch"] = fstype == "tmpfs", fstype == "ext4"
    probes = {"trusted-xattr": _try_trusted_xattr, "mknod": _try_mknod}
    if caps["root"]:
        if caps["erofs"]:
            probes["file-backed-erofs"] = _try_file_backed_erofs
        if caps["overlay"]:
            probes["overlay-userxattr"] = _try_overlay_userxattr
    for name, fn in probes.items():
        with tempfile.TemporaryDirectory(prefix="layerconf-probe-") as d:
            try:
                caps[name] = bool(fn(d))
            except (OSError, subprocess.SubprocessError):
                caps[name] = False
    for name in KNOWN:
        if name not in LAZY:
            caps.setdefault(name, False)
    return caps


def missing(requires) -> list[str]:
    """Required capabilities that are absent, each with what it means. Host mode needs root."""
    caps = probe()
    need = ["root", "erofs", "overlay", "mkfs-erofs-tar", *requires]
    out = []
    for name in dict.fromkeys(need):
        if name not in KNOWN:
            out.append(f"{name} (unknown capability)")
        elif not (_lazy(name) if name in LAZY else caps.get(name)):
            out.append(f"{name} ({KNOWN[name]})")
    return out
