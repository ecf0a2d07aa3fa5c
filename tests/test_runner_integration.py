"""The runner end to end on this machine's kernel, against containerd's real Go differ.

A deliberately broken reference rule, a wrong scenario expectation and a killed oracle must each
give the right status and an explanation a newcomer can act on. Needs root and the built oracle.
"""
import os
import textwrap
from pathlib import Path

import pytest
from hostmode import HOST_MODE

from harness import runner
from harness.result import Status
from harness.scenario import load

REPO = Path(__file__).resolve().parent.parent

pytestmark = HOST_MODE


@pytest.fixture(scope="module")
def session():
    with runner.Session(runner.RunOptions(build=False)) as s:
        yield s


def test_identical_scenario_passes(session):
    r = runner.run_scenario(load(REPO / "scenarios/whiteout/root-file.yaml"), session)
    assert r.status == Status.PASS, r.message
    assert {c.name.split(":")[0] for c in r.checks} >= {
        "compare application/vnd.oci.image.layer.v1.tar", "spec application/vnd.oci.image.layer.v1.tar"}
    assert r.environment["containerd"] and r.environment["erofs-utils"]


def test_broken_reference_rule_fails_and_names_the_rule(session, monkeypatch):
    """Break the USTAR prefix split: long paths then go out as PAX, and the report says so."""
    from harness.reference import gotar
    monkeypatch.setattr(gotar, "split_ustar_path", lambda name: None)
    r = runner.run_scenario(load(REPO / "scenarios/whiteout/long-path-ustar-split.yaml"), session)
    assert r.status == Status.FAIL
    text = "\n".join(c.explanation for c in r.checks if c.status == Status.FAIL)
    assert "USTAR" in text and "PAX" in text, text
    assert "entry #" in text                          # which entry
    assert "go-erofs" in text and "ref@containerd" in text


def test_wrong_expectation_fails_with_what_was_found(session, tmp_path):
    src = (REPO / "scenarios/opaque/kernel-rmtree-mkdir.yaml").read_text()
    src = src.split("\nexpect:")[0] + "\nexpect:\n  quirks: [epoch-ignored]\n"
    f = tmp_path / "scenarios" / "wrong.yaml"
    f.parent.mkdir()
    f.write_text(src)
    r = runner.run_scenario(load(f), session)
    assert r.status == Status.FAIL
    spec = next(c for c in r.checks if c.name.startswith("spec"))
    assert "expected quirks ['epoch-ignored']" in spec.explanation
    assert "duplicate-dir-headers" in spec.explanation


def test_expected_quirk_that_does_not_show_is_xpass(session, tmp_path):
    f = tmp_path / "scenarios" / "stale.yaml"
    f.parent.mkdir()
    f.write_text(textwrap.dedent("""
        description: a plain add, wrongly said to show a quirk
        lowers: [[{path: a, content: "a", mtime: 1700000000}]]
        upper: [{op: write, path: b, content: "b", mtime: 1700000000}]
        expect: {quirks: [epoch-ignored]}
    """))
    r = runner.run_scenario(load(f), session)
    assert r.status == Status.XPASS
    assert r.status.failed


def test_killed_oracle_is_an_error_not_a_failure_and_the_next_scenario_gets_a_new_one(monkeypatch):
    scenario = load(REPO / "scenarios/whiteout/root-file.yaml")
    real = runner.go_compare

    def killed_first(oracle, *args, **kw):
        oracle.kill()              # the oracle dies in the middle of the scenario
        return real(oracle, *args, **kw)

    with runner.Session(runner.RunOptions(build=False)) as s:
        monkeypatch.setattr(runner, "go_compare", killed_first)
        r = runner.run_scenario(scenario, s)
        assert r.status == Status.ERROR
        assert "Go oracle" in r.message and "oracle.log" in r.message
        assert "while running Compare" in r.message            # the stage it died in
        monkeypatch.setattr(runner, "go_compare", real)
        assert runner.run_scenario(scenario, s).status == Status.PASS
        assert not [m for m in open("/proc/self/mountinfo") if s.base in m]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_mid_run_releases_every_mount_and_temp_dir(tmp_path, sig):
    """`timeout`, a CI runner or Ctrl-C stop a host run: exit 130, nothing left behind."""
    import signal
    import subprocess
    import sys
    import time
    env = dict(os.environ, TMPDIR=str(tmp_path))

    def as_from_a_shell():
        # The test runner's own signal state (an inherited mask or SIG_IGN) is not layerconf's.
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    p = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--backend", "host",
                          str(REPO / "scenarios/basic")], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=as_from_a_shell)
    deadline, seen = time.monotonic() + 60, False
    while not seen and time.monotonic() < deadline and p.poll() is None:
        seen = any(str(tmp_path) in m for m in open("/proc/self/mountinfo"))
        time.sleep(0.01)
    assert seen, "no mount seen before the run ended"
    p.send_signal(getattr(signal, sig))
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, (out[-2000:], err)
    assert b"interrupted" in err
    assert not [m for m in open("/proc/self/mountinfo") if str(tmp_path) in m]
    assert not [x for x in tmp_path.iterdir() if x.name.startswith("layerconf-")]
