"""The daemon path end to end on this machine's kernel: containerd v2.4.2 started as a real daemon,
driven through its API. Needs root, the built oracle and the built containerd (make bootstrap).

What it pins down (docs/oracle-protocol.md, "The daemon path"):
- a scenario runs through the daemon, and the daemon is cleaned up after the session;
- B20 happens inside the daemon's own diff service (the failing temp mount is under the daemon's
  root), so it is containerd's behaviour, not the direct glue's;
- the walking differ behind containerd's default diff-service order (["walking"]) cannot diff an
  erofs snapshot from its raw mounts, and can once the mount manager activated them.
"""
import os
import subprocess
from pathlib import Path

import pytest
from hostmode import HOST_MODE

from harness import daemon, runner, state
from harness.oracle import ContainerdError, Oracle, binary_path, default_version
from harness.result import Status
from harness.scenario import load

REPO = Path(__file__).resolve().parent.parent
OCI = "application/vnd.oci.image.layer.v1.tar"

pytestmark = HOST_MODE + [pytest.mark.skipif(
    not daemon.binary_path(default_version()).exists(),
    reason="containerd is not built (make bootstrap, or bash oracle/build-daemon.sh default)")]


@pytest.fixture(scope="module")
def session():
    with runner.Session(runner.RunOptions(build=False, path="daemon")) as s:
        yield s


def _containerds_under(folder: str) -> list[int]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(folder.encode() in a for a in cmd) and cmd[0].endswith(b"containerd"):
            out.append(int(pid))
    return out


def test_scenario_passes_through_the_daemon_and_everything_is_cleaned_up(tmp_path):
    with runner.Session(runner.RunOptions(build=False, path="daemon", workdir=str(tmp_path))) as s:
        r = runner.run_scenario(load(REPO / "scenarios/whiteout/root-file.yaml"), s)
        assert r.status == Status.PASS, r.message
        assert r.environment["path"] == "daemon"
        assert r.environment["containerd-daemon"].startswith(default_version())
        base = s.base
        folders = [o.daemon.folder for o in s._oracles.values()]
        assert folders and all(_containerds_under(f) for f in folders), "no containerd runs"
    assert not any(_containerds_under(f) or os.path.exists(f) for f in folders)
    assert not state.mounts_under(str(tmp_path)) and not os.path.exists(base)


def test_b20_happens_inside_the_daemon(session):
    r = runner.run_scenario(load(REPO / "scenarios/basic/multi-layer-lowers.yaml"), session)
    assert r.status == Status.XFAIL
    spec = next(c for c in r.checks if c.name.startswith("spec"))
    assert spec.quirks == ["lower-mount-templates-unactivated"]
    go = next(o for o in r.outcomes if o.producer == "go-erofs" and o.media_type == OCI)
    # the temp mount that fails is the daemon's own (<daemon root>/tmpmounts), not the oracle's
    assert "/root/tmpmounts/containerd-mount" in go.error
    assert "fstype: format/mkdir/overlay" in go.error and go.error.endswith("no such device")
    three = next(c for c in r.checks if c.name.startswith("three-way"))
    assert three.status == Status.SKIP and "go-erofs failed" in three.explanation


def test_walking_differ_of_the_default_diff_order_needs_activated_mounts(tmp_path):
    """containerd's default diff-service order is ["walking"]: the daemon's walking differ gets the
    erofs snapshotter's raw mounts (`lowerdir={{ mount 0 }}`) and fails; activated, it diffs."""
    version = default_version()
    ctrd = daemon.Daemon(version, str(tmp_path), order=("walking",))
    with Oracle(version, str(tmp_path / "oracle"), binary=str(binary_path(version)),
                daemon=ctrd, timeout=120) as o:
        o.prepare("l0-active", "")
        target = tmp_path / "mnt"
        target.mkdir()
        o.mount("l0-active", str(target))
        (target / "lower.txt").write_text("lower\n")
        o.unmount(str(target))
        o.commit("l0", "l0-active")
        o.prepare("upper", "l0")
        o.mount("upper", str(target))
        (target / "new.txt").write_text("new\n")
        o.unmount(str(target))
        o.view("lower", "l0")
        with pytest.raises(ContainerdError) as raw:
            o.compare("erofs", "lower", "upper", OCI)     # "erofs" = through the diff service
        assert "fstype: format/mkdir/overlay" in str(raw.value)
        assert "no such device" in str(raw.value)
        out = o.compare("erofs", "lower", "upper", OCI, activate=True)
        listing = subprocess.run(["tar", "-tf", out["blob"]], capture_output=True, text=True,
                                 timeout=60, check=True).stdout.split()
        assert listing == ["new.txt"]
    assert ctrd.proc is None and not _containerds_under(str(tmp_path))
