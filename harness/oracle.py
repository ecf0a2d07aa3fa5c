"""Client of the Go oracle (`oracle/`): containerd's real snapshotter and differs, in a subprocess.

No differ logic lives here: requests go out as JSON lines, containerd's answers come back verbatim.
Protocol: docs/oracle-protocol.md.
"""
from __future__ import annotations

import base64
import json
import os
import re
import selectors
import signal
import subprocess
import time
from pathlib import Path

from . import phases

REPO = Path(__file__).resolve().parent.parent
DEFAULT_VERSION_FILE = REPO / "oracle" / "versions.txt"


class OracleError(Exception):
    """The oracle process failed (missing binary, crash, timeout, bad reply): an engine error."""


class OracleTimeout(OracleError):
    """A request passed its deadline; `running` names the processes that had not finished."""

    def __init__(self, message: str, op: str = "", running: str = ""):
        super().__init__(message)
        self.op, self.running = op, running


class ContainerdError(Exception):
    """containerd returned an error for a request; str() is containerd's text verbatim."""


def descendants(pid: int) -> list[int]:
    """Every process below pid (from /proc), children first; [] when /proc says nothing."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], list(children.get(pid, ()))
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo += children.get(p, ())
    return out


def describe_processes(pids) -> str:
    """'mkfs.erofs --tar=f … (pid 12)' for each pid that still exists, '; '-joined."""
    out = []
    for p in pids:
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if argv:
            text = " ".join([os.path.basename(argv[0])] + argv[1:])
            out.append(f"{text[:300]} (pid {p})")
    return "; ".join(out)


def versions() -> list[str]:
    """The containerd versions listed in oracle/versions.txt, default (marked '*' or first) first."""
    out, default = [], None
    for line in DEFAULT_VERSION_FILE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        tokens = line.split()
        v = tokens[0]
        if "default" in tokens[1:] or "*" in tokens[1:]:
            default = v
        out.append(v)
    if default:
        out.remove(default)
        out.insert(0, default)
    return out


def default_version() -> str:
    try:
        return versions()[0]
    except (OSError, IndexError):
        return "v2.4.2"


def binary_path(version: str) -> Path:
    """Where the oracle for a version or a source-tree key (harness/srctree.py) is built."""
    return REPO / ".cache" / "oracle" / version / "layerconf-oracle"


_RELEASE_RE = re.compile(r"^v2\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{7,40}$")


def resolve(spec: str) -> str:
    """A `--containerd` value -> the name the oracle is built and cached under.

    "" -> the default version; vX.Y.Z or a module pseudo-version -> itself; a directory -> the
    source tree's key (vX.Y.Z+tree.<hash>, recorded for the build and the reports); a commit hash
    -> the pseudo-version the Go module proxy gives it. OracleError with the reason otherwise.
    """
    from . import srctree
    spec = (spec or "").strip()
    if not spec:
        return default_version()
    if srctree.looks_like_tree(spec):
        try:
            return srctree.register(srctree.inspect(spec))
        except srctree.TreeError as e:
            raise OracleError(str(e)) from None
    if _RELEASE_RE.match(spec) or srctree.is_key(spec):
        return spec
    if _COMMIT_RE.match(spec):
        return commit_version(spec)
    raise OracleError(f"--containerd {spec!r}: not a version (v2.4.2, or a pseudo-version "
                      "v2.4.3-0.20260101000000-abcdef123456), a commit hash, or a containerd source "
                      f"tree (an existing folder whose go.mod declares {srctree.MODULE})")


def commit_version(commit: str) -> str:
    """The module pseudo-version of a containerd commit (`go list -m`, through the module proxy)."""
    from .srctree import MODULE
    import tempfile
    with tempfile.TemporaryDirectory(prefix="layerconf-golist-") as d:
        env = dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="-mod=mod", GO111MODULE="on")
        try:
            p = subprocess.run(["go", "list", "-m", "-f", "{{.Version}}", f"{MODULE}@{commit}"],
                               cwd=d, env=env, capture_output=True, text=True, timeout=180)
        except FileNotFoundError:
            raise OracleError("Go is not installed; cannot resolve a containerd commit") from None
        except subprocess.TimeoutExpired:
            raise OracleError(f"`go list -m {MODULE}@{commit}` took over 3 minutes "
                              "(is the Go module proxy reachable?)") from None
    version = p.stdout.strip()
    if p.returncode != 0 or not _RELEASE_RE.match(version):
        tail = [l.strip() for l in (p.stderr or p.stdout).strip().splitlines()[-1:]] or ["(no output)"]
        raise OracleError(f"containerd commit {commit} is not known to the Go module proxy "
                          f"(`go list -m {MODULE}@{commit}`: {tail[0]}); give a full hash of a "
                          "pushed commit, or check the commit out and pass the folder")
    return version


def ensure_built(version: str) -> Path:
    """Build (or reuse) the oracle for a version or a source-tree key; OracleError with a plain
    reason."""
    return build_with(REPO / "oracle" / "build.sh", version, binary_path(version), "the Go oracle")


def build_tool(script: Path, product: str, error=OracleError, timeout: float = 600) -> Path:
    """Run the build script of one of oracle/'s small Go programs (oracle/build-go-tool.sh);
    the path it prints, or `error` naming the script and the last line of its output."""
    try:
        p = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise error(f"building {product} took over {timeout:g} s") from None
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        rel = script.relative_to(REPO) if script.is_relative_to(REPO) else script
        raise error(f"building {product} ({rel}) failed: {tail}")
    return Path(p.stdout.strip())


def build_with(script: Path, version: str, path: Path, product: str, error=OracleError,
               timeout: float = 1800) -> Path:
    """Run a build script of oracle/ for a version or a source-tree key (`--tree PATH KEY`);
    the built file, or `error` naming what failed and the tail of the script's output."""
    from . import srctree
    argv, what = ["bash", str(script), version], f"containerd {version}"
    if srctree.is_key(version):
        rec = srctree.lookup(version)
        if rec is None:
            raise error(f"no source tree is recorded under {version} "
                        f"({srctree.record_path(version)} is missing); pass the tree's "
                        "folder to --containerd")
        argv, what = ["bash", str(script), "--tree", rec["path"], version], f"the containerd tree {rec['path']}"
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise error(f"bash is missing; cannot build {product}") from None
    except subprocess.TimeoutExpired:
        raise error(f"building {product} for {what} took over {timeout / 60:.0f} minutes") from None
    if proc.returncode != 0 or not path.exists():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise error(f"could not build {product} for {what} "
                    f"({' '.join(argv[1:])} exited {proc.returncode}):\n{tail}")
    return path


class Oracle:
    """One long-lived `layerconf-oracle serve` process. Use as a context manager."""

    def __init__(self, version: str, root: str, *, mkfs_options=(), tar_index: bool = False,
                 overlay=(), timeout: float = 300, log_path: str | None = None,
                 binary: str | None = None, env: dict | None = None, daemon=None):
        self.version = version
        # The daemon path (harness/daemon.py): a Daemon, started here with the oracle and
        # stopped with it; its config carries mkfs_options and enable_tar_index.
        self.daemon = daemon
        self.env = dict(env or {})          # extra environment (e.g. a recording mkfs.erofs on PATH)
        self.root = root
        self.timeout = timeout
        self.binary = binary or str(binary_path(version))
        self.mkfs_options = list(mkfs_options)
        self.tar_index = tar_index
        self.overlay = list(overlay)        # the snapshotter's ovl_mount_options
        self.log_path = log_path or os.path.join(root, "oracle.log")
        self.proc: subprocess.Popen | None = None
        self._buf = b""
        self._next_id = 0

    # -- lifecycle -----------------------------------------------------
    def start(self) -> "Oracle":
        if not os.access(self.binary, os.X_OK):
            raise OracleError(f"the Go oracle for containerd {self.version} is not built "
                              f"({self.binary} is missing); run `make bootstrap` or "
                              f"`bash oracle/build.sh {self.version}`")
        os.makedirs(self.root, exist_ok=True)
        argv = [self.binary, "serve", "--root", self.root]
        if self.daemon is not None:
            self.daemon.start()    # stopped again by close(), or below if the oracle fails
            argv = [self.binary, "serve", "--root", self.daemon.root, "--address", self.daemon.address]
        else:
            for opt in self.mkfs_options:
                argv += ["--mkfs-option", opt]
            if self.tar_index:
                argv.append("--tar-index")
            for opt in self.overlay:
                argv += ["--ovl-option", opt]
        self._log = open(self.log_path, "ab")
        # In-process gzip decoding, as the reference models it (not igzip/unpigz from PATH).
        env = dict(os.environ, CONTAINERD_DISABLE_IGZIP="1", CONTAINERD_DISABLE_PIGZ="1",
                   **self.env)
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._log, start_new_session=True, env=env)
        except BaseException:
            self._log.close()
            if self.daemon is not None:
                self.daemon.stop()
            raise
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self._close_oracle()
        finally:
            if self.daemon is not None:
                self.daemon.stop()

    def _close_oracle(self):
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                try:
                    proc.stdin.write(b'{"op":"close"}\n')
                    proc.stdin.flush()
                except OSError:
                    pass
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
        finally:
            for f in (proc.stdin, proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
            self._log.close()

    @property
    def alive(self) -> bool:
        return (self.proc is not None and self.proc.poll() is None
                and (self.daemon is None or self.daemon.alive))

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the oracle's log (containerd's logrus, mkfs output, panics)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16384))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        tail = "\n".join(text.splitlines()[-lines:])
        if self.daemon is not None:
            tail += "\n--- containerd daemon ---\n" + self.daemon.log_tail(lines)
        return tail

    def kill(self):
        """Kill the process at once (tests of failure handling, deadlines); on the daemon path
        the daemon too, and what it runs (a hung mkfs.erofs is its child)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.daemon is not None and self.daemon.alive:
            os.killpg(self.daemon.proc.pid, signal.SIGKILL)
            self.daemon.proc.wait()

    # -- requests ------------------------------------------------------
    def call(self, op: str, timeout: float | None = None, **fields) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            raise OracleError(f"the Go oracle is not running (exit status "
                              f"{None if self.proc is None else self.proc.returncode}); "
                              f"see {self.log_path}")
        self._next_id += 1
        req = {"op": op, "id": self._next_id, **fields}
        try:
            self.proc.stdin.write(json.dumps(req).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as e:
            raise OracleError(f"the Go oracle stopped reading requests ({e}); see {self.log_path}") from None
        with phases.phase("oracle." + op):
            resp = self._reply(self._next_id, timeout or self.timeout, op)
        if not resp.get("ok"):
            raise ContainerdError(resp.get("error", "(no error text)"))
        return resp

    def _reply(self, req_id: int, timeout: float, op: str) -> dict:
        """The response to request `req_id`. Answers to earlier requests are skipped: a request
        interrupted by Ctrl-C (KeyboardInterrupt while waiting) still gets its answer, and
        without the id check every later call would read the answer of the one before."""
        while True:
            line = self._readline(timeout, op)
            try:
                resp = json.loads(line)
            except ValueError:
                raise OracleError(f"the Go oracle answered {op!r} with something that is not "
                                  f"JSON: {line[:200]!r}") from None
            rid = resp.get("id") if isinstance(resp, dict) else None
            if isinstance(rid, int) and rid < req_id:
                continue
            return resp

    def _readline(self, timeout: float, op: str) -> bytes:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        try:
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    pids = descendants(self.proc.pid)
                    if self.daemon is not None and self.daemon.proc is not None:
                        pids += descendants(self.daemon.proc.pid)   # mkfs runs in the daemon
                    running = describe_processes(pids)
                    self.kill()
                    raise OracleTimeout(
                        f"containerd's {op!r} did not finish within {timeout:g} s"
                        + (f"; still running: {running}" if running else "")
                        + f". The oracle was killed (it is restarted for the next case); its log: "
                          f"{self.log_path}", op=op, running=running)
                if not sel.select(left):
                    continue
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    code = self.proc.wait()
                    raise OracleError(f"the Go oracle exited (status {code}) while handling {op!r}; "
                                      f"see {self.log_path}")
                self._buf += chunk
        finally:
            sel.close()
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    # -- typed helpers -------------------------------------------------
    def version_info(self) -> dict:
        return self.call("version")

    def prepare(self, key: str, parent: str = "") -> list:
        return self.call("prepare", key=key, parent=parent)["mounts"]

    def view(self, key: str, parent: str = "") -> list:
        return self.call("view", key=key, parent=parent)["mounts"]

    def commit(self, name: str, key: str):
        self.call("commit", name=name, key=key)

    def mount(self, key: str, target: str):
        self.call("mount", key=key, target=target)

    def unmount(self, target: str):
        self.call("unmount", target=target)

    def snapshot_dir(self, key: str) -> str:
        return self.call("snapshot_dir", key=key)["dir"]

    def remove(self, key: str):
        self.call("remove", key=key)

    def compare(self, differ: str, lower: str, upper: str, media_type: str,
                source_date_epoch: int | None = None, labels: dict | None = None,
                activate: bool = False) -> dict:
        fields = dict(differ=differ, lower=lower, upper=upper, media_type=media_type,
                      source_date_epoch=source_date_epoch)
        if labels:
            fields["labels"] = labels
        if activate:
            fields["activate"] = True
        return self.call("compare", **fields)

    def ingest(self, path: str, media_type: str) -> dict:
        return self.call("ingest", path=path, media_type=media_type)["descriptor"]

    def apply(self, differ: str, descriptor: dict, key: str) -> dict:
        return self.call("apply", differ=differ, descriptor=descriptor, key=key)

    def tar(self, entries: list[dict]) -> bytes:
        return base64.b64decode(self.call("tar", entries=entries)["tar"])
