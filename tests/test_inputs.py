"""Bring-your-own inputs: tar/dir lowers, run/copy/many/sync/apply ops, generated content,
expect_error, blob files, unique names, one-shot compare/apply. Loader tests are pure; the rest
build real states on this kernel against containerd's Go code (root + the built oracle)."""
import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
from hostmode import HOST_MODE

from harness import capabilities, runner
from harness.result import Status
from harness.scenario import ScenarioError, load
from harness.scenario import generators
from harness.scenario.model import Generated, LayerSource

REPO = Path(__file__).resolve().parent.parent

live = HOST_MODE


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def layer_tar(path: Path, files: dict, whiteouts=()) -> Path:
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime = len(data), 1700000000
            t.addfile(ti, io.BytesIO(data))
        for name in whiteouts:
            t.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
    data = bio.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def oci_layout(root: Path, images: dict, nested_platforms=None) -> Path:
    """An OCI image layout: images = {ref: [layer blob bytes, ...]}; with nested_platforms,
    one image index per ref whose manifests are for those platforms (same layers)."""
    import hashlib
    import json

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "blobs" / "sha256" / digest).write_bytes(data)
        return "sha256:" + digest

    def manifest(blobs) -> dict:
        config = b"{}"
        body = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": put(config), "size": len(config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            "digest": put(b), "size": len(b)} for b in blobs]}
        data = json.dumps(body).encode()
        return {"mediaType": body["mediaType"], "digest": put(data), "size": len(data)}

    descs = []
    for ref, blobs in images.items():
        if nested_platforms:
            subs = [dict(manifest(blobs), platform=dict(zip(("os", "architecture", "variant"),
                                                            p.split("/"))))
                    for p in nested_platforms]
            data = json.dumps({"schemaVersion": 2, "manifests": subs}).encode()
            desc = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": put(data),
                    "size": len(data)}
        else:
            desc = manifest(blobs)
        desc["annotations"] = {"org.opencontainers.image.ref.name": ref}
        descs.append(desc)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": descs}))
    return root


# -- pure ----------------------------------------------------------------------------------

def test_pseudo_random_is_deterministic_and_chunked():
    a = generators.pseudo_random_bytes(3 * generators.BLOCK + 5, seed=7)
    assert len(a) == 3 * generators.BLOCK + 5
    assert a == generators.pseudo_random_bytes(3 * generators.BLOCK + 5, seed=7)
    assert a[:100] != generators.pseudo_random_bytes(100, seed=8)
    assert a[:100] != generators.pseudo_random_bytes(100, seed=7, stream=1)
    assert generators.pseudo_random_bytes(10, seed=7) == a[:10]       # a prefix of the longer
    assert max(len(c) for c in generators.pseudo_random(3 * generators.BLOCK, 1)) == generators.BLOCK


def test_many_pattern():
    assert generators.many_path("d/f{i:04}", 7) == "d/f0007"
    for bad in ("d/f", "d/{j}", "d/{i:q}"):
        with pytest.raises(generators.PatternError):
            generators.check_pattern(bad, 3)


def test_loader_resolves_paths_against_the_scenario_file(tmp_path, monkeypatch):
    layer_tar(tmp_path / "in" / "base.tar", {"a": b"x"})
    (tmp_path / "in" / "tree").mkdir()
    f = write(tmp_path / "cases" / "x.yaml", """\
        description: inputs from files
        lowers:
          - {tar: ../in/base.tar}
          - {dir: ../in/tree}
        upper:
          - {op: copy, from: ../in/tree, to: t}
          - {op: many, path: "d/f{i:03}", count: 20, size: 10, seed: 2}
          - {op: write, path: big, content: {size: 5000000, seed: 1}}
          - {op: run, command: "true", timeout: 5, check: false, env: {A: b}}
          - {op: rename, from: a, to: b, expect_error: EXDEV}
          - {op: sync, from: ../in/tree}
          - {op: apply, tar: ../in/base.tar}
        apply:
          media_type: application/vnd.oci.image.layer.v1.tar
          blob: {file: ../in/base.tar}
        """)
    monkeypatch.chdir(tmp_path)
    s = load(f)
    assert s.lowers[0] == LayerSource("tar", str(tmp_path / "in" / "base.tar"), None, 3)
    assert s.lowers[1].kind == "dir" and s.lowers[1].path == str(tmp_path / "in" / "tree")
    copy, many, big, run, rename, sync, apply = s.upper
    assert copy.source == str(tmp_path / "in" / "tree") and copy.path == b"t"
    assert many.count == 20 and many.gen == Generated(10, 2) and many.path == b"d/f{i:03}"
    assert big.gen == Generated(5000000, 1) and big.content is None
    assert run.command == ("/bin/sh", "-c", "true") and not run.check and run.timeout == 5
    assert run.env == (("A", "b"),)
    assert rename.expect_error == "EXDEV"
    assert sync.source == copy.source and apply.source == s.lowers[0].path
    assert s.apply_cases[0].fixture == str(tmp_path / "in" / "base.tar")
    # every host path it reads, once each (the VM backend watches them for changes)
    assert s.inputs == (str(f), str(tmp_path / "in" / "base.tar"), str(tmp_path / "in" / "tree"))
    assert s.name == "cases/x"              # relative to where the run started


def test_inputs_name_fixtures_under_fixtures(tmp_path):
    f = write(tmp_path / "x.yaml", """\
        description: a fixture blob
        apply:
          media_type: application/vnd.oci.image.layer.v1.tar
          blob: {fixture: dialects/bare-wh.tar}
        """)
    fixtures = Path(__file__).resolve().parent.parent / "fixtures"
    assert load(f).inputs == (str(f), str(fixtures / "dialects" / "bare-wh.tar"))


@pytest.mark.parametrize("body, message", [
    ("lowers:\n  - {tar: missing.tar}\n", "x.yaml:3: lowers[0]: tar 'missing.tar' does not exist"),
    ("lowers:\n  - {dir: x.yaml}\n", "lowers[0]: dir 'x.yaml' is not a dir"),
    ("lowers:\n  - {tar: x.yaml, dir: .}\n", "lowers[0] must be a list of entries, {tar: PATH}"),
    ("upper:\n  - {op: run, command: 3}\n", "command must be a shell command line"),
    ("upper:\n  - {op: many, path: d/f, count: 3}\n", "has no {i}"),
    ("upper:\n  - {op: write, path: a, content: {size: 3, sed: 1}}\n", "unknown key 'sed'"),
    ("upper:\n  - {op: copy, from: nope, to: a}\n", "from 'nope' does not exist"),
    ("upperdir:\n  - {op: run, command: ls}\n", "run works in the mounted merged view only"),
    ("upper:\n  - {op: rm, path: a, expect_error: 3}\n", "expect_error must be an errno name"),
    ("apply: {media_type: x/y, blob: {file: nope.tar}}\n", "blob: file 'nope.tar' does not exist"),
])
def test_loader_errors_name_file_and_line(tmp_path, body, message):
    f = write(tmp_path / "x.yaml", "description: bad\n" + body)
    with pytest.raises(ScenarioError) as info:
        load(f)
    assert message in str(info.value) and f"{f}:" in str(info.value), str(info.value)


def test_same_file_name_in_two_folders_gets_two_names(tmp_path, monkeypatch):
    a = write(tmp_path / "a" / "same.yaml", "description: x\n")
    b = write(tmp_path / "b" / "same.yaml", "description: x\n")
    monkeypatch.chdir(tmp_path)
    assert (load(a).name, load(b).name) == ("a/same", "b/same")
    assert load(a, start="/nonexistent").name == str(tmp_path / "a" / "same")   # outside: absolute
    assert load(REPO / "scenarios/whiteout/root-file.yaml").name == "whiteout/root-file"


def test_compare_help_explains_inputs_and_exit_codes():
    out = subprocess.run([sys.executable, "-m", "harness.cli", "compare", "--help"],
                         capture_output=True, text=True, cwd=REPO, timeout=60).stdout
    for text in ("LOWER", "UPPER", "--save-scenario", "Exit codes: 0", "layer tar"):
        assert text in out, out


def test_compare_with_missing_input_is_a_usage_error(tmp_path):
    p = subprocess.run([sys.executable, "-m", "harness.cli", "compare", "--backend", "host",
                        str(tmp_path / "nope"), str(tmp_path)], capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    assert p.returncode == 2 and "no such file or directory" in p.stderr
    assert "Traceback" not in p.stderr


def _gz(files: dict) -> bytes:
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w") as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return gzip.compress(bio.getvalue(), mtime=0)


def test_oci_layout_lowers_are_the_image_layers_bottom_first(tmp_path):
    base, top = _gz({"a": b"1"}), _gz({"b": b"2"})
    oci_layout(tmp_path / "img", {"app:1": [base, top], "other:2": [top]})
    oci_layout(tmp_path / "multi", {"app:1": [base]}, nested_platforms=["linux/arm64/v8",
                                                                          "linux/amd64"])
    f = write(tmp_path / "s.yaml", """\
        description: x
        lowers:
          - {oci: img, ref: "app:1"}
          - {oci: multi, platform: linux/arm64}
        """)
    s = load(f)
    assert [(l.kind, Path(l.path).read_bytes(), l.media_type) for l in s.lowers] == [
        ("tar", base, "application/vnd.oci.image.layer.v1.tar+gzip"),
        ("tar", top, "application/vnd.oci.image.layer.v1.tar+gzip"),
        ("tar", base, "application/vnd.oci.image.layer.v1.tar+gzip")]


@pytest.mark.parametrize("layer, message", [
    ("{oci: img}", r"s.yaml:3: lowers\[0\]: OCI image layout 'img': index.json names 2 images; "
                   r"choose one with ref: \(app:1, other:2\)"),
    ('{oci: img, ref: "nope"}', r"no image named 'nope' in index.json \(names: app:1, other:2\)"),
    ("{oci: multi, platform: linux/s390x}", r"no manifest for platform linux/s390x \(platforms: "
                                            r"linux/amd64, linux/arm64/v8\)"),
    ("{oci: .}", r"is not an OCI image layout \(no oci-layout file\)"),
    ("{oci: img, tag: x}", r"unknown key 'tag' in lowers\[0\]"),
])
def test_oci_layout_errors_name_file_line_and_choices(tmp_path, layer, message):
    oci_layout(tmp_path / "img", {"app:1": [_gz({"a": b"1"})], "other:2": [_gz({"b": b"2"})]})
    oci_layout(tmp_path / "multi", {"app:1": [_gz({"a": b"1"})]},
               nested_platforms=["linux/arm64/v8", "linux/amd64"])
    f = write(tmp_path / "s.yaml", f"description: x\nlowers:\n  - {layer}\n")
    with pytest.raises(ScenarioError, match=message):
        load(f)


def test_one_shot_knows_an_oci_layout(tmp_path):
    from harness import oneshot
    oci_layout(tmp_path / "img", {"app:1": [_gz({"a": b"1"})]})
    (tmp_path / "after").mkdir()
    assert oneshot.kind_of(str(tmp_path / "img")) == "oci"
    data = oneshot.compare_scenario(str(tmp_path / "img"), str(tmp_path / "after"), "oci", "dir",
                                    str(tmp_path))
    assert data["lowers"] == [{"oci": "img"}]
    with pytest.raises(oneshot.OneShotError, match="UPPER is an OCI image layout"):
        oneshot.compare_scenario(str(tmp_path / "after"), str(tmp_path / "img"), "dir", "oci",
                                 str(tmp_path))
    p = subprocess.run([sys.executable, "-m", "harness.cli", "apply", "--backend", "host",
                        str(tmp_path / "img")], capture_output=True, text=True, cwd=tmp_path,
                       timeout=60)
    assert p.returncode == 2 and "is an OCI image layout; `apply` takes one layer blob" in p.stderr
    assert "blobs/sha256/" in p.stderr and "Traceback" not in p.stderr


# -- live ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def session():
    with runner.Session(runner.RunOptions(build=False)) as s:
        yield s


def busybox_root(path: Path) -> Path:
    bb = shutil.which("busybox")
    if not bb:
        pytest.skip("busybox is not installed")
    (path / "bin").mkdir(parents=True)
    shutil.copy(bb, path / "bin" / "busybox")
    os.symlink("busybox", path / "bin" / "sh")
    return path


def entries(result) -> dict[str, tarfile.TarInfo]:
    go = next(o for o in result.outcomes if o.producer == "go-erofs"
              and o.media_type.endswith("tar"))
    with tarfile.open(fileobj=io.BytesIO(bytes(go.tar))) as t:
        return {m.name: m for m in t.getmembers()}


@pytest.mark.parametrize("lower", ["tar", "tgz", "dir"])
def test_tar_and_dir_lowers_with_generated_upper(session, tmp_path, lower):
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "f").write_bytes(b"hello")
    os.link(tree / "f", tree / "sub" / "hl")
    os.chown(tree / "sub", 1000, 1001)
    os.setxattr(tree / "f", "user.k", b"v")
    os.utime(tree / "sub", (1000000000, 1000000000))
    src = {"tar": "tree.tar", "tgz": "tree.tar.gz", "dir": "tree"}[lower]
    if lower != "dir":
        subprocess.run(["tar", "--xattrs", "-C", str(tree), "-cf", str(tmp_path / "tree.tar"), "."],
                       check=True, timeout=60)
        if lower == "tgz":
            (tmp_path / src).write_bytes(gzip.compress((tmp_path / "tree.tar").read_bytes()))
    f = write(tmp_path / "s.yaml", f"""\
        description: a real lower, a generated upper
        lowers:
          - {{{"dir" if lower == "dir" else "tar"}: {src}}}
        upper:
          - {{op: many, path: "m/f{{i:02}}", count: 12, size: 33, seed: 4}}
          - {{op: write, path: big, content: {{size: 3000000, seed: 9}}}}
          - {{op: copy, from: tree, to: copied}}
          - {{op: rename, from: sub, to: sub2}}
          - {{op: rm, path: not-there, expect_error: ENOENT}}
        """)
    r = runner.run_scenario(load(f), session)
    assert r.status in (Status.PASS, Status.XFAIL), r.message + "\n".join(
        c.explanation for c in r.checks)
    e = entries(r)
    assert e["m/f11"].size == 33 and e["big"].size == 3000000
    assert e["copied/sub"].uid == 1000 and e["copied/sub"].mtime == 1000000000
    assert e["copied/sub/hl"].islnk() and e["copied/sub/hl"].linkname == "copied/f"
    assert ".wh.sub" in e and e["sub2"].uid == 1000       # EXDEV: copied, then deleted


def test_run_op_in_chroot(session, tmp_path):
    busybox_root(tmp_path / "root")
    f = write(tmp_path / "s.yaml", """\
        description: commands in the merged view
        lowers:
          - {dir: root}
        upper:
          - {op: run, command: "test -e /proc/self/status && test -c /dev/null && echo hi > /out"}
          - {op: run, command: "printf %s \\"$FOO\\" > /env", env: {FOO: bar}}
          - {op: run, command: "exit 3", check: false}
          - {op: run, command: "echo oops >&2; exit 4", expect_error: oops}
          - {op: run, command: ["/bin/busybox", "sleep", "30"], timeout: 1, expect_error: "did not finish"}
        """)
    r = runner.run_scenario(load(f), session)
    assert r.status == Status.PASS, r.message
    assert set(entries(r)) == {"out", "env"}          # /proc and /dev left no trace
    assert not [line for line in open("/proc/self/mountinfo") if str(tmp_path) in line]


def test_failing_command_reports_its_output(session, tmp_path):
    busybox_root(tmp_path / "root")
    f = write(tmp_path / "s.yaml", """\
        description: a failing command
        lowers:
          - {dir: root}
        upper:
          - {op: run, command: "echo to-stdout; echo to-stderr >&2; exit 7"}
        """)
    r = runner.run_scenario(load(f), session)
    assert r.status == Status.ERROR
    assert "s.yaml: line 5: run failed" in r.message and "status 7" in r.message
    assert "to-stdout" in r.message and "to-stderr" in r.message


def test_expected_error_that_does_not_happen_is_an_error(session, tmp_path):
    f = write(tmp_path / "s.yaml", """\
        description: x
        upper:
          - {op: write, path: a, content: x, expect_error: EXDEV}
        """)
    r = runner.run_scenario(load(f), session)
    assert r.status == Status.ERROR and "succeeded, but the scenario expects" in r.message


def test_rename_of_a_lower_dir_is_exdev_raw_and_mv_otherwise(session, tmp_path):
    f = write(tmp_path / "s.yaml", """\
        description: x
        lowers:
          - - {path: d/f, content: x, mtime: 1600000000}
        upper:
          - {op: rename, from: d, to: e, expect_error: EXDEV}
          - {op: rename, from: d, to: e}
        """)
    r = runner.run_scenario(load(f), session)
    assert r.status == Status.PASS, r.message
    e = entries(r)
    assert ".wh.d" in e and e["e/f"].mtime == 1600000000      # copied keeping times, then deleted


@pytest.mark.skipif(not shutil.which("rsync"), reason="the sync op needs rsync")
def test_sync_and_apply_on_top(session, tmp_path):
    layer_tar(tmp_path / "base.tar.gz", {"a": b"1", "b": b"2", "c": b"3"})
    layer_tar(tmp_path / "top.tar", {"n": b"new"}, whiteouts=[".wh.a"])
    want = tmp_path / "want"
    want.mkdir()
    (want / "b").write_bytes(b"2")
    os.utime(want / "b", (1700000000, 1700000000))
    (want / "n").write_bytes(b"new")
    (want / "z").write_bytes(b"zz")
    f = write(tmp_path / "s.yaml", """\
        description: x
        lowers:
          - {tar: base.tar.gz}
        upper:
          - {op: apply, tar: top.tar}
          - {op: sync, from: want}
        """)
    r = runner.run_scenario(load(f), session)
    assert r.status == Status.PASS, r.message
    e = entries(r)
    assert set(e) >= {".wh.a", ".wh.c", "n", "z"} and "b" not in e   # b unchanged: not copied up


def test_oci_layout_lower(session, tmp_path):
    """An image's layers as the lower: one layer diffs as usual; over two, containerd from
    v2.2 fails Compare, which the registry explains (lower-mount-templates-unactivated)."""
    oci_layout(tmp_path / "img", {"one": [_gz({"a": b"1"})],
                                  "two": [_gz({"a": b"1"}), _gz({"d/b": b"2"})]})
    f = write(tmp_path / "one.yaml", """\
        description: an OCI image as the lower
        lowers:
          - {oci: img, ref: one}
        upper:
          - {op: write, path: a, content: changed}
        """)
    r = runner.run_scenario(load(f), session)
    assert r.status in (Status.PASS, Status.XFAIL), r.message
    assert entries(r)["a"].size == len("changed")
    two = write(tmp_path / "two.yaml", f.read_text().replace("ref: one", "ref: two"))
    r = runner.run_scenario(load(two), session)
    from harness.oracle import resolve
    from harness.reference.profiles import containerd_profile
    if containerd_profile(resolve(session.options.containerd)).has(
            "lower-mount-templates-unactivated"):
        assert r.status == Status.XFAIL, r.message
        assert "lower-mount-templates-unactivated" in "\n".join(c.explanation for c in r.checks)
    else:
        assert r.status in (Status.PASS, Status.XFAIL), r.message
        assert entries(r)["a"].size == len("changed")


def test_cli_apply_of_a_file_that_is_no_layer_says_so(tmp_path):
    """A .deb given as a layer: both differs refuse it alike (PASS), and the output says that
    nothing was made rather than a bare PASS."""
    (tmp_path / "pkg.deb").write_bytes(b"!<arch>\ndebian-binary   0           0     0     100644  4 "
                                       b"      `\n2.0\n")
    p = subprocess.run([sys.executable, "-m", "harness.cli", "apply", "--backend", "host",
                        "pkg.deb"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "note: containerd's erofs Apply refused the layer, and the reference agrees: " in p.stdout


def test_cli_compare_and_apply_save_a_scenario_that_reruns(tmp_path):
    layer_tar(tmp_path / "in" / "base.tar", {"a": b"1"})
    layer_tar(tmp_path / "in" / "top.tar", {"n": b"x"}, whiteouts=[".wh.a"])
    cli = [sys.executable, "-m", "harness.cli"]
    out = tmp_path / "saved" / "case.yaml"
    p = subprocess.run(cli + ["compare", "--backend", "host", "in/base.tar", "in/top.tar",
                              "--save-scenario", str(out), "--media-type",
                              "application/vnd.oci.image.layer.v1.tar"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "PASS   saved/case" in p.stdout
    saved = load(out)
    assert saved.lowers[0].path == str(tmp_path / "in" / "base.tar")
    assert "tar: ../in/base.tar" in out.read_text()          # relative to the saved file
    p = subprocess.run(cli + ["apply", "--backend", "host", "in/top.tar", "--keep-all",
                              "--keep", "art"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    repro = tmp_path / "art" / "apply-top" / "repro.sh"
    p = subprocess.run([str(repro), "--keep", str(tmp_path / "again")], cwd="/",
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.startswith("PASS"), p.stdout + p.stderr


for _name in list(globals()):
    if _name.startswith("test_") and _name in {
            "test_tar_and_dir_lowers_with_generated_upper", "test_run_op_in_chroot",
            "test_failing_command_reports_its_output", "test_sync_and_apply_on_top",
            "test_expected_error_that_does_not_happen_is_an_error",
            "test_rename_of_a_lower_dir_is_exdev_raw_and_mv_otherwise",
            "test_cli_compare_and_apply_save_a_scenario_that_reruns", "test_oci_layout_lower",
            "test_cli_apply_of_a_file_that_is_no_layer_says_so"}:
        for _m in live:
            globals()[_name] = _m(globals()[_name])


# -- corpus (without building it) ------------------------------------------------------------

def test_corpus_names_load_without_the_corpus_and_unknown_names_do_not(tmp_path, monkeypatch):
    from harness import corpus
    monkeypatch.setattr(corpus, "CACHE", tmp_path / "empty-cache")
    f = write(tmp_path / "s.yaml", """\
        description: x
        requires: [corpus]
        lowers:
          - {corpus: debian-bookworm-minbase.gnutar.tar}
        apply:
          media_type: application/vnd.oci.image.layer.v1.tar+zstd
          blob: {corpus: debian-bookworm-minbase.pytar.tar.zst}
        """)
    s = load(f)
    assert s.lowers[0].kind == "tar" and not os.path.exists(s.lowers[0].path)
    assert s.apply_cases[0].fixture.endswith("debian-bookworm-minbase.pytar.tar.zst")
    assert not corpus.built()
    bad = write(tmp_path / "bad.yaml", "description: x\nlowers:\n  - {corpus: ubuntu.tar}\n")
    with pytest.raises(ScenarioError, match=r"bad.yaml:3: lowers\[0\]: corpus 'ubuntu.tar' is not"):
        load(bad)


def test_corpus_index_maps_names_to_content_hashes(tmp_path, monkeypatch):
    from harness import corpus
    monkeypatch.setattr(corpus, "CACHE", tmp_path)
    blobs = tmp_path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    index = {}
    for n in corpus.NAMES:
        (tmp_path / "x").write_bytes(n.encode())
        index[n] = corpus._store(tmp_path / "x", print)
    (tmp_path / "index.json").write_text(__import__("json").dumps(index))
    assert corpus.built()
    name = corpus.NAMES[0]
    assert Path(corpus.path(name)).read_bytes() == name.encode()
    assert Path(corpus.path(name)).name == __import__("hashlib").sha256(name.encode()).hexdigest()


def test_corpus_ensure_says_why_it_cannot_build_and_builds_once(tmp_path, monkeypatch):
    """make test builds the corpus on first use: without root or the mirror it gives the reason
    (the scenario skips with it); two concurrent callers build once, the second waits."""
    import threading
    import time
    from harness import corpus
    monkeypatch.setattr(corpus, "CACHE", tmp_path)
    monkeypatch.setattr(corpus, "mirror_reachable", lambda timeout=5.0: False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "needs root" in corpus.ensure()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert "does not answer" in corpus.ensure() and "debian-mirror" in corpus.ensure()
    monkeypatch.setattr(corpus, "mirror_reachable", lambda timeout=5.0: True)
    builds = []

    def fake_build(force, log):
        builds.append(threading.get_ident())
        time.sleep(0.3)
        blobs = tmp_path / "blobs" / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)
        index = {}
        for n in corpus.NAMES:
            (tmp_path / "x").write_bytes(n.encode())
            index[n] = corpus._store(tmp_path / "x", log)
        (tmp_path / "index.json").write_text(__import__("json").dumps(index))
        return index

    monkeypatch.setattr(corpus, "_build", fake_build)
    results = []
    threads = [threading.Thread(target=lambda: results.append(corpus.ensure())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [None, None] and len(builds) == 1 and corpus.built()


def test_lazy_capabilities_skip_with_their_reason(monkeypatch):
    from harness import corpus
    monkeypatch.setattr(capabilities, "_LAZY_CACHE", {})
    monkeypatch.setattr(corpus, "built", lambda: False)
    monkeypatch.setattr(corpus, "mirror_reachable", lambda timeout=5.0: False)
    miss = capabilities.missing(["corpus", "debian-mirror"])
    assert any(m.startswith("corpus (") and "layerconf corpus build" in m for m in miss)
    assert any(m.startswith("debian-mirror (") for m in miss)
    assert "debian-mirror" not in capabilities.probe()     # never probed unless asked


def test_golden_path_stays_inside_the_golden_folder():
    from harness.golden import golden_path
    assert golden_path("whiteout/root-file", "/G") == Path("/G/whiteout/root-file.json")
    assert golden_path("/tmp/a/same", "/G") == Path("/G/tmp/a/same.json")
    assert golden_path("../x/y", "/G") == Path("/G/x/y.json")
