"""The one runner: the CLI, the pytest plugin and the VM agent all call run_scenario/run_file.

One scenario = build its state with containerd's snapshotter (via the oracle), run the Go erofs
differ, the Go walking differ and the reference (containerd profile and `spec` profile) on the same
on-disk state, and compare.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass

from . import (capabilities, chroot, corpus, daemon, erofs_utils, fsops, goerofs, mkfs_shim,
               overlayopts, phases, roundtrip, spool, srctree, state)
from .checks.paths import check_paths
from .applycheck import apply_checks, cross_decode
from .oracle import ContainerdError, Oracle, OracleError, ensure_built, resolve
from .reference import compare as ref_compare
from .reference import compression, profiles
from .report.artifacts import result_dict
from .result import Check, Outcome, ScenarioResult, Status
from .scenario import Scenario, ScenarioError, load
from .scenario.model import OCI_TAR
from .verdict import check_pair, check_walking, explain_tar, name_quirk, same


@dataclass
class RunOptions:
    containerd: str = ""                 # containerd version, commit or source tree; "" = the
                                         # default in oracle/versions.txt (resolved: oracle.resolve)
    workdir: str | None = None           # where states and the oracle root live (tmp by default)
    keep: str | None = None              # keep artifacts of failing scenarios here
    keep_all: bool = False               # keep artifacts of every scenario
    walking: bool = True                 # the three-way view
    round_trip: bool = True              # Apply containerd's Compare blob and mount it
    build: bool = True                   # build the oracle if missing
    timeout: float = 300.0               # deadline of each external call (oracle request, mkfs,
                                         # mount); a scenario's `timeout:` key overrides it
    mkfs: str = ""                       # erofs-utils version (erofs-utils/versions.txt); "" =
                                         # the system's mkfs.erofs
    overlay: tuple[str, ...] = ()        # overlay mount options of the upper's overlay (the
                                         # snapshotter's ovl_mount_options); a scenario's add to them
    path: str = "direct"                 # how containerd is reached: "daemon" (a real containerd,
                                         # through its API), "direct" (the oracle wires containerd's
                                         # components in-process), "both" (each, then compared).
                                         # `layerconf run` and the pytest plugin default to
                                         # DEFAULT_PATH; the in-process tools (fuzz, bisect, matrix,
                                         # golden, export) to direct (README: "Two paths")
    writer: str = "mkfs"                 # whose images of a tar layer are checked against its
                                         # meaning: mkfs (containerd's layer.erofs), go-erofs
                                         # (oracle/goerofs/), all (both); see harness/goerofs.py

    start_dir: str | None = None         # names of files outside scenarios/ are relative to it
    timeout_scale: float = 1.0           # every deadline (timeout, a scenario's and its ops')
                                         # times this: a TCG guest on shared cores (VMBackend)

    def __post_init__(self):
        if self.path not in PATHS + ("both",):
            raise OracleError(f"unknown path {self.path!r}: use daemon, direct or both")
        self.containerd = resolve(self.containerd)
        self.writers = goerofs.writers(self.writer)
        self.start_dir = self.start_dir or os.getcwd()   # the host's, also inside the VM
        self.overlay = overlayopts.normalise(self.overlay)   # a list when it came through JSON


PATHS = ("daemon", "direct")
DEFAULT_PATH = "daemon"     # containerd's users' path (README: "Two paths")


class Session:
    """Long-lived per-process resources (the oracle). Reused across scenarios; close() at the end."""

    def __init__(self, options: RunOptions | None = None):
        self.options = options or RunOptions()
        self._oracles: dict[tuple, Oracle] = {}
        self._started = 0
        self._tmp = None
        self.environment: dict = {}
        self.timeout = self.options.timeout * self.options.timeout_scale
        self.dead_logs: list[tuple[str, str]] = []   # (root, log tail) of oracles that died
        self.tree = srctree.lookup(self.options.containerd)   # a source tree's record, or None
        self._build_error: OracleError | None = None           # a failed build is not retried
        # the path session.oracle() serves ("both" runs each scenario once per path)
        self.path = "daemon" if self.options.path == "both" else self.options.path
        self._built: set[str] = set()

    def set_timeout(self, seconds: float):
        """The deadline of every external call from now on (one scenario's `timeout:`)."""
        self.timeout = seconds * self.options.timeout_scale
        for oracle in self._oracles.values():
            oracle.timeout = self.timeout

    def oracle_logs(self) -> dict[str, str]:
        """Log tails of the oracles of this session, dead ones included (for artifacts)."""
        out = {f"oracle-{os.path.basename(root)}.log": tail for root, tail in self.dead_logs}
        for o in self._oracles.values():
            out[f"oracle-{os.path.basename(o.root)}.log"] = o.log_tail(200)
        return out

    @property
    def base(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="layerconf-", dir=self.options.workdir)
        return self._tmp

    def oracle(self, mkfs_options=(), tar_index: bool = False, overlay=None) -> Oracle:
        """The oracle for an erofs differ and snapshotter configuration on the session's path
        (one process each, started once); `overlay`: the overlay options (default: the run's)."""
        overlay = self.options.overlay if overlay is None else tuple(overlay)
        key = (tuple(mkfs_options), tar_index, overlay, self.path)
        old = self._oracles.get(key)
        if old is not None and not old.alive:
            # Killed at a deadline (or crashed): its mounts and snapshots are gone with it, so
            # later cases get a fresh one on a fresh root.
            self.dead_logs.append((old.root, old.log_tail(40)))
            old.close()
            state.force_unmount_under(old.root)
            del self._oracles[key]
        if key not in self._oracles:
            if not self._started:
                try:
                    erofs_utils.use(self.options.mkfs)
                except erofs_utils.ErofsUtilsError as e:
                    raise OracleError(f"cannot use erofs-utils {self.options.mkfs}: {e}") from None
            self._build(self.path)
            self._started += 1
            root = os.path.join(self.base, f"root{self._started}")
            recording = mkfs_recording(self.base, root)
            ctrd = None
            if self.path == "daemon":   # the daemon runs mkfs.erofs: it gets the recording shim
                ctrd = daemon.Daemon(self.options.containerd, self.base, mkfs_options=key[0],
                                     tar_index=tar_index, ovl_options=overlay,
                                     timeout=max(60.0, self.timeout), env=recording)
            oracle = Oracle(self.options.containerd, root, mkfs_options=key[0],
                            tar_index=tar_index, overlay=overlay, timeout=self.timeout,
                            env=recording, daemon=ctrd).start()
            self._oracles[key] = oracle
            if self.environment.get("path") != self.path:
                info = oracle.version_info()
                self.environment.update({
                    "containerd": info.get("containerd") or self.options.containerd,
                    "go": info.get("go", ""),
                    "erofs-utils": info.get("mkfs", ""),
                    "kernel": platform.release(),
                    "backend": "host",
                    "capabilities": capabilities.probe(),
                })
                self.environment["path"] = self.path
                if info.get("daemon"):
                    d = info["daemon"]
                    self.environment["containerd-daemon"] = f"{d.get('version')} ({d.get('revision') or 'no revision'})"
                if self.tree:
                    t = self.tree
                    self.environment["containerd"] = self.options.containerd
                    self.environment["containerd-tree"] = (
                        f"{t['path']} (content sha256 {t['sha256']}, base {t['base']} from "
                        f"{t['base_from']})")
        return self._oracles[key]

    def mkfs_seconds(self, since: float) -> dict:
        """{"mkfs": seconds} of the mkfs.erofs runs containerd made since wall time `since`
        (from the recording shim's log), or {} when there were none."""
        total = 0.0
        for oracle in self._oracles.values():
            records, _ = mkfs_shim.read_log(getattr(oracle, "env", {}).get(mkfs_shim.LOG_ENV))
            total += sum(r.get("seconds", 0.0) for r in records if r.get("end", 0.0) >= since)
        return {"mkfs": round(total, 4)} if total else {}

    def _build(self, path: str):
        """Build (once) what the path needs: the oracle, and containerd itself for the daemon."""
        if not self.options.build or path in self._built:
            return
        if self._build_error is not None:
            raise self._build_error
        try:
            ensure_built(self.options.containerd)
            if path == "daemon":
                daemon.ensure_built(self.options.containerd)
            mkfs_shim.ensure_built()
        except OracleError as e:
            self._build_error = e
            raise
        self._built.add(path)

    @contextlib.contextmanager
    def using(self, path: str):
        """session.oracle() serves `path` inside the block."""
        old, self.path = self.path, path
        try:
            yield
        finally:
            self.path = old

    def close(self):
        for oracle in self._oracles.values():
            oracle.close()
        self._oracles.clear()
        if self._tmp is not None:
            state.force_unmount_under(self._tmp)
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def mkfs_recording(base: str, root: str) -> dict:
    """The oracle's environment for a recording mkfs.erofs (harness/mkfs_shim.py): containerd's
    argv and fed byte count land in <root>/mkfs-calls.jsonl. Empty when mkfs.erofs is missing
    (the capability check reports that); mkfs_shim.ShimError (an OracleError) when the shim is
    not built."""
    try:
        return mkfs_shim.install(os.path.join(base, "mkfs-shim"),
                                 os.path.join(root, "mkfs-calls.jsonl"))
    except OSError:
        return {}


# -- one scenario ---------------------------------------------------------------------------

def run_scenario(scenario: Scenario, session: Session) -> ScenarioResult:
    """One scenario on the session's path; with path "both", on the daemon path and the direct
    path, the daemon's result with one more check: where the two paths' results differ."""
    since = time.time()
    with phases.recording() as times:
        if session.options.path != "both":
            result = _run_scenario(scenario, session)
        else:
            results = {}
            for path in PATHS:
                with session.using(path):
                    results[path] = _run_scenario(scenario, session)
            result = results["daemon"]
            if result.status not in (Status.ERROR, Status.SKIP):
                result.checks.append(check_paths(results["direct"], results["daemon"]))
                conclude(result)
            result.duration = sum(r.duration for r in results.values())
            result.environment["path"] = "both"
            result.files.update({f"direct-{k}": v for k, v in results["direct"].files.items()})
    times.update(session.mkfs_seconds(since))
    result.phases = times
    if session.options.keep and (result.status.failed or session.options.keep_all):
        result.files.update(session.oracle_logs())     # after the phases: result.json has them
        result.artifacts = _keep(result, session.options.keep)
    return result


def _run_scenario(scenario: Scenario, session: Session) -> ScenarioResult:
    start = time.monotonic()
    result = ScenarioResult(scenario=scenario.name, path=scenario.path, status=Status.PASS)
    missing = capabilities.missing(scenario.requires)
    if missing:
        result.status = Status.SKIP
        result.message = "missing capabilities: " + ", ".join(missing)
        return result
    try:
        corpus.fetch(corpus.names_in(scenario.raw), log=lambda message: None)
    except corpus.CorpusError as e:
        result.status = Status.ERROR
        result.message = f"the scenario's corpus file could not be fetched: {e}"
        return result
    session.set_timeout(scenario.timeout or session.options.timeout)
    stage = ["starting the Go oracle"]        # what was running when an engine error came
    try:
        overlay = overlayopts.merge(session.options.overlay, scenario.overlay)
        with phases.phase("oracle_start"):
            oracle = session.oracle(overlay=overlay)
        result.environment = dict(session.environment)
        if overlay:
            result.environment["overlay"] = overlayopts.label(overlay)
        if scenario.compares:
            stage[0] = "building the scenario's state"
            with state.build(scenario, oracle, session.base) as st:
                for line, log in st.logs:          # what each `run` op printed
                    result.files[f"run-line{line}.log"] = log
                stage[0] = "capturing the merged upper"
                with phases.phase("round_trip"):
                    before = (roundtrip.capture_upper(oracle, st) if session.options.round_trip
                              else None)
                stage[0] = "running Compare"
                _compare_all(scenario, session, oracle, st, result)
                if before is not None:
                    stage[0] = "running the round trip"
                    with phases.phase("round_trip"):
                        result.checks += _round_trip(scenario, session, oracle, st, result, before)
                stage[0] = "cross-decoding the reference's blobs"
                with phases.phase("cross_decode"):
                    result.checks += cross_decode(session, result.outcomes)
                for case in scenario.apply_cases:
                    if case.from_compare:
                        stage[0] = f"applying the case at line {case.line}"
                        with phases.phase("apply"):
                            result.checks += apply_checks(case, session, st, list(result.outcomes),
                                                          record=result.outcomes, files=result.files)
        for case in scenario.apply_cases:
            if not case.from_compare:
                stage[0] = f"applying the case at line {case.line}"
                with phases.phase("apply"):
                    result.checks += apply_checks(case, session, record=result.outcomes,
                                                  files=result.files)
    except (OracleError, state.StateError, capabilities.CapabilityError) as e:
        result.status, result.message = Status.ERROR, f"{scenario.path}: while {stage[0]}: {e}"
    except ContainerdError as e:
        result.status = Status.ERROR
        result.message = f"{scenario.path}: containerd failed while {stage[0]}: {e}"
    except Exception as e:  # an engine bug: still a result, never a crash of the whole run
        internal_error(result, e)
    else:
        conclude(result)
    result.duration = time.monotonic() - start
    return result


def internal_error(result: ScenarioResult, e: Exception):
    result.status = Status.ERROR
    result.message = f"internal error: {type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}"


def conclude(result: ScenarioResult):
    """The scenario's status is its worst check; its message that check's first line."""
    result.status = ScenarioResult.worst(c.status for c in result.checks)
    result.message = next((c.explanation.splitlines()[0] for c in result.checks
                           if c.status == result.status and c.explanation and not c.info), "")


def _compare_all(scenario, session, oracle, st, result):
    version = session.options.containerd
    cd_profile = profiles.containerd_profile(version)
    fixed: set[str] = set()
    for mt in scenario.media_types:
        go = go_compare(oracle, "erofs", st, mt, scenario.source_date_epoch)
        ref = reference_compare(st, mt, cd_profile, scenario.source_date_epoch)
        if session.tree and not same(go, ref, st.lower_root):
            # A source tree may fix quirks of its base version: the reference without them.
            run_ref = lambda prof, mt=mt: reference_compare(st, mt, prof, scenario.source_date_epoch)
            gone = fixed_quirks(go, ref, cd_profile, run_ref, st.lower_root)
            if gone:
                fixed |= set(gone)
                ref = run_ref(cd_profile.without(*gone))
        result.outcomes += [go, ref]
        epoch = scenario.source_date_epoch
        check = check_pair(go, ref, scenario.expected(version)[1], st.lower_root, epoch)
        result.checks.append(name_quirk(
            check, go, ref, cd_profile, lambda prof, mt=mt: reference_compare(st, mt, prof, epoch),
            st.lower_root))
    if fixed:
        cd_profile = cd_profile.without(*sorted(fixed))
    tar_mt = _tar_media_type(scenario)
    go = next(o for o in result.outcomes if o.producer == "go-erofs" and o.media_type == tar_mt)
    ref = next(o for o in result.outcomes if o.producer != "go-erofs" and o.media_type == tar_mt)
    if session.options.walking:
        # The walking differ is the yardstick here, not under test: from v2.2 it cannot mount the
        # erofs snapshotter's raw mounts (mount-manager templates; tests/test_daemon_path.py),
        # so it gets them activated by the mount manager, as a container's rootfs is.
        walking = go_compare(oracle, "walking", st, OCI_TAR, scenario.source_date_epoch,
                             activate=True)
        result.outcomes.append(walking)
        if not walking.error or not go.error:
            result.checks.append(check_walking(go, walking))
    if same(go, ref, st.lower_root):
        epoch = scenario.source_date_epoch
        result.checks.append(attribute_spec(
            scenario, go, cd_profile, lambda prof: reference_compare(st, tar_mt, prof, epoch),
            st.lower_root, tree=session.tree, fixed=sorted(fixed)))


def fixed_quirks(go: Outcome, ref: Outcome, cd_profile, run_ref, lower_root) -> list[str] | None:
    """The smallest set of the profile's Compare quirks whose removal makes the reference agree
    with Go (a source tree that fixes them), or None. Only quirks that change the reference's
    output on this state are tried, at most 4 of them (16 combinations)."""
    from itertools import combinations
    toggles = sorted(q for q in cd_profile.quirks
                     if profiles.QUIRKS_BY_NAME[q].scope in ("compare", "mounts"))
    changing = [q for q in toggles if not same(ref, run_ref(cd_profile.without(q)), lower_root)]
    for n in range(1, min(len(changing), 4) + 1):
        for combo in combinations(changing, n):
            if same(go, run_ref(cd_profile.without(*combo)), lower_root):
                return list(combo)
    return None


def _not_shown(quirks, base: str, tree: dict) -> str:
    """The plain message for a quirk of the base version that a source tree no longer shows."""
    return "\n".join(f"quirk {q} ({profiles.QUIRKS_BY_NAME[q].spec_id}) expected for {base} does "
                     f"not show on {tree['path']}: the tree fixes it, or the registry is stale"
                     for q in sorted(quirks))


def _tar_media_type(scenario) -> str:
    """The media type whose Go output the spec attribution and the round trip look at."""
    return OCI_TAR if OCI_TAR in scenario.media_types else scenario.media_types[0]


def _round_trip(scenario, session, oracle, st, result, before) -> list[Check]:
    tar_mt = _tar_media_type(scenario)
    go = next((o for o in result.outcomes if o.producer == "go-erofs" and o.media_type == tar_mt),
              None)
    profile = profiles.containerd_profile(session.options.containerd)
    trees: dict = {}
    out = [roundtrip.round_trip(oracle, st, go, *before, profile, epoch=scenario.source_date_epoch,
                                trees=trees)]
    if "go-erofs" in session.options.writers:
        out.append(roundtrip.writer_round_trip(oracle, st, go, *before, profile,
                                               epoch=scenario.source_date_epoch,
                                               mkfs_after=trees.get("mkfs"),
                                               timeout=session.timeout))
    return out


def go_compare(oracle, differ, st, media_type, epoch, activate: bool = False) -> Outcome:
    with phases.phase("go_compare"):
        return _go_compare(oracle, differ, st, media_type, epoch, activate)


def _go_compare(oracle, differ, st, media_type, epoch, activate: bool = False) -> Outcome:
    out = Outcome(producer=f"go-{differ}", media_type=media_type)
    try:
        resp = oracle.compare(differ, st.lower_key, st.upper_key, media_type, epoch,
                              activate=activate)
    except ContainerdError as e:
        out.error = str(e)
        return out
    out.descriptor, out.labels = resp["descriptor"], resp.get("labels") or {}
    out.blob = spool.load(resp["blob"])
    try:
        tar = spool.Spool()
        compression.decompress_to(out.blob, tar.write)
        out.tar = tar.value()
    except Exception as e:
        out.error = f"the reference could not decode containerd's blob: {e}"
    return out


def reference_compare(st, media_type, profile, epoch, fs=None) -> Outcome:
    """The reference on a state (anything with lower_root, upper_dir, lower_mounts); `fs` reads
    the filesystem (the real one by default, a RecordedFS in golden mode)."""
    out = Outcome(producer=f"ref@{profile.name}", media_type=media_type)
    try:
        with phases.phase("ref_compare"):
            r = ref_compare.compare(st.lower_root, st.upper_dir, media_type=media_type,
                                    profile=profile, source_date_epoch=epoch,
                                    lower_mounts=st.lower_mounts, fs=fs)
    except ref_compare.CompareError as e:
        out.error = str(e)
        return out
    out.descriptor, out.labels, out.blob, out.tar = r.descriptor, r.labels, r.blob, r.tar
    return out


def attribute_spec(scenario, go: Outcome, cd_profile, run_ref, lower_root: str | None,
                   tree: dict | None = None, fixed=()) -> Check:
    """Go vs the `spec` profile; every difference must be explained by named quirks.

    run_ref(profile) -> Outcome runs the reference for go's media type on the same state (live:
    the mounted state; golden: a RecordedFS); lower_root normalises error texts.

    For a source tree (`tree`, its srctree record), cd_profile is its base version's profile
    without the quirks the tree was seen to fix (`fixed`); a quirk the scenario expects (or that
    was fixed) and that does not show is an xpass that names the tree.

    A quirk is involved when turning it off alone changes the containerd profile's output; the
    involved quirks explain the difference when `spec` plus exactly those quirks reproduces Go.
    """
    mt = go.media_type
    name = f"spec {mt}: go-erofs vs ref@spec"
    spec = run_ref(profiles.SPEC)
    base = profiles.format_version(cd_profile.version)
    expect_quirks = scenario.expected(base)[0]
    expected = set(expect_quirks or ())
    if same(go, spec, lower_root):
        if tree and (expected or fixed):
            return Check(name, Status.XPASS, _not_shown(expected | set(fixed), base, tree),
                         sorted(expected | set(fixed)))
        if expected:
            return Check(name, Status.XPASS, "expected quirks " + ", ".join(sorted(expected)) +
                         " to show, but containerd's output matches the spec: update the scenario "
                         "or the quirk registry", sorted(expected))
        return Check(name, Status.PASS, "containerd's output matches the spec")
    toggles = sorted(q for q in cd_profile.quirks if profiles.QUIRKS_BY_NAME[q].scope in ("compare", "mounts"))
    involved = [q for q in toggles
                if not same(go, run_ref(cd_profile.without(q)), lower_root)]
    rebuilt = run_ref(profiles.SPEC.with_quirks(*involved))
    diff = (f"{go.error or ''} vs {spec.error or ''}".strip(" vs") if go.error or spec.error
            else explain_tar(go.tar, spec.tar, "go-erofs", "ref@spec"))
    if not involved or not same(go, rebuilt, lower_root):
        return Check(name, Status.FAIL, "a difference from the spec that no quirk explains "
                     f"(involved: {', '.join(involved) or 'none'}):\n{diff}", involved)
    if tree and set(involved) <= expected and (expected - set(involved) or fixed):
        gone = expected - set(involved) | set(fixed)
        return Check(name, Status.XPASS, _not_shown(gone, base, tree)
                     + f"\n(still shown: {', '.join(involved)})", sorted(gone))
    if expect_quirks is not None and expected != set(involved):
        return Check(name, Status.FAIL, f"expected quirks {sorted(expected)}, but the difference "
                     f"is explained by {involved}:\n{diff}", involved)
    lines = [f"{q}: {profiles.QUIRKS_BY_NAME[q].description} ({profiles.QUIRKS_BY_NAME[q].reference})"
             for q in involved]
    return Check(name, Status.XFAIL, "known divergence from the spec:\n" + "\n".join(lines) +
                 "\n" + diff, involved)


def _keep(result: ScenarioResult, outdir: str) -> str | None:
    try:
        from .report.artifacts import keep
    except ImportError:
        return None
    return keep(result, result.path, outdir)


# -- entry points ---------------------------------------------------------------------------

_SESSION: Session | None = None


def run_file(path: str, options: dict | None = None) -> dict:
    """Run one scenario file; JSON-safe result dict. Used by the VM agent (one session per guest)."""
    global _SESSION
    opts = RunOptions(**(options or {}))
    if _SESSION is None or _SESSION.options != opts:
        if _SESSION is not None:
            _SESSION.close()
        _SESSION = Session(opts)
    try:
        scenario = load(path, start=opts.start_dir)
    except ScenarioError as e:
        return result_to_dict(ScenarioResult(scenario=str(path), path=str(path),
                                             status=Status.ERROR, message=str(e)))
    return result_to_dict(run_scenario(scaled_op_timeouts(scenario, opts.timeout_scale), _SESSION))


def scaled_op_timeouts(scenario: Scenario, scale: float) -> Scenario:
    """The scenario with the deadlines of its run, copy and sync ops (given or default) times
    `scale`; the oracle's deadlines are scaled by the session."""
    if scale == 1:
        return scenario
    defaults = {"run": chroot.DEFAULT_TIMEOUT, "copy": fsops.COPY_TIMEOUT,
                "sync": fsops.COPY_TIMEOUT}
    ops = tuple(dataclasses.replace(op, timeout=(op.timeout or defaults[op.op]) * scale)
                if op.op in defaults else op for op in scenario.upper)
    return dataclasses.replace(scenario, upper=ops)


def probe_capabilities() -> dict:
    return capabilities.probe()


result_to_dict = result_dict   # JSON-safe: bytes become sha256 + size


def result_from_dict(d: dict) -> ScenarioResult:
    checks = [Check(c["name"], Status(c["status"]), c.get("explanation", ""), c.get("quirks", []),
                    c.get("info", False)) for c in d.get("checks", [])]
    outcomes = [Outcome(producer=o["producer"], media_type=o["media_type"],
                        descriptor=o.get("descriptor"), labels=o.get("labels") or {},
                        error=o.get("error")) for o in d.get("outcomes", [])]
    return ScenarioResult(scenario=d["scenario"], path=d["path"], status=Status(d["status"]),
                          checks=checks, outcomes=outcomes, message=d.get("message", ""),
                          duration=d.get("duration", 0.0), environment=d.get("environment", {}),
                          artifacts=d.get("artifacts"), phases=d.get("phases") or {})
