"""Deadlines: a hung mkfs.erofs under containerd's Apply ends at the case's deadline, is reported
as an error that names the case, the stage and the process still running, and the cases after it
in the same run get a fresh oracle and their right verdicts. Needs root and the built oracle.

The hang is planted: a `mkfs.erofs` first on PATH that runs the real one, except for a tar that
holds the word HANGME, where it sleeps. (mkfs.erofs 1.8.6 hangs for real on a tar cut inside a
file's data; scenarios/apply/tar-truncated.yaml shows that one.)
"""
import io
import os
import shutil
import stat
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
from hostmode import HOST_MODE

from harness import daemon, runner
from harness.oracle import default_version
from harness.result import Status
from harness.scenario import load

REPO = Path(__file__).resolve().parent.parent

pytestmark = HOST_MODE

SHIM = """#!{python}
import os, subprocess, sys, time
data = sys.stdin.buffer.read()
if b"HANGME" in data:
    time.sleep(3600)
sys.exit(subprocess.run([{real!r}] + sys.argv[1:], input=data).returncode)
"""


def _tar(path: Path, content: bytes):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        info = tarfile.TarInfo("f")
        info.size, info.mtime, info.mode = len(content), 1700000000, 0o644
        t.addfile(info, io.BytesIO(content))
    path.write_bytes(buf.getvalue())


@pytest.mark.parametrize("path", ["direct", pytest.param("daemon", marks=pytest.mark.skipif(
    not daemon.binary_path(default_version()).exists(), reason="containerd is not built"))])
def test_a_hung_apply_is_an_error_naming_case_stage_and_process(tmp_path, monkeypatch, path):
    real = shutil.which("mkfs.erofs")
    shim_dir = tmp_path / "bin"
    shim_dir.mkdir()
    shim = shim_dir / "mkfs.erofs"
    shim.write_text(SHIM.format(python=sys.executable, real=real))
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{shim_dir}:{os.environ['PATH']}")
    _tar(tmp_path / "good.tar", b"fine\n")
    _tar(tmp_path / "hang.tar", b"HANGME\n")
    scenario = tmp_path / "scenarios" / "deadline.yaml"
    scenario.parent.mkdir()
    scenario.write_text(textwrap.dedent(f"""\
        description: the middle case hangs in mkfs.erofs; the others must not notice
        timeout: 5
        apply:
          cases:
            - {{name: before, media_type: application/vnd.oci.image.layer.v1.tar, blob: {{fixture: {tmp_path}/good.tar}}}}
            - {{name: hangs, media_type: application/vnd.oci.image.layer.v1.tar, blob: {{fixture: {tmp_path}/hang.tar}}}}
            - {{name: after, media_type: application/vnd.oci.image.layer.v1.tar, blob: {{fixture: {tmp_path}/good.tar}}}}
        """))
    keep = tmp_path / "artifacts"
    with runner.Session(runner.RunOptions(build=False, keep=str(keep), path=path)) as session:
        r = runner.run_scenario(load(scenario), session)
    assert r.status == Status.ERROR, r.message
    hung = [c for c in r.checks if "hangs" in c.name]
    assert [c.status for c in hung] == [Status.ERROR], [(c.name, c.status) for c in r.checks]
    text = hung[0].explanation
    assert "apply hangs" in text                              # the case
    assert "'apply'" in text and "within 5 s" in text         # the stage and its deadline
    assert "mkfs.erofs" in text and "pid" in text             # the process that did not finish
    for name in ("before", "after"):
        checks = [c for c in r.checks if c.name.endswith(name)]
        assert checks and all(c.status == Status.PASS for c in checks), \
            [(c.name, c.status, c.explanation) for c in checks]
    # The dead oracle's log is kept with the artifacts.
    kept = Path(r.artifacts)
    assert any(p.name.startswith("oracle-") for p in kept.iterdir()), sorted(kept.iterdir())
