"""`layerconf export`: the Go test for containerd's tree and the mkfs.erofs shell script.

The pure parts run everywhere. The end-to-end parts need root, a kernel with erofs and
overlayfs, mkfs.erofs and Go (with the containerd v2.4.2 module reachable): the exported Go test
is compiled inside a writable copy of that module and must fail as it says; with the proposed
patches under findings/patches/ it must pass (slow: a second build).
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from harness import capabilities
from harness.cli import main
from harness.export import ExportError, run_export
from harness.export import gotest, script
from harness.export.expect import entries_from_tar, pinned_mtimes
from harness.scenario import load
from harness.scenario.model import OPS, ApplyCase, Op, Scenario

REPO = Path(__file__).resolve().parent.parent
SCEN = REPO / "scenarios"
PATCHES = REPO / "findings" / "patches"
CONTAINERD = "v2.4.2"
CONTINUITY = "v0.5.0"            # what containerd v2.4.2's go.mod requires


def scen(name: str) -> Scenario:
    return load(SCEN / f"{name}.yaml")


# -- pure: the Go generator -----------------------------------------------------------------

def test_go_str_holds_exact_bytes():
    assert gotest.go_str(b'a"\\\xff\n\x01') == '"a\\"\\\\\\xff\\n\\x01"'
    assert gotest.go_str("plain/path") == '"plain/path"'


def test_test_name_is_a_go_identifier():
    assert gotest.test_name("quirks/b5-duplicate-header") == "TestLayerconfQuirksB5DuplicateHeader"
    assert re.fullmatch(r"[A-Za-z0-9]+", gotest.test_name("names/non-ascii-utf8"))


def test_layer_metadata_after_creation_deepest_first():
    lines = gotest.layer_appliers(scen("quirks/b5-duplicate-header-nested-opaque").lowers[0])
    creates = [i for i, x in enumerate(lines) if x.startswith(("lcWrite", "lcMkdir"))]
    times = [x for x in lines if x.startswith("fstest.Lchtimes")]
    assert max(creates) < min(i for i, x in enumerate(lines) if x.startswith("lcChmod"))
    # p/d/x before p/d before p: a directory's mtime is set after its children's
    order = [re.match(r'fstest.Lchtimes\("([^"]+)"', x).group(1) for x in times]
    assert order.index("p/d/x") < order.index("p/d") < order.index("p")


def test_every_upper_op_has_a_go_counterpart_or_a_clear_refusal():
    for name in OPS:
        op = Op(op=name, path=b"d/x", to=b"d/y", target=b"t", content=b"c", mode=0o4755,
                uid=1, gid=2, mtime_ns=5, name="user.a", value=b"v", type="char")
        if name in gotest.HOST_OPS:
            with pytest.raises(gotest.ExportError, match=f"op '{name}' brings host files"):
                gotest.op_appliers(op)
            continue
        lines = gotest.op_appliers(op)
        assert lines, name
    assert gotest.op_appliers(Op(op="chmod", path=b"f", mode=0o4755)) == ['lcChmod("f", 0o4755)']


def test_entries_from_tar_reads_dirs_xattrs_content():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        d = tarfile.TarInfo("d")
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, 1700000000
        tf.addfile(d)
        f = tarfile.TarInfo("d/f")
        f.size, f.mode, f.mtime = 2, 0o4644, 1700000001
        f.pax_headers = {"SCHILY.xattr.user.k": "v"}
        tf.addfile(f, io.BytesIO(b"hi"))
    d, f = entries_from_tar(buf.getvalue())
    assert (d.name, d.type, d.mode) == (b"d/", b"5", 0o755)
    assert (f.name, f.mode, f.mtime, f.size) == (b"d/f", 0o4644, 1700000001, 2)
    assert f.sha256 == hashlib.sha256(b"hi").hexdigest()
    assert f.xattrs == (("user.k", b"v"),)


def test_pinned_mtimes_are_the_scenarios_own():
    assert pinned_mtimes(scen("epoch/newer-dir-older-child")) == \
        {0, 1600000000, 1700000000, 1800000000}


def test_only_build_times_are_left_open():
    pinned = {0, 1700000000}
    assert not gotest.is_build_time(1700000000, pinned)
    assert gotest.is_build_time(1795000000, pinned)            # when the state was built
    assert not gotest.is_build_time(-2147483648, pinned)       # a clamped pre-1901 time


def test_export_from_golden_states_the_spec():
    """No root needed: the expectation comes from the golden recording's state."""
    text = run_export([scen("epoch/epoch-zero"), scen("quirks/b5-duplicate-header-nested-opaque")],
                      go_test=True)
    assert "func TestLayerconfEpochEpochZero(t *testing.T)" in text
    assert "diff.WithSourceDateEpoch(&tm)" in text
    assert re.search(r'\{Name: "b", Type: \'0\', Mode: 0o644, UID: 0, GID: 0, MTime: 0,', text)
    b5 = text.split("func TestLayerconfQuirksB5DuplicateHeaderNestedOpaque")[1].split("\n}\n")[0]
    assert b5.count('Name: "p/d/"') == 1                       # the spec writes it once
    assert 'fstest.RemoveAll("p/d")' in b5
    assert "B5 (duplicate-dir-headers)" in text


def test_live_expectation_equals_the_golden_one(tmp_path):
    """Without a fresh golden recording the state is built live through the oracle (root)."""
    miss = capabilities.missing([])
    if miss:
        pytest.skip("needs " + ", ".join(miss))
    src = SCEN / "quirks/b5-duplicate-header-nested-opaque.yaml"
    copy = tmp_path / "b5-live.yaml"
    copy.write_text(src.read_text().replace("description: ", "description: (live) ", 1))
    live = run_export([load(copy)], go_test=True)
    assert "computed from its live state built by containerd" in live
    table = lambda text: [ln for ln in text.splitlines() if "{Name: " in ln]  # noqa: E731
    assert table(live) == table(run_export([load(src)], go_test=True))


def test_export_states_an_expected_error_free_compare_for_b2():
    text = run_export([scen("quirks/b2-enotdir-file-replaced-by-dir")], go_test=True)
    assert 'expected Compare to succeed with 2 entries (%s), got: %v", "u/ u/inner"' in text


def test_go_test_refuses_apply_only_and_huge_scenarios():
    with pytest.raises(ExportError, match="no Compare part"):
        run_export([load(SCEN / "apply/mkfs-defects/implied-parent.yaml")], go_test=True)
    with pytest.raises(ExportError, match="large-scratch"):
        run_export([scen("numbers/sparse-file-8gib")], go_test=True)


def test_cli_export_errors_are_one_paragraph(capsys):
    assert main(["export", "numbers/sparse-file-8gib", "--go-test"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("layerconf: ") and "large-scratch" in err and err.count("\n") == 1


def test_cli_export_writes_the_file(tmp_path):
    out = tmp_path / "x_test.go"
    assert main(["export", "epoch/epoch-zero", "--go-test", "-o", str(out)]) == 0
    assert out.read_text().startswith("//go:build linux")


# -- pure: the script generator -------------------------------------------------------------

def _b64_payload(text: str) -> bytes:
    return base64.b64decode(text.split("<<'B64'\n", 1)[1].split("\nB64\n", 1)[0])


def test_script_embeds_the_tar_and_containerds_argv():
    s = load(SCEN / "apply/mkfs-defects/nul-uid-gid.yaml")
    text = script.script_file([s])
    tar = (REPO / "fixtures/mkfs-defects/nul-uid-gid.tar").read_bytes()
    assert _b64_payload(text) == tar
    assert re.search(r'"\$MKFS" --tar=f --aufs --quiet -Enoinline_data -b4096 -T0 --mkfs-time '
                     r'-U [0-9a-f-]{36} "\$work/layer1.erofs"', text)
    assert 'timeout -k 5 "$TIMEOUT"' in text and "trap cleanup EXIT" in text


def test_script_refuses_a_fixture_without_expectation():
    with pytest.raises(script.ExportError, match="no expectation for fixture"):
        script.script_file([load(SCEN / "apply/dialects.yaml")])
    with pytest.raises(script.ExportError, match="no Apply case"):
        script.script_file([scen("epoch/epoch-zero")])


def test_fixture_expectations_describe_the_committed_fixtures():
    for exp in sorted((REPO / "fixtures/mkfs-defects").glob("*.expect.json")):
        data = json.loads(exp.read_text())
        tar = (REPO / "fixtures" / data["fixture"]).read_bytes()
        assert hashlib.sha256(tar).hexdigest() == data["sha256"], exp.name
        assert data["entries"] and data["meaning"]


# -- end to end: the script against this machine's mkfs.erofs -------------------------------

def _script_missing() -> list[str]:
    return capabilities.missing(["root", "erofs"])


def _mkfs_version() -> str:
    out = subprocess.run(["mkfs.erofs", "--version"], capture_output=True, text=True, timeout=30)
    return (out.stdout + out.stderr).split("\n")[0]


def _run_script(path: Path, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def _mounts_under(prefix: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln.split()[4] for ln in f if ln.split()[4].startswith(prefix)]


def test_script_passes_on_a_tar_mkfs_reads_right(tmp_path, monkeypatch):
    """The PASS path: a plain tar with explicit directories, which every mkfs.erofs gets right."""
    if _script_missing():
        pytest.skip("needs " + ", ".join(_script_missing()))
    fx = tmp_path / "fixtures" / "ok"
    fx.mkdir(parents=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        d = tarfile.TarInfo("d")
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, 1700000000
        tf.addfile(d)
        f = tarfile.TarInfo("d/f")
        f.size, f.mode, f.mtime = 3, 0o640, 1700000000
        tf.addfile(f, io.BytesIO(b"ok\n"))
    (fx / "ok.tar").write_bytes(buf.getvalue())
    entries = [{"path": "d", "type": "dir", "mode": 0o755, "uid": 0, "gid": 0,
                "mtime_ns": 1700000000 * 10**9},
               {"path": "d/f", "type": "file", "mode": 0o640, "uid": 0, "gid": 0, "size": 3,
                "sha256": hashlib.sha256(b"ok\n").hexdigest()}]
    (fx / "ok.expect.json").write_text(json.dumps({"meaning": "a plain tar", "entries": entries}))
    monkeypatch.setattr(script, "FIXTURES", tmp_path / "fixtures")
    case = ApplyCase(media_type="application/vnd.oci.image.layer.v1.tar", fixture="ok/ok.tar")
    sh = tmp_path / "ok.sh"
    sh.write_text(script.script_file([Scenario(name="t", path="t.yaml", description="ok",
                                               apply_cases=(case,))]))
    r = _run_script(sh)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS: the image shows what the tar means (2 entries)" in r.stdout
    # the same tar against a wrong expectation fails, naming the attribute
    entries[1]["mode"] = 0o644
    (fx / "ok.expect.json").write_text(json.dumps({"meaning": "a plain tar", "entries": entries}))
    sh.write_text(script.script_file([Scenario(name="t", path="t.yaml", description="ok",
                                               apply_cases=(case,))]))
    r = _run_script(sh)
    assert r.returncode == 1 and "d/f: expected mode 0644, the image has 0640" in r.stdout


# What erofs-utils 1.8.6 does with each defect fixture (the script's FAIL lines).
MKFS_186 = {
    "pax-global-path": "global/renamed: expected no such entry, the image has a symlink",
    "pax-mtime-fraction": "frac/half: expected mtime_ns 1795983873500000000, the image has "
                          "1795983873000000005",
    "nul-uid-gid": "FAIL: mkfs.erofs refused a tar Go's archive/tar reads (exit 1)",
    "implied-parent": "implied: expected mode 0755, the image has 0777",
    "sparse-pax-1.0": "sp/holes: expected a file, the image has none",
}


@pytest.mark.parametrize("name", sorted(MKFS_186))
def test_script_fails_on_mkfs_186_defects(name, tmp_path):
    if _script_missing():
        pytest.skip("needs " + ", ".join(_script_missing()))
    version = _mkfs_version()
    if "1.8.6" not in version:
        pytest.skip(f"the recorded outcomes are erofs-utils 1.8.6's; this is {version!r}")
    sh = tmp_path / f"{name}.sh"
    assert main(["export", f"apply/mkfs-defects/{name}", "--script", "-o", str(sh)]) == 0
    work = tmp_path / "work"
    work.mkdir()
    r = _run_script(sh, env={"TMPDIR": str(work)})
    assert r.returncode == 1, r.stdout + r.stderr
    assert MKFS_186[name] in r.stdout
    assert not _mounts_under(str(work)) and not os.listdir(work)   # the script cleaned up


# -- end to end: the Go test inside containerd's module --------------------------------------

GO_CASES = {   # scenario -> what the exported test says against unpatched v2.4.2
    "epoch/epoch-zero": "b: expected mtime 0 (SOURCE_DATE_EPOCH=0: later mtimes become the "
                        "epoch), got 1700000000",
    "quirks/b5-duplicate-header-nested-opaque": "expected no duplicate header for p/d/, got 2",
    "whiteout/upperdir-no-lower-target": 'expected no entry "ghost", got a char device 0/0',
    "quirks/b2-enotdir-file-replaced-by-dir": "expected Compare to succeed with 2 entries "
                                              "(u/ u/inner), got: ",
    "quirks/b19-opaque-dir-replacing-lower-file": 'expected no entry "u/.wh..wh..opq", got a file',
}
FIXES = {   # scenario -> the patches that fix it (containerd's, then continuity's)
    "epoch/epoch-zero": (["B7-epoch-ignored"], []),
    "quirks/b5-duplicate-header-nested-opaque": (["B5-duplicate-dir-headers"], []),
    "whiteout/upperdir-no-lower-target": ([], ["B3-orphan-whiteout-as-device"]),
    "quirks/b2-enotdir-file-replaced-by-dir": ([], ["B2-enotdir-abort",
                                                    "B19-opaque-without-lower-dir"]),
    "quirks/b19-opaque-dir-replacing-lower-file": ([], ["B19-opaque-without-lower-dir"]),
}


def _go_missing() -> str | None:
    if shutil.which("go") is None:
        return "no Go toolchain"
    miss = capabilities.missing(["root", "erofs", "overlay", "mknod"])
    return "needs " + ", ".join(miss) if miss else None


def _module_dir(module: str, version: str) -> str:
    r = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.skip(f"cannot fetch {module}@{version}: {(r.stdout + r.stderr).strip()[:300]}")
    return json.loads(r.stdout)["Dir"]


def _writable_copy(src: str, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    for root, dirs, files in os.walk(dst):
        for n in dirs + files:
            p = os.path.join(root, n)
            if not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode | 0o200)
    os.chmod(dst, 0o755)
    return dst


def _patch(tree: Path, name: str):
    r = subprocess.run(["patch", "-p1", "--forward", "-i", str(PATCHES / f"{name}.patch")],
                       cwd=tree, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{name}.patch does not apply: {r.stdout}{r.stderr}"


def _build(mod: Path, out: Path, scenarios=None) -> Path:
    """Export the cases into the module's plugins/diff/erofs and compile its test binary."""
    test_file = mod / "plugins/diff/erofs/erofs_layerconf_test.go"
    scenarios = scenarios or [scen(n) for n in GO_CASES]
    test_file.write_text(run_export(scenarios, go_test=True))
    gofmt = shutil.which("gofmt") or str(Path(shutil.which("go")).resolve().parent / "gofmt")
    fmt = subprocess.run([gofmt, "-l", str(test_file)], capture_output=True, text=True,
                         timeout=60)
    assert fmt.returncode == 0 and not fmt.stdout.strip(), "the exported file is not gofmt-clean"
    r = subprocess.run(["nice", "go", "test", "-c", "-o", str(out), "./plugins/diff/erofs/"],
                       cwd=mod, capture_output=True, text=True, timeout=1200,
                       env={**os.environ, "GOFLAGS": "-mod=mod -buildvcs=false"})
    if r.returncode != 0 and re.search(r"dial tcp|no such host|proxy|GOPROXY|i/o timeout", r.stderr):
        pytest.skip(f"module downloads failed: {r.stderr.strip()[:300]}")
    assert r.returncode == 0, r.stderr
    return out


def _run(binary: Path, mod: Path, scenario: str, pattern: str = "") -> subprocess.CompletedProcess:
    pattern = pattern or f"^{gotest.test_name(scenario)}$"
    return subprocess.run([str(binary), "-test.root", "-test.v", "-test.run", pattern],
                          cwd=mod / "plugins/diff/erofs", capture_output=True, text=True,
                          timeout=300)


def _containerd_copy(tmp_path_factory, name: str) -> tuple[Path, Path]:
    """(a scratch folder, a writable copy of containerd's module source in it); skips without
    Go, root or the kernel features the exported tests need."""
    why = _go_missing()
    if why:
        pytest.skip(why)
    base = tmp_path_factory.mktemp(name)
    return base, _writable_copy(_module_dir("github.com/containerd/containerd/v2", CONTAINERD),
                                base / "containerd")


@pytest.fixture(scope="module")
def unpatched(tmp_path_factory):
    base, mod = _containerd_copy(tmp_path_factory, "go-unpatched")
    return mod, _build(mod, base / "erofs.test")


@pytest.mark.parametrize("scenario", sorted(GO_CASES))
def test_go_export_fails_as_stated(unpatched, scenario):
    mod, binary = unpatched
    r = _run(binary, mod, scenario)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and f"--- FAIL: {gotest.test_name(scenario)}" in out, out
    assert GO_CASES[scenario] in out, out
    assert not _mounts_under(f"/tmp/{gotest.test_name(scenario)}")   # the test cleaned up


@pytest.fixture(scope="module")
def patched(tmp_path_factory):
    base, mod = _containerd_copy(tmp_path_factory, "go-patched")
    cont = _writable_copy(_module_dir("github.com/containerd/continuity", CONTINUITY),
                          base / "continuity")
    applied = set()
    for cd, ct in FIXES.values():
        for name in cd:
            if name not in applied and (PATCHES / f"{name}.patch").exists():
                _patch(mod, name)
                applied.add(name)
        for name in ct:
            if name not in applied:
                _patch(cont, name)
                applied.add(name)
    r = subprocess.run(["go", "mod", "edit", f"-replace=github.com/containerd/continuity={cont}"],
                       cwd=mod, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return mod, _build(mod, base / "erofs.test"), applied


@pytest.mark.slow
@pytest.mark.parametrize("scenario", sorted(GO_CASES))
def test_slow_go_export_passes_with_the_proposed_patches(patched, scenario):
    mod, binary, applied = patched
    need = [n for n in FIXES[scenario][0] + FIXES[scenario][1] if n not in applied]
    if need:
        pytest.skip(f"no proposed patch here yet: findings/patches/{need[0]}.patch")
    r = _run(binary, mod, scenario)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and f"--- PASS: {gotest.test_name(scenario)}" in out, out


@pytest.mark.slow
def test_slow_every_compare_scenario_reproduces_its_golden_verdict(tmp_path):
    """Every exported Compare scenario fails exactly when containerd's recorded output differs
    from the spec's: the Go test rebuilds the same state and checks what the harness checks."""
    from harness import golden, runner
    from harness.reference import fsview, profiles
    from harness.scenario.model import OCI_TAR
    why = _go_missing()
    if why:
        pytest.skip(why)
    expect = {}
    for p in sorted(SCEN.rglob("*.yaml")):
        s = load(p)
        rec = golden.load_golden(s.name)
        if not s.compares or "apply" in p.parts or "large-scratch" in s.requires or rec is None:
            continue
        man = rec["state"]
        st = golden.RecordedState(man["lower_root"], man["upper_dir"], rec.get("lower_mounts") or [])
        spec = runner.reference_compare(st, OCI_TAR, profiles.SPEC, s.source_date_epoch,
                                        fs=fsview.RecordedFS(man))
        go = rec["media_types"][OCI_TAR]
        same = not go.get("error") and not spec.error and \
            go["tar_sha256"].split(":")[-1] == hashlib.sha256(spec.tar).hexdigest()
        expect[s.name] = ("PASS" if same else "FAIL", s)
    mod = _writable_copy(_module_dir("github.com/containerd/containerd/v2", CONTAINERD),
                         tmp_path / "containerd")
    binary = _build(mod, tmp_path / "erofs.test", [s for _, s in expect.values()])
    r = _run(binary, mod, "", pattern="^TestLayerconf")
    got = dict((m.group(2), m.group(1)) for m in
               re.finditer(r"^--- (PASS|FAIL|SKIP): (\S+)", r.stdout + r.stderr, re.M))
    wrong = [(n, got.get(gotest.test_name(n)), v) for n, (v, _) in expect.items()
             if got.get(gotest.test_name(n)) not in (v, "SKIP")]
    assert not wrong, f"(scenario, Go test, expected): {wrong}"
    assert sum(v == "PASS" for v in got.values()) > len(expect) // 2


def test_script_shows_which_defects_erofs_utils_1_9_4_fixes(tmp_path):
    """The same exported scripts, run with the pinned 1.9.4 (MKFS=...): the fraction defect is
    fixed there, the others are not."""
    from harness import erofs_utils
    mkfs = erofs_utils.bin_dir("1.9.4") / "mkfs.erofs"
    if _script_missing() or not mkfs.exists():
        pytest.skip("needs " + (", ".join(_script_missing()) or f"the pinned 1.9.4 build ({mkfs})"))
    outcomes = {}
    for name in sorted(MKFS_186):
        sh = tmp_path / f"{name}.sh"
        assert main(["export", f"apply/mkfs-defects/{name}", "--script", "-o", str(sh)]) == 0
        outcomes[name] = _run_script(sh, env={"MKFS": str(mkfs)}).returncode
    assert outcomes == {"pax-mtime-fraction": 0, "pax-global-path": 1, "nul-uid-gid": 1,
                        "implied-parent": 1, "sparse-pax-1.0": 1}, outcomes
