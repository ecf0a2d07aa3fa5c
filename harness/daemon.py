"""The daemon path: containerd itself (cmd/containerd at the version under test), started as a
real daemon with a generated config in a temp folder, always stopped and cleaned up.

The oracle then serves the same protocol through the daemon's API (`layerconf-oracle serve
--address SOCKET`, containerd's Go client): snapshots, diff service, content store, leases and
mount manager are the daemon's, as for ctr, nerdctl and CRI.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .oracle import REPO, OracleError, build_with

# The diff service's order as containerd's EROFS documentation configures it
# (docs/snapshotters/erofs.md): the erofs differ first, the walking differ for what it declines.
DIFF_ORDER = ("erofs", "walking")

# Plugins a conformance daemon has no use for; skipping them keeps start-up short (CRI alone
# takes seconds under TCG) and keeps the daemon from touching the host's networking or runtimes.
DISABLED_PLUGINS = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.cri.v1.images",
    "io.containerd.cri.v1.runtime",
    "io.containerd.podsandbox.controller.v1.podsandbox",
    "io.containerd.sandbox.controller.v1.shim",
    "io.containerd.nri.v1.nri",
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.blockfile",
    "io.containerd.snapshotter.v1.native",
)


SOCKET = "c.sock"       # short: a unix socket path has at most 107 bytes (+ ".ttrpc")


def short_folder(base: str) -> str:
    """A new folder for a daemon, under base when its sockets' paths fit, else in the temp dir,
    else in /tmp (a deep TMPDIR or workdir must not stop the daemon from binding)."""
    for parent in (base, tempfile.gettempdir(), "/tmp"):
        if len(os.path.join(os.path.realpath(parent), "lc-12345678", SOCKET + ".ttrpc")) <= 100:
            return tempfile.mkdtemp(prefix="lc-", dir=parent)
    raise DaemonError(f"no folder short enough for containerd's sockets (under {base!r})")


# containerd's built-in config hands the two encrypted layer types to imgcrypt's `ctd-decoder`
# before any differ sees them (cmd/containerd/command/config.go streamProcessors); without that
# binary their Apply fails with `exec: "ctd-decoder": executable file not found`. The conformance
# run tests the differ's own media-type handling (as the direct path does), so the config
# replaces both entries with processors that accept nothing.
OCICRYPT_PROCESSORS = ("io.containerd.ocicrypt.decoder.v1.tar",
                       "io.containerd.ocicrypt.decoder.v1.tar.gzip")


class DaemonError(OracleError):
    """containerd could not be built, started or stopped: an engine error."""


def _toml_list(items) -> str:
    return "[" + ", ".join(json.dumps(str(i)) for i in items) + "]"


def config_toml(folder: str, *, mkfs_options=(), tar_index: bool = False,
                order=DIFF_ORDER, ovl_options=()) -> str:
    """containerd's config (version 3) for a daemon living in `folder`: its own root, state and
    sockets, the erofs snapshotter and differ configured as the scenario asks."""
    f = lambda *p: json.dumps(os.path.join(folder, *p))   # noqa: E731  (TOML basic strings)
    return "\n".join([
        "version = 3",
        f"root = {f('root')}",
        f"state = {f('state')}",
        f"disabled_plugins = {_toml_list(DISABLED_PLUGINS)}",
        "",
        "[grpc]",
        f"  address = {f(SOCKET)}",
        "[ttrpc]",
        f"  address = {f(SOCKET + '.ttrpc')}",
        "[debug]",
        '  address = ""',
        '  level = "info"',
        "[metrics]",
        '  address = ""',
        "",
        '[plugins."io.containerd.service.v1.diff-service"]',
        f"  default = {_toml_list(order)}",
        '[plugins."io.containerd.differ.v1.erofs"]',
        f"  mkfs_options = {_toml_list(mkfs_options)}",
        f"  enable_tar_index = {'true' if tar_index else 'false'}",
        '[plugins."io.containerd.snapshotter.v1.erofs"]',
        f"  ovl_mount_options = {_toml_list(ovl_options)}",
        "",
    ] + [line for name in OCICRYPT_PROCESSORS for line in (
        f'[stream_processors."{name}"]',
        "  accepts = []",
        '  returns = "application/vnd.oci.image.layer.v1.tar"',
        '  path = "ctd-decoder"',
    )] + [""])


def binary_path(version: str) -> Path:
    """Where containerd for a version or a source-tree key is built."""
    return REPO / ".cache" / "containerd" / version / "containerd"


def ensure_built(version: str) -> Path:
    """Build (or reuse) cmd/containerd for a version or a source-tree key."""
    return build_with(REPO / "oracle" / "build-daemon.sh", version, binary_path(version),
                      "cmd/containerd", DaemonError, timeout=3600)


class Daemon:
    """One containerd process in its own folder. Use as a context manager, or start()/stop()."""

    def __init__(self, version: str, base: str, *, mkfs_options=(), tar_index: bool = False,
                 order=DIFF_ORDER, ovl_options=(), timeout: float = 60,
                 env: dict | None = None, binary: str | None = None):
        self.version = version
        self.binary = binary or str(binary_path(version))
        self.base = base
        self.options = dict(mkfs_options=tuple(mkfs_options), tar_index=tar_index, order=order,
                            ovl_options=tuple(ovl_options))
        self.timeout = timeout
        self.env = dict(env or {})
        self.folder: str | None = None
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def root(self) -> str:
        return os.path.join(self.folder, "root")

    @property
    def address(self) -> str:
        return os.path.join(self.folder, SOCKET)

    @property
    def log_path(self) -> str:
        return os.path.join(self.folder, "containerd.log")

    def start(self) -> "Daemon":
        if not os.access(self.binary, os.X_OK):
            raise DaemonError(f"containerd {self.version} is not built ({self.binary} is missing); "
                              f"run `bash oracle/build-daemon.sh {self.version}`")
        self.folder = short_folder(self.base)
        cfg = os.path.join(self.folder, "config.toml")
        Path(cfg).write_text(config_toml(self.folder, **self.options))
        self._log = open(self.log_path, "ab")
        env = dict(os.environ, CONTAINERD_DISABLE_IGZIP="1", CONTAINERD_DISABLE_PIGZ="1", **self.env)
        self.proc = subprocess.Popen([self.binary, "--config", cfg], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=self._log, start_new_session=True,
                                     env=env)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self):
        """Until the gRPC socket exists (the daemon serves once it is bound), or the deadline."""
        deadline = time.monotonic() + self.timeout
        while not os.path.exists(self.address):
            if self.proc.poll() is not None:
                raise DaemonError(f"containerd {self.version} exited (status {self.proc.returncode}) "
                                  f"while starting; its log ends:\n{self.log_tail(12)}")
            if time.monotonic() > deadline:
                raise DaemonError(f"containerd {self.version} did not open {self.address} within "
                                  f"{self.timeout:g} s; its log ends:\n{self.log_tail(12)}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16384))
                return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
        except (OSError, TypeError):
            return ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """SIGTERM (containerd unmounts what its mount manager holds), SIGKILL after 20 s; then
        whatever is still mounted under the folder is unmounted and the folder removed."""
        from .state import force_unmount_under
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait(timeout=20)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.folder is not None:
            force_unmount_under(self.folder)
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
