"""Mounts the harness makes itself (the round trip's and the meaning check's erofs images and
overlays), made with mount(2), umount2(2) and a loop device's ioctls through libc.

mount(8) would do the same in a process of its own; under the VM's software emulation starting
util-linux's mount (five shared libraries) costs a fifth of a second or more, a dozen times per
scenario. Each call still has a deadline: it runs in a worker thread, and a call that does not
return in time is reported (the run's last-resort cleanup detaches what it may leave mounted).
A failed mount's error carries what the kernel logged about it (erofs and overlayfs say why
they refuse in the kernel log, while mount(2) returns no more than EINVAL).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import threading

MS_RDONLY = 1
MNT_DETACH = 2
LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_READ_ONLY, LO_FLAGS_AUTOCLEAR = 1, 4
LOOP_CONFIG_SIZE = 304        # struct loop_config: fd, block_size, loop_info64 (232), reserved (64)
LOOP_FLAGS_OFFSET = 8 + 52    # loop_info64.lo_flags, after 5 u64 and 3 u32


class KernelMountError(Exception):
    """A mount, unmount or loop set-up failed or did not return in time; str() says which."""


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _call(what: str, fn, timeout: float):
    """fn() in a worker thread, at most `timeout` seconds; its OSError or a timeout as
    KernelMountError naming `what`."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            out["error"] = e
    t = threading.Thread(target=run, name="kmount", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise KernelMountError(f"{what} did not return within {timeout:g} s")
    if "error" in out:
        e = out["error"]
        if isinstance(e, OSError):
            raise KernelMountError(f"{what} failed: {e.strerror or e}") from None
        raise e
    return out.get("value")


def _check(rc: int):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _mount(source: str, target: str, fstype: str, flags: int, data: str | None):
    _check(_libc().mount(os.fsencode(source), os.fsencode(target), fstype.encode(), flags,
                         data.encode() if data else None))


def _attach_loop(image: str) -> tuple[int, str]:
    """A read-only, autoclear loop device over `image`: (its open fd, its path). The device goes
    away by itself once the fd is closed and nothing mounts it any more."""
    img = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    try:
        ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(16):       # another process may take the free device first
                n = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
                dev = f"/dev/loop{n}"
                fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
                cfg = bytearray(LOOP_CONFIG_SIZE)
                cfg[0:4] = img.to_bytes(4, "little")
                cfg[LOOP_FLAGS_OFFSET:LOOP_FLAGS_OFFSET + 4] = \
                    (LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR).to_bytes(4, "little")
                try:
                    fcntl.ioctl(fd, LOOP_CONFIGURE, bytes(cfg))
                    return fd, dev
                except OSError as e:
                    os.close(fd)
                    if e.errno != errno.EBUSY:
                        raise
            raise OSError(errno.EBUSY, "no free loop device")
        finally:
            os.close(ctl)
    finally:
        os.close(img)


def mount_image(image: str, target: str, fstype: str = "erofs", timeout: float = 60):
    """`mount -t FSTYPE -o ro,loop IMAGE TARGET`."""
    def run():
        with _KernelLog() as said:
            fd, dev = _attach_loop(image)
            try:
                _mount(dev, target, fstype, MS_RDONLY, None)
            except OSError as e:
                raise _with_kernel_words(e, said(f"(device {os.path.basename(dev)})",
                                                 f"{os.path.basename(dev)}:")) from None
            finally:
                os.close(fd)      # the mount holds the device now; on failure it is cleared
    _call(f"mount -t {fstype} -o ro,loop {image} {target}", run, timeout)


def mount_overlay(options: str, target: str, timeout: float = 60):
    """`mount -t overlay overlay -o ro,OPTIONS TARGET`."""
    def run():
        with _KernelLog() as said:
            try:
                _mount("overlay", target, "overlay", MS_RDONLY, options)
            except OSError as e:
                raise _with_kernel_words(e, said("overlayfs:")) from None
    _call(f"mount -t overlay overlay -o ro,{options} {target}", run, timeout)


# -- what the kernel logged -------------------------------------------------------------------

def kernel_messages(records: list[bytes], *marks: str) -> list[str]:
    """The text of /dev/kmsg records (`PRIO,SEQ,USEC,FLAGS;TEXT` then continuation lines) that
    contain any of `marks`."""
    out = []
    for rec in records:
        _, sep, rest = rec.partition(b";")
        text = rest.split(b"\n", 1)[0].decode("utf-8", "replace").strip() if sep else ""
        if text and any(m in text for m in marks):
            out.append(text)
    return out


def _with_kernel_words(e: OSError, said: list[str]) -> OSError:
    if not said:
        return e
    return OSError(e.errno, f"{e.strerror or e} (kernel log: {'; '.join(said[-3:])})")


class _KernelLog:
    """Within the block, said(*marks) -> the kernel log's new lines containing any mark; [] where
    the log cannot be read (no /dev/kmsg, not root)."""

    def __enter__(self):
        self.fd = None
        try:
            self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self.fd, 0, os.SEEK_END)     # only what comes after this point
        except OSError:
            if self.fd is not None:
                os.close(self.fd)
            self.fd = None
        return self.said

    def said(self, *marks: str) -> list[str]:
        records = []
        while self.fd is not None and len(records) < 1000:
            try:
                rec = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EPIPE:        # records overwritten meanwhile: read on
                    continue
                break
            if not rec:
                break
            records.append(rec)
        return kernel_messages(records, *marks)

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)


def unmount(target: str, timeout: float = 60):
    """umount TARGET; when that fails or hangs, detach it lazily (`umount -l`)."""
    try:
        _call(f"umount {target}", lambda: _check(_libc().umount2(os.fsencode(target), 0)),
              timeout)
    except KernelMountError:
        _call(f"umount -l {target}",
              lambda: _check(_libc().umount2(os.fsencode(target), MNT_DETACH)), timeout)
