"""The `run` op: a command chrooted in the mounted merged view, with /proc and /dev mounted.

The mounts are always undone and every process still inside the tree is killed afterwards (also
on timeout and Ctrl-C), so the overlay can be unmounted. A missing /proc or /dev is created for
the command and removed afterwards (the root directory's mtime then changes, as any change would).
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time

DEFAULT_TIMEOUT = 600.0
MOUNT_TIMEOUT = 30.0
KEEP_OUTPUT = 16 * 1024          # bytes of stdout/stderr kept (the end) for messages and logs
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root", "LC_ALL": "C"}
PASSED_ENV = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


class CommandFailed(Exception):
    """The command exited non-zero (with check), timed out, or could not start."""


def _sh(argv: list[str]):
    p = subprocess.run(argv, capture_output=True, timeout=MOUNT_TIMEOUT)
    if p.returncode:
        raise CommandFailed(f"{' '.join(argv)}: {p.stderr.decode(errors='replace').strip()}")


def _tail(f) -> str:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - KEEP_OUTPUT))
    text = f.read().decode(errors="replace")
    return ("[...]\n" if size > KEEP_OUTPUT else "") + text


def _inside(root: str) -> list[int]:
    """Processes whose root directory is the chroot (left behind by the command)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/root") == root:
                    out.append(int(pid))
    return out


def _kill_inside(root: str, group: int | None):
    if group is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    for _ in range(50):
        pids = _inside(root)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


@contextlib.contextmanager
def _system_mounts(root: str):
    made, mounted = [], []
    try:
        for d in ("proc", "dev"):
            p = os.path.join(root, d)
            if not os.path.isdir(p):
                os.mkdir(p, 0o755)
                made.append(p)
        _sh(["mount", "-t", "proc", "proc", os.path.join(root, "proc")])
        mounted.append(os.path.join(root, "proc"))
        _sh(["mount", "--rbind", "/dev", os.path.join(root, "dev")])
        mounted.append(os.path.join(root, "dev"))
        _sh(["mount", "--make-rslave", os.path.join(root, "dev")])
        yield
    finally:
        for m in reversed(mounted):
            p = subprocess.run(["umount", "-R", m], capture_output=True, timeout=MOUNT_TIMEOUT)
            if p.returncode:
                subprocess.run(["umount", "-R", "-l", m], capture_output=True,
                               timeout=MOUNT_TIMEOUT)
        for p in reversed(made):
            with contextlib.suppress(OSError):
                os.rmdir(p)


def run(root: bytes, argv, *, timeout: float | None = None, env: dict | None = None,
        check: bool = True) -> str:
    """Run argv chrooted at root; the log (command, exit status, ends of stdout and stderr).
    Raises CommandFailed on a non-zero exit (when check), a timeout or a failed start."""
    root_s = os.path.realpath(os.fsdecode(root))
    timeout = timeout or DEFAULT_TIMEOUT
    full_env = dict(BASE_ENV)
    full_env.update({k: os.environ[k] for k in PASSED_ENV if k in os.environ})
    full_env.update(env or {})
    shown = " ".join(argv[2:] if argv[:2] == ("/bin/sh", "-c") else argv)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            _system_mounts(root_s):
        proc = None
        try:
            proc = subprocess.Popen(["chroot", root_s, *argv], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, env=full_env, start_new_session=True)
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CommandFailed(f"`{shown}` did not finish within {timeout:g} s (killed)\n"
                                f"stdout:\n{_tail(out)}\nstderr:\n{_tail(err)}") from None
        except OSError as e:
            raise CommandFailed(f"cannot start chroot for `{shown}`: {e}") from None
        finally:
            _kill_inside(root_s, proc.pid if proc else None)
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        log = (f"$ {shown}\nexit status {status}\n--- stdout\n{_tail(out)}\n"
               f"--- stderr\n{_tail(err)}\n")
    if status and check:
        raise CommandFailed(f"`{shown}` exited with status {status}\n{log}")
    return log
