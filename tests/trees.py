"""Tiny trees for the checks' unit tests: nodes as treeview captures them, with defaults."""
from harness.treeview import Node

S = 10**9


def node(kind="file", **kw):
    base = dict(type=kind, mode=0o644 if kind == "file" else 0o755, uid=0, gid=0,
                mtime_ns=1700000000 * S)
    if kind == "file":
        base.update(size=2, digest="ab" * 32)
    base.update(kw)
    return Node(**base)


def tree(**entries):
    out = {b"/": node("dir")}
    out.update({b"/" + k.encode(): v for k, v in entries.items()})
    return out
