"""Golden offline mode: RecordedFS replays the real filesystem faithfully, `run --oracle golden`
works with no root and no Go, and a tampered recording fails with an explanation."""
import copy
import errno
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from harness import golden
from harness.oracle import default_version
from harness.reference import fsview, profiles
from harness.reference.compare import CompareError, compare
from harness.result import Status
from harness.scenario import load
from harness.scenario.model import DEFAULT_MEDIA_TYPES, OCI_TAR

REPO = Path(__file__).resolve().parent.parent
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="whiteout devices and trusted xattrs need root")
PROFILES = [profiles.containerd_profile(default_version()), profiles.SPEC]


# -- hand-built trees ---------------------------------------------------------------------------

def _file(p, data=b"x", mtime=1700000000):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    os.utime(p, ns=(mtime * 10**9, mtime * 10**9))


def _whiteout(p):
    os.mknod(p, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def _tree_whiteouts(tmp):
    lower, upper = tmp / "lower", tmp / "upper"
    for d in ("etc", "opq", "dir"):
        (lower / d).mkdir(parents=True)
    _file(lower / "etc/gone")
    _file(lower / "etc/keep")
    _file(lower / "opq/old")
    _file(lower / "dir/child")
    os.symlink("/", lower / "hostroot")
    os.symlink("/nonexistent-layerconf-path", lower / "hostmissing")
    os.symlink("loop", lower / "loop")
    os.symlink("etc/keep", lower / "rel")
    _file(lower / "file-then-dir")
    upper.mkdir()
    (upper / "etc").mkdir()
    _whiteout(upper / "etc/gone")
    _whiteout(upper / "orphan")                 # nothing below
    for name in ("hostroot", "hostmissing", "loop", "rel"):
        _whiteout(upper / name)
    (upper / "opq").mkdir()
    os.setxattr(upper / "opq", "trusted.overlay.opaque", b"y")
    _file(upper / "opq/fresh", b"fresh\n", 1700000002)
    (upper / "newdir/sub").mkdir(parents=True)
    os.setxattr(upper / "newdir", "user.overlay.opaque", b"y")
    _file(upper / "newdir/sub/f", b"data" * 5000)
    os.link(upper / "newdir/sub/f", upper / "etc/hardlink")
    os.setxattr(upper / "etc/hardlink", "security.capability",
                bytes.fromhex("0100000200200000000000000000000000000000"))
    os.setxattr(upper / "etc/hardlink", "user.note", b"hello")
    os.symlink("../etc/keep", upper / "newdir/link")
    os.mkfifo(upper / "fifo")
    os.utime(upper / "etc", ns=(1700000001 * 10**9,) * 2)
    return lower, upper


def _tree_enotdir(tmp):
    lower, upper = tmp / "lower", tmp / "upper"
    lower.mkdir()
    _file(lower / "a")                          # a file below ...
    (upper / "a").mkdir(parents=True)           # ... replaced by a dir with a child
    _file(upper / "a/b")
    _whiteout(upper / "a/c")
    return lower, upper


def _run(lower, upper, prof, mt, fs=None):
    try:
        out = compare(str(lower), str(upper), media_type=mt, profile=prof, fs=fs,
                      source_date_epoch=1700000001)
        return ("ok", out.tar, out.descriptor if mt == OCI_TAR else None, out.labels)
    except CompareError as e:
        return ("error", str(e))


@needs_root
@pytest.mark.parametrize("build", [_tree_whiteouts, _tree_enotdir])
@pytest.mark.parametrize("prof", PROFILES, ids=lambda p: p.name)
def test_recorded_fs_reproduces_real_fs(tmp_path, build, prof):
    lower, upper = build(tmp_path)
    manifest = json.loads(json.dumps(golden.snapshot_state(lower, upper)))   # JSON round trip
    rec = fsview.RecordedFS(manifest)
    for mt in DEFAULT_MEDIA_TYPES:
        real, replay = _run(lower, upper, prof, mt), _run(lower, upper, prof, mt, fs=rec)
        assert replay == real, mt
    # The trees alone (no recorded host answers) still agree where the host is not involved.
    bare = fsview.RecordedFS({**manifest, "follow": {}})
    assert _run(lower, upper, prof, OCI_TAR, fs=bare)[0] == _run(lower, upper, prof, OCI_TAR)[0]


@needs_root
def test_recorded_fs_errno_semantics(tmp_path):
    lower, upper = _tree_whiteouts(tmp_path)
    (lower / "selfloop").symlink_to("selfloop")
    rec = fsview.RecordedFS({**golden.snapshot_state(lower, upper), "follow": {}})
    real = fsview.RealFS()
    probes = ["etc/keep", "etc/keep/x", "loop", "selfloop", "rel", "rel/x", "missing", "dir/child",
              "hostroot", "hostmissing", "etc"]
    for p in probes:
        for op in ("stat", "lstat"):
            path = os.fsencode(lower / p)
            want = got = None
            try:
                want = stat.S_IFMT(getattr(real, op)(path).st_mode)
            except OSError as e:
                want = errno.errorcode[e.errno]
            try:
                got = stat.S_IFMT(getattr(rec, op)(path).st_mode)
            except OSError as e:
                got = errno.errorcode[e.errno]
            assert got == want, (op, p)
    with pytest.raises(OSError) as e:
        rec.getxattr(os.fsencode(upper / "etc"), "trusted.overlay.opaque")
    assert e.value.errno == errno.ENODATA
    assert rec.getxattr(os.fsencode(upper / "opq"), b"trusted.overlay.opaque") == b"y"
    assert sorted(rec.listdir(os.fsencode(upper))) == sorted(os.listdir(os.fsencode(upper)))
    assert rec.readlink(os.fsencode(upper / "newdir/link")) == b"../etc/keep"


def test_sparse_zeros_are_described_not_stored(tmp_path):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    with open(upper / "sparse", "wb") as f:
        f.truncate(64 << 20)
    m = golden.snapshot_state(lower, upper)
    entry = next(e for e in m["roots"]["upper"]["entries"] if e["path"] == b"sparse".hex())
    assert entry["content"] == {"size": 64 << 20, "zeros": True}
    assert len(json.dumps(m)) < 10_000
    with fsview.RecordedFS(m).open(os.fsencode(upper / "sparse")) as f:
        assert f.read(1 << 20) == bytes(1 << 20)
    with open(upper / "big", "wb") as f:
        f.write(os.urandom(golden.MAX_CONTENT + 1))
    with pytest.raises(golden.Unrecordable):
        golden.snapshot_state(lower, upper)


# -- the recorded goldens, offline ------------------------------------------------------------

def _recorded():
    return sorted((REPO / "fixtures/golden").rglob("*.json"))


def _as_nobody(args, **kw):
    if shutil.which("setpriv"):
        pre = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    else:
        pre = ["runuser", "-u", "nobody", "--"]
    return subprocess.run(pre + ["env", "-i", "PATH=/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8"]
                          + args, capture_output=True, text=True, cwd=REPO, **kw)


@pytest.mark.skipif(not ROOT, reason="switching to the nobody user needs root")
@pytest.mark.skipif(not _recorded(), reason="no golden recordings")
def test_golden_run_as_nobody_without_go():
    probe = _as_nobody(["sh", "-c", "id -u; command -v go || echo no-go"])
    assert probe.stdout.split() == ["65534", "no-go"], probe
    r = _as_nobody([str(REPO / ".venv/bin/layerconf"), "run", "--oracle", "golden", "scenarios"],
                   timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    statuses = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in {s.value.upper() for s in Status}:
            statuses[parts[1]] = parts[0]
    for f in _recorded():
        name = str(f.relative_to(REPO / "fixtures/golden").with_suffix(""))
        assert statuses.get(name) in ("PASS", "XFAIL"), (name, statuses.get(name))
    assert "not checked offline" in r.stdout          # apply + slow scenarios are listed
    assert "sparse-file-8gib" in r.stdout


@pytest.mark.skipif(not (REPO / "fixtures/golden/whiteout/root-file.json").exists(),
                    reason="no golden recording")
def test_tampered_golden_fails_with_explanation(tmp_path):
    name = "whiteout/root-file"
    scenario = load(REPO / "scenarios" / f"{name}.yaml")
    g = golden.load_golden(name)
    assert golden.check_scenario(scenario, g, g["containerd"]).status == Status.PASS
    bad = copy.deepcopy(g)
    rec = bad["media_types"][OCI_TAR]
    sha = rec["tar_sha256"]
    rec["tar_sha256"] = sha[:10] + ("0" if sha[10] != "0" else "1") + sha[11:]
    golden.write_golden(bad, tmp_path)
    r = golden.check_file(scenario.path, g["containerd"], golden_dir=tmp_path)
    assert r.status == Status.FAIL
    check = next(c for c in r.checks if c.name.startswith(f"compare {OCI_TAR}:"))
    assert check.status == Status.FAIL
    assert "tar sha256" in check.explanation and rec["tar_sha256"] in check.explanation
    assert "inconsistent" in check.explanation
    assert r.message


@pytest.mark.skipif(not (REPO / "fixtures/golden/whiteout/root-file.json").exists(),
                    reason="no golden recording")
def test_missing_or_other_version_golden_is_skipped(tmp_path):
    scenario = load(REPO / "scenarios/whiteout/root-file.yaml")
    r = golden.check_file(scenario.path, default_version(), golden_dir=tmp_path)
    assert r.status == Status.SKIP and "no golden recording" in r.message
    g = golden.load_golden(scenario.name)
    r = golden.check_scenario(scenario, g, "v0.0.1")
    assert r.status == Status.SKIP and "v0.0.1" in r.message
    apply_file = tmp_path / "apply.yaml"
    apply_file.write_text("description: x\nlowers: []\nupper: []\napply: {blob: {from_compare: true}}\n")
    r = golden.check_file(apply_file, default_version())
    assert r.status == Status.SKIP and "apply" in r.message


@pytest.mark.skipif(not (REPO / "fixtures/golden/whiteout/root-file.json").exists(),
                    reason="no golden recording")
def test_different_go_tar_is_explained_byte_level(tmp_path):
    """A consistent golden whose Go tar differs from the reference: a field-level explanation."""
    import hashlib
    name = "whiteout/root-file"
    g = golden.load_golden(name)
    rec = g["media_types"][OCI_TAR]
    stored = g["tars"][rec["tar"]]
    tar = bytearray(golden._unzstd(stored["zstd_b64"], stored["size"]))
    tar[108:115] = b"0000777"                     # the first header's uid field
    chk = sum(tar[0:148]) + 8 * 32 + sum(tar[156:512])
    tar[148:156] = b"%06o\0 " % chk
    sha = hashlib.sha256(bytes(tar)).hexdigest()
    g["tars"][sha] = {"size": len(tar), "zstd_b64": golden._zstd(bytes(tar))}
    rec.update(tar=sha, tar_sha256=sha)
    golden.write_golden(g, tmp_path)
    r = golden.check_file(REPO / "scenarios" / f"{name}.yaml", g["containerd"], golden_dir=tmp_path)
    assert r.status == Status.FAIL
    check = next(c for c in r.checks if c.name.startswith(f"compare {OCI_TAR}:"))
    assert "uid" in check.explanation.lower() and "inconsistent" not in check.explanation, check.explanation


@pytest.mark.skipif(not (REPO / "fixtures/golden/numbers/zero-and-sparse-files.json").exists(),
                    reason="no golden recording")
def test_recorded_zero_files_are_read_back_in_full(monkeypatch):
    """The large all-zero files are recorded as `zeros` and replayed by fsview._Zeros; a replay
    that loses a byte must fail against Go's recorded tar."""
    name = "numbers/zero-and-sparse-files"
    g = golden.load_golden(name)
    zeros = [e for root in g["state"]["roots"].values() for e in root["entries"]
             if (e.get("content") or {}).get("zeros")]
    assert len(zeros) == 3, "the recording no longer stores the large files as zeros"
    path = REPO / "scenarios" / f"{name}.yaml"
    assert golden.check_file(path, g["containerd"]).status == Status.PASS

    def one_byte_short(self, n=-1):
        left = max(self.size - self.pos - 1, 0)
        n = left if n is None or n < 0 else min(n, left)
        self.pos += n
        return bytes(n)

    monkeypatch.setattr(fsview._Zeros, "read", one_byte_short)
    r = golden.check_file(path, g["containerd"])
    assert r.status in (Status.FAIL, Status.ERROR), r.message
    assert any(c.status.failed for c in r.checks if c.name.startswith("compare "))
