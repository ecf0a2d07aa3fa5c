"""Apply fixtures → a POSIX shell reproducer for mkfs.erofs (pure: data in, script text out).

For each fixture case of an Apply scenario, the script rebuilds the tar containerd hands to
mkfs.erofs (the decoded stream, embedded as base64), runs mkfs.erofs with containerd's argv
under a timeout, mounts the image read-only and compares what it holds with what the tar means
(`<fixture>.expect.json`, written with the fixture). It prints PASS or FAIL with each
difference and exits 0 (pass), 1 (fail) or 2 (cannot run: not root, no erofs, no mkfs.erofs).
"""
from __future__ import annotations

import base64
import hashlib
import json
import shlex
import textwrap
from pathlib import Path

from ..reference import apply as ref_apply
from ..reference import profiles
from ..scenario.model import Scenario

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
CONTAINERD = "v2.4.2"          # whose mkfs argv the script uses
MKFS_TIMEOUT = 60


class ExportError(Exception):
    """The scenario cannot be exported as a script; str() names it and the cause."""


def expectation_path(fixture: str) -> Path:
    name = fixture
    for ext in (".tar.gz", ".tgz", ".tar.zst", ".tar"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return FIXTURES / (name + ".expect.json")


# Runs inside the script (python3 on the test machine): walks the mounted image and compares
# it with the expected entries. Kept free of this package so the script stands alone.
CHECK_PY = r'''
import hashlib, json, os, stat, sys
root, expect = sys.argv[1], json.loads(sys.argv[2])
kinds = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
         stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFIFO: "fifo"}
got = {}
for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
        p = os.path.join(dirpath, name)
        st = os.lstat(p)
        e = {"type": kinds.get(stat.S_IFMT(st.st_mode), "other"),
             "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
             "mtime_ns": st.st_mtime_ns}
        if e["type"] == "file":
            with open(p, "rb") as f:
                data = f.read()
            e["size"], e["sha256"] = len(data), hashlib.sha256(data).hexdigest()
        elif e["type"] == "symlink":
            e["target"] = os.readlink(p)
        got[os.path.relpath(p, root)] = e
problems = []
for w in expect["entries"]:
    g = got.pop(w["path"], None)
    if g is None:
        problems.append("%s: expected a %s, the image has none" % (w["path"], w["type"]))
        continue
    for k in ("type", "mode", "uid", "gid", "mtime_ns", "size", "sha256", "target"):
        if k in w and g.get(k) != w[k]:
            fmt = (lambda v: "%04o" % v) if k == "mode" else repr
            problems.append("%s: expected %s %s, the image has %s"
                            % (w["path"], k, fmt(w[k]), fmt(g.get(k))))
for path, g in sorted(got.items()):
    problems.append("%s: expected no such entry, the image has a %s" % (path, g["type"]))
if problems:
    print("FAIL: " + expect["meaning"])
    for p in problems:
        print("  " + p)
    sys.exit(1)
print("PASS: the image shows what the tar means (%d entries)" % len(expect["entries"]))
'''


def _case_block(i: int, case, scenario: Scenario) -> str:
    fixture = case.fixture
    exp_path = expectation_path(fixture)
    if not exp_path.is_file():
        raise ExportError(f"{scenario.path}:{case.line}: no expectation for fixture {fixture} "
                          f"(fixtures/{exp_path.relative_to(FIXTURES)}): the script needs the "
                          "tree the tar means; write it beside the fixture")
    expect = json.loads(exp_path.read_text())
    blob = (FIXTURES / fixture).read_bytes()
    try:
        tar = ref_apply.decompress_stream(blob)
    except Exception as e:
        raise ExportError(f"{scenario.path}:{case.line}: fixture {fixture} does not decode: {e}")
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    argv = ref_apply.mkfs_argv("LAYER", case.mkfs_options, digest,
                               profiles.containerd_profile(CONTAINERD))
    mkfs_args = " ".join(shlex.quote(a) for a in argv[1:-1])
    b64 = "\n".join(textwrap.wrap(base64.b64encode(tar).decode(), 76))
    return f'''
# --- case {i}: {fixture} ({case.media_type})
# {expect["meaning"]}
echo "case {i}: {fixture}"
python3 -c 'import base64,sys; sys.stdout.buffer.write(base64.b64decode(sys.stdin.read()))' \\
    > "$work/layer{i}.tar" <<'B64'
{b64}
B64
# containerd {CONTAINERD}'s argv (ConvertTarErofs), the decoded stream on stdin
timeout -k 5 "$TIMEOUT" "$MKFS" {mkfs_args} "$work/layer{i}.erofs" \\
    < "$work/layer{i}.tar" > "$work/mkfs{i}.log" 2>&1
rc=$?
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "FAIL: mkfs.erofs did not finish within $TIMEOUT s (containerd's Apply would hang)"
    status=1
elif [ "$rc" -ne 0 ]; then
    echo "FAIL: mkfs.erofs refused a tar Go's archive/tar reads (exit $rc):"
    sed 's/^/  /' "$work/mkfs{i}.log"
    status=1
else
    mkdir "$work/mnt{i}"
    if ! mount -t erofs -o ro,loop "$work/layer{i}.erofs" "$work/mnt{i}"; then
        echo "ERROR: cannot mount the image"
        exit 2
    fi
    mounted="$mounted $work/mnt{i}"
    python3 -c "$CHECK" "$work/mnt{i}" {shlex.quote(json.dumps(expect, separators=(",", ":")))} \\
        || status=1
fi
'''


def script_file(scenarios: list[Scenario], command: str = "") -> str:
    blocks, n = [], 0
    for s in scenarios:
        cases = [c for c in s.apply_cases if c.fixture]
        if not cases:
            raise ExportError(f"{s.path}: no Apply case with a fixture; --script exports Apply "
                              "fixtures, --go-test exports Compare scenarios")
        for c in cases:
            n += 1
            blocks.append(_case_block(n, c, s))
    names = ", ".join(s.name for s in scenarios)
    desc = "\n".join("# " + line for s in scenarios
                     for line in textwrap.wrap(f"{s.name}: {s.description}", 95))
    return f'''#!/bin/sh
# mkfs.erofs reproducer ({names}), generated by `{command or "layerconf export --script"}`.
{desc}
#
# Each case writes a tar, converts it as containerd's erofs differ does (mkfs.erofs --tar=f),
# mounts the image and compares it with what the tar means to containerd (Go's archive/tar).
# Needs: root, a kernel with erofs and loop devices, mkfs.erofs, python3, timeout, mount.
# Environment: MKFS (default mkfs.erofs), TIMEOUT (seconds per mkfs run, default {MKFS_TIMEOUT}).
# Exit status: 0 every case passes, 1 a case fails, 2 the script cannot run here.
set -u
MKFS=${{MKFS:-mkfs.erofs}}
TIMEOUT=${{TIMEOUT:-{MKFS_TIMEOUT}}}
if [ "$(id -u)" -ne 0 ]; then echo "ERROR: needs root (mount)"; exit 2; fi
for tool in "$MKFS" python3 timeout mount; do
    command -v "$tool" >/dev/null 2>&1 || {{ echo "ERROR: $tool not found"; exit 2; }}
done
grep -qw erofs /proc/filesystems || modprobe erofs 2>/dev/null
grep -qw erofs /proc/filesystems || {{ echo "ERROR: the kernel has no erofs"; exit 2; }}
work=$(mktemp -d) || exit 2
mounted=""
cleanup() {{
    for m in $mounted; do umount "$m" 2>/dev/null || umount -l "$m"; done
    rm -rf "$work"
}}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
echo "$("$MKFS" --version 2>&1 | head -n 1)"
CHECK=$(cat <<'PY'
{CHECK_PY.strip()}
PY
)
status=0
{"".join(blocks)}
exit $status
'''
