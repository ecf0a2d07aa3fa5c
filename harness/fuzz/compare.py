"""Compare cases as scenario data: 1-3 small lower layers and an upper op sequence that is valid
for the tree it runs on (so a failure is the differ's, not a bad op's).

The generator keeps a model of the merged tree (path -> type) and only draws ops that apply:
`rm` of an existing non-directory or empty directory, `rename` of a non-directory to a fresh
name, `link` to an existing file, and so on. Choices are listed simplest first, which is where
Hypothesis shrinks towards.
"""
from __future__ import annotations

import posixpath

from hypothesis import strategies as st

from ..scenario.model import OCI_TAR, OCI_TAR_GZIP, OCI_TAR_ZSTD
from .names import (NAMES, XATTR_NAMES, ids, modes, mtimes, texts, xattr_values, yaml_path,
                    yaml_value)

MEDIA_TYPES = [[OCI_TAR], [OCI_TAR, OCI_TAR_GZIP, OCI_TAR_ZSTD], [OCI_TAR_GZIP], [OCI_TAR_ZSTD]]
EPOCHS = [1700000000, 0, 1700000050, 2**33]


def _fresh(draw, tree: dict, dirs: list[str]) -> str:
    """A path that does not exist yet, in an existing directory (or the root)."""
    parent = draw(st.sampled_from([""] + sorted(dirs)))
    # Draw from the full list and step to the next free name: the choice keeps its meaning when
    # the shrinker deletes an earlier op, so deletions shrink well.
    i = draw(st.integers(0, len(NAMES) - 1))
    for name in NAMES[i:] + NAMES[:i] + [f"z{k}" for k in range(len(tree) + 1)]:
        if posixpath.join(parent, name) not in tree:
            return posixpath.join(parent, name)
    raise AssertionError("unreachable: more free names than taken ones")


def _content(draw, d: dict):
    kind = draw(st.sampled_from(["content", "none", "size"]))
    if kind == "content":
        v = yaml_value(draw(texts))
        if isinstance(v, dict):
            d["content_hex"] = v["hex"]
        else:
            d["content"] = v
    elif kind == "size":
        d["size"] = draw(st.sampled_from([0, 1, 511, 512, 4097, 70000]))


def _meta(draw, d: dict, *, mode=True, owner=True, mtime=True):
    if mode and draw(st.booleans()):
        d["mode"] = draw(modes)
    if owner and draw(st.booleans()):
        d["uid"], d["gid"] = draw(ids), draw(ids)
    if mtime and draw(st.booleans()):
        d["mtime"] = draw(mtimes)


def _children(tree: dict, path: str) -> list[str]:
    return [p for p in tree if p.startswith(path + "/")]


def _drop(tree: dict, path: str):
    for p in [path, *_children(tree, path)]:
        tree.pop(p, None)


def _some(draw, strategy, most: int) -> list:
    """Up to `most` items drawn in order (an item's strategy may read what earlier ones put in
    the tree model). st.lists shrinks by deleting items, which a count drawn up front would
    have to shrink together with, which Hypothesis rarely does."""
    return draw(st.lists(strategy, max_size=most))


def _layer(draw, tree: dict) -> list[dict]:
    """One lower layer; tree (the merged view so far) is updated."""
    mine: dict = {}
    entries = _some(draw, _entry(tree, mine), 5)
    tree.update(mine)
    return entries


@st.composite
def _entry(draw, tree: dict, mine: dict) -> dict:
    # A layer is populated over the ones below it (its snapshot's parent), so new paths only.
    taken = {**tree, **mine}
    dirs = [p for p, t in taken.items() if t == "dir"]
    path = _fresh(draw, taken, dirs)
    files = [p for p, t in mine.items() if t == "file"]
    typ = draw(st.sampled_from(["file", "dir", "symlink", "hardlink", "fifo", "char", "block"]
                               if files else ["file", "dir", "symlink", "fifo", "char", "block"]))
    e = {"path": yaml_path(path)}
    if typ != "file":
        e["type"] = typ
    if typ == "file":
        _content(draw, e)
        _meta(draw, e)
    elif typ == "dir":
        _meta(draw, e)
    elif typ == "symlink":
        e["target"] = yaml_path(draw(st.sampled_from(["a", "../a", "/etc/passwd", "b/c", "x" * 200])))
        _meta(draw, e, mode=False)
    elif typ == "hardlink":
        e["target"] = yaml_path(draw(st.sampled_from(sorted(files))))
    else:
        if typ in ("char", "block"):
            e["major"], e["minor"] = draw(st.sampled_from([(1, 3), (0, 1), (4095, 1048575), (8, 0)]))
        _meta(draw, e)
    if draw(st.integers(0, 4)) == 0 and typ in ("file", "dir"):
        e["xattrs"] = {draw(st.sampled_from(XATTR_NAMES)): yaml_value(draw(xattr_values))}
    mine[path] = "file" if typ == "hardlink" else typ
    return e


# Simplest first; write and link twice (hardlink groups are where name order matters most).
OP_KINDS = ["write", "rm", "mkdir", "link", "append", "chmod", "chown", "mtime", "write", "link",
            "rename", "symlink", "setxattr", "rmtree", "mknod"]


@st.composite
def _op(draw, tree: dict) -> list[dict]:
    """One op (two for rmtree + recreate) valid on tree; tree is updated."""
    dirs = [p for p, t in tree.items() if t == "dir"]
    files = [p for p, t in tree.items() if t == "file"]
    nondirs = [p for p, t in tree.items() if t != "dir"]
    empty_dirs = [d for d in dirs if not _children(tree, d)]
    applicable = {
        "write": True, "mkdir": True, "symlink": True, "mknod": True,
        "rm": bool(nondirs or empty_dirs), "append": bool(files),
        "chmod": bool(files or dirs), "chown": bool(tree), "mtime": bool(tree),
        "link": bool(files), "rename": bool(nondirs), "setxattr": bool(files or dirs),
        "rmtree": bool(dirs),
    }
    kind = draw(st.sampled_from([k for k in OP_KINDS if applicable[k]]))
    op = {"op": kind}
    if kind == "write":
        path = draw(st.sampled_from(["(new)"] + sorted(files)))
        if path == "(new)":
            path = _fresh(draw, tree, dirs)
        op["path"] = yaml_path(path)
        _content(draw, op)
        _meta(draw, op)
        tree[path] = "file"
    elif kind == "mkdir":
        path = _fresh(draw, tree, dirs)
        op["path"] = yaml_path(path)
        _meta(draw, op)
        tree[path] = "dir"
    elif kind == "symlink":
        path = _fresh(draw, tree, dirs)
        op["path"] = yaml_path(path)
        op["target"] = yaml_path(draw(st.sampled_from(["a", "../b", "/abs", "."] + sorted(tree)[:3])))
        tree[path] = "symlink"
    elif kind == "mknod":
        path = _fresh(draw, tree, dirs)
        op["path"] = yaml_path(path)
        op["type"] = draw(st.sampled_from(["fifo", "char", "block"]))
        if op["type"] != "fifo":
            op["major"], op["minor"] = draw(st.sampled_from([(1, 3), (4095, 1048575)]))
        tree[path] = op["type"]
    elif kind == "rm":
        path = draw(st.sampled_from(sorted(nondirs + empty_dirs)))
        op["path"] = yaml_path(path)
        tree.pop(path)
    elif kind == "append":
        path = draw(st.sampled_from(sorted(files)))
        op["path"], op["content"] = yaml_path(path), draw(st.sampled_from(["+", "more\n", ""]))
    elif kind == "chmod":
        op["path"] = yaml_path(draw(st.sampled_from(sorted(files + dirs))))
        op["mode"] = draw(modes)
    elif kind == "chown":
        op["path"] = yaml_path(draw(st.sampled_from(sorted(tree))))
        op["uid"], op["gid"] = draw(ids), draw(ids)
    elif kind == "mtime":
        op["path"] = yaml_path(draw(st.sampled_from(sorted(tree))))
        op["mtime"] = draw(mtimes)
    elif kind == "link":
        # One or two new names for a file: groups of three show which name carries the data.
        target = draw(st.sampled_from(sorted(files)))
        ops = []
        for _ in range(draw(st.integers(1, 2))):
            path = _fresh(draw, tree, dirs)
            ops.append({"op": "link", "path": yaml_path(path), "target": yaml_path(target)})
            tree[path] = "file"
        return ops
    elif kind == "rename":
        src = draw(st.sampled_from(sorted(nondirs)))
        dst = _fresh(draw, tree, dirs)
        op = {"op": "rename", "from": yaml_path(src), "to": yaml_path(dst)}
        tree[dst] = tree.pop(src)
    elif kind == "setxattr":
        op["path"] = yaml_path(draw(st.sampled_from(sorted(files + dirs))))
        op["name"] = draw(st.sampled_from(XATTR_NAMES))
        op["value"] = yaml_value(draw(xattr_values))
    elif kind == "rmtree":
        path = draw(st.sampled_from(sorted(dirs)))
        op["path"] = yaml_path(path)
        _drop(tree, path)
        if draw(st.booleans()):    # recreate: the kernel makes the new dir opaque
            tree[path], tree[path + "/a"] = "dir", "file"
            return [op, {"op": "mkdir", "path": yaml_path(path)},
                    {"op": "write", "path": yaml_path(path + "/a"), "content": "new\n"}]
    return [op]


@st.composite
def compare_cases(draw) -> dict:
    """Scenario data (the dict a YAML file holds) for one Compare case."""
    tree: dict = {}
    lowers = [_layer(draw, tree)]
    lowers += _some(draw, st.composite(lambda d: _layer(d, tree))(), 2)
    upper = [op for ops in _some(draw, _op(tree), 6) for op in ops]
    data = {"description": "generated", "lowers": lowers, "upper": upper,
            "compare": {"media_types": draw(st.sampled_from(MEDIA_TYPES))}}
    if draw(st.booleans()):
        data["compare"]["source_date_epoch"] = draw(st.sampled_from(EPOCHS))
    return data
