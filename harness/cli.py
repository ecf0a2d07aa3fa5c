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
from .srctree import TreeError
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
    files = _scenario_files(args.paths, args.tag, args.k)
    if not files:
        raise UsageError("no scenario matched")
    if getattr(args, "oracle", "live") == "golden":
        return cmd_run_golden(args, files)
    return _run_files(files, args)


def _axis_values(args) -> dict[str, list[str]]:
    """The axes' flag values of `run` (single values) or `matrix` (repeatable)."""
    from .axes import AXES
    given = {}
    for a in AXES:
        v = getattr(args, a.name, None)
        given[a.name] = [] if not v else list(v) if isinstance(v, list) else [v]
    if getattr(args, "backend", "host") == "host":
        if len(given["kernel"]) > 1 or "all" in given["kernel"] or \
                any("," in k for k in given["kernel"]):
            raise UsageError("--kernel with more than one kernel needs --backend vm (the host "
                             "backend runs on this machine's kernel)")
        given["kernel"] = []
    return given


def _run_cells(files, args, on_result=None):
    """Run the files in every cell of the axes (harness/axes.py); [(cell, results)] and the
    names of the axes that vary."""
    from . import axes, runner
    from .backends import BackendError, open_backend
    try:
        cells, varying = axes.cells(_axis_values(args))
    except axes.AxisError as e:
        raise UsageError(str(e)) from None
    out = []
    open_vm = None              # (kernel, backend): cells of one kernel share its guest
    for cell in cells:
        opts = cell.run_options()
        if args.backend != "host":
            from .oracle import binary_path, ensure_built
            if not binary_path(opts["containerd"]).exists():
                ensure_built(opts["containerd"])   # the guest runs the host's build, never builds
            if args.path != "direct":
                from . import daemon
                if not daemon.binary_path(opts["containerd"]).exists():
                    daemon.ensure_built(opts["containerd"])
            if opts.get("writer") == "go-erofs":
                from . import goerofs
                goerofs.ensure_built()
            from . import mkfs_shim
            mkfs_shim.ensure_built()
        # one artifacts folder per cell, so the cells do not overwrite each other
        keep = os.path.join(args.keep, cell.slug(varying)) if args.keep and varying else args.keep
        options = runner.RunOptions(keep=keep, keep_all=args.keep_all, timeout=args.timeout,
                                    path=args.path, **opts)
        kernel = cell.get("kernel") or "6.12"
        if open_vm and open_vm[0] != kernel:
            open_vm[1].close()
            open_vm = None
        try:
            # a guest's boot is an external call too: under load TCG boots take minutes
            vm_options = {"boot_timeout": max(60.0, args.timeout)}
            if args.keep:
                vm_options["rw_dirs"] = [os.path.abspath(args.keep)]
            backend = open_backend(args.backend, kernel=kernel, options=options, **vm_options)
        except BackendError as e:
            raise UsageError(str(e)) from None
        results = []

        def one(d, cell=cell):
            r = runner.result_from_dict(d)
            results.append(r)
            if on_result:
                on_result(cell, r, varying)
        try:
            # a VM backend spreads the files over one guest per CPU (harness/backends/vm.py)
            backend.run_files([str(f) for f in files], one)
        except BaseException:
            backend.close()
            raise
        if getattr(backend, "name", "") == "vm":
            open_vm = (kernel, backend)     # the next cell of this kernel reuses its guest
        else:
            backend.close()
        out.append((cell, results))
    if open_vm:
        open_vm[1].close()
    return out, varying


def _run_files(files, args, results=None) -> int:
    """Run scenario files on the chosen backend (in every cell of the axes asked for), print
    the summary; the exit code."""
    from .report import terminal
    results = [] if results is None else results

    def show(cell, r, varying):
        if varying:
            r.scenario = f"{r.scenario}[{cell.label(varying)}]"
        results.append(r)
        if not args.quiet:
            print(f"{r.status.value.upper():6} {r.scenario}", flush=True)
    _run_cells(files, args, show)
    terminal.print_table(results)
    return _report(results, args)


def cmd_run_golden(args, files) -> int:
    """`run --oracle golden`: the reference against recorded Go outputs (fixtures/golden/); no
    Go toolchain, no root, no VM. Scenarios without a usable recording are skipped, and listed."""
    from . import golden
    from .oracle import resolve
    from .report import terminal
    version = resolve(args.containerd)
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
    from .oracle import resolve, versions
    files = _scenario_files(args.paths, args.tag, args.k)
    if not files:
        raise UsageError("no scenario matched")
    version = resolve(args.containerd)
    if version not in versions() and args.out is None:
        raise UsageError(f"containerd {version} is not a version listed in oracle/versions.txt; "
                         "fixtures/golden/ holds recordings of those only: give --out DIR to record "
                         "a source tree, commit or other version elsewhere")
    recorded = skipped = errors = 0
    with runner.Session(runner.RunOptions(containerd=version)) as session:
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
    return {k: str(env[k]) for k in ("containerd", "containerd-tree", "erofs-utils", "kernel",
                                     "backend", "go") if k in env}


# xpass = an expected quirk did not show (a stale registry, or a source tree that fixes it); it
# fails the run like a failure but says what happened.
CELL = {Status.PASS: "identical", Status.XFAIL: "known quirk", Status.FAIL: "failure",
        Status.XPASS: "quirk gone", Status.ERROR: "error", Status.SKIP: "skip"}


def _versions(selected) -> list[str]:
    """--containerd values (versions, commits, source trees; default: every listed version),
    resolved to the oracle's names and sorted by (base) version."""
    from .axes import AXES_BY_NAME
    return AXES_BY_NAME["containerd"].values(list(selected or ["all"]))


def cmd_matrix(args) -> int:
    """Every scenario in every cell of the axes (containerd x erofs-utils x kernel x overlay
    options): a summary line and a JUnit file per cell, then the table of scenarios by cell,
    and the scenarios whose outcome differs between cells."""
    from .report.junit import write_junit
    files = _scenario_files(args.paths, args.tag, args.k)
    if not files:
        raise UsageError("no scenario matched")
    args.containerd = args.containerd or ["all"]
    if args.backend is None:
        args.backend = "vm" if args.kernel else "host"

    def progress(cell, r, varying):
        if not args.quiet:
            print(f"{r.status.value.upper():6} {r.scenario} [{cell.label(varying) or 'one cell'}]",
                  flush=True)
    ran, varying = _run_cells(files, args, progress)
    failed = False
    for cell, results in ran:
        counts = {c: sum(1 for r in results if CELL[r.status] == c) for c in dict.fromkeys(CELL.values())}
        print(f"{cell.label()}: " + ", ".join(f"{n} {c}" for c, n in counts.items() if n), flush=True)
        failed |= any(r.status.failed for r in results)
        if args.junit_dir:
            env = results[0].environment if results else {}
            props = dict(_props(env), **{f"axis.{n}": str(v) for n, v in cell.values})
            write_junit(results, os.path.join(args.junit_dir, f"{cell.slug()}.xml"),
                        properties=props, suite_name=f"layerconf {cell.label()}")
    print()
    print(matrix_table(ran, varying))
    return 1 if failed else 0


def matrix_table(ran, varying) -> str:
    """The scenarios by cell ('*' marks a row whose cells differ in status or in the quirks
    that explain them), then each differing row's cells with what made their status (pure)."""
    cols = [cell.label(varying) or "result" for cell, _ in ran]
    table: dict[str, list] = {}
    for i, (_, results) in enumerate(ran):
        for r in results:
            table.setdefault(r.scenario, [None] * len(ran))[i] = r
    width = max([len("SCENARIO")] + [len(n) for n in table]) + 2
    cw = max([11] + [len(c) for c in cols])
    lines = [f"{'SCENARIO':<{width}}  " + "  ".join(f"{c:<{cw}}" for c in cols)]
    differ = []
    for name, row in table.items():
        shown = [CELL[r.status] if r else "-" for r in row]
        quirks = {tuple(sorted(_quirks(r))) if r else None for r in row}
        mark = "*" if len(set(shown)) > 1 or len(quirks) > 1 else " "
        if mark == "*":
            differ.append((name, row))
        lines.append(f"{mark} {name:<{width - 2}}  " + "  ".join(f"{c:<{cw}}" for c in shown))
    if len(ran) > 1:
        lines.append("")
        lines.append(f"{len(differ)} scenario(s) differ between cells" + (":" if differ else "."))
        for name, row in differ:
            lines.append(f"  {name}")
            sets = [_quirks(r) for r in row if r]
            common = set.intersection(*sets) if sets else set()
            for col, r in zip(cols, row):
                if r is None:
                    lines.append(f"    {col}: - (not run)")
                    continue
                only = sorted(_quirks(r) - common)
                why = f"quirks only here: {', '.join(only)}" if only else _why(r)[:200]
                lines.append(f"    {col}: {CELL[r.status]}" + (f" ({why})" if why else ""))
    return "\n".join(lines)


def _quirks(r) -> set[str]:
    return {q for c in r.checks for q in c.quirks}


def _why(r) -> str:
    """What made a result's status: its checks of that status with their quirks, else its
    message's first line."""
    if r.status == Status.PASS:
        return ""
    checks = [c for c in r.checks if c.status in (r.status, Status.XFAIL) and not c.info
              and c.status != Status.PASS]
    if checks:
        return "; ".join(c.name.split(":")[0] + (f" [{', '.join(c.quirks)}]" if c.quirks else "")
                         for c in checks)
    return (r.message.splitlines() or [""])[0]


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


def _signature(scenario, containerd: str):
    """(go_signature, None) for one containerd, or (None, error text)."""
    from . import runner
    with runner.Session(runner.RunOptions(containerd=containerd)) as session:
        r = runner.run_scenario(scenario, session)
    if r.status == Status.ERROR:
        return None, r.message
    return go_signature(r), None


def cmd_bisect_between(args) -> int:
    """The first commit between A and B (first-parent history of a local git checkout) whose Go
    output for the scenario differs from A's. Each probed commit is checked out in a temporary
    git worktree, built and run, and the worktree removed."""
    from . import srctree
    repo = args.repo or (args.containerd[0] if args.containerd and len(args.containerd) == 1 else None)
    if not repo:
        raise UsageError("bisect --between A B needs the git checkout: --repo PATH (or one "
                         "--containerd PATH)")
    if not os.path.isdir(repo):
        raise UsageError(f"--repo {repo}: no such folder")
    good, bad = args.between
    s = _load_one(args.scenario)
    commits = srctree.commits_between(repo, good, bad)
    print(f"{len(commits) - 1} commit(s) after {good} up to {bad} (first-parent)", flush=True)
    sigs: dict[int, dict] = {}

    def probe(i: int) -> dict:
        if i not in sigs:
            with srctree.Worktree(repo, commits[i]) as path:
                sig, err = _signature(s, path)
            label = srctree.describe(repo, commits[i])
            if err is not None:
                raise UsageError(f"bisect: scenario {s.name} could not run at {label}: {err}")
            print(f"  {label}: {len(sig)} Go outcome(s)", flush=True)
            sigs[i] = sig
        return sigs[i]

    first = probe(0)
    if probe(len(commits) - 1) == first:
        print(f"\nno change between {good} and {bad}")
        return 0
    lo, hi = 0, len(commits) - 1         # probe(lo) == first, probe(hi) != first
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if probe(mid) == first:
            lo = mid
        else:
            hi = mid
    print(f"\nfirst change: {srctree.describe(repo, commits[hi])}\n  commit {commits[hi]}"
          f"\n  (parent probed: {srctree.describe(repo, commits[lo])})")
    a, b = sigs[lo], sigs[hi]
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            print(f"  {key}:\n    before: {a.get(key, '(none)')}\n    after:  {b.get(key, '(none)')}")
    return 0


def cmd_bisect(args) -> int:
    """The first listed version whose Go output for a scenario differs from the one before."""
    from . import runner
    if args.between:
        return cmd_bisect_between(args)
    if args.repo:
        raise UsageError("--repo is for bisect --between A B")
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


EROFS_MAGIC = (1024, b"\xe2\xe1\xf5\xe0")     # superblock offset, magic 0xE0F5E1E2 (LE)


def cmd_show(args) -> int:
    """The tree a layer blob means, the tree an EROFS image holds (mounted: root), or the layer
    entries the reference expects for a scenario (root: builds the state)."""
    p = Path(args.scenario)
    if p.is_file() and p.suffix not in (".yaml", ".yml"):
        return _show_layer(p)
    return _show_scenario(args)


def _show_layer(path: Path) -> int:
    from .checks import meaning
    from .reference import apply as ref_apply
    with open(path, "rb") as f:
        head = f.read(EROFS_MAGIC[0] + 4)
    if head[EROFS_MAGIC[0]:] == EROFS_MAGIC[1]:
        if os.geteuid() != 0:
            raise UsageError(f"{path} is an EROFS image: listing it mounts it, which needs root")
        import tempfile
        with tempfile.TemporaryDirectory(prefix="layerconf-show-") as d:
            r = meaning.read_image(str(path), d, 60)
        if r.tree is None:
            print(f"error: {r.skipped}", file=sys.stderr)
            return 1
        print(f"# {path}: EROFS image, as the kernel shows it (erofs under overlayfs)")
        sys.stdout.write(meaning.listing(r.tree))
        return 0
    blob = path.read_bytes()
    kind = ref_apply.detect_compression(blob)
    try:
        tar, error = (ref_apply.decompress_stream(blob), None) if kind else (blob, None)
    except ref_apply.DecompressError as e:
        tar, error = e.partial, f"{kind}: {e.message}"
    reading, _ = meaning.read_meaning(tar, error)
    print(f"# {path}: {'a ' + kind + ' ' if kind else ''}layer tar, as containerd's default "
          "applier reads it (over an empty parent)")
    if reading.tree is not None:
        sys.stdout.write(meaning.listing(reading.tree))
    if reading.error:
        print(f"error: {reading.error}", file=sys.stderr)
        return 1
    return 0


def _show_scenario(args) -> int:
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
    options = runner.RunOptions(containerd=args.containerd, keep=keep, keep_all=True,
                                timeout=args.timeout)
    with runner.Session(options) as session:
        r = runner.run_scenario(s, session)
    print(f"{r.status.value.upper()} {r.scenario} ({r.duration:.1f} s)")
    for c in r.checks:
        if c.status != Status.PASS:
            print(f"[{c.status.value}] {c.name}\n{c.explanation}\n")
    if r.message and r.status in (Status.ERROR, Status.SKIP):
        print(r.message)
    print(f"artifacts: {r.artifacts}")
    return 1 if r.status.failed else 0


def cmd_export(args) -> int:
    """Write a standalone reproducer: a Go test for containerd's tree, or a shell script."""
    from .export import ExportError, run_export
    scenarios = [_load_one(p) for p in args.scenarios]
    command = " ".join(["layerconf export"] + [s.name for s in scenarios] +
                       ["--go-test" if args.go_test else "--script"])
    try:
        text = run_export(scenarios, go_test=args.go_test, containerd=args.containerd,
                          command=command)
    except ExportError as e:
        raise UsageError(str(e)) from None
    if args.output:
        Path(args.output).write_text(text)
        if args.script:
            os.chmod(args.output, 0o755)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _load_one(path):
    """A scenario file, or a name: FILE.yaml, scenarios/NAME.yaml, or an absolute name."""
    tried = list(dict.fromkeys((Path(path), Path(str(path) + ".yaml"),
                                DEFAULT_SCENARIOS / (str(path) + ".yaml"))))
    for c in tried:
        if c.is_file():
            return load(c)
    raise UsageError(f"no scenario file or name {path!r} (looked for "
                     f"{', '.join(map(str, tried))})")


def _one_shot(args, data: dict, name: str) -> int:
    """Write the scenario (to --save-scenario, else a temporary folder), run it like `run`."""
    import shutil
    import tempfile
    from . import oneshot
    from .report.artifacts import repro_script
    command = "layerconf " + " ".join(sys.argv[1:]) if sys.argv[1:] else "layerconf"
    if args.save_scenario:
        path = Path(args.save_scenario).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = None
    else:
        # a folder named scenarios/ names the scenario by its file name alone
        tmp = tempfile.mkdtemp(prefix="layerconf-oneshot-")
        path = Path(tmp) / "scenarios" / f"{name}.yaml"
        path.parent.mkdir()
    try:
        path.write_text(oneshot.to_yaml(data(None if tmp else str(path.parent)), command))
        load(path)       # the written file must be a valid scenario: fail here, not in the guest
        results = []
        code = _run_files([path], args, results)
        for r in results:
            refused = [o.error for o in r.outcomes if o.producer == "go-erofs-apply" and o.error]
            if refused and not r.status.failed:   # a bare PASS would hide that nothing was made
                print("note: containerd's erofs Apply refused the layer, and the reference agrees: "
                      + refused[0].strip().splitlines()[0])
        if tmp:
            for r in results:
                if r.artifacts and os.path.isdir(r.artifacts):
                    # the temporary file goes away; its copy (absolute paths) stays
                    copy = os.path.join(r.artifacts, "scenario.yaml")
                    Path(r.artifacts, "repro.sh").write_text(repro_script(copy))
            print("(rerun with --save-scenario FILE to keep the scenario file)")
        else:
            print(f"scenario: {args.save_scenario} (rerun: layerconf run {args.save_scenario})")
        return code
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def cmd_corpus(args) -> int:
    """Build or list the real-world corpus (.cache/corpus, by content hash)."""
    from . import corpus
    if args.corpus_cmd == "build":
        def log(message):
            print(f"corpus: {message}", flush=True)
        try:
            corpus.fetch(corpus.NAMES, log)
            corpus.build(force=args.force, log=log)
        except corpus.CorpusError as e:
            raise UsageError(f"cannot build the corpus: {e}") from None
    for name, size, digest in corpus.listing():
        print(f"{name:42} {'(not built)' if size is None else f'{size:>12,} bytes'}  "
              f"{digest[:16] if digest else ''}")
    return 0


def cmd_compare(args) -> int:
    """Compare: LOWER a directory or layer tar/blob; UPPER the merged tree wanted (a directory)
    or a layer tar/blob applied on top."""
    from . import oneshot
    try:
        lk, uk = oneshot.kind_of(args.lower), oneshot.kind_of(args.upper)
    except oneshot.OneShotError as e:
        raise UsageError(str(e)) from None
    media_types = args.media_type or ()
    return _one_shot(args, lambda folder: oneshot.compare_scenario(
        args.lower, args.upper, lk, uk, folder, media_types=media_types,
        source_date_epoch=args.source_date_epoch), "compare-" + oneshot.slug(args.lower, args.upper))


def cmd_apply(args) -> int:
    """Apply BLOB with containerd's erofs differ and the reference; compare the results."""
    from . import oneshot, state
    from .scenario.model import LayerSource
    from .scenario import ocilayout
    if ocilayout.is_layout(args.blob):
        try:
            found = [os.path.relpath(p) for p, _ in ocilayout.layers(args.blob)]
        except ocilayout.OCILayoutError as e:
            found = [f"(its layers cannot be listed: {e})"]
        raise UsageError(f"{args.blob} is an OCI image layout; `apply` takes one layer blob, such "
                         f"as {' or '.join(found[-3:])} (`compare LAYOUT UPPER` builds on all "
                         "its layers)")
    if not os.path.isfile(args.blob):
        raise UsageError(f"{args.blob}: no such file (give a layer tar or compressed blob)")
    mt = args.media_type or state.tar_media_type(LayerSource("tar", args.blob))
    return _one_shot(args, lambda folder: oneshot.apply_scenario(
        args.blob, mt, folder, args.mkfs_option or ()), "apply-" + oneshot.slug(args.blob))


def _fill(text: str) -> str:
    import textwrap
    return textwrap.fill(text, width=88)


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1
    if not 0 < v <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds in (0, 86400]")
    return v
CONTAINERD_HELP = ("containerd version (v2.4.2; default: oracle/versions.txt), module pseudo-version, "
                   "commit hash, or a local containerd source tree (folder)")
PATH_HELP = ("how containerd is reached: daemon (default: cmd/containerd started with a generated "
             "config, driven through its API as ctr and CRI do), direct (the oracle wires "
             "containerd's components in-process), both (each, then compared)")


def build_parser() -> argparse.ArgumentParser:
    from .runner import DEFAULT_PATH
    ap = argparse.ArgumentParser(prog="layerconf", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p, paths=True):
        if paths:
            p.add_argument("paths", nargs="*", help="scenario files or folders (default: scenarios/)")
        p.add_argument("--tag", action="append", default=[], help="only scenarios with this tag")
        p.add_argument("-k", default=None, help="only scenarios whose name contains this text")

    def run_flags(p):
        p.add_argument("--backend", default=os.environ.get("LAYERCONF_BACKEND", "vm"),
                       choices=("host", "vm", "auto"),
                       help="vm (default, no root needed) or host (root)")
        p.add_argument("--kernel", default="6.12", metavar="NAME|all",
                       help="guest kernel (vm/kernels.toml: 6.1, 6.12, 7.3), a comma list or all")
        p.add_argument("--containerd", default="", help=CONTAINERD_HELP)
        p.add_argument("--keep", default="artifacts", help="folder for failing scenarios' artifacts")
        p.add_argument("--keep-all", action="store_true",
                       help="keep artifacts of passing scenarios too")
        p.add_argument("--timeout", type=_seconds, default=300.0,
                       help="deadline in seconds of each external call (oracle request, "
                            "mkfs.erofs, mount, a guest's boot; default 300); a scenario's "
                            "`timeout:` key overrides it")
        p.add_argument("--mkfs", default="", metavar="VERSION|all",
                       help="erofs-utils version to run (pinned in erofs-utils/versions.txt; "
                            "default: the system's mkfs.erofs); all: each pinned version in turn")
        p.add_argument("--overlay", action="append", default=[], metavar="OPTIONS|all",
                       help="overlay mount options of the upper's overlay (redirect_dir=on,"
                            "metacopy=on), repeatable: each a run; all: the kernel's defaults "
                            "and each feature in turn")
        p.add_argument("--path", default=DEFAULT_PATH, choices=("daemon", "direct", "both"),
                       help=PATH_HELP)
        p.add_argument("--writer", default="mkfs", choices=("mkfs", "go-erofs", "all"),
                       help="whose EROFS image of each tar layer is checked against what the "
                            "layer means: mkfs (containerd's layer.erofs, default), go-erofs "
                            "(github.com/erofs/go-erofs, also against mkfs.erofs' image), all: "
                            "each in turn")
        p.add_argument("--junit", help="write JUnit XML here")
        p.add_argument("--markdown", help="write a Markdown summary here")
        p.add_argument("-q", "--quiet", action="store_true")

    p = sub.add_parser("run", help="run scenarios and print a summary")
    common(p)
    run_flags(p)
    p.add_argument("--oracle", default="live", choices=("live", "golden"),
                   help="live: run containerd (default); golden: check against fixtures/golden/ "
                        "recordings (no Go, no root, no VM)")
    p.set_defaults(fn=cmd_run)

    epilog = ("Exit codes: 0 containerd and the reference agree (or differ by known quirks), "
              "1 a conformance difference, 2 usage or set-up errors.")
    p = sub.add_parser(
        "compare", help="compare LOWER and UPPER (directories, layer tars, an OCI layout) without a "
        "YAML file",
        description=_fill("Build a state from LOWER, change it into UPPER, and run containerd's "
        "Compare (erofs and walking differs) against the reference, plus the round trip. LOWER: "
        "a directory (copied in, owners/modes/times/xattrs/hardlinks kept), a layer tar or "
        "compressed blob (applied by containerd's erofs differ), or an OCI image layout (its "
        "image's layers, bottom first, each applied so; from containerd v2.2 Compare over two "
        "or more lower layers fails: quirk lower-mount-templates-unactivated). UPPER: a directory = the "
        "merged tree wanted (synced into the overlay: only differences change), or a layer "
        "tar/blob applied on top by containerd's applier. Needs root for --backend host."),
        epilog="Example: layerconf compare --backend host rootfs/ rootfs-after/ "
               "--save-scenario bug.yaml\n" + epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("lower", help="lower layer(s): a directory, a layer tar/blob or an OCI image "
                   "layout")
    p.add_argument("upper", help="the merged tree wanted (directory) or a layer tar/blob on top")
    p.add_argument("--media-type", action="append",
                   help="Compare media type (repeatable; default: tar, tar+gzip, tar+zstd)")
    p.add_argument("--source-date-epoch", type=int, help="SOURCE_DATE_EPOCH for both differs")
    p.add_argument("--save-scenario", metavar="FILE",
                   help="write the scenario file that reproduces this run (paths relative to it)")
    run_flags(p)
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser(
        "apply", help="apply a layer BLOB with containerd and the reference without a YAML file",
        description=_fill("Apply BLOB (a layer tar or compressed blob) with containerd's erofs differ "
        "and the reference, compare the returned descriptor, the error text and "
        "layer.erofs byte for byte, and check the image against what the layer means "
        "(docs/meaning.md)."),
        epilog="Example: layerconf apply --backend host layer.tar.gz --save-scenario bug.yaml\n"
               + epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("blob", help="a layer tar or compressed blob (gzip, zstd)")
    p.add_argument("--media-type", help="media type of BLOB (default: from its first bytes: "
                   "application/vnd.oci.image.layer.v1.tar[+gzip|+zstd])")
    p.add_argument("--mkfs-option", action="append",
                   help="an mkfs.erofs option for both differs (repeatable), e.g. "
                   "--mkfs-option=-T0")
    p.add_argument("--save-scenario", metavar="FILE",
                   help="write the scenario file that reproduces this run (paths relative to it)")
    run_flags(p)
    p.set_defaults(fn=cmd_apply)

    p = sub.add_parser("corpus", help="the real-world corpus (Debian rootfs tars, registry "
                       "tarballs), on demand",
                       description=_fill("A Debian bookworm minbase rootfs (debootstrap) as "
                       "layer tars by GNU tar, bsdtar, Python tarfile and Go archive/tar, plain, "
                       "gzip and zstd, and real tars from the package registries (npm tarballs, "
                       "a .deb's data.tar, a Python sdist) pinned by digest, all cached by "
                       "content hash in .cache/corpus. Scenarios in scenarios/realworld/ use "
                       "them (capabilities `corpus`, `npm-registry`, `pypi`, `debian-mirror`; a "
                       "run fetches a missing pinned file); run them with "
                       "`layerconf run --backend host scenarios/realworld`."))
    csub = p.add_subparsers(dest="corpus_cmd", required=True)
    c = csub.add_parser("build", help="fetch the pinned files, debootstrap and write the tars "
                        "(root, Debian mirror; minutes); nothing is done when already built")
    c.add_argument("--force", action="store_true", help="build again")
    c.set_defaults(fn=cmd_corpus)
    c = csub.add_parser("list", help="the corpus files, their sizes and digests")
    c.set_defaults(fn=cmd_corpus)

    p = sub.add_parser("golden", help="golden recordings of containerd's outputs (offline mode)")
    gsub = p.add_subparsers(dest="golden_cmd", required=True)
    p = gsub.add_parser("record", help="record containerd's Compare outputs (host mode, root)")
    common(p)
    p.add_argument("--containerd", default="", help=CONTAINERD_HELP)
    p.add_argument("--include-slow", action="store_true", help="also record slow-tagged scenarios")
    p.add_argument("--out", default=None, help="folder for the recordings (default: fixtures/golden)")
    p.set_defaults(fn=cmd_golden_record)

    p = sub.add_parser("matrix", help="every scenario in every cell of the axes: containerd x "
                       "erofs-utils x kernel x overlay options x EROFS writer (harness/axes.py)")
    common(p)
    from .axes import AXES
    for axis in AXES:
        p.add_argument(f"--{axis.name}", action="append", default=[], help=axis.help +
                       (" (default: every listed version)" if axis.name == "containerd" else ""))
    p.add_argument("--backend", default=None, choices=("host", "vm", "auto"),
                   help="default: vm with --kernel, else host (root)")
    p.add_argument("--junit-dir", help="write one JUnit file per cell here")
    p.add_argument("--keep", default=None, help="folder for failing scenarios' artifacts, a "
                   "sub-folder per cell")
    p.add_argument("--keep-all", action="store_true", help="keep artifacts of passing scenarios too")
    p.add_argument("--timeout", type=_seconds, default=300.0,
                   help="deadline in seconds of each external call, a guest's boot included "
                        "(default 300)")
    p.add_argument("-q", "--quiet", action="store_true", help="no line per scenario")
    p.add_argument("--path", default="direct", choices=("daemon", "direct", "both"),
                   help="how containerd is reached (see run --path); default direct: the daemon "
                        "path is built for v2.3 and later only, and needs each version's "
                        "cmd/containerd built")
    p.set_defaults(fn=cmd_matrix)

    p = sub.add_parser("bisect", help="first containerd version (or commit) whose Go output changes")
    p.add_argument("scenario")
    p.add_argument("--containerd", action="append",
                   help="only these (repeatable): " + CONTAINERD_HELP)
    p.add_argument("--between", nargs=2, metavar=("A", "B"),
                   help="bisect the commits after A up to B of a git checkout of containerd "
                        "(--repo PATH or --containerd PATH), each in a temporary git worktree")
    p.add_argument("--repo", help="the git checkout for --between")
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

    p = sub.add_parser("export", help="a standalone reproducer: a Go test for containerd's "
                       "plugins/diff/erofs, or a shell script for mkfs.erofs")
    p.add_argument("scenarios", nargs="+", help="scenario files or names (one output file)")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--go-test", action="store_true", help="Compare scenarios -> Go test file")
    kind.add_argument("--script", action="store_true", help="Apply fixtures -> POSIX sh script")
    p.add_argument("-o", "--output", help="write here (default: stdout)")
    p.add_argument("--containerd", default="", help="containerd version of the expectation's state")
    p.set_defaults(fn=cmd_export)

    for name, fn, text in (("show", cmd_show, "list what a layer blob or EROFS image holds, or the "
                                               "layer entries the reference expects for a scenario"),
                           ("repro", cmd_repro, "rerun one scenario and keep its state")):
        p = sub.add_parser(name, help=text)
        p.add_argument("scenario", metavar="SCENARIO" if name == "repro" else "FILE|SCENARIO",
                       help="a scenario file, or a name as `run` prints it"
                       + ("" if name == "repro" else "; or a layer blob (tar, gzip, zstd) or an "
                          "EROFS image to list"))
        p.add_argument("--containerd", default="", help=CONTAINERD_HELP)
        if name == "repro":
            p.add_argument("--keep", default=None)
            p.add_argument("--timeout", type=_seconds, default=300.0,
                           help="deadline in seconds of each external call (default 300)")
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
    except (OracleError, TreeError) as e:
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
