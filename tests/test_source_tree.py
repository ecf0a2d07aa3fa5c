"""A containerd source tree as the version under test (`--containerd PATH`).

Pure parts: the content hash, the base-version rule, tree keys, the round trip's epoch limit.
End to end (root + Go + containerd v2.4.2 in the Go module cache, which `.ci/bootstrap`'s oracle
build fills): a copy of the v2.4.2 module source with findings/patches/B7-epoch-ignored.patch
applied no longer shows the epoch-ignored quirk (xpass naming the tree), the unmodified copy
does (xfail), and `bisect --between` finds the commit that applied the patch.
"""
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness import capabilities, cli, oracle, roundtrip, srctree
from harness.reference import profiles
from harness.result import Status
from harness.treeview import Difference

REPO = Path(__file__).resolve().parent.parent
PATCH = REPO / "findings" / "patches" / "B7-epoch-ignored.patch"
VERSION_GO = 'package version\n\nvar (\n\tPackage = "github.com/containerd/containerd/v2"\n\n' \
             '\t// Version holds the complete version number.\n\tVersion = "2.4.2+unknown"\n)\n'


def make_tree(root: Path, version_go: str | None = VERSION_GO) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "go.mod").write_text(f"module {srctree.MODULE}\n\ngo 1.24\n")
    (root / "go.sum").write_text("")
    (root / "core").mkdir()
    (root / "core" / "a.go").write_text("package core\n")
    if version_go is not None:
        (root / "version").mkdir()
        (root / "version" / "version.go").write_text(version_go)
    return root


# -- pure ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,want", [
    ('\tVersion = "2.4.2+unknown"\n', "v2.4.2"),
    ('Version = "v2.5.0-beta.1"\n', "v2.5.0-beta.1"),
    ('Version = "2.2.0-rc.0+unknown"', "v2.2.0-rc.0"),
    ('// Version = "1.0.0"\n', None),
    ('GoVersion = runtime.Version()\n', None),
])
def test_version_from_version_go(text, want):
    assert srctree.version_from_version_go(text) == want


def test_hash_is_order_independent_and_path_sensitive():
    a = srctree.hash_entries([("x.go", "1" * 64), ("y.go", "2" * 64)])
    assert a == srctree.hash_entries([("y.go", "2" * 64), ("x.go", "1" * 64)])
    assert a != srctree.hash_entries([("z.go", "1" * 64), ("y.go", "2" * 64)])


def test_what_is_hashed():
    assert srctree.hashed("go.mod") and srctree.hashed("go.sum") and srctree.hashed("a/b.go")
    assert not srctree.hashed("a/b_test.go") and not srctree.hashed("README.md")
    assert all(srctree.skipped_dir(d) for d in ("testdata", "vendor", ".git", "_output"))
    assert not srctree.skipped_dir("plugins")


def test_content_hash_follows_go_sources_only(tmp_path):
    t = make_tree(tmp_path / "c")
    h0, n0 = srctree.content_hash(str(t))
    assert n0 == 4                                     # go.mod, go.sum, core/a.go, version.go
    # Not hashed: tests, docs, vendor, testdata, nested modules, mtimes.
    (t / "core" / "a_test.go").write_text("package core\n")
    (t / "README.md").write_text("x")
    for d in ("vendor/x", "core/testdata", "api"):
        (t / d).mkdir(parents=True)
    (t / "vendor" / "x" / "v.go").write_text("package x\n")
    (t / "core" / "testdata" / "t.go").write_text("package t\n")
    (t / "api" / "go.mod").write_text("module github.com/containerd/containerd/api\n")
    (t / "api" / "api.go").write_text("package api\n")
    os.utime(t / "core" / "a.go", (1, 1))
    assert srctree.content_hash(str(t)) == (h0, n0)
    (t / "core" / "a.go").write_text("package core // changed\n")
    assert srctree.content_hash(str(t))[0] != h0
    (t / "core" / "a.go").write_text("package core\n")
    (t / "go.sum").write_text("x v1 h1:y\n")
    assert srctree.content_hash(str(t))[0] != h0


def test_inspect_and_key(tmp_path):
    t = srctree.inspect(str(make_tree(tmp_path / "c")))
    assert (t.base, t.base_from) == ("v2.4.2", "version/version.go")
    assert t.key == f"v2.4.2+tree.{t.sha256[:16]}" and srctree.is_key(t.key)
    assert not srctree.is_key("v2.4.2") and not srctree.is_key("v2.4.2+tree.xyz")


def test_base_version_falls_back_to_the_nearest_git_tag(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    t = make_tree(tmp_path / "c", version_go='package version\nvar Version = "unknown"\n')
    git = ["git", "-C", str(t), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], check=True, timeout=60)
    subprocess.run(git + ["add", "-A"], check=True, timeout=60)
    subprocess.run(git + ["commit", "-qm", "one"], check=True, timeout=60)
    subprocess.run(git + ["tag", "v2.3.1"], check=True, timeout=60)
    subprocess.run(git + ["commit", "-q", "--allow-empty", "-m", "two"], check=True, timeout=60)
    assert srctree.base_version(str(t)) == ("v2.3.1", "git tag v2.3.1")
    shutil.rmtree(t / ".git")
    with pytest.raises(srctree.TreeError, match="which containerd version"):
        srctree.base_version(str(t))


def test_not_a_containerd_tree(tmp_path):
    with pytest.raises(srctree.TreeError, match="has no go.mod"):
        srctree.inspect(str(tmp_path))
    (tmp_path / "go.mod").write_text("module example.com/other\n")
    with pytest.raises(srctree.TreeError, match="declares module example.com/other"):
        srctree.inspect(str(tmp_path))
    # Through the CLI: exit 2 and one paragraph, no traceback.
    assert cli.main(["run", "--backend", "host", "--containerd", str(tmp_path),
                     str(REPO / "scenarios" / "epoch")]) == 2


def test_resolve(tmp_path):
    assert oracle.resolve("v2.3.7") == "v2.3.7"
    pseudo = "v2.4.3-0.20260101000000-abcdef123456"
    assert oracle.resolve(pseudo) == pseudo
    assert oracle.resolve("") == oracle.default_version()
    key = oracle.resolve(str(make_tree(tmp_path / "c")))
    rec = srctree.lookup(key)
    assert rec["path"] == str(tmp_path / "c") and rec["base"] == "v2.4.2"
    with pytest.raises(oracle.OracleError, match="not a version"):
        oracle.resolve("no-such-thing")


def test_cli_usage_errors(tmp_path, capsys):
    tree = str(make_tree(tmp_path / "c"))
    scenario = str(REPO / "scenarios" / "epoch" / "epoch-zero.yaml")
    # fixtures/golden/ holds released versions only: a tree needs --out.
    assert cli.main(["golden", "record", "--containerd", tree, scenario]) == 2
    assert "give --out DIR" in capsys.readouterr().err
    assert cli.main(["bisect", scenario, "--between", "A", "B"]) == 2
    assert "--repo PATH" in capsys.readouterr().err
    assert cli.main(["bisect", scenario, "--between", "A", "B", "--repo", tree]) == 2
    err = capsys.readouterr().err                      # not a git checkout: one line, no traceback
    assert err.startswith("layerconf: `git rev-parse") and "Traceback" not in err, err


def test_a_tree_key_reads_as_its_base_version():
    key = "v2.4.2+tree.0123456789abcdef"
    assert profiles.parse_version(key) == profiles.parse_version("v2.4.2")
    p = profiles.containerd_profile(key)
    assert p == profiles.containerd_profile("v2.4.2") and p.name == "containerd@v2.4.2"
    assert key in p.notes[0]
    pseudo = profiles.parse_version("v2.4.3-0.20260101000000-abcdef123456")
    assert profiles.parse_version("v2.4.2") < pseudo < profiles.parse_version("v2.4.3")


def test_round_trip_accepts_epoch_clamping_only_to_the_epoch():
    sec = 10**9
    clamped = Difference(b"/f", "mtime", 1800000000 * sec, 1700000000 * sec)
    other = Difference(b"/g", "mtime", 1800000000 * sec, 1600000000 * sec)
    prof = profiles.SPEC
    _, limits, unexplained = roundtrip.explain([clamped, other], prof, {}, {}, epoch=1700000000)
    assert limits == {"source-date-epoch": [clamped]} and unexplained == [other]
    _, limits, unexplained = roundtrip.explain([clamped], prof, {}, {})
    assert not limits and unexplained == [clamped]


# -- end to end ----------------------------------------------------------------------------

def _module_source() -> Path | None:
    try:
        cache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True,
                               timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    p = Path(cache) / "github.com" / "containerd" / "containerd" / "v2@v2.4.2"
    return p if (p / "go.mod").is_file() else None


def _e2e_skip() -> str | None:
    if os.geteuid() != 0:
        return "host mode needs root (mounts, trusted xattrs)"
    if shutil.which("go") is None:
        return "Go is not installed"
    if shutil.which("patch") is None:
        return "patch(1) is not installed"
    if _module_source() is None:
        return "containerd v2.4.2 is not in the Go module cache (`make bootstrap` fills it)"
    missing = capabilities.missing(())
    if missing:
        return "missing capabilities: " + ", ".join(missing)
    return None


e2e = pytest.mark.skipif(bool(_e2e_skip()), reason=_e2e_skip() or "")


def copy_module(dst: Path) -> Path:
    shutil.copytree(_module_source(), dst, symlinks=True)
    for d, _, files in os.walk(dst):             # the module cache is read-only
        os.chmod(d, 0o755)
        for f in files:
            if not os.path.islink(os.path.join(d, f)):
                os.chmod(os.path.join(d, f), 0o644)
    return dst


def apply_patch(tree: Path):
    p = subprocess.run(["patch", "-p1", "--forward", "-i", str(PATCH)], cwd=tree,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("containerd")
    plain = copy_module(root / "v2.4.2")
    fixed = copy_module(root / "v2.4.2-b7")
    apply_patch(fixed)
    return plain, fixed


def _run(capsys, tree: Path, *extra) -> tuple[int, str]:
    # The direct path: these tests are about building the oracle from a tree; a second build of
    # cmd/containerd per tree would add minutes (the daemon path has tests/test_daemon_path.py).
    code = cli.main(["run", "--backend", "host", "--path", "direct", "--containerd", str(tree),
                     str(REPO / "scenarios" / "epoch"), *extra])
    return code, capsys.readouterr().out


EXPECTING_B7 = ("epoch/epoch-zero", "epoch/newer-dir-older-child", "epoch/opaque-dir",
                "epoch/whiteout-older-newer-files")


@e2e
def test_unmodified_tree_shows_the_quirk(trees, capsys):
    code, out = _run(capsys, trees[0])
    assert code == 0, out
    for name in EXPECTING_B7:
        assert f"XFAIL  {name}\n" in out, out
    assert "PASS   epoch/all-older-than-epoch" in out


@e2e
def test_patched_tree_fixes_b7(trees, capsys, tmp_path):
    md = tmp_path / "summary.md"
    code, out = _run(capsys, trees[1], "--markdown", str(md))
    assert code == 1, out                              # xpass: the registry is stale for the tree
    for name in EXPECTING_B7:
        assert f"XPASS  {name}\n" in out, out
    assert "PASS   epoch/all-older-than-epoch" in out
    summary = md.read_text()                           # (reasons are cut to a table cell)
    assert f"quirk epoch-ignored (B7) expected for v2.4.2 does not show on {trees[1]}" in summary
    key = srctree.inspect(str(trees[1])).key
    assert f"containerd `{key}`" in summary and str(trees[1]) in summary     # environment


@e2e
def test_patched_tree_conforms_to_spec(trees):
    """Beyond the message: Go's tars equal ref@spec (opaque-dir keeps its other quirk)."""
    from harness import runner
    from harness.scenario import load
    with runner.Session(runner.RunOptions(containerd=str(trees[1]))) as s:
        for name in EXPECTING_B7:
            r = runner.run_scenario(load(REPO / "scenarios" / f"{name}.yaml"), s)
            spec = next(c for c in r.checks if c.name.startswith("spec "))
            assert spec.status == Status.XPASS, (name, spec.explanation)
            assert spec.explanation.startswith(
                f"quirk epoch-ignored (B7) expected for v2.4.2 does not show on {trees[1]}: "
                "the tree fixes it, or the registry is stale"), spec.explanation
            assert r.message == spec.explanation.splitlines()[0]
            agree = [c for c in r.checks if c.name.startswith("compare ")]
            assert agree and all(c.status == Status.PASS for c in agree), name
            rt = next(c for c in r.checks if c.name.startswith("round trip"))
            assert rt.status in (Status.PASS, Status.XFAIL), (name, rt.explanation)
            assert spec.quirks == ["epoch-ignored"], name         # the quirk that did not show
            still = "(still shown: duplicate-dir-headers)" in spec.explanation
            assert still == (name == "epoch/opaque-dir"), (name, spec.explanation)


@e2e
def test_bisect_between_finds_the_fixing_commit(tmp_path, capsys, monkeypatch):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = copy_module(tmp_path / "containerd")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]

    def commit(msg):
        subprocess.run(git + ["add", "-A"], check=True, timeout=120)
        subprocess.run(git + ["commit", "-qm", msg], check=True, timeout=120)

    subprocess.run(git + ["init", "-q"], check=True, timeout=60)
    commit("v2.4.2 as released")
    (repo / "NOTES.md").write_text("unrelated\n")
    commit("docs only")
    apply_patch(repo)
    commit("erofs: honour SOURCE_DATE_EPOCH in Compare")
    (repo / "NOTES.md").write_text("unrelated again\n")
    commit("more docs")
    # a private temp folder: the shared one also holds other runs' worktrees, coming and going
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    code = cli.main(["bisect", str(REPO / "scenarios/epoch/epoch-zero.yaml"), "--between",
                     "HEAD~3", "HEAD", "--repo", str(repo)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "first change: " in out and "erofs: honour SOURCE_DATE_EPOCH in Compare" in out, out
    wt = subprocess.run(git + ["worktree", "list"], capture_output=True, text=True, timeout=60)
    assert len(wt.stdout.strip().splitlines()) == 1, wt.stdout       # worktrees removed
    assert not [d for d in os.listdir(private) if d.startswith("layerconf-worktree-")]
