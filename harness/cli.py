"""layerconf: run layer-differ conformance scenarios.

Exit codes: 0 every scenario matched, 1 a conformance difference, 2 usage or set-up errors.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .result import Status
from .oracle import OracleError
from .scenario import ScenarioError, discover, load

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SCENARIOS = REPO / "scenarios"


class UsageError(Exception):
    pass


def _scenario_files(paths, tags=(), keyword=None) -> list[Path]:
    files = discover(paths or [DEFAULT_SCENARIOS])
    missing = [p for p in (paths or []) if not Path(p).exists()]
    if missing:
        raise UsageError(f"no such scenario file or folder: {', '.join(map(str, missing))}")
    out = []
    for f in files:
        if tags or keyword:
            try:
                s = load(f)
            except ScenarioError:
                out.append(f)          # keep it: running it reports the error
                continue
            if tags and not set(tags) & set(s.tags):
                continue
            if keyword and keyword not in s.name:
                continue
        out.append(f)
    return out


def cmd_run(args) -> int:
    from . import runner
    from .backends import BackendError, open_backend
    from .report import terminal
    files = _scenario_files(args.paths, args.tag, args.k)
    if not files:
        raise UsageError("no scenario matched")
    if getattr(args, "oracle", "live") == "golden":
        return cmd_run_golden(args, files)
    options = runner.RunOptions(containerd=args.containerd, keep=args.keep, keep_all=args.keep_all)
    kernels = ["6.1", "6.12"] if args.kernel == "all" else [args.kernel]
    results = []
    for kernel in (kernels if args.backend == "vm" else [None]):
        try:
            backend = open_backend(args.backend, kernel=kernel or "6.12", options=options)
        except BackendError as e:
            raise UsageError(str(e)) from None
        try:
            for f in files:
                d = backend.run_file(str(f))
                r = runner.result_from_dict(d)
                if kernel and len(kernels) > 1:
                    r.scenario = f"{r.scenario}[{kernel}]"
                results.append(r)
                if not args.quiet:
                    print(f"{r.status.value.upper():6} {r.scenario}", flush=True)
        finally:
            backend.close()
    terminal.print_table(results)
    return _report(results, args)


def cmd_run_golden(args, files) -> int:
    """`run --oracle golden`: the reference against recorded Go outputs (fixtures/golden/); no
    Go toolchain, no root, no VM. Scenarios without a usable recording are skipped, and listed."""
    from . import golden
    from .oracle import default_version
    from .report import terminal
    version = args.containerd or default_version()
    results = []
    for f in files:
        r = golden.check_file(f, version)
        results.append(r)
        if not args.quiet:
            print(f"{r.status.value.upper():6} {r.scenario}", flush=True)
    terminal.print_table(results)
    unchecked = [r for r in results if r.status == Status.SKIP]
    if unchecked:
        print(f"\n{len(unchecked)} scenario(s) not checked offline:")
        for r in unchecked:
            print(f"  {r.scenario}: {r.message}")
    return _report(results, args)


def cmd_golden_record(args) -> int:
    """Record containerd's real Compare outputs for Compare scenarios (host mode: root + Go)."""
    from . import capabilities, golden, runner, state
    files = _scenario_files(args.paths, args.tag, args.k)
    if not files:
        raise UsageError("no scenario matched")
    recorded = skipped = errors = 0
    with runner.Session(runner.RunOptions(containerd=args.containerd)) as session:
        for f in files:
            if golden.is_apply_file(f):
                print(f"SKIP   {f}: an apply scenario (golden mode records Compare scenarios only)")
                skipped += 1
                continue
            try:
                s = load(f)
            except ScenarioError as e:
                print(f"ERROR  {f}: {e}")
                errors += 1
                continue
            if "slow" in s.tags and not args.include_slow:
                print(f"SKIP   {s.name}: tagged slow (use --include-slow)")
                skipped += 1
                continue
            missing = capabilities.missing(s.requires)
            if missing:
                print(f"SKIP   {s.name}: missing capabilities: {', '.join(missing)}")
                skipped += 1
                continue
            try:
                path = golden.write_golden(golden.record_scenario(s, session), args.out)
            except golden.Unrecordable as e:
                print(f"SKIP   {s.name}: not recordable: {e}")
                skipped += 1
                continue
            except (OracleError, state.StateError, runner.ContainerdError) as e:
                print(f"ERROR  {s.name}: {e}")
                errors += 1
                continue
            recorded += 1
            print(f"OK     {s.name} -> {os.path.relpath(path)} ({path.stat().st_size} bytes)",
                  flush=True)
    print(f"{recorded} recorded, {skipped} skipped, {errors} error(s)")
    return 2 if errors else 0


def _report(results, args) -> int:
    """Write the requested JUnit/Markdown files; the exit code for the run."""
    env = next((r.environment for r in results if r.environment), {})
    if args.junit:
        from .report.junit import write_junit
        write_junit(results, args.junit, properties=_props(env), suite_name="layerconf")
    if args.markdown:
        from .report.markdown import write_markdown
        write_markdown(results, args.markdown, _props(env))
    if any(r.status in (Status.FAIL, Status.XPASS) for r in results):
        return 1
    return 2 if any(r.status == Status.ERROR for r in results) else 0


def _props(env: dict) -> dict:
    return {k: str(env[k]) for k in ("containerd", "erofs-utils", "kernel", "backend", "go") if k in env}


CELL = {Status.PASS: "identical", Status.XFAIL: "known quirk", Status.FAIL: "failure",
        Status.XPASS: "failure", Status.ERROR: "error", Status.SKIP: "skip"}


def _versions(selected) -> list[str]:
    from .oracle import versions
    from .reference.profiles import parse_version
    listed = versions()
    for v in selected or []:
        if v not in listed:
            raise UsageError(f"containerd {v} is not listed in oracle/versions.txt ({', '.join(listed)})")
    return sorted(selected or listed, key=parse_version)


def cmd_matrix(args) -> int:
    """Every scenario x every listed containerd version, in host mode."""
    from . import runner
    from .report.junit import write_junit
    files = _scenario_files(args.paths, args.tag, args.k)
    versions = _versions(args.containerd)
    table: dict[str, dict[str, Status]] = {}
    failed = False
    for v in versions:
        results = []
        with runner.Session(runner.RunOptions(containerd=v)) as session:
            for f in files:
                try:
                    r = runner.run_scenario(load(f), session)
                except ScenarioError as e:
                    r = runner.ScenarioResult(scenario=str(f), path=str(f), status=Status.ERROR,
                                              message=str(e))
                results.append(r)
                table.setdefault(r.scenario, {})[v] = r.status
        counts = {c: sum(1 for r in results if CELL[r.status] == c) for c in dict.fromkeys(CELL.values())}
        print(f"containerd {v}: " + ", ".join(f"{n} {c}" for c, n in counts.items()), flush=True)
        failed |= any(r.status.failed for r in results)
        if args.junit_dir:
            os.makedirs(args.junit_dir, exist_ok=True)
            write_junit(results, os.path.join(args.junit_dir, f"containerd-{v}.xml"),
                        properties=_props(results[0].environment if results else {}),
                        suite_name=f"layerconf containerd {v}")
    width = max([len("SCENARIO")] + [len(n) for n in table])
    print(f"{'SCENARIO':<{width}}  " + "  ".join(f"{v:<11}" for v in versions))
    for name, cells in table.items():
        print(f"{name:<{width}}  " + "  ".join(f"{CELL[cells[v]]:<11}" for v in versions))
    return 1 if failed else 0


def go_signature(result) -> dict:
    """What containerd itself produced for a scenario: per Go outcome, its digest or error."""
    from .verdict import normalise_error
    sig = {}
    for o in result.outcomes:
        if o.producer.startswith("go-erofs") and o.producer != "go-erofs-apply":
            key = f"{o.producer} {o.media_type}"
            sig[key] = (f"error: {normalise_error(o.error)}" if o.error else
                        "uncompressed " + (o.labels.get("containerd.io/uncompressed")
                                           or (o.descriptor or {}).get("digest", "?")))
        elif o.producer == "go-erofs-apply":
            d = o.descriptor or {}
            sig[o.media_type] = (f"error: {o.error}" if o.error else
                                            f"{d.get('mediaType')} {d.get('digest')}")
    return sig


def cmd_bisect(args) -> int:
    """The first listed version whose Go output for a scenario differs from the one before."""
    from . import runner
    s = _load_one(args.scenario)
    versions = _versions(args.containerd)
    previous = None
    for v in versions:
        with runner.Session(runner.RunOptions(containerd=v)) as session:
            r = runner.run_scenario(s, session)
        if r.status == Status.ERROR:
            print(f"containerd {v}: error: {r.message}")
            return 2
        sig = go_signature(r)
        print(f"containerd {v}: {len(sig)} Go outcome(s)", flush=True)
        if previous is not None and sig != previous[1]:
            print(f"\nfirst change: containerd {v} (previous listed version: {previous[0]})")
            for key in sorted(set(sig) | set(previous[1])):
                a, b = previous[1].get(key, "(none)"), sig.get(key, "(none)")
                if a != b:
                    print(f"  {key}:\n    {previous[0]}: {a}\n    {v}: {b}")
            return 0
        previous = (v, sig)
    print(f"\nno change across {', '.join(versions)}")
    return 0


def cmd_fuzz(args) -> int:
    """Generated scenarios through the runner; new failures shrunk and written to --out."""
    from .fuzz.cli import run_fuzz
    return run_fuzz(args)


def cmd_validate(args) -> int:
    bad = 0
    files = _scenario_files(args.paths)
    for f in files:
        try:
            load(f)
        except ScenarioError as e:
            bad += 1
            print(e)
    print(f"{len(files) - bad} valid, {bad} invalid")
    return 1 if bad else 0


def cmd_list(args) -> int:
    for f in _scenario_files(args.paths, args.tag, args.k):
        try:
            s = load(f)
        except ScenarioError:
            print(f"{f}  (invalid: run `layerconf validate {f}`)")
            continue
        print(f"{s.name:50} [{', '.join(s.tags)}]  {s.description}")
    return 0


def cmd_show(args) -> int:
    """The layer entries the reference expects for a scenario (needs root: builds the state)."""
    from . import runner
    from .report.explain import list_entries
    s = _load_one(args.scenario)
    with runner.Session(runner.RunOptions(containerd=args.containerd)) as session:
        from . import state
        from .reference import profiles
        with state.build(s, session.oracle(), session.base) as st:
            for mt in s.media_types[:1]:
                out = runner.reference_compare(st, mt, profiles.containerd_profile(session.options.containerd),
                                               s.source_date_epoch)
                if out.error:
                    print(f"error: {out.error}")
                    return 1
                print("\n".join(list_entries(out.tar)))
    return 0


def cmd_repro(args) -> int:
    """Rerun one scenario alone, keep its artifacts, and print where they are."""
    from . import runner
    s = _load_one(args.scenario)
    keep = args.keep or str(Path("artifacts").resolve())
    with runner.Session(runner.RunOptions(containerd=args.containerd, keep=keep, keep_all=True)) as session:
        r = runner.run_scenario(s, session)
    print(f"{r.status.value.upper()} {r.scenario} ({r.duration:.1f} s)")
    for c in r.checks:
        if c.status != Status.PASS:
            print(f"[{c.status.value}] {c.name}\n{c.explanation}\n")
    if r.message and r.status == Status.ERROR:
        print(r.message)
    print(f"artifacts: {r.artifacts}")
    return 1 if r.status.failed else 0


def _load_one(path):
    p = Path(path)
    if not p.exists() and (DEFAULT_SCENARIOS / (str(path) + ".yaml")).exists():
        p = DEFAULT_SCENARIOS / (str(path) + ".yaml")
    return load(p)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="layerconf", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p, paths=True):
        if paths:
            p.add_argument("paths", nargs="*", help="scenario files or folders (default: scenarios/)")
        p.add_argument("--tag", action="append", default=[], help="only scenarios with this tag")
        p.add_argument("-k", default=None, help="only scenarios whose name contains this text")

    p = sub.add_parser("run", help="run scenarios and print a summary")
    common(p)
    p.add_argument("--backend", default=os.environ.get("LAYERCONF_BACKEND", "vm"),
                   choices=("host", "vm", "auto"), help="vm (default, no root needed) or host (root)")
    p.add_argument("--kernel", default="6.12", choices=("6.1", "6.12", "all"))
    p.add_argument("--containerd", default="", help="containerd version (default: oracle/versions.txt)")
    p.add_argument("--keep", default="artifacts", help="folder for failing scenarios' artifacts")
    p.add_argument("--keep-all", action="store_true", help="keep artifacts of passing scenarios too")
    p.add_argument("--junit", help="write JUnit XML here")
    p.add_argument("--markdown", help="write a Markdown summary here")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--oracle", default="live", choices=("live", "golden"),
                   help="live: run containerd (default); golden: check against fixtures/golden/ "
                        "recordings (no Go, no root, no VM)")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("golden", help="golden recordings of containerd's outputs (offline mode)")
    gsub = p.add_subparsers(dest="golden_cmd", required=True)
    p = gsub.add_parser("record", help="record containerd's Compare outputs (host mode, root)")
    common(p)
    p.add_argument("--containerd", default="", help="containerd version (default: oracle/versions.txt)")
    p.add_argument("--include-slow", action="store_true", help="also record slow-tagged scenarios")
    p.add_argument("--out", default=None, help="folder for the recordings (default: fixtures/golden)")
    p.set_defaults(fn=cmd_golden_record)

    p = sub.add_parser("matrix", help="every scenario x every containerd version (host mode)")
    common(p)
    p.add_argument("--containerd", action="append", help="only these versions (repeatable)")
    p.add_argument("--junit-dir", help="write one JUnit file per version here")
    p.set_defaults(fn=cmd_matrix)

    p = sub.add_parser("bisect", help="first containerd version whose Go output changes")
    p.add_argument("scenario")
    p.add_argument("--containerd", action="append", help="only these versions (repeatable)")
    p.set_defaults(fn=cmd_bisect)

    p = sub.add_parser("fuzz", help="generated scenarios; new failures shrunk to scenario files")
    from .fuzz.cli import add_arguments
    add_arguments(p)
    p.set_defaults(fn=cmd_fuzz)

    p = sub.add_parser("validate", help="check scenario files (schema and meaning)")
    p.add_argument("paths", nargs="*")
    p.set_defaults(fn=cmd_validate)

    p = sub.add_parser("list", help="list scenarios with their tags")
    common(p)
    p.set_defaults(fn=cmd_list)

    for name, fn, text in (("show", cmd_show, "print the layer entries the reference expects"),
                           ("repro", cmd_repro, "rerun one scenario and keep its state")):
        p = sub.add_parser(name, help=text)
        p.add_argument("scenario")
        p.add_argument("--containerd", default="")
        if name == "repro":
            p.add_argument("--keep", default=None)
        p.set_defaults(fn=fn)
    return ap


def terminate_as_interrupt() -> None:
    """SIGTERM/SIGHUP (`timeout`, a CI runner, a closed terminal) unwind like Ctrl-C, so every
    mount, loop device, temp dir and VM is released by the code that made it."""
    import signal
    import threading

    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, raise_interrupt)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    terminate_as_interrupt()
    try:
        return args.fn(args)
    except (UsageError, ScenarioError) as e:
        print(f"layerconf: {e}", file=sys.stderr)
        return 2
    except OracleError as e:
        print(f"layerconf: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        print(f"layerconf: {e.strerror or e}{where}; check that the folder exists and that this "
              "user may write there (e.g. --keep DIR)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("layerconf: interrupted; everything started was cleaned up", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
