"""The daemon path's pure parts: the generated containerd config, the direct-vs-daemon check and
the three-way check's handling of a differ that could not run."""
import os

import pytest
import tomllib

from harness import daemon
from harness.checks.paths import NAME, check_paths, normalise_error
from harness.result import Check, Outcome, ScenarioResult, Status
from harness.verdict import check_walking

OCI = "application/vnd.oci.image.layer.v1.tar"


def test_config_is_toml_with_own_root_state_socket_and_erofs_settings():
    text = daemon.config_toml("/tmp/x y\"z", mkfs_options=["-T0", "--mkfs-time"], tar_index=True)
    cfg = tomllib.loads(text)
    assert cfg["version"] == 3
    assert cfg["root"] == '/tmp/x y"z/root' and cfg["state"] == '/tmp/x y"z/state'
    assert cfg["grpc"]["address"] == '/tmp/x y"z/c.sock'
    assert cfg["ttrpc"]["address"] == '/tmp/x y"z/c.sock.ttrpc'
    plugins = cfg["plugins"]
    assert plugins["io.containerd.service.v1.diff-service"]["default"] == ["erofs", "walking"]
    assert plugins["io.containerd.differ.v1.erofs"] == {
        "mkfs_options": ["-T0", "--mkfs-time"], "enable_tar_index": True}
    assert "io.containerd.grpc.v1.cri" in cfg["disabled_plugins"]
    # the built-in ocicrypt processors are replaced by ones that accept no media type
    assert {n: p["accepts"] for n, p in cfg["stream_processors"].items()} == {
        "io.containerd.ocicrypt.decoder.v1.tar": [], "io.containerd.ocicrypt.decoder.v1.tar.gzip": []}
    # the snapshotter and differ under test are never disabled
    assert not {"io.containerd.snapshotter.v1.erofs", "io.containerd.differ.v1.erofs",
                "io.containerd.differ.v1.walking"} & set(cfg["disabled_plugins"])


def test_config_defaults_and_order():
    cfg = tomllib.loads(daemon.config_toml("/d", order=("walking",)))
    assert cfg["plugins"]["io.containerd.differ.v1.erofs"] == {
        "mkfs_options": [], "enable_tar_index": False}
    assert cfg["plugins"]["io.containerd.service.v1.diff-service"]["default"] == ["walking"]


def test_daemon_folder_is_short_enough_for_its_sockets(tmp_path):
    deep = tmp_path / ("d" * 90)
    deep.mkdir()
    for base in (tmp_path, deep):
        folder = daemon.short_folder(str(base))
        try:
            assert len(os.path.join(folder, daemon.SOCKET + ".ttrpc")) <= 100
            assert (os.path.dirname(folder) == str(base)) == (base == tmp_path)
        finally:
            os.rmdir(folder)


def test_missing_binary_is_a_plain_error(tmp_path):
    d = daemon.Daemon("v9.9.9", str(tmp_path), binary=str(tmp_path / "nope"))
    with pytest.raises(daemon.DaemonError) as e:
        d.start()
    assert "not built" in str(e.value) and "build-daemon.sh v9.9.9" in str(e.value)
    assert list(tmp_path.iterdir()) == []     # nothing left behind


def test_daemon_that_exits_at_start_is_an_error_with_its_log_and_is_cleaned_up(tmp_path):
    fake = tmp_path / "containerd"
    fake.write_text("#!/bin/sh\necho 'bad config line 3' >&2\nexit 1\n")
    fake.chmod(0o755)
    base = tmp_path / "base"
    base.mkdir()
    d = daemon.Daemon("v2.4.2", str(base), binary=str(fake), timeout=10)
    with pytest.raises(daemon.DaemonError) as e:
        d.start()
    assert "exited (status 1)" in str(e.value) and "bad config line 3" in str(e.value)
    assert list(base.iterdir()) == [] and d.proc is None


def test_daemon_that_never_listens_times_out_and_is_killed(tmp_path):
    fake = tmp_path / "containerd"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")
    fake.chmod(0o755)
    d = daemon.Daemon("v2.4.2", str(tmp_path), binary=str(fake), timeout=0.5)
    try:
        d.start()
    except daemon.DaemonError as e:
        assert "did not open" in str(e)
    else:
        raise AssertionError("a daemon without a socket started")
    assert d.proc is None and d.folder is None


def _result(go_errors: dict, checks: dict, status=Status.PASS) -> ScenarioResult:
    return ScenarioResult("s", "s.yaml", status,
                          checks=[Check(n, st) for n, st in checks.items()],
                          outcomes=[Outcome(p, OCI, error=e) for p, e in go_errors.items()]
                          + [Outcome("ref@spec", OCI, error="ignored")])


def test_paths_agree_when_verdicts_and_go_errors_agree_up_to_run_specific_text():
    a = _result({"go-erofs": None, "go-walking": "mount /tmp/a/1/fs: no such device"},
                {"compare": Status.PASS})
    b = _result({"go-erofs": None, "go-walking": "mount /run/b/22/fs: no such device"},
                {"compare": Status.PASS})
    c = check_paths(a, b)
    assert c.status == Status.PASS and c.info and c.name == NAME


def test_paths_differ_is_a_failure_naming_each_difference():
    a = _result({"go-erofs": "failed to mount: no such device"}, {"compare": Status.XFAIL})
    b = _result({"go-erofs": None}, {"compare": Status.PASS, "round trip": Status.PASS})
    c = check_paths(a, b)
    assert c.status == Status.FAIL
    assert "go-erofs " + OCI + ": direct error: failed to mount: no such device; daemon ok" in c.explanation
    assert "check compare: direct xfail; daemon pass" in c.explanation
    assert "check round trip: direct absent; daemon pass" in c.explanation


def test_paths_not_compared_when_the_direct_run_did_not_run():
    a = _result({}, {}, status=Status.ERROR)
    a.message = "oracle died\nmore"
    c = check_paths(a, _result({}, {}))
    assert c.status == Status.SKIP and "oracle died" in c.explanation


def test_normalise_error_blanks_paths_ids_and_pids():
    assert normalise_error("mount /a/b/c: sha256:" + "ab" * 32 + " gone") == "mount <path>: sha256:<hex> gone"
    assert normalise_error("still running: mkfs.erofs --tar=f (pid 123)") == \
        "still running: mkfs.erofs --tar=f (pid <n>)"


def test_walking_check_never_passes_without_both_outputs():
    ok = Outcome("go-erofs", OCI, tar=b"x" * 1024)
    bad = Outcome("go-walking", OCI, error="format/mkdir/overlay: no such device")
    for erofs, walking in ((ok, bad), (Outcome("go-erofs", OCI, error="e"), bad),
                           (Outcome("go-erofs", OCI, error="e"), Outcome("go-walking", OCI, tar=b"x"))):
        c = check_walking(erofs, walking)
        assert c.status == Status.SKIP and c.explanation.startswith("not compared"), c
        assert c.info
