"""Kept artifacts: one folder per scenario with everything needed to look at it later."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

from harness.reference.gotar import Format, Header, write_tar
from harness.report.artifacts import folder_name, keep
from harness.result import Check, Outcome, ScenarioResult, Status

OCI = "application/vnd.oci.image.layer.v1.tar"


def _tar(uid: int) -> bytes:
    return write_tar([(Header(name=b"a/", typeflag=b"5", mode=0o755, mtime_ns=0,
                              format=Format.PAX), b""),
                      (Header(name=b"a/f", size=2, mode=0o644, uid=uid, mtime_ns=0,
                              format=Format.PAX), b"hi")])


def test_keep(tmp_path):
    scen = tmp_path / "scenarios" / "whiteout" / "root-file.yaml"
    scen.parent.mkdir(parents=True)
    scen.write_text("description: x\n")
    go, ref = _tar(1), _tar(2)
    outs = [Outcome("go-erofs", OCI, {"mediaType": OCI}, tar=go, blob=go),
            Outcome("go-erofs", OCI + "+gzip", tar=go, blob=gzip.compress(go)),
            Outcome("ref@containerd-v2.1.4", OCI, tar=ref, blob=ref),
            Outcome("go-walking", OCI, error="boom")]
    r = ScenarioResult("whiteout/root-file", str(scen), Status.FAIL,
                       [Check("compare tar", Status.FAIL, "short explanation", ["q1"])], outs,
                       message="short explanation", environment={"containerd": "v2.1.4"})
    folder = keep(r, str(scen), str(tmp_path / "keep"))
    assert folder == str(tmp_path / "keep" / "whiteout__root-file")
    files = set(os.listdir(folder))
    assert {"scenario.yaml", "go-erofs__tar.tar", "go-erofs__tar+gzip.tar",
            "go-erofs__tar+gzip.tar.gz", "ref@containerd-v2.1.4__tar.tar",
            "go-walking__tar.error.txt", "entries-go-erofs.txt",
            "entries-ref@containerd-v2.1.4.txt", "explanation.txt", "result.json",
            "repro.sh"} <= files
    assert "errors.txt" not in files
    assert "go-erofs__tar.blob" not in files          # the uncompressed blob is the tar
    listing = (tmp_path / "keep" / "whiteout__root-file" / "entries-go-erofs.txt").read_text()
    assert listing.splitlines()[1].startswith("-rw-r--r--       1/0        2 1970-01-01")
    expl = open(os.path.join(folder, "explanation.txt")).read()
    assert "[fail] compare tar" in expl and "quirks: q1" in expl
    assert "full tar difference (tar): go-erofs vs ref@containerd-v2.1.4" in expl
    assert "uid: go-erofs=1  ref@containerd-v2.1.4=2" in expl
    data = json.load(open(os.path.join(folder, "result.json")))
    assert data["status"] == "fail" and data["artifacts"] == folder
    assert data["outcomes"][0]["tar_size"] == len(go) and "tar" not in data["outcomes"][0]
    repro = open(os.path.join(folder, "repro.sh")).read()
    assert f"{sys.executable} -m harness.cli repro {scen} " in repro
    assert os.access(os.path.join(folder, "repro.sh"), os.X_OK)
    # runs the harness without `layerconf` on PATH, from any folder
    proc = subprocess.run([os.path.join(folder, "repro.sh"), "--help"], capture_output=True,
                          text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert proc.returncode == 0 and "usage: layerconf repro" in proc.stdout, proc.stderr
    # keeping again replaces the folder
    assert keep(r, str(scen), str(tmp_path / "keep")) == folder


def test_keep_survives_bad_data(tmp_path):
    r = ScenarioResult("odd name/with spaces", str(tmp_path / "missing.yaml"), Status.ERROR,
                       outcomes=[Outcome("go-erofs", OCI, tar=b"\x01" * 700)],
                       message="oracle died")
    folder = keep(r, r.path, str(tmp_path))
    assert os.path.basename(folder) == folder_name("odd name/with spaces") == "odd_name__with_spaces"
    files = set(os.listdir(folder))
    assert {"explanation.txt", "result.json", "repro.sh", "errors.txt",
            "entries-go-erofs.txt"} <= files
    assert "# problem:" in open(os.path.join(folder, "entries-go-erofs.txt")).read()


def test_keep_writes_spooled_outcomes(tmp_path):
    """Outcomes spooled to disk are mmaps (harness/spool.py): written like bytes, and compared
    by content, not identity (the same tar is listed once, an uncompressed blob not kept twice,
    equal tars get no full difference)."""
    from harness import spool
    scen = tmp_path / "s.yaml"
    scen.write_text("description: x\n")
    tar = _tar(1)

    def mapped(name):
        s = spool.Spool(limit=1, dir=str(tmp_path))
        s.write(tar)
        v = s.value()
        assert not isinstance(v, bytes)
        return v
    outs = [Outcome("go-erofs", OCI, tar=mapped("g"), blob=mapped("gb")),
            Outcome("ref@containerd-v2.1.4", OCI, tar=mapped("r"), blob=mapped("rb"))]
    r = ScenarioResult("s", str(scen), Status.PASS, [Check("compare tar", Status.PASS)], outs)
    folder = keep(r, str(scen), str(tmp_path / "keep"))
    files = set(os.listdir(folder))
    assert "errors.txt" not in files
    assert open(os.path.join(folder, "go-erofs__tar.tar"), "rb").read() == tar
    assert "go-erofs__tar.blob" not in files
    assert "full tar difference" not in open(os.path.join(folder, "explanation.txt")).read()
