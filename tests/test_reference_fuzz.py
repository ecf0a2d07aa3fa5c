"""Random lower/upper pairs through the reference Compare.

Always: structural invariants of both profiles (every entry's ancestors come first; the spec
profile has no duplicate names, whiteouts only for lower entries, whiteouts before sibling
directories). With LAYERCONF_GO_DIFF=<binary> (see test_reference_compare.py) the containerd
profile is also compared with Go byte for byte, error texts included.
"""
from __future__ import annotations

import os
import random
import stat
import subprocess

import pytest

from harness.reference.profiles import SPEC, get_profile
from harness.reference.walk import GoError
from harness.reference.compare import write_diff

from test_reference_compare import CAP, NS, T0, members

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, trusted.* xattrs)")

CTR = get_profile("containerd@v2.4.2")
GO_DIFF = os.environ.get("LAYERCONF_GO_DIFF")
NAMES = [b"a", b"b", b"B", b"c", b"d", b"z", b"\xc3\xbc", b"x\xff", b"long" * 30, b".wh.q"]


def _rand_time(rng):
    return rng.choice([T0 * NS, (T0 + 1) * NS, T0 * NS + 5, -3 * NS - 1, 0, (1 << 34) * NS])


def _make(rng, root: bytes, rel: bytes, kind: str, upper: bool):
    path = os.path.join(root, rel)
    if kind == "file":
        with open(path, "wb") as f:
            f.write(rng.choice([b"", b"x", b"y" * 600]))
        os.chmod(path, rng.choice([0o644, 0o600, 0o4755, 0o2711, 0o1777]))
        if rng.random() < 0.2:
            os.chown(path, rng.choice([0, 1000, 3000000]), rng.choice([0, 5, 2097152]))
        if rng.random() < 0.2:
            os.setxattr(path, b"security.capability", CAP)
        if rng.random() < 0.2:
            os.setxattr(path, b"user.note", b"n")
    elif kind == "dir":
        os.mkdir(path)
        os.chmod(path, rng.choice([0o755, 0o755, 0o700]))
        if upper and rng.random() < 0.3:
            key = rng.choice([b"trusted.overlay.opaque", b"user.overlay.opaque"])
            os.setxattr(path, key, rng.choice([b"y", b"y", b"n"]))
    elif kind == "symlink":
        os.symlink(rng.choice([b"a", b"../b", b"/etc", b"/nonexistent-layerconf", b"d"]), path)
    elif kind == "whiteout":
        os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
    elif kind == "fifo":
        os.mkfifo(path, 0o644)
    elif kind == "chr":
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, rng.choice([3, 5])))
    elif kind == "blk":
        os.mknod(path, stat.S_IFBLK | 0o600, os.makedev(8, 1))
    elif kind == "socket":
        import socket
        cwd = os.getcwd()
        os.chdir(root)
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.bind(os.fsdecode(rel))
        finally:
            os.chdir(cwd)
    elif kind == "hardlink":
        files = [p for p in _all(root) if os.path.isfile(os.path.join(root, p))
                 and not os.path.islink(os.path.join(root, p))]
        if files:
            os.link(os.path.join(root, rng.choice(files)), path)


def _all(root: bytes):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.append(os.path.relpath(os.path.join(dirpath, n), root))
    return out


def _populate(rng, root: bytes, upper: bool, depth=0, rel=b""):
    kinds = ["file", "file", "dir", "dir", "symlink"]
    if upper:
        kinds += ["whiteout", "whiteout", "fifo", "chr", "blk", "socket", "hardlink"]
    for name in rng.sample(NAMES, rng.randint(0, 5 if depth else 7)):
        r = os.path.join(rel, name) if rel else name
        kind = rng.choice(kinds) if depth < 3 else rng.choice(["file", "symlink"])
        try:
            _make(rng, root, r, kind, upper)
        except OSError:
            continue                                  # e.g. socket path too long
        if kind == "dir":
            _populate(rng, root, upper, depth + 1, r)
    return root


def _set_times(rng, root: bytes, lower: bytes | None):
    """Random times, deepest first; some upper dirs copy the lower's stat (to be skipped)."""
    for p in sorted(_all(root), key=lambda p: -p.count(b"/")):
        full = os.path.join(root, p)
        t = _rand_time(rng)
        os.utime(full, ns=(t, t), follow_symlinks=False)
        if lower is not None and os.path.isdir(full) and not os.path.islink(full):
            twin = os.path.join(lower, p)
            if os.path.isdir(twin) and rng.random() < 0.6:
                st = os.stat(twin)
                os.chmod(full, stat.S_IMODE(st.st_mode))
                os.utime(full, ns=(st.st_mtime_ns, st.st_mtime_ns))


def _build(tmp_path, seed):
    rng = random.Random(seed)
    lower, upper = os.fsencode(tmp_path / "lower"), os.fsencode(tmp_path / "upper")
    os.mkdir(lower), os.mkdir(upper)
    _populate(rng, lower, upper=False)
    # The upper reuses many lower names so Modify / whiteout / opaque paths are common.
    _populate(rng, upper, upper=True)
    _set_times(rng, lower, None)
    _set_times(rng, upper, lower)
    return lower, upper


def _ancestors_first(names):
    seen = set()
    for n in names:
        parts = n.rstrip("/").split("/")
        for i in range(1, len(parts)):
            assert "/".join(parts[:i]) + "/" in seen, f"{n} before its parent"
        if n.endswith("/"):
            seen.add(n)


def _overlay_lower_has(lower: bytes, rel: bytes) -> bool:
    cur = lower
    comps = rel.split(b"/")
    for i, c in enumerate(comps):
        cur = os.path.join(cur, c)
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return False
        if i < len(comps) - 1 and not stat.S_ISDIR(st.st_mode):
            return False
    return True


@pytest.mark.parametrize("seed", range(150))
def test_random_trees(tmp_path, seed):
    lower, upper = _build(tmp_path, seed)

    # containerd profile (and Go, when available)
    try:
        tar, err = write_diff(lower, upper, CTR), None
    except GoError as e:
        tar, err = None, str(e)
    if GO_DIFF:
        proc = subprocess.run([GO_DIFF, lower, upper], capture_output=True)
        if proc.returncode == 0:
            assert err is None, err
            assert tar == proc.stdout
        else:
            assert err == proc.stderr.decode(errors="replace").strip()
    if tar is not None:
        ms = members(tar)
        _ancestors_first([m.name + ("/" if m.isdir() else "") for m in ms])

    # spec profile: never fails on these trees; invariants hold
    tar = write_diff(lower, upper, SPEC)
    ms = members(tar)
    names = [m.name + ("/" if m.isdir() else "") for m in ms]
    assert len(names) == len(set(names)), "spec: duplicate entry"
    _ancestors_first(names)
    first_non_whiteout: dict[str, int] = {}
    for i, n in enumerate(names):
        d, _, base = n.rstrip("/").rpartition("/")
        literal = os.path.lexists(os.path.join(upper, os.fsencode(n.rstrip("/"))))
        if base.startswith(".wh.") and not literal:
            target = base[len(".wh."):]
            if target == ".wh..opq":
                assert _overlay_lower_has(lower, os.fsencode(d)), f"opaque marker {n} w/o lower"
            else:
                rel = os.fsencode(f"{d}/{target}" if d else target)
                assert _overlay_lower_has(lower, rel), f"whiteout {n} without lower"
                assert d not in first_non_whiteout, f"whiteout {n} after a sibling"
        else:
            first_non_whiteout.setdefault(d, i)
