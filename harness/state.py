"""Build a scenario's on-disk state with containerd's own snapshotter, and always clean it up.

Lower layers become committed EROFS snapshots (prepare → mount → populate → unmount → commit:
the snapshotter's Commit runs mkfs.erofs). The upper is an active snapshot whose overlay is mounted
and changed through the kernel, so whiteouts and opaque markers are the kernel's own.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass

from . import fsops
from .oracle import Oracle
from .scenario.model import Scenario


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
    sid = uuid.uuid4().hex[:8]
    workdir = tempfile.mkdtemp(prefix=f"state-{sid}-", dir=base)
    keys: list[str] = []
    try:
        parent = ""
        for i, layer in enumerate(scenario.lowers):
            key, name = f"{sid}-l{i}-active", f"{sid}-l{i}"
            oracle.prepare(key, parent)
            keys.append(key)
            with mounted(oracle, key, os.path.join(workdir, f"l{i}")) as root:
                fsops.populate(root, layer)
            oracle.commit(name, key)
            keys[-1] = name
            parent = name
        upper_key, lower_key = f"{sid}-upper", f"{sid}-lower"
        oracle.prepare(upper_key, parent)
        keys.append(upper_key)
        with mounted(oracle, upper_key, os.path.join(workdir, "merged")) as root:
            for op in scenario.upper:
                fsops.apply_op(root, op)
        upper_dir = os.path.join(oracle.snapshot_dir(upper_key), "fs")
        for op in scenario.upperdir:
            fsops.apply_op(upper_dir.encode(), op)
        lower_mounts = oracle.view(lower_key, parent)
        keys.append(lower_key)
        lower_root = os.path.join(workdir, "lower")
        with mounted(oracle, lower_key, lower_root):
            yield State(lower_key=lower_key, upper_key=upper_key, lower_root=lower_root,
                        upper_dir=upper_dir, workdir=workdir, lower_mounts=lower_mounts,
                        lower_layers=tuple(f"{sid}-l{i}" for i in range(len(scenario.lowers))))
    except fsops.OpError as e:
        raise StateError(f"{scenario.path}: {e}") from None
    finally:
        force_unmount_under(workdir)
        for key in reversed(keys):
            with contextlib.suppress(Exception):
                oracle.remove(key)
        shutil.rmtree(workdir, ignore_errors=True)
