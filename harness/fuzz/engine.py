"""The fuzz loop: Hypothesis generates scenario data, the one runner runs it, Hypothesis shrinks
what fails, and the minimal case is written as a scenario file that `layerconf run` reproduces.

Why `@given` run programmatically (not `hypothesis.find`): `find` stops at the first failing
example of any kind and reports nothing else, while `@given` lets the test function count the
passing and quirk-explained (xfail) cases it sees and tells distinct failures apart (one
exception class per failure signature). Each round runs until a failure is found and shrunk, then
a new round continues with that signature counted as already reported.

Why `@seed` with the example database off: a run is a function of `--seed` and the example count
alone (the database would replay earlier failures first and change what a seed does). What
lasts are the written scenario files; `report_multiple_bugs` is off because Hypothesis keeps
searching for further bugs for a wall-clock time, which would make a seeded run depend on speed.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis.errors import HypothesisException

from .. import runner
from ..result import ScenarioResult, Status
from ..scenario import ScenarioError, load
from .compare import compare_cases
from .tars import apply_cases

TARGETS = ("compare", "apply")
FAILING = (Status.FAIL, Status.ERROR, Status.XPASS)
_MEDIA = re.compile(r"application/[\w.+-]+")


class _Stop(BaseException):
    """Time is up: ends the Hypothesis run without being taken for a failure."""


class Finding(Exception):
    """A failing status; one subclass per signature so Hypothesis keeps them apart."""


_FINDING_CLASSES: dict[str, type] = {}


def _finding(sig: str) -> type:
    if sig not in _FINDING_CLASSES:
        _FINDING_CLASSES[sig] = type(f"Finding_{len(_FINDING_CLASSES)}", (Finding,), {})
    return _FINDING_CLASSES[sig]


def signature(result: ScenarioResult) -> str:
    """What tells one failure from another: status and failing checks, media types masked."""
    checks = sorted({re.sub(r"/\S+", "<path>", _MEDIA.sub("<mt>", c.name))
                     for c in result.checks if c.status in FAILING})
    if checks:
        return f"{result.status.value}: " + "; ".join(checks)
    first = (result.message or "").splitlines()[0] if result.message else ""
    first = re.sub(r"/\S+", "<path>", first)
    first = re.sub(r"b?'(?:[^'\\]|\\.)*'|b?\"(?:[^\"\\]|\\.)*\"", "<name>", first)
    first = re.sub(r"\b[0-9a-f]{8,}\b|\d+", "N", first)
    return f"{result.status.value}: {first[:120]}"


def _slug(sig: str) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", sig.lower()).strip("-")[:50].strip("-")
    return f"{words}-{hashlib.sha256(sig.encode()).hexdigest()[:8]}"


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, s: str):
    style = "|" if "\n" in s and s.isprintable() is False and all(
        c == "\n" or c.isprintable() for c in s) and not s.endswith((" ", "\n ")) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)


_Dumper.add_representer(str, _str)


def scenario_text(data: dict) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100,
                     default_flow_style=None)


def case_files(target: str, case) -> tuple[dict, dict[str, bytes]]:
    """(scenario data, extra files beside the YAML) for a generated case."""
    if target == "compare":
        return case, {}
    return case.scenario("./blob"), {"blob": case.blob}


@dataclass
class TargetStats:
    cases: int = 0                 # generated cases run (shrink steps not included)
    shrink_steps: int = 0
    runs: int = 0                  # cases the runner ran (a repeated one reuses its result)
    seconds: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    quirks: Counter = field(default_factory=Counter)       # xfail cases per quirk
    repeats: Counter = field(default_factory=Counter)      # failures already written this run
    findings: list = field(default_factory=list)           # (signature, file)


@dataclass
class FuzzOptions:
    seconds: float = 60.0
    seed: int = 0
    targets: tuple = TARGETS
    out: str = "fuzz-findings"
    max_examples: int = 100_000
    shrink_seconds: float = 180.0   # a shrink may run past --seconds by at most this


class Fuzzer:
    def __init__(self, options: FuzzOptions, session: runner.Session, log=print):
        self.o, self.session, self.log = options, session, log
        self.stats = {t: TargetStats() for t in options.targets}
        self.reported: set[str] = set()
        self.restarts = 0            # oracle restarts after it died
        self.cache: dict[str, ScenarioResult] = {}
        self.cache_hits = 0

    # -- one case ---------------------------------------------------------------------------
    def run_case(self, target: str, case) -> ScenarioResult:
        """Run a case; a case identical to a recent one (shrinking often rebuilds the same
        scenario from different choices) reuses that result."""
        data, files = case_files(target, case)
        key = hashlib.sha256(scenario_text(data).encode() + b"".join(
            hashlib.sha256(v).digest() for v in files.values())).hexdigest()
        if key in self.cache:
            self.cache_hits += 1
            return self.cache[key]
        result = self._run(target, data, files)
        if result.status == Status.ERROR and "Go oracle" in result.message:
            # The oracle died (a crash, or a kill from outside): later cases would all fail the
            # same way. Start a fresh session and run the case once more; only a case that
            # fails again is a finding.
            self.restarts += 1
            self.log(f"[{target}] restarting the oracle: {result.message.splitlines()[0]}",
                     flush=True)
            self.session.close()
            result = self._run(target, data, files)
        if len(self.cache) >= 1000:
            self.cache.pop(next(iter(self.cache)))
        self.cache[key] = result
        return result

    def _run(self, target: str, data: dict, files: dict) -> ScenarioResult:
        d = os.path.join(self.session.base, f"fuzz-{target}")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for name, content in files.items():
            Path(d, name).write_bytes(content)
        path = Path(d, "case.yaml")
        path.write_text(scenario_text(data))
        try:
            scenario = load(path, root=d)
        except ScenarioError as e:   # a generator bug: shrink it like any other failure
            msg = re.sub(r"^\S+:\d+: ", "", str(e).splitlines()[0])
            return ScenarioResult(scenario="case", path=str(path), status=Status.ERROR,
                                  message=f"generated scenario rejected by the loader: {msg}")
        return runner.run_scenario(scenario, self.session)

    # -- one target -------------------------------------------------------------------------
    def run_target(self, target: str, seconds: float, examples: int):
        stats = self.stats[target]
        strategy = compare_cases() if target == "compare" else apply_cases()
        start = time.monotonic()
        deadline = start + seconds
        rnd = 0
        while stats.cases < examples and time.monotonic() < deadline:
            failures: dict[str, tuple] = {}
            order: list[str] = []
            shrink_deadline = [None]

            def test(case):
                now = time.monotonic()
                if shrink_deadline[0] is None and (now > deadline or stats.cases >= examples):
                    raise _Stop()
                if shrink_deadline[0] is not None and now > shrink_deadline[0]:
                    raise _Stop()
                hits = self.cache_hits
                result = self.run_case(target, case)
                stats.runs += self.cache_hits == hits
                if shrink_deadline[0] is None:
                    stats.cases += 1
                    stats.statuses[result.status.value] += 1
                else:
                    stats.shrink_steps += 1
                if result.status in FAILING:
                    sig = signature(result)
                    if sig in self.reported:
                        stats.repeats[sig] += shrink_deadline[0] is None
                        return
                    if shrink_deadline[0] is None:
                        shrink_deadline[0] = time.monotonic() + self.o.shrink_seconds
                        self.log(f"[{target}] new failure after {stats.cases} case(s), "
                                 f"shrinking: {sig}", flush=True)
                    failures[sig] = (case, result)
                    order.append(sig)
                    raise _finding(sig)(sig)
                if result.status == Status.XFAIL and shrink_deadline[0] is None:
                    for c in result.checks:
                        if c.status == Status.XFAIL:
                            stats.quirks.update(c.quirks)

            fn = settings(database=None, max_examples=max(1, examples - stats.cases),
                          deadline=None, derandomize=False, report_multiple_bugs=False,
                          phases=(Phase.generate, Phase.shrink), verbosity=Verbosity.quiet,
                          suppress_health_check=list(HealthCheck), print_blob=False)(
                given(strategy)(test))
            fn = seed(self.o.seed * 1009 + rnd)(fn)
            stopped = False
            try:
                fn()
            except _Stop:
                stopped = True
            except (Finding, HypothesisException):
                pass   # the failures are in `failures`; a flaky one is written as it was seen
            except BaseExceptionGroup as e:
                if not e.subgroup(lambda x: isinstance(x, (Finding, BaseExceptionGroup))):
                    raise
            if order:
                final = order[-1]   # Hypothesis replays the minimal example last
                for sig in dict.fromkeys(reversed(order)):
                    case, result = failures[sig]
                    how = ("shrunk to a minimal case" if sig == final and not stopped else
                           "not fully shrunk: time ran out" if sig == final else
                           "not shrunk: seen while shrinking another failure")
                    stats.findings.append((sig, self.write(target, case, result, sig, rnd, how)))
                    self.reported.add(sig)
            if stopped or not order:
                break
            rnd += 1
        stats.seconds += time.monotonic() - start

    # -- writing a finding ------------------------------------------------------------------
    def write(self, target, case, result: ScenarioResult, sig: str, rnd: int, how: str) -> str:
        data, files = case_files(target, case)
        name = f"{target}-{_slug(sig)}"
        os.makedirs(self.o.out, exist_ok=True)
        if files:
            blob_name = f"{name}.blob"
            Path(self.o.out, blob_name).write_bytes(files["blob"])
            data, _ = case.scenario(f"./{blob_name}"), None
        lines = [f"Found by `layerconf fuzz --target {target} --seed {self.o.seed}` (round {rnd}; "
                 f"{how}).", f"Signature: {sig}"]
        for c in result.checks:
            if c.status in FAILING:
                lines.append(f"[{c.status.value}] {c.name}")
                lines += c.explanation.splitlines()[:12]
        if not result.checks and result.message:
            lines += result.message.splitlines()[:12]
        if target == "apply":
            lines.append(f"Blob: {case.recipe}.")
        lines.append("Verdict: not yet triaged.")
        data = dict(data, description="\n".join(lines), tags=["fuzz"])
        data = {k: data[k] for k in ("description", "tags", *[k for k in data if k not in
                                                                ("description", "tags")])}
        path = Path(self.o.out, f"{name}.yaml")
        path.write_text(f"# Minimal case written by `layerconf fuzz`; `layerconf run --backend host "
                        f"{path}` reproduces it.\n" + scenario_text(data))
        self.log(f"[{target}] wrote {path}", flush=True)
        return str(path)

    def run(self) -> dict:
        n = len(self.o.targets)
        for t in self.o.targets:
            self.run_target(t, self.o.seconds / n, self.o.max_examples // n)
        return self.stats


def summary(stats: dict[str, TargetStats]) -> list[str]:
    out = []
    for t, s in stats.items():
        rate = s.runs / s.seconds if s.seconds else 0.0
        out.append(f"{t}: {s.cases} case(s) + {s.shrink_steps} shrink step(s), {s.runs} run in "
                   f"{s.seconds:.0f} s = {rate:.2f} cases/s; "
                   + ", ".join(f"{n} {k}" for k, n in sorted(s.statuses.items())))
        for q, n in sorted(s.quirks.items()):
            out.append(f"  known (xfail) {q}: {n} case(s)")
        for sig, n in sorted(s.repeats.items()):
            out.append(f"  seen again: {sig}: {n} case(s)")
        for sig, path in s.findings:
            out.append(f"  NEW {sig}\n      -> {path}")
    return out
