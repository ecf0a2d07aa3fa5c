"""What the `spec` profile says a Compare scenario's layer holds: the expectation an exported
reproducer asserts.

The reference runs with `profiles.SPEC` on the scenario's state: the golden recording's state
when it is fresh (no root, no Go), otherwise a live state built through the oracle (root and
the built oracle). The tar is then read into plain entries (pure: bytes in, entries out).
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import tarfile
from dataclasses import dataclass, field

from ..reference import profiles
from ..scenario.model import OCI_TAR, Scenario

CONTENT_HASH_LIMIT = 1 << 20      # larger files are checked by size only


class ExpectError(Exception):
    """The expectation could not be computed; str() says why and what to do."""


@dataclass(frozen=True)
class Entry:
    """One tar header of the expected layer, as the Go test checks it."""
    name: bytes
    type: bytes                   # tar typeflag, e.g. b"0", b"5"
    mode: int                     # permission bits incl. setuid/setgid/sticky
    uid: int
    gid: int
    mtime: int                    # whole seconds
    linkname: bytes = b""
    size: int = 0
    sha256: str = ""              # of the content (regular files up to CONTENT_HASH_LIMIT)
    major: int = 0
    minor: int = 0
    xattrs: tuple[tuple[str, bytes], ...] = ()


@dataclass
class Expectation:
    entries: list[Entry] = field(default_factory=list)
    error: str | None = None      # the spec profile's Compare error, if it fails
    source: str = ""              # "golden <file>" or "live"


def _b(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def entries_from_tar(data: bytes) -> list[Entry]:
    """The headers of a layer tar, in order (pure)."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:", encoding="utf-8",
                      errors="surrogateescape") as tf:
        for m in tf:
            sha = ""
            if m.isreg() and m.size <= CONTENT_HASH_LIMIT:
                sha = hashlib.sha256(tf.extractfile(m).read()).hexdigest()
            xattrs = tuple(sorted((k[len("SCHILY.xattr."):], _b(v))
                                  for k, v in m.pax_headers.items()
                                  if k.startswith("SCHILY.xattr.")))
            out.append(Entry(name=_b(m.name) + (b"/" if m.isdir() and not m.name.endswith("/")
                                                else b""),
                             type=m.type, mode=m.mode & 0o7777, uid=m.uid, gid=m.gid,
                             mtime=math.floor(m.mtime),
                             linkname=_b(m.linkname), size=m.size if m.isreg() else 0,
                             sha256=sha, major=m.devmajor, minor=m.devminor, xattrs=xattrs))
    return out


def pinned_mtimes(scenario: Scenario) -> set[int]:
    """Mtimes the scenario sets (whole seconds), the epoch and 0: an expected mtime outside this
    set is the time the state was built, which a rerun cannot reproduce."""
    vals = {0}
    for layer in scenario.lowers:
        vals |= {e.mtime_ns // 10**9 for e in layer if e.mtime_ns is not None}
    for op in scenario.upper + scenario.upperdir:
        if op.mtime_ns is not None:
            vals.add(op.mtime_ns // 10**9)
    if scenario.source_date_epoch is not None:
        vals.add(scenario.source_date_epoch)
    return vals


def _from_outcome(out, source: str) -> Expectation:
    if out.error:
        return Expectation(error=out.error, source=source)
    return Expectation(entries=entries_from_tar(out.tar), source=source)


def spec_expectation(scenario: Scenario, version: str = "") -> Expectation:
    """ref@spec on the scenario's state: golden when fresh, else live (root + oracle)."""
    from .. import golden, runner
    from ..oracle import default_version
    version = version or default_version()
    rec = golden.load_golden(scenario.name)
    fresh = (rec is not None and rec.get("containerd") == version and
             (not rec.get("scenario_sha256") or not os.path.exists(scenario.path) or
              golden.scenario_sha(scenario.path) == rec["scenario_sha256"]))
    if fresh:
        from ..reference import fsview
        manifest = rec["state"]
        st = golden.RecordedState(manifest["lower_root"], manifest["upper_dir"],
                                  rec.get("lower_mounts") or [])
        out = runner.reference_compare(st, OCI_TAR, profiles.SPEC, scenario.source_date_epoch,
                                       fs=fsview.RecordedFS(manifest))
        return _from_outcome(out, f"golden recording of containerd {version}'s state")
    if os.geteuid() != 0:
        raise ExpectError(
            f"{scenario.path}: no fresh golden recording of this scenario, and building its state "
            "live needs root; run as root, or record it first (`layerconf golden record "
            f"{scenario.path}`)")
    from .. import state
    with runner.Session(runner.RunOptions(containerd=version, walking=False,
                                          round_trip=False)) as session:
        oracle = session.oracle()
        with state.build(scenario, oracle, session.base) as st:
            out = runner.reference_compare(st, OCI_TAR, profiles.SPEC, scenario.source_date_epoch)
    return _from_outcome(out, f"live state built by containerd {version}")
