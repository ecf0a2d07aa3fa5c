"""Load and validate scenario files. Every error names FILE:LINE; nothing raises a traceback.

    python -m harness.scenario.loader scenarios/     # validate a tree
"""
from __future__ import annotations

import decimal
import os
import sys
from pathlib import Path

import yaml

from . import generators
from ..capabilities import KNOWN as KNOWN_CAPABILITIES
from .model import (APPLY_CHECKS, DEFAULT_MEDIA_TYPES, ENTRY_TYPES, NODE_TYPES, OPS, ApplyCase,
                    Entry, Generated, LayerSource, Op, Scenario)


def _show(b: bytes) -> str:
    return b.decode(errors="backslashreplace")


# What the kernel and Python's os calls accept: time_t seconds, off_t sizes.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class ScenarioError(Exception):
    """One or more problems in a scenario file; str() is ready for a person."""

    def __init__(self, path: str, problems: list[tuple[int, str]]):
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}:{line}: {msg}" for line, msg in problems))


class _Map(dict):
    """A YAML mapping that remembers the line of each key (1-based)."""

    line = 0
    key_lines: dict


class _Seq(list):
    """A YAML sequence that remembers its line and the line of each item (1-based)."""

    line = 0
    item_lines: list


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader, node):
    m = _Map(loader.construct_mapping(node, deep=True))
    m.line = node.start_mark.line + 1
    m.key_lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if hasattr(k, "value")}
    return m


def _construct_seq(loader, node):
    s = _Seq(loader.construct_object(n, deep=True) for n in node.value)
    s.line = node.start_mark.line + 1
    s.item_lines = [n.start_mark.line + 1 for n in node.value]
    return s


def _item_line(seq, i: int, default: int) -> int:
    lines = getattr(seq, "item_lines", None)
    return lines[i] if lines and i < len(lines) else default


def _encode(s: str) -> bytes | None:
    """UTF-8 bytes of a YAML string; None for one that has no UTF-8 form (a lone surrogate)."""
    try:
        return s.encode()
    except UnicodeEncodeError:
        return None


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)
# YAML 1.1 reads 0o644 as a string; accept it as octal like YAML 1.2 does.
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", __import__("re").compile(r"^0o[0-7]+$"),
                              list("0"))
_orig_int = yaml.SafeLoader.yaml_constructors["tag:yaml.org,2002:int"]


def _construct_int(loader, node):
    v = loader.construct_scalar(node)
    if isinstance(v, str) and v.startswith("0o"):
        return int(v[2:], 8)
    return _orig_int(loader, node)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


class _Checker:
    """Validates one file's data, collecting problems with their lines."""

    TOP = {"description", "tags", "references", "lowers", "upper", "upperdir", "compare",
           "expect", "requires", "name", "version", "apply", "timeout", "overlay"}
    APPLY_KEYS = {"media_type", "blob", "descriptor", "mkfs_options", "tar_index", "check",
                  "expect", "name"}

    def __init__(self, path: str):
        self.path = path
        self.base = os.path.dirname(os.path.abspath(path))   # host paths are relative to the file
        self.problems: list[tuple[int, str]] = []
        self.inputs: list[str] = []     # host paths the scenario reads (Scenario.inputs)

    def err(self, line: int, msg: str):
        self.problems.append((line, msg))

    # -- field helpers -------------------------------------------------
    def line_of(self, m, key=None) -> int:
        if isinstance(m, _Map):
            return m.key_lines.get(key, m.line) if key else m.line
        return 0

    def keys(self, m: _Map, allowed: set, required: set, what: str):
        for k in m:
            if k not in allowed:
                self.err(self.line_of(m, k), f"unknown key {k!r} in {what} "
                         f"(allowed: {', '.join(sorted(allowed))})")
        for k in sorted(required - set(m)):
            self.err(m.line, f"{what} is missing {k!r}")
        for k in sorted(required & set(m)):
            if m[k] is None:
                self.err(self.line_of(m, k), f"{what}: {k!r} must not be null")

    def bytes_(self, m, key, what, *, relpath=False, nul=True) -> bytes | None:
        v = m.get(key)
        if v is None:
            return None
        line = self.line_of(m, key)
        if isinstance(v, _Map) and set(v) == {"hex"}:
            try:
                b = bytes.fromhex(str(v["hex"]))
            except ValueError:
                self.err(line, f"{what}: {key}.hex is not hexadecimal: {v['hex']!r}")
                return None
        elif isinstance(v, str):
            b = _encode(v)
            if b is None:
                self.err(line, f"{what}: {key} has no UTF-8 form (a lone surrogate); "
                         "use {hex: ...} for raw bytes")
                return None
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and not relpath:
            b = str(v).encode()
        else:
            self.err(line, f"{what}: {key} must be a string or {{hex: ...}}, not {type(v).__name__}")
            return None
        if not nul and b"\0" in b:
            self.err(line, f"{what}: {key} must not contain a NUL byte")
            return None
        if relpath:
            if not b or b.startswith(b"/") or b"\0" in b or b".." in b.split(b"/") \
                    or b"" in b.rstrip(b"/").split(b"/"):
                self.err(line, f"{what}: {key} {_show(b)!r} must be a relative path without '..', "
                         "empty components or a leading '/'")
                return None
            b = b.rstrip(b"/")
        return b

    def int_(self, m, key, what, *, lo=None, hi=None) -> int | None:
        v = m.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            self.err(self.line_of(m, key), f"{what}: {key} must be an integer, not {v!r}")
            return None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self.err(self.line_of(m, key), f"{what}: {key}={v} is out of range [{lo}, {hi}]")
            return None
        return v

    def mtime_(self, m, key, what) -> int | None:
        v = m.get(key)
        if v is None:
            return None
        try:
            if isinstance(v, bool):
                raise ValueError
            d = decimal.Decimal(str(v))
            if not d.is_finite():
                raise ValueError
        except (decimal.DecimalException, ValueError):
            self.err(self.line_of(m, key), f"{what}: {key} must be seconds since the epoch "
                     f"(integer or decimal), not {v!r}")
            return None
        # The kernel takes time_t seconds; bound before scaling so a huge exponent stays cheap.
        if not INT64_MIN <= d < INT64_MAX + 1:
            self.err(self.line_of(m, key), f"{what}: {key}={v} is out of range: seconds must fit "
                     f"a 64-bit time_t [{INT64_MIN}, {INT64_MAX}]")
            return None
        with decimal.localcontext(decimal.Context(prec=80)):
            return int((d * 1_000_000_000).to_integral_value(rounding=decimal.ROUND_FLOOR))

    def content_(self, m, what) -> tuple[bytes | None, int | None, Generated | None]:
        """(content, sparse size, generated) from content / content_hex / size."""
        given = [k for k in ("content", "content_hex", "size") if k in m]
        if len(given) > 1:
            self.err(m.line, f"{what}: give only one of content, content_hex, size")
        if "content_hex" in m:
            try:
                return bytes.fromhex(str(m["content_hex"])), None, None
            except ValueError:
                self.err(self.line_of(m, "content_hex"), f"{what}: content_hex is not hexadecimal")
                return None, None, None
        if "size" in m:
            return None, self.int_(m, "size", what, lo=0, hi=INT64_MAX), None
        c = m.get("content")
        if isinstance(c, _Map):
            return None, None, self.generated(c, what)
        if c is not None and not isinstance(c, str):
            self.err(self.line_of(m, "content"), f"{what}: content must be a string or "
                     "{size: N, seed: S}")
            return None, None, None
        if c is None:
            return None, None, None
        b = _encode(c)
        if b is None:
            self.err(self.line_of(m, "content"), f"{what}: content has no UTF-8 form (a lone "
                     "surrogate); use content_hex for raw bytes")
        return b, None, None

    def generated(self, c, what) -> Generated | None:
        self.keys(c, {"size", "seed"}, {"size"}, f"{what} content")
        size = self.int_(c, "size", f"{what} content", lo=0, hi=INT64_MAX)
        seed = self.int_(c, "seed", f"{what} content", lo=0, hi=INT64_MAX)
        return Generated(size, seed or 0) if size is not None else None

    def host_path(self, m, key, what, kinds=("file", "dir")) -> str | None:
        """A path on this machine, relative to the scenario file's folder; it must exist."""
        v = m.get(key)
        line = self.line_of(m, key)
        if not isinstance(v, str) or not v:
            self.err(line, f"{what}: {key} must be a path (relative to the scenario file)")
            return None
        p = os.path.normpath(os.path.join(self.base, os.path.expanduser(v)))
        self.inputs.append(p)
        ok = (("file" in kinds and os.path.isfile(p)) or ("dir" in kinds and os.path.isdir(p)))
        if not ok:
            there = "does not exist" if not os.path.lexists(p) else "is not a " + " or ".join(kinds)
            self.err(line, f"{what}: {key} {v!r} {there} (looked for {p})")
            return None
        return p

    def xattr_name(self, name, line, what) -> str | None:
        """setxattr(2) takes a non-empty C string: no NUL, and UTF-8 here."""
        name = str(name)
        if not name or "\0" in name or _encode(name) is None:
            self.err(line, f"{what}: xattr name {name!r} must be a non-empty string without NUL "
                     "or lone surrogates")
            return None
        return name

    def xattrs_(self, m, what) -> tuple:
        v = m.get("xattrs")
        if v is None:
            return ()
        if not isinstance(v, _Map):
            self.err(self.line_of(m, "xattrs"), f"{what}: xattrs must be a mapping name -> value")
            return ()
        out = []
        for name in v:
            val = self.bytes_(v, name, f"{what} xattr")
            key = self.xattr_name(name, self.line_of(v, name), what)
            if val is not None and key is not None:
                out.append((key, val))
        return tuple(out)

    # -- sections ------------------------------------------------------
    def entry(self, m, where, line=0) -> Entry | None:
        if not isinstance(m, _Map):
            self.err(line, f"{where} must be a mapping like {{path: a, content: x}}")
            return None
        what = f"{where} ({m.get('path', '?')})"
        allowed = {"path", "type", "content", "content_hex", "size", "target", "mode", "uid",
                   "gid", "mtime", "xattrs", "major", "minor"}
        self.keys(m, allowed, {"path"}, what)
        typ = m.get("type", "file")
        if typ not in ENTRY_TYPES:
            self.err(self.line_of(m, "type"), f"{what}: type {typ!r} is not one of {', '.join(ENTRY_TYPES)}")
            return None
        content, size, gen = self.content_(m, what)
        if (content is not None or size is not None or gen is not None) and typ != "file":
            self.err(m.line, f"{what}: content/size only apply to type file")
        target = self.bytes_(m, "target", what, relpath=(typ == "hardlink"), nul=False)
        if typ in ("symlink", "hardlink") and target is None:
            self.err(m.line, f"{what}: a {typ} needs 'target'")
        if typ not in ("symlink", "hardlink") and "target" in m:
            self.err(self.line_of(m, "target"), f"{what}: target only applies to symlink/hardlink")
        return Entry(path=self.bytes_(m, "path", what, relpath=True) or b"?", type=typ,
                     content=content, size=size, gen=gen, target=target,
                     mode=self.int_(m, "mode", what, lo=0, hi=0o7777),
                     uid=self.int_(m, "uid", what, lo=0, hi=2**32 - 2) or 0,
                     gid=self.int_(m, "gid", what, lo=0, hi=2**32 - 2) or 0,
                     mtime_ns=self.mtime_(m, "mtime", what), xattrs=self.xattrs_(m, what),
                     major=self.int_(m, "major", what, lo=0, hi=4095) or 0,
                     minor=self.int_(m, "minor", what, lo=0, hi=2**20 - 1) or 0, line=m.line)

    OP_KEYS = {
        "write": ({"path"}, {"content", "content_hex", "size", "mode", "uid", "gid", "mtime"}),
        "append": ({"path", "content"}, set()),
        "mkdir": ({"path"}, {"mode", "uid", "gid", "mtime"}),
        "rm": ({"path"}, set()),
        "rmtree": ({"path"}, set()),
        "rename": ({"from", "to"}, set()),
        "chmod": ({"path", "mode"}, set()),
        "chown": ({"path", "uid", "gid"}, set()),
        "mtime": ({"path", "mtime"}, set()),
        "symlink": ({"path", "target"}, {"mtime", "uid", "gid"}),
        "link": ({"path", "target"}, set()),
        "setxattr": ({"path", "name", "value"}, set()),
        "mknod": ({"path", "type"}, {"major", "minor", "mode", "uid", "gid", "mtime"}),
        "run": ({"command"}, {"check", "timeout", "env"}),
        "copy": ({"from", "to"}, {"timeout"}),
        "many": ({"path", "count"}, {"size", "seed", "content", "mode", "mtime"}),
        "sync": ({"from"}, {"timeout"}),
        "apply": ({"tar"}, {"media_type"}),
    }

    def op(self, m, where, raw=False, line=0) -> Op | None:
        if not isinstance(m, _Map) or "op" not in m:
            self.err(getattr(m, "line", line), f"{where} must be a mapping with an 'op' key "
                     f"(one of {', '.join(OPS)})")
            return None
        name = m["op"]
        if name not in OPS:
            self.err(self.line_of(m, "op"), f"{where}: unknown op {name!r} (one of {', '.join(OPS)})")
            return None
        required, optional = self.OP_KEYS[name]
        what = f"{where} ({name})"
        self.keys(m, required | optional | {"op", "expect_error"}, required, what)
        if name in ("run", "sync", "apply") and raw:
            self.err(self.line_of(m, "op"), f"{what}: {name} works in the mounted merged view "
                     "only (upper), not on the raw upper directory")
        content, size, gen = (None, None, None) if name == "many" else self.content_(m, what)
        typ = m.get("type")
        if name == "mknod" and typ not in NODE_TYPES:
            self.err(self.line_of(m, "type"), f"{what}: type must be one of {', '.join(NODE_TYPES)}")
        expect_error = m.get("expect_error")
        if expect_error is not None and (not isinstance(expect_error, str) or not expect_error):
            self.err(self.line_of(m, "expect_error"), f"{what}: expect_error must be an errno name "
                     "(EXDEV) or a non-empty substring of the error")
        extra = self.run_fields(m, what) if name == "run" else {}
        if name == "copy":
            extra = {"source": self.host_path(m, "from", what),
                     "timeout": self.seconds(m, "timeout", what)}
        elif name == "sync":
            extra = {"source": self.host_path(m, "from", what, ("dir",)),
                     "timeout": self.seconds(m, "timeout", what)}
        elif name == "apply":
            mt = m.get("media_type")
            if mt is not None and not isinstance(mt, str):
                self.err(self.line_of(m, "media_type"), f"{what}: media_type must be a string")
            extra = {"source": self.host_path(m, "tar", what, ("file",)),
                     "media_type": mt if isinstance(mt, str) else None}
        elif name == "many":
            extra, content, gen = self.many_fields(m, what)
        path_key = {"rename": "from", "copy": "to"}.get(name, "path")
        return Op(op=name, path=self.bytes_(m, path_key, what, relpath=True),
                  to=self.bytes_(m, "to", what, relpath=True),
                  target=self.bytes_(m, "target", what, relpath=(name == "link"), nul=False),
                  content=content, size=size, mode=self.int_(m, "mode", what, lo=0, hi=0o7777),
                  uid=self.int_(m, "uid", what, lo=0, hi=2**32 - 2),
                  gid=self.int_(m, "gid", what, lo=0, hi=2**32 - 2),
                  mtime_ns=self.mtime_(m, "mtime", what),
                  name=(self.xattr_name(m["name"], self.line_of(m, "name"), what)
                        if m.get("name") is not None else None),
                  value=self.bytes_(m, "value", what), type=typ,
                  major=self.int_(m, "major", what, lo=0, hi=4095) or 0,
                  minor=self.int_(m, "minor", what, lo=0, hi=2**20 - 1) or 0, gen=gen,
                  expect_error=expect_error if isinstance(expect_error, str) else None,
                  line=m.line, **extra)

    def seconds(self, m, key, what) -> float | None:
        v = m.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            self.err(self.line_of(m, key), f"{what}: {key} must be a positive number of seconds")
            return None
        return float(v)

    def run_fields(self, m, what) -> dict:
        cmd = m.get("command")
        if isinstance(cmd, str) and cmd.strip():
            argv = ("/bin/sh", "-c", cmd)
        elif isinstance(cmd, list) and cmd and all(isinstance(a, str) for a in cmd):
            argv = tuple(cmd)
        else:
            self.err(self.line_of(m, "command"), f"{what}: command must be a shell command line "
                     "(string) or an argv list of strings")
            argv = ()
        check = m.get("check", True)
        if not isinstance(check, bool):
            self.err(self.line_of(m, "check"), f"{what}: check must be true or false")
            check = True
        env = m.get("env", _Map())
        if not isinstance(env, _Map) or not all(isinstance(v, (str, int)) for v in env.values()):
            self.err(self.line_of(m, "env"), f"{what}: env must map names to strings")
            env = {}
        return {"command": argv, "check": check, "timeout": self.seconds(m, "timeout", what),
                "env": tuple((str(k), str(v)) for k, v in env.items())}

    def many_fields(self, m, what):
        count = self.int_(m, "count", what, lo=1, hi=10_000_000)
        pattern = m.get("path")
        if isinstance(pattern, str) and count:
            try:
                generators.check_pattern(pattern, count)
            except generators.PatternError as e:
                self.err(self.line_of(m, "path"), f"{what}: {e}")
        content, size, seed = m.get("content"), self.int_(m, "size", what, lo=0), None
        if content is not None and size is not None:
            self.err(m.line, f"{what}: give content (the same text in every file) or size "
                     "(pseudo-random bytes), not both")
        if content is not None and not isinstance(content, str):
            self.err(self.line_of(m, "content"), f"{what}: content must be a string")
            content = None
        if "seed" in m:
            seed = self.int_(m, "seed", what, lo=0)
        gen = Generated(size, seed or 0) if size is not None else None
        return {"count": count or 0}, (content.encode() if content is not None else None), gen

    def str_list(self, m, key) -> tuple[str, ...]:
        v = m.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            self.err(self.line_of(m, key), f"{key} must be a list of strings")
            return ()
        return tuple(v)

    def scenario(self, data, name: str) -> Scenario | None:
        if not isinstance(data, _Map):
            self.err(1, "a scenario file must be a YAML mapping (description, lowers, upper, ...)")
            return None
        self.keys(data, self.TOP, {"description"}, "the scenario")
        if "version" in data and data["version"] != 0:
            self.err(self.line_of(data, "version"), "only scenario format version 0 is known")
        lowers = []
        raw_lowers = data.get("lowers", [])
        if not isinstance(raw_lowers, list):
            self.err(self.line_of(data, "lowers"), "lowers must be a list of layers (each a list of entries)")
            raw_lowers = []
        for i, layer in enumerate(raw_lowers):
            if isinstance(layer, _Map) and "oci" in layer:
                lowers.extend(self.oci_sources(layer, f"lowers[{i}]"))
                continue
            if isinstance(layer, _Map):
                source = self.layer_source(layer, f"lowers[{i}]")
                if source:
                    lowers.append(source)
                continue
            if not isinstance(layer, list):
                self.err(_item_line(raw_lowers, i, self.line_of(data, "lowers")),
                         f"lowers[{i}] must be a list of entries, {{tar: PATH}}, {{dir: PATH}}, "
                         "{oci: PATH} or {corpus: NAME}")
                continue
            entries = [self.entry(e, f"lowers[{i}][{j}]", _item_line(layer, j, layer.line))
                       for j, e in enumerate(layer)]
            lowers.append(tuple(e for e in entries if e))
            self.check_hardlinks(lowers[-1], i)
        ops = {}
        for key in ("upper", "upperdir"):
            raw = data.get(key, [])
            if not isinstance(raw, list):
                self.err(self.line_of(data, key), f"{key} must be a list of operations")
                raw = []
            ops[key] = tuple(o for o in (self.op(x, f"{key}[{i}]", raw=(key == "upperdir"),
                                                 line=_item_line(raw, i, self.line_of(data, key)))
                                         for i, x in enumerate(raw)) if o)
        compare = data.get("compare", _Map())
        media_types, epoch = DEFAULT_MEDIA_TYPES, None
        if not isinstance(compare, _Map):
            self.err(self.line_of(data, "compare"), "compare must be a mapping")
        else:
            self.keys(compare, {"media_types", "source_date_epoch"}, set(), "compare")
            if "media_types" in compare:
                media_types = self.str_list(compare, "media_types") or DEFAULT_MEDIA_TYPES
            # SOURCE_DATE_EPOCH is a non-negative count of seconds; Go takes it as an int64.
            epoch = self.int_(compare, "source_date_epoch", "compare", lo=0, hi=INT64_MAX)
        quirks, error, by_version = self.expectation(data, "expect", top=True)
        desc = data.get("description")
        if "description" in data and (not isinstance(desc, str) or not desc.strip()):
            self.err(self.line_of(data, "description"), "description must be a non-empty string")
        apply_cases = self.apply_section(data) if "apply" in data else ()
        timeout = data.get("timeout")
        if "timeout" in data and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                  or not 0 < timeout <= 86400):
            self.err(self.line_of(data, "timeout"), f"timeout must be a number of seconds "
                     f"between 0 and 86400 (the deadline of each external call), not {timeout!r}")
            timeout = None
        return Scenario(name=name, path=self.path, description=str(desc or "").strip(),
                        tags=self.str_list(data, "tags"), references=self.str_list(data, "references"),
                        lowers=tuple(lowers), upper=ops["upper"], upperdir=ops["upperdir"],
                        media_types=media_types, source_date_epoch=epoch, expect_quirks=quirks,
                        expect_error=error, expect_by_version=by_version, apply_cases=apply_cases,
                        requires=self.requires(data), overlay=self.overlay(data),
                        timeout=float(timeout) if timeout else None, raw=data,
                        inputs=tuple(dict.fromkeys([os.path.abspath(self.path), *self.inputs])))

    def corpus_path(self, m, key, what) -> str | None:
        """`{corpus: NAME}`: a file of the real-world corpus (harness/corpus.py), which need not
        be built yet: scenarios using it require the `corpus` capability."""
        from harness import corpus
        name = m.get(key)
        if name not in corpus.NAMES:
            self.err(self.line_of(m, key), f"{what}: corpus {name!r} is not a corpus file "
                     f"(known: {', '.join(corpus.NAMES)})")
            return None
        self.inputs.append(str(corpus.path(name)))
        return corpus.path(name)

    def oci_sources(self, m, where) -> list[LayerSource]:
        """`{oci: PATH, ref?, platform?}`: every layer of one image of an OCI image layout, bottom
        first, each a `{tar}` layer with the manifest's media type."""
        from .ocilayout import OCILayoutError, layers
        self.keys(m, {"oci", "ref", "platform"}, {"oci"}, where)
        for key in ("ref", "platform"):
            if key in m and not isinstance(m[key], str):
                self.err(self.line_of(m, key), f"{where}: {key} must be a string")
                return []
        root = self.host_path(m, "oci", where, ("dir",))
        if root is None:
            return []
        try:
            found = layers(root, m.get("ref"), m.get("platform"))
        except OCILayoutError as e:
            self.err(self.line_of(m, "oci"), f"{where}: OCI image layout {m['oci']!r}: {e}")
            return []
        return [LayerSource("tar", path, mt or None, m.line) for path, mt in found]

    def layer_source(self, m, where) -> LayerSource | None:
        if "corpus" in m:
            self.keys(m, {"corpus", "media_type"}, set(), where)
            path = self.corpus_path(m, "corpus", where)
            mt = m.get("media_type")
            return LayerSource("tar", path, mt if isinstance(mt, str) else None, m.line) \
                if path else None
        kinds = [k for k in ("tar", "dir") if k in m]
        if len(kinds) != 1:
            self.err(m.line, f"{where} must be a list of entries, {{tar: PATH}} (a layer tar or "
                     "compressed blob), {dir: PATH} (a directory tree), {oci: PATH} (an OCI image "
                     "layout's layers) or {corpus: NAME}")
            return None
        kind = kinds[0]
        self.keys(m, {kind, "media_type"} if kind == "tar" else {kind}, set(), where)
        mt = m.get("media_type")
        if mt is not None and not isinstance(mt, str):
            self.err(self.line_of(m, "media_type"), f"{where}: media_type must be a string")
            mt = None
        path = self.host_path(m, kind, where, ("file",) if kind == "tar" else ("dir",))
        return LayerSource(kind, path, mt, m.line) if path else None

    def overlay(self, data) -> tuple[str, ...]:
        """overlay: [redirect_dir=on, ...]: mount options the kernel's overlayfs takes."""
        from harness import overlayopts
        try:
            return overlayopts.normalise(self.str_list(data, "overlay"))
        except overlayopts.OverlayOptionError as e:
            self.err(self.line_of(data, "overlay"), f"overlay: {e}")
            return ()

    def requires(self, data) -> tuple[str, ...]:
        """A misspelt capability would skip the scenario forever: only known ones pass."""
        names = self.str_list(data, "requires")
        for n in names:
            if n not in KNOWN_CAPABILITIES:
                self.err(self.line_of(data, "requires"),
                         f"requires: unknown capability {n!r} "
                         f"(known: {', '.join(sorted(KNOWN_CAPABILITIES))})")
        return names

    def expectation(self, parent, key, top=False):
        """expect: {quirks, error, versions: {">=2.2.0": {quirks, error}}} -> (quirks, error, overrides)"""
        expect = parent.get(key, _Map())
        quirks, error, by_version = None, None, ()
        if not isinstance(expect, _Map):
            self.err(self.line_of(parent, key), f"{key} must be a mapping")
            return quirks, error, by_version
        self.keys(expect, {"quirks", "error", "versions"} if top else {"quirks", "error"}, set(),
                  key)
        if "quirks" in expect:
            quirks = self.str_list(expect, "quirks")
            self.check_quirks(expect, quirks)
        error = expect.get("error")
        if error is not None and not isinstance(error, str):
            self.err(self.line_of(expect, "error"), f"{key}.error must be a string")
        versions = expect.get("versions", _Map())
        if not isinstance(versions, _Map):
            self.err(self.line_of(expect, "versions"),
                     'expect.versions must map a version range (">=2.2.0") to {quirks, error}')
            return quirks, error, by_version
        out = []
        for rng in versions:
            try:
                from harness.reference.profiles import version_predicate
                version_predicate(str(rng))
            except ValueError as e:
                self.err(self.line_of(versions, rng), f"expect.versions: {e}")
                continue
            q, err, _ = self.expectation(versions, rng)
            out.append((str(rng), q, err))
        return quirks, error, tuple(out)

    def apply_section(self, data) -> tuple:
        section = data["apply"]
        if not isinstance(section, _Map):
            self.err(self.line_of(data, "apply"), "apply must be a mapping (see docs/apply.md)")
            return ()
        self.keys(section, self.APPLY_KEYS | {"cases"}, set(), "apply")
        raw_cases = section.get("cases", [section])
        if not isinstance(raw_cases, list) or not raw_cases:
            self.err(self.line_of(section, "cases"), "apply.cases must be a non-empty list")
            return ()
        cases = []
        for i, c in enumerate(raw_cases):
            where = f"apply.cases[{i}]" if "cases" in section else "apply"
            if not isinstance(c, _Map):
                self.err(section.line, f"{where} must be a mapping")
                continue
            if c is not section:
                self.keys(c, self.APPLY_KEYS, set(), where)
            case = self.apply_case(c, section, where, bool(data.get("lowers") or data.get("upper")))
            if case:
                cases.append(case)
        return tuple(cases)

    def apply_case(self, c, section, where, has_state):
        def get(key, default=None):
            return c[key] if key in c else section.get(key, default)
        blob = get("blob")
        fixture, from_compare = None, False
        if isinstance(blob, _Map) and set(blob) == {"fixture"} and isinstance(blob["fixture"], str):
            fixture = blob["fixture"]
            if fixture.startswith(("./", "../")):
                # Beside the scenario file (generated cases carry their own blob); stored
                # absolute, which the fixtures/ join leaves as it is.
                fixture = str((Path(self.path).resolve().parent / fixture).resolve())
                self.inputs.append(fixture)
                if not Path(fixture).is_file():
                    self.err(c.line, f"{where}: fixture {blob['fixture']!r} does not exist "
                             "beside the scenario file")
            else:
                self.inputs.append(str(Path(__file__).resolve().parents[2] / "fixtures" / fixture))
                if not Path(self.inputs[-1]).is_file():
                    self.err(c.line, f"{where}: fixture {fixture!r} does not exist under fixtures/")
        elif isinstance(blob, _Map) and set(blob) == {"corpus"}:
            fixture = self.corpus_path(blob, "corpus", f"{where} blob")
            if fixture is None:
                return None
        elif isinstance(blob, _Map) and set(blob) == {"file"}:
            # an absolute path: FIXTURES / "/abs" is "/abs", so it is read like a fixture
            fixture = self.host_path(blob, "file", f"{where} blob", ("file",))
            if fixture is None:
                return None
        elif isinstance(blob, _Map) and blob.get("from_compare") is True and len(blob) == 1:
            from_compare = True
            if not has_state:
                self.err(c.line, f"{where}: blob from_compare needs lowers/upper in the scenario")
        else:
            self.err(c.line, f"{where}: blob must be {{file: PATH}} (relative to the scenario "
                     "file), {fixture: PATH} (under fixtures/) or {from_compare: true}")
            return None
        mt = get("media_type")
        if mt is None and not from_compare:
            self.err(c.line, f"{where}: media_type is required for a file or fixture blob")
        if mt is not None and not isinstance(mt, str):
            self.err(c.line, f"{where}: media_type must be a string")
        opts = get("mkfs_options", [])
        if not isinstance(opts, list) or not all(isinstance(o, str) for o in opts):
            self.err(c.line, f"{where}: mkfs_options must be a list of strings")
            opts = []
        check = get("check", list(APPLY_CHECKS))
        if not isinstance(check, list) or not all(isinstance(x, str) for x in check) \
                or not set(check) <= set(APPLY_CHECKS):
            self.err(c.line, f"{where}: check must be a list of {', '.join(APPLY_CHECKS)}")
            check = list(APPLY_CHECKS)
        expect = c.get("expect", _Map())
        eras = {"all", "seed", "erofs-suffix", "layer-prefix"}
        if not isinstance(expect, _Map) or not set(expect) <= eras or \
                not all(isinstance(v, str) for v in expect.values()):
            self.err(c.line, f"{where}: expect must map eras ({', '.join(sorted(eras))}) to outcomes")
            expect = {}
        desc = get("descriptor", _Map())
        ann = desc.get("annotations", {}) if isinstance(desc, dict) else None
        if not isinstance(ann, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in ann.items()):
            self.err(c.line, f"{where}: descriptor must be a mapping with annotations "
                     "(a mapping of strings to strings)")
            ann = {}
        tar_index = get("tar_index", False)
        if not isinstance(tar_index, bool):
            self.err(c.line, f"{where}: tar_index must be true or false")
        return ApplyCase(media_type=mt, fixture=fixture, from_compare=from_compare,
                         annotations=tuple((str(k), str(v)) for k, v in ann.items()),
                         mkfs_options=tuple(opts), tar_index=tar_index is True,
                         check=tuple(check), expect=tuple(expect.items()),
                         name=str(c.get("name", "")), line=c.line)

    def check_hardlinks(self, layer, i):
        seen = set()
        if isinstance(layer, LayerSource):
            return
        for e in layer:
            if e.type == "hardlink" and e.target not in seen:
                self.err(e.line, f"lowers[{i}] ({_show(e.path)}): hardlink target "
                         f"{_show(e.target)!r} must be listed earlier in the same layer")
            seen.add(e.path)

    def check_quirks(self, expect, quirks):
        try:
            from harness.reference import profiles
        except ImportError:
            return
        known = set(getattr(profiles, "QUIRKS_BY_NAME", {}))
        for q in quirks:
            if known and q not in known:
                self.err(self.line_of(expect, "quirks"),
                         f"expect.quirks: unknown quirk {q!r} (known: {', '.join(sorted(known))})")


def scenario_name(path: Path, root: Path | None = None, start: str | None = None) -> str:
    """The path under the nearest `scenarios/` folder (or `root`) without `.yaml`; for a file
    elsewhere, its path relative to `start` (where the run started, default the current folder),
    or its absolute path when outside it, so two files never share a name."""
    path = Path(os.path.abspath(path))
    base = Path(os.path.abspath(root)) if root else _scenarios_root(path)
    if base is None:
        base = Path(os.path.abspath(start or os.getcwd()))
    try:
        rel = path.relative_to(base)
    except ValueError:
        rel = path
    return str(rel.with_suffix(""))


def _scenarios_root(path: Path) -> Path | None:
    for parent in path.parents:
        if parent.name == "scenarios":
            return parent
    return None


def load(path, root=None, start=None) -> Scenario:
    """Load one scenario file; raises ScenarioError (never anything else) on bad input."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise ScenarioError(path, [(0, f"cannot read the file: {e.strerror}")]) from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 0
        raise ScenarioError(path, [(line, f"not valid YAML: {e.problem or e.context}")]) from None
    except yaml.YAMLError as e:
        raise ScenarioError(path, [(0, f"not valid YAML: {e}")]) from None
    except RecursionError:
        raise ScenarioError(path, [(1, "not usable YAML: nested too deeply (or an alias that "
                                       "contains itself)")]) from None
    checker = _Checker(path)
    try:
        scenario = checker.scenario(data, scenario_name(Path(path), root, start))
    except RecursionError:
        raise ScenarioError(path, [(1, "nested too deeply (or an alias that contains itself)")]) \
            from None
    if checker.problems:
        raise ScenarioError(path, sorted(checker.problems))
    return scenario


def discover(paths) -> list[Path]:
    """Scenario files under the given files/directories, sorted."""
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(x for x in p.rglob("*.yaml") if x.is_file()))
        else:
            out.append(p)
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    bad = 0
    files = discover(argv or ["scenarios"])
    for f in files:
        try:
            load(f)
        except ScenarioError as e:
            bad += 1
            print(e, file=sys.stderr)
    print(f"{len(files) - bad} valid, {bad} invalid")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
