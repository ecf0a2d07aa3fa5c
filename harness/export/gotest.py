"""Compare scenarios → one Go test file for containerd's `plugins/diff/erofs` package (pure).

The scenario's entries and ops become continuity `fstest` appliers (small `lc*` appliers where
fstest has no exact counterpart); the state is built through containerd's erofs snapshotter and
mount manager, Compare is the erofs differ's, and the expectation is the `spec` profile's layer
(expect.py), written out as a table of headers. The test fails with one line per broken
expectation ("expected no duplicate header for d/, got 2").
"""
from __future__ import annotations

import re
from importlib import resources

from ..reference import profiles
from ..scenario.model import Entry, Op, Scenario
from .expect import Expectation, pinned_mtimes

GO_PACKAGE = "erofs_test"      # an external test package in plugins/diff/erofs
# capabilities the Go test checks itself: the filesystem under TMPDIR (statfs magic)
SCRATCH_FS = {"tmpfs-scratch": ("tmpfs", "0x01021994"), "ext4-scratch": ("ext4", "0xEF53")}
UNEXPORTABLE = {"large-scratch": "it writes layers of several GiB"}

IMPORTS = [
    "archive/tar", "bytes", "context", "crypto/sha256", "encoding/hex", "errors", "fmt", "io",
    "os", "os/exec", "path/filepath", "strings", "syscall", "testing", "time", "",
    "github.com/containerd/continuity/fs/fstest", "github.com/containerd/errdefs",
    "ocispec github.com/opencontainers/image-spec/specs-go/v1",
    "bolt go.etcd.io/bbolt", "",
    "github.com/containerd/containerd/v2/core/content",
    "github.com/containerd/containerd/v2/core/diff",
    "github.com/containerd/containerd/v2/core/images/imagetest",
    "github.com/containerd/containerd/v2/core/mount",
    "mountmanager github.com/containerd/containerd/v2/core/mount/manager",
    "github.com/containerd/containerd/v2/core/snapshots",
    "github.com/containerd/containerd/v2/pkg/namespaces",
    "github.com/containerd/containerd/v2/pkg/testutil",
    "erofsdiffer github.com/containerd/containerd/v2/plugins/diff/erofs",
    "erofsmount github.com/containerd/containerd/v2/plugins/mount/erofs",
    "erofssnapshot github.com/containerd/containerd/v2/plugins/snapshots/erofs",
]

LICENSE = """/*
   Copyright The containerd Authors.

   Licensed under the Apache License, Version 2.0 (the "License");
   you may not use this file except in compliance with the License.
   You may obtain a copy of the License at

       http://www.apache.org/licenses/LICENSE-2.0

   Unless required by applicable law or agreed to in writing, software
   distributed under the License is distributed on an "AS IS" BASIS,
   WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
   See the License for the specific language governing permissions and
   limitations under the License.
*/
"""


class ExportError(Exception):
    """The scenario cannot be exported as asked; str() says why."""


def go_str(b: bytes | str) -> str:
    """A Go string literal holding exactly these bytes."""
    if isinstance(b, str):
        b = b.encode()
    out = []
    for c in b:
        if c in (0x22, 0x5C):
            out.append("\\" + chr(c))
        elif 0x20 <= c < 0x7F:
            out.append(chr(c))
        elif c == 0x0A:
            out.append("\\n")
        else:
            out.append(f"\\x{c:02x}")
    return '"' + "".join(out) + '"'


def test_name(scenario_name: str) -> str:
    parts = re.split(r"[^A-Za-z0-9]+", scenario_name)
    return "TestLayerconf" + "".join(p[:1].upper() + p[1:] for p in parts if p)


def _dev_mode(typ: str, mode: int) -> str:
    flag = {"fifo": "os.ModeNamedPipe", "char": "os.ModeDevice|os.ModeCharDevice",
            "block": "os.ModeDevice"}[typ]
    return f"{flag}|0o{mode & 0o777:o}"


def _node(path: bytes, typ: str, mode: int, major: int, minor: int) -> list[str]:
    p = go_str(path)
    if typ == "socket":
        return [f"lcParents({p})", f"lcSocket({p})"]
    return [f"lcParents({p})",
            f"fstest.CreateDeviceFile({p}, {_dev_mode(typ, mode)}, {major}, {minor})"]


def _meta(path: bytes, *, mode=None, uid=None, gid=None, mtime_ns=None, xattrs=(),
          is_link=False) -> list[str]:
    """fsops.set_meta: lchown, then chmod (not on symlinks), xattrs, mtime."""
    p, out = go_str(path), []
    if uid is not None or gid is not None:
        out.append(f"lcLchown({p}, {-1 if uid is None else uid}, {-1 if gid is None else gid})")
    if mode is not None and not is_link:
        out.append(f"lcChmod({p}, 0o{mode:o})")
    for name, value in xattrs:
        out.append(f"fstest.SetXAttr({p}, {go_str(name)}, {go_str(value)})")
    if mtime_ns is not None:
        out.append(f"fstest.Lchtimes({p}, lcTime({mtime_ns}), lcTime({mtime_ns}))")
    return out


def layer_appliers(entries: tuple[Entry, ...]) -> list[str]:
    """fsops.populate: create every entry, then metadata deepest path first."""
    out = []
    for e in entries:
        p = go_str(e.path)
        if e.type == "file":
            out.append(f"lcWrite({p}, {go_str(e.content or b'')}, "
                       f"{-1 if e.size is None else e.size}, false)")
        elif e.type == "dir":
            out.append(f"lcMkdir({p})")
        elif e.type == "symlink":
            out += [f"lcParents({p})", f"fstest.Symlink({go_str(e.target)}, {p})"]
        elif e.type == "hardlink":
            out += [f"lcParents({p})", f"fstest.Link({go_str(e.target)}, {p})"]
        else:
            out += _node(e.path, e.type, e.mode if e.mode is not None else 0o644,
                         e.major, e.minor)
    for e in sorted(entries, key=lambda e: e.path.count(b"/"), reverse=True):
        if e.type == "hardlink":
            continue
        mode = e.mode
        if mode is None and e.type != "symlink":
            mode = 0o755 if e.type == "dir" else 0o644
        out += _meta(e.path, mode=mode, uid=e.uid, gid=e.gid, mtime_ns=e.mtime_ns,
                     xattrs=e.xattrs, is_link=e.type == "symlink")
    return out


def op_appliers(op: Op) -> list[str]:
    """fsops.apply_op, one op."""
    o, p = op.op, go_str(op.path) if op.path is not None else ""
    meta = dict(uid=op.uid, gid=op.gid, mtime_ns=op.mtime_ns)
    if o == "write":
        return [f"lcWrite({p}, {go_str(op.content or b'')}, "
                f"{-1 if op.size is None else op.size}, false)"] + _meta(op.path, mode=op.mode, **meta)
    if o == "append":
        return [f"lcWrite({p}, {go_str(op.content or b'')}, -1, true)"]
    if o == "mkdir":
        return [f"lcMkdir({p})"] + _meta(op.path, mode=op.mode, **meta)
    if o == "rm":
        return [f"fstest.Remove({p})"]
    if o == "rmtree":
        return [f"fstest.RemoveAll({p})"]
    if o == "rename":
        return [f"lcParents({go_str(op.to)})", f"fstest.Rename({p}, {go_str(op.to)})"]
    if o == "chmod":
        return [f"lcChmod({p}, 0o{op.mode:o})"]
    if o == "chown":
        return [f"lcLchown({p}, {op.uid}, {op.gid})"]
    if o == "mtime":
        return [f"fstest.Lchtimes({p}, lcTime({op.mtime_ns}), lcTime({op.mtime_ns}))"]
    if o == "symlink":
        return [f"lcParents({p})", f"fstest.Symlink({go_str(op.target)}, {p})"] + \
            _meta(op.path, is_link=True, **meta)
    if o == "link":
        return [f"lcParents({p})", f"fstest.Link({go_str(op.target)}, {p})"]
    if o == "setxattr":
        return [f"fstest.SetXAttr({p}, {go_str(op.name)}, {go_str(op.value)})"]
    if o == "mknod":
        return _node(op.path, op.type, op.mode if op.mode is not None else 0o644,
                     op.major, op.minor) + _meta(op.path, **meta)
    if o in HOST_OPS:
        raise ExportError(f"op {o!r} brings host files or commands into the state, which a "
                          "standalone Go test cannot carry; export the tree it makes as entries "
                          "instead, or use --script")
    raise ExportError(f"op {o!r} has no Go counterpart")


# Ops whose effect depends on the machine running them (a command, host files, a layer file).
HOST_OPS = ("run", "copy", "sync", "apply", "many")


def _applier_block(lines: list[str], indent: str) -> str:
    if not lines:
        return "fstest.Apply()"
    body = "".join(f"{indent}\t{x},\n" for x in lines)
    return f"fstest.Apply(\n{body}{indent})"


BUILD_ERA = 1_600_000_000      # 2020-09: a state built later than this is "now", not a value


def is_build_time(mtime: int, pinned: set[int]) -> bool:
    """An expected mtime the scenario does not set and that looks like the time the state was
    built: a rerun gets its own time. Others (e.g. a filesystem's clamp of a pre-1901 time)
    are checked exactly."""
    return mtime not in pinned and mtime >= BUILD_ERA


def want_table(exp: Expectation, pinned: set[int]) -> str:
    rows = []
    for e in exp.entries:
        fields = [f"Name: {go_str(e.name)}", f"Type: '{e.type.decode()}'",
                  f"Mode: 0o{e.mode:o}", f"UID: {e.uid}", f"GID: {e.gid}"]
        fields.append("AnyTime: true" if is_build_time(e.mtime, pinned) else f"MTime: {e.mtime}")
        if e.linkname:
            fields.append(f"Link: {go_str(e.linkname)}")
        if e.type in (b"0", b"\x00"):
            fields.append(f"Size: {e.size}")
            if e.sha256:
                fields.append(f'SHA256: "{e.sha256}"')
        if e.type in (b"3", b"4"):
            fields += [f"Major: {e.major}", f"Minor: {e.minor}"]
        if e.xattrs:
            xs = ", ".join(f"{go_str(k)}: {go_str(v)}" for k, v in e.xattrs)
            fields.append(f"Xattrs: map[string]string{{{xs}}}")
        rows.append("\t\t{" + ", ".join(fields) + "},\n")
    return "[]lcWant{\n" + "".join(rows) + "\t}" if rows else "[]lcWant{}"


def _quirk_lines(scenario: Scenario) -> list[str]:
    out = []
    for q in scenario.expect_quirks or ():
        quirk = profiles.QUIRKS_BY_NAME.get(q)
        if quirk is not None:
            out.append(f"{quirk.spec_id or q} ({q}): {quirk.description}")
    return out


def _wrap(text: str, width: int = 95) -> list[str]:
    lines, cur = [], ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    return lines + ([cur] if cur else [])


def check_exportable(scenario: Scenario):
    for cap in scenario.requires:
        if cap in UNEXPORTABLE:
            raise ExportError(f"{scenario.path}: not exported as a Go test: requires {cap} "
                              f"({UNEXPORTABLE[cap]})")


def test_func(scenario: Scenario, exp: Expectation) -> str:
    name = test_name(scenario.name)
    doc = [f"{name} reproduces layerconf scenario {scenario.name}."]
    doc += _wrap(scenario.description)
    for q in _quirk_lines(scenario):
        doc += _wrap("Known divergence " + q)
    doc += _wrap("The expectation is the layer the OCI layer rules give for this change "
                 f"(layerconf's spec profile, computed from its {exp.source}).")
    out = ["// " + x if x else "//" for x in doc]
    out.append(f"func {name}(t *testing.T) {{")
    out.append("\te := lcSetup(t)")
    for cap in scenario.requires:
        if cap in SCRATCH_FS:
            out.append(f'\te.requireFs(t, "{SCRATCH_FS[cap][0]}", {SCRATCH_FS[cap][1]})')
    layers = [_applier_block(layer_appliers(layer), "\t\t") for layer in scenario.lowers]
    if layers:
        out.append("\tparent := e.layers(t,\n" + "".join(f"\t\t{x},\n" for x in layers) + "\t)")
    else:
        out.append('\tparent := ""')
    through = [x for op in scenario.upper for x in op_appliers(op)]
    raw = [x for op in scenario.upperdir for x in op_appliers(op)]
    out.append("\te.upper(t, parent,\n\t\t" + _applier_block(through, "\t\t") + ",\n\t\t" +
               (_applier_block(raw, "\t\t") if raw else "nil") + ")")
    epoch = scenario.source_date_epoch
    if epoch is not None:
        out.append(f"\tepoch := int64({epoch})")
        out.append("\ttm := time.Unix(epoch, 0).UTC()")
        out.append("\tgot, err := e.compare(t, parent, diff.WithSourceDateEpoch(&tm))")
        epoch_arg = "&epoch"
    else:
        out.append("\tgot, err := e.compare(t, parent)")
        epoch_arg = "nil"
    if exp.error is not None:
        out.append("\tif err == nil {")
        out.append(f"\t\tt.Fatalf(\"expected Compare to fail with %q, it succeeded with %d entries\", "
                   f"{go_str(exp.error)}, len(got))")
        out.append("\t}")
        out.append("}")
        return "\n".join(out) + "\n"
    names = " ".join(e.name.decode("utf-8", "replace") for e in exp.entries) or "none"
    out.append("\tif err != nil {")
    out.append(f"\t\tt.Fatalf(\"expected Compare to succeed with {len(exp.entries)} entries (%s), "
               f"got: %v\", {go_str(names)}, err)")
    out.append("\t}")
    out.append(f"\te.lcCheck(t, got, {want_table(exp, pinned_mtimes(scenario))}, {epoch_arg})")
    out.append("}")
    return "\n".join(out) + "\n"


def _imports() -> str:
    lines = []
    for imp in IMPORTS:
        if not imp:
            lines.append("")
            continue
        alias, _, path = imp.rpartition(" ")
        lines.append(f"\t{alias + ' ' if alias else ''}\"{path}\"")
    return "import (\n" + "\n".join(lines) + "\n)\n"


def go_test_file(cases: list[tuple[Scenario, Expectation]], command: str = "") -> str:
    """One Go test file holding a test per scenario and the shared helpers."""
    prelude = resources.files(__package__).joinpath("go_prelude.go.txt").read_text()
    head = [ "//go:build linux", "", LICENSE,
            f"// Generated by `{command or 'layerconf export --go-test'}`: reproducers of the "
            "erofs differ's",
            "// Compare against the OCI layer rules. Each test builds its lower layers and upper "
            "through the",
            "// erofs snapshotter (root, mkfs.erofs and a kernel with erofs and overlayfs), runs "
            "Compare and",
            "// checks the layer tar header by header.", "",
            f"package {GO_PACKAGE}", "", _imports()]
    body = [test_func(s, e) for s, e in cases]
    return "\n".join(head) + "\n" + "\n".join(body) + "\n" + prelude
