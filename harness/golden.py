"""Golden offline mode: record containerd's real Compare outputs once, check the reference later
with no Go toolchain, no root and no VM.

`record_scenario` builds a scenario's state with the oracle (as `run` does), runs the Go erofs
Compare per media type, and stores what Go produced together with a manifest of the on-disk state
(`snapshot_state`: both trees with stat fields, xattrs incl. trusted.*, symlink targets and
content). `check_scenario` replays the reference on a `RecordedFS` built from that manifest and
makes the same checks as the live runner (`verdict.check_pair`, `runner.attribute_spec`).

Recordings live in fixtures/golden/<scenario name>.json (see fixtures/golden/README.md).
"""
from __future__ import annotations

import base64
import errno
import hashlib
import os
import shlex
import stat as st_
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .reference import fsview, profiles
from .reference.walk import go_join
from .result import Check, Outcome, ScenarioResult, Status
from .scenario.model import OCI_TAR
from .verdict import check_pair, compression_problems, name_quirk, normalise_error, same

FORMAT = 1
REPO = Path(__file__).resolve().parent.parent
GOLDEN_DIR = REPO / "fixtures" / "golden"
MAX_CONTENT = 16 << 20          # larger non-zero upper files make a scenario unrecordable
MAX_TAR = 1 << 20               # tars up to this size are stored (byte-level explanations offline)
RECORDED_STAT = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size",
                 "st_rdev", "st_mtime_ns")


class Unrecordable(Exception):
    """The scenario's state cannot be stored compactly (e.g. a large file with real data)."""


# -- helpers ----------------------------------------------------------------------------------

def _zstd(data: bytes) -> str:
    import zstandard
    return base64.b64encode(zstandard.ZstdCompressor(level=19).compress(data)).decode()


def _unzstd(text: str, size: int) -> bytes:
    import zstandard
    return zstandard.ZstdDecompressor().decompress(base64.b64decode(text), max_output_size=size)


def _sha(data) -> str:
    return hashlib.sha256(data).hexdigest()


def _stat(st) -> dict:
    return {k: int(getattr(st, k)) for k in RECORDED_STAT}


def _stat_or_errno(path: bytes) -> dict:
    try:
        return {"stat": _stat(os.stat(path))}
    except OSError as e:
        return {"errno": e.errno}


def golden_path(scenario_name: str, golden_dir: Path | str | None = None) -> Path:
    # names of files outside scenarios/ may be absolute or start with '..': keep them inside
    parts = [p for p in Path(scenario_name).parts if p not in ("/", "..", ".")]
    return Path(golden_dir or GOLDEN_DIR, *parts[:-1]) / f"{parts[-1] if parts else '_'}.json"


def scenario_sha(path: str) -> str:
    with open(path, "rb") as f:
        return _sha(f.read())


def is_apply_file(path) -> bool:
    """An Apply scenario (a top-level `apply:` key): a different kind, not recorded here."""
    import yaml
    try:
        with open(path, "rb") as f:
            data = yaml.safe_load(f)
    except Exception:
        return False
    return isinstance(data, dict) and "apply" in data


# -- the state manifest -----------------------------------------------------------------------

def _all_zeros(fd: int, size: int) -> bool:
    try:
        os.lseek(fd, 0, os.SEEK_DATA)
    except OSError as e:
        if e.errno == errno.ENXIO:
            return True                     # holes only
    os.lseek(fd, 0, os.SEEK_SET)
    left = size
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        if chunk.count(0) != len(chunk):
            return False
        left -= len(chunk)
    return True


def _content(path: bytes, size: int, required: bool) -> dict:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        if size > MAX_CONTENT:
            if _all_zeros(fd, size):
                return {"size": size, "zeros": True}
            if required:
                raise Unrecordable(f"{os.fsdecode(path)}: {size} bytes of real data "
                                   f"(more than {MAX_CONTENT} bytes)")
            return {"size": size, "omitted": True}
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        return {"size": len(data), "zstd_b64": _zstd(data)}
    finally:
        os.close(fd)


def _tree(root: bytes, content_required: bool) -> list[dict]:
    entries = []
    stack = [b""]
    while stack:
        rel = stack.pop()
        full = root + rel if rel else root
        st = os.lstat(full)
        e = {"path": rel.lstrip(b"/").hex(), "stat": _stat(st)}
        if st_.S_ISLNK(st.st_mode):
            e["link"] = os.readlink(full).hex()
        try:
            e["xattrs"] = {os.fsencode(k).hex(): base64.b64encode(
                os.getxattr(full, k, follow_symlinks=False)).decode()
                for k in os.listxattr(full, follow_symlinks=False)}
        except OSError as err:
            e["xattr_errno"] = err.errno
        if st_.S_ISREG(st.st_mode):
            e["content"] = _content(full, st.st_size, content_required)
        elif st_.S_ISDIR(st.st_mode):
            stack += [rel + b"/" + n for n in sorted(os.listdir(full), reverse=True)]
        entries.append(e)
    return entries


def snapshot_state(lower_root, upper_dir) -> dict:
    """A JSON-safe record of the lower view and the upper directory, enough for RecordedFS to
    answer every filesystem call the reference makes (paths hex-encoded, values base64).

    Besides the two trees: "follow" holds os.stat(lower + p) (following symlinks, host
    included) for every upper path p, which is what containerd's lower lookup does, and "host"
    the host's answer for each absolute symlink target in the lower."""
    lower, upper = go_join(os.fsencode(lower_root)), go_join(os.fsencode(upper_dir))
    lower_entries, upper_entries = _tree(lower, False), _tree(upper, True)
    follow = {}
    for e in upper_entries:
        if e["path"]:
            p = go_join(lower, b"/" + bytes.fromhex(e["path"]))
            follow[p.hex()] = _stat_or_errno(p)
    host = {}
    for e in lower_entries:
        target = bytes.fromhex(e.get("link") or "")
        if target.startswith(b"/"):
            host[go_join(target).hex()] = _stat_or_errno(target)
    return {"lower_root": os.fsdecode(lower), "upper_dir": os.fsdecode(upper),
            "roots": {"lower": {"path": lower.hex(), "entries": lower_entries},
                      "upper": {"path": upper.hex(), "entries": upper_entries}},
            "follow": follow, "host": host}


# -- recording -------------------------------------------------------------------------------

def record_scenario(scenario, session, command: str | None = None) -> dict:
    """Build the scenario's state with the real oracle, run the Go erofs Compare for each media
    type and return the golden record (JSON-safe). Raises Unrecordable, or what state.build and
    the oracle raise."""
    from . import runner, state
    from .report.explain import list_entries
    oracle = session.oracle()
    env = session.environment
    version = session.options.containerd
    golden = {
        "format": FORMAT,
        "scenario": scenario.name,
        "scenario_file": os.path.relpath(scenario.path, REPO),
        "scenario_sha256": scenario_sha(scenario.path),
        "containerd": env.get("containerd") or version,
        "go": env.get("go", ""),
        "erofs-utils": env.get("erofs-utils", ""),
        "kernel": env.get("kernel", ""),
        "command": command or shlex.join(["layerconf"] + sys.argv[1:]),
        "rerecord": shlex.join(["layerconf", "golden", "record",
                                os.path.relpath(scenario.path, REPO), "--containerd", version]),
        "source_date_epoch": scenario.source_date_epoch,
        "media_types": {},
        "tars": {},
    }
    with state.build(scenario, oracle, session.base) as st:
        golden["state"] = snapshot_state(st.lower_root, st.upper_dir)
        golden["lower_mounts"] = st.lower_mounts
        for mt in scenario.media_types:
            go = runner.go_compare(oracle, "erofs", st, mt, scenario.source_date_epoch)
            rec = {"descriptor": go.descriptor, "labels": go.labels or {},
                   "error": normalise_error(go.error, st.lower_root) if go.error else None}
            if go.tar is not None and not go.error:
                sha = _sha(go.tar)
                rec.update(tar_sha256=sha, tar_size=len(go.tar), entries=list_entries(go.tar))
                if len(go.tar) <= MAX_TAR:
                    golden["tars"].setdefault(sha, {"size": len(go.tar), "zstd_b64": _zstd(go.tar)})
                    rec["tar"] = sha
                # What only the blob can show (it is not stored): gzip/zstd framing, digest.
                problems = compression_problems(go)
                if go.blob is not None and (go.descriptor or {}).get("digest") != "sha256:" + _sha(go.blob):
                    problems.append(f"go-erofs descriptor digest {go.descriptor.get('digest')} "
                                    "is not the blob's digest")
                rec["blob_sha256"] = _sha(go.blob) if go.blob is not None else None
                rec["blob_problems"] = problems
            golden["media_types"][mt] = rec
    return golden


def write_golden(golden: dict, golden_dir: Path | str | None = None) -> Path:
    import json
    path = golden_path(golden["scenario"], golden_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def load_golden(scenario_name: str, golden_dir: Path | str | None = None) -> dict | None:
    import json
    path = golden_path(scenario_name, golden_dir)
    if not path.exists():
        return None
    return json.loads(path.read_text())


# -- checking offline ------------------------------------------------------------------------

@dataclass
class RecordedState:
    """What runner.reference_compare needs from a state, for a recorded one."""
    lower_root: str
    upper_dir: str
    lower_mounts: list


def _go_outcome(rec: dict, tars: dict, ref: Outcome, mt: str) -> tuple[Outcome, list[str]]:
    """containerd's recorded outcome, and the problems only the record can show."""
    go = Outcome(producer="go-erofs", media_type=mt, descriptor=rec.get("descriptor"),
                 labels=rec.get("labels") or {}, error=rec.get("error"))
    problems = list(rec.get("blob_problems") or [])
    if go.error:
        return go, problems
    sha, size = rec.get("tar_sha256"), rec.get("tar_size")
    stored = tars.get(rec.get("tar") or "")
    if stored is not None:
        go.tar = _unzstd(stored["zstd_b64"], stored["size"])
        if _sha(go.tar) != sha:
            problems.append(f"the golden record is inconsistent: tar_sha256 says {sha}, but the "
                            f"stored tar hashes to {_sha(go.tar)} (a corrupt or edited golden: "
                            "re-record it)")
    ref_sha = _sha(ref.tar) if ref.tar is not None and not ref.error else None
    if ref_sha is not None and sha != ref_sha:
        problems.append(f"tar sha256: go-erofs (golden)={sha} ({size} bytes) "
                        f"{ref.producer}={ref_sha} ({len(ref.tar)} bytes)")
    if go.tar is None and sha == ref_sha:
        go.tar = ref.tar                   # not stored, but proven identical by its digest
    if mt == OCI_TAR and go.tar is not None and _sha(go.tar) == sha:
        go.blob = go.tar                   # uncompressed: the blob is the tar
    return go, problems


def check_scenario(scenario, golden: dict | None, version: str) -> ScenarioResult:
    """The reference (containerd profile of `version`, and the spec attribution) against a golden
    record, on the recorded state: no oracle, no mounts, no root."""
    start = time.monotonic()
    result = ScenarioResult(scenario=scenario.name, path=scenario.path, status=Status.PASS)
    if golden is None:
        result.status = Status.SKIP
        result.message = f"no golden recording (run `layerconf golden record {scenario.path}`)"
        return result
    if golden.get("containerd") != version:
        result.status = Status.SKIP
        result.message = (f"golden recorded with containerd {golden.get('containerd')}, not "
                          f"{version} (run `layerconf golden record {scenario.path} "
                          f"--containerd {version}`)")
        return result
    if golden.get("scenario_sha256") and os.path.exists(scenario.path) and \
            scenario_sha(scenario.path) != golden["scenario_sha256"]:
        result.status = Status.SKIP
        result.message = ("the scenario file changed since its golden recording (run "
                          f"`layerconf golden record {scenario.path}`)")
        return result
    result.environment = {"containerd": golden.get("containerd"), "go": golden.get("go", ""),
                          "erofs-utils": golden.get("erofs-utils", ""),
                          "kernel": golden.get("kernel", ""), "backend": "golden"}
    try:
        _check_all(scenario, golden, version, result)
    except Exception as e:   # an engine bug: still a result
        from . import runner
        runner.internal_error(result, e)
    else:
        from . import runner
        runner.conclude(result)
    result.duration = time.monotonic() - start
    return result


def _check_all(scenario, golden, version, result):
    from . import runner
    manifest = golden["state"]
    fs = fsview.RecordedFS(manifest)
    st = RecordedState(manifest["lower_root"], manifest["upper_dir"], golden.get("lower_mounts") or [])
    epoch = scenario.source_date_epoch
    cd_profile = profiles.containerd_profile(version)
    expect_error = scenario.expected(version)[1]
    pairs = []
    for mt in scenario.media_types:
        rec = golden["media_types"].get(mt)
        if rec is None:
            result.checks.append(Check(f"compare {mt}: go-erofs (golden)", Status.SKIP,
                                       "no golden output for this media type (re-record)"))
            continue
        ref = runner.reference_compare(st, mt, cd_profile, epoch, fs=fs)
        go, problems = _go_outcome(rec, golden.get("tars") or {}, ref, mt)
        check = check_pair(go, ref, expect_error, st.lower_root, epoch)
        if go.tar is not None:
            check = name_quirk(check, go, ref, cd_profile, lambda prof, mt=mt: runner.reference_compare(
                st, mt, prof, epoch, fs=fs), st.lower_root)
        if problems:
            check.status = Status.FAIL
            check.explanation = "\n".join([check.explanation] + problems if check.explanation
                                          else problems)
        result.outcomes += [go, ref]
        result.checks.append(check)
        pairs.append((go, ref))
    if not pairs:
        return
    go, ref = next(((g, r) for g, r in pairs if g.media_type == OCI_TAR), pairs[0])
    if same(go, ref, st.lower_root) and (go.error or go.tar is not None):
        mt = go.media_type
        result.checks.append(runner.attribute_spec(
            scenario, go, cd_profile,
            lambda prof: runner.reference_compare(st, mt, prof, epoch, fs=fs), st.lower_root))


def check_file(path, version: str, golden_dir: Path | str | None = None) -> ScenarioResult:
    """One scenario file in golden mode (apply scenarios and invalid files become results)."""
    from .scenario import ScenarioError, load
    if is_apply_file(path):
        return ScenarioResult(scenario=str(path), path=str(path), status=Status.SKIP,
                              message="an apply scenario: golden mode covers Compare scenarios only")
    try:
        scenario = load(path)
    except ScenarioError as e:
        return ScenarioResult(scenario=str(path), path=str(path), status=Status.ERROR, message=str(e))
    return check_scenario(scenario, load_golden(scenario.name, golden_dir), version)
