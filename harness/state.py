"""Build a scenario's on-disk state with containerd's own snapshotter, and always clean it up.

Lower layers become committed EROFS snapshots (prepare → mount → populate → unmount → commit:
the snapshotter's Commit runs mkfs.erofs). A `{tar: PATH}` layer is built as containerd pulls
one: ingest into the content store → prepare → the erofs differ's Apply → commit. The upper is an active snapshot whose overlay is mounted
and changed through the kernel, so whiteouts and opaque markers are the kernel's own.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass

from . import fsops, phases
from .oracle import ContainerdError, Oracle
from .reference.apply import detect_compression
from .scenario.model import OCI_TAR, LayerSource, Scenario


class StateError(Exception):
    """Building the state failed for a reason in the scenario (bad op) or the engine."""


@dataclass
class State:
    lower_key: str        # view of the lower layers (what Compare gets as `lower`)
    upper_key: str        # the active snapshot (what Compare gets as `upper`)
    lower_root: str       # the lower view, mounted, for the reference
    upper_dir: str        # the overlay upper directory <snapshot>/fs
    workdir: str
    lower_mounts: list    # the snapshotter's mounts for the lower view, as containerd returns them
    lower_layers: tuple = ()   # committed lower snapshots, bottom first
    logs: tuple = ()           # (scenario line, log) of each `run` op


def mounts_under(prefix: str) -> list[str]:
    """Mount points at or below prefix, deepest first (from /proc/self/mountinfo)."""
    prefix = os.path.realpath(prefix)
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4].encode().decode("unicode_escape")
                if mp == prefix or mp.startswith(prefix + "/"):
                    out.append(mp)
    except OSError:
        pass
    return sorted(out, key=len, reverse=True)


def force_unmount_under(prefix: str):
    """Last-resort cleanup: lazily unmount anything left below prefix."""
    for mp in mounts_under(prefix):
        subprocess.run(["umount", "-l", mp], capture_output=True)


@contextlib.contextmanager
def mounted(oracle: Oracle, key: str, target: str):
    os.makedirs(target, exist_ok=True)
    try:
        oracle.mount(key, target)
    except BaseException:
        # Interrupted while containerd mounts: the mount may still appear. The oracle answers in
        # order, so this unmount runs after it and undoes it (mount-manager activation included).
        with contextlib.suppress(Exception):
            oracle.unmount(target)
        raise
    try:
        yield target.encode()
    except BaseException:
        # Already failing (or interrupted): an unmount error must not replace that exception,
        # or Ctrl-C becomes a scenario error and the run goes on. build() force-unmounts.
        with contextlib.suppress(Exception):
            oracle.unmount(target)
        raise
    oracle.unmount(target)


@contextlib.contextmanager
def build(scenario: Scenario, oracle: Oracle, base: str):
    """Yield a State for the scenario; unmount and remove everything afterwards, whatever happens."""
    try:
        fsops.preflight(scenario.lowers, scenario.upper + scenario.upperdir)
    except fsops.OpError as e:
        raise StateError(f"{scenario.path}: {e}") from None
    sid = uuid.uuid4().hex[:8]
    workdir = tempfile.mkdtemp(prefix=f"state-{sid}-", dir=base)
    keys: list[str] = []
    started = time.monotonic()
    try:
        parent = ""
        for i, layer in enumerate(scenario.lowers):
            key, name = f"{sid}-l{i}-active", f"{sid}-l{i}"
            oracle.prepare(key, parent)
            keys.append(key)
            if isinstance(layer, LayerSource) and layer.kind == "tar":
                apply_tar(oracle, layer, key)
            else:
                with mounted(oracle, key, os.path.join(workdir, f"l{i}")) as root:
                    if isinstance(layer, LayerSource):
                        copy_dir(layer, root)
                    else:
                        fsops.populate(root, layer)
            oracle.commit(name, key)
            keys[-1] = name
            parent = name
        upper_key, lower_key = f"{sid}-upper", f"{sid}-lower"
        oracle.prepare(upper_key, parent)
        keys.append(upper_key)
        logs = []
        ops, i = scenario.upper, 0
        while True:
            # `apply` ops run containerd's applier on the unmounted snapshot; the rest go through
            # the merged view, mounted at least once (the snapshotter makes its dirs then)
            with mounted(oracle, upper_key, os.path.join(workdir, "merged")) as root:
                while i < len(ops) and ops[i].op != "apply":
                    log = fsops.apply_op(root, ops[i])
                    if log is not None:
                        logs.append((ops[i].line, log))
                    i += 1
            if i == len(ops):
                break
            apply_on_top(oracle, ops[i], upper_key)
            i += 1
        upper_dir = os.path.join(oracle.snapshot_dir(upper_key), "fs")
        for op in scenario.upperdir:
            fsops.apply_op(upper_dir.encode(), op)
        lower_mounts = oracle.view(lower_key, parent)
        keys.append(lower_key)
        lower_root = os.path.join(workdir, "lower")
        with mounted(oracle, lower_key, lower_root):
            phases.add("state", time.monotonic() - started)   # building only, not its use
            yield State(lower_key=lower_key, upper_key=upper_key, lower_root=lower_root,
                        upper_dir=upper_dir, workdir=workdir, lower_mounts=lower_mounts,
                        lower_layers=tuple(f"{sid}-l{i}" for i in range(len(scenario.lowers))),
                        logs=tuple(logs))
    except fsops.OpError as e:
        raise StateError(f"{scenario.path}: {e}") from None
    except LayerError as e:
        raise StateError(f"{scenario.path}:{e}") from None
    finally:
        force_unmount_under(workdir)
        for key in reversed(keys):
            with contextlib.suppress(Exception):
                oracle.remove(key)
        shutil.rmtree(workdir, ignore_errors=True)


class LayerError(Exception):
    """A lower layer from a tar or a directory could not be built; str() starts with the line."""


def tar_media_type(layer: LayerSource) -> str:
    """The layer's media type: as given, else from the blob's first bytes (gzip, zstd or tar)."""
    if layer.media_type:
        return layer.media_type
    with open(layer.path, "rb") as f:
        kind = detect_compression(f.read(16))
    return OCI_TAR + {"gzip": "+gzip", "zstd": "+zstd"}.get(kind, "")


def apply_tar(oracle: Oracle, layer: LayerSource, key: str):
    """Apply a layer blob into the active snapshot `key` with containerd's erofs differ."""
    try:
        desc = oracle.ingest(layer.path, tar_media_type(layer))
        oracle.apply("erofs", desc, key)
    except (ContainerdError, OSError) as e:
        raise LayerError(f"{layer.line}: containerd's erofs differ could not apply the lower "
                         f"layer {layer.path}: {e}") from None


def apply_on_top(oracle: Oracle, op, key: str):
    """The upper op `apply`: a layer applied onto the active snapshot by containerd's fs applier
    (what the walking differ's Apply does when a layer is unpacked over its parent)."""
    layer = LayerSource("tar", op.source, op.media_type, op.line)
    try:
        oracle.apply("walking", oracle.ingest(op.source, tar_media_type(layer)), key)
    except ContainerdError as e:
        if op.expect_error and fsops.error_matches(e, op.expect_error):
            return
        raise LayerError(f"{op.line}: containerd's applier could not apply {op.source} on "
                         f"top: {e}") from None
    if op.expect_error:
        raise LayerError(f"{op.line}: apply {op.source} succeeded, but the scenario expects the "
                         f"error {op.expect_error!r}")


def copy_dir(layer: LayerSource, root: bytes):
    try:
        fsops.copy_tree(layer.path, root)
    except OSError as e:
        raise LayerError(f"{layer.line}: copying the lower layer {layer.path}: "
                         f"{e.strerror or e}") from None
