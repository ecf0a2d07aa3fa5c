"""Ctrl-C in the middle of an oracle request: the interrupt must reach the CLI (exit 130), and
the oracle's answers must stay paired with their requests.

Before: a KeyboardInterrupt while waiting for the answer to `mount` left that answer unread, so
every later call read the answer of the call before (KeyError 'mounts', or containerd's error
for another request), and an unmount error raised during the unwinding replaced the interrupt:
the run went on and reported every scenario as "containerd failed while building the
scenario's state".
"""
import os
from pathlib import Path

import pytest

from harness import capabilities, runner, state
from harness.oracle import ContainerdError, Oracle, binary_path, default_version
from harness.result import Status
from harness.scenario import load

REPO = Path(__file__).resolve().parent.parent



def live(fn):
    """Root, the built oracle, erofs and overlayfs: skip (with the reason) otherwise."""
    for mark in (
        pytest.mark.skipif(os.geteuid() != 0, reason="host mode needs root (mounts)"),
        pytest.mark.skipif(not binary_path(default_version()).exists(),
                           reason="the Go oracle is not built (make bootstrap)"),
        pytest.mark.skipif(bool(capabilities.missing(())),
                           reason="kernel lacks erofs/overlay or mkfs.erofs lacks --tar="),
    ):
        fn = mark(fn)
    return fn


class FakeOracle:
    def __init__(self, unmount_error=None):
        self.calls, self.unmount_error = [], unmount_error

    def mount(self, key, target):
        self.calls.append(("mount", key))

    def unmount(self, target):
        self.calls.append(("unmount", target))
        if self.unmount_error:
            raise self.unmount_error


def test_unmount_error_does_not_replace_an_interrupt(tmp_path):
    fake = FakeOracle(ContainerdError("unmount: device or resource busy"))
    with pytest.raises(KeyboardInterrupt):
        with state.mounted(fake, "k", str(tmp_path / "m")):
            raise KeyboardInterrupt
    assert fake.calls == [("mount", "k"), ("unmount", str(tmp_path / "m"))]


def test_unmount_error_is_reported_when_nothing_else_failed(tmp_path):
    fake = FakeOracle(ContainerdError("unmount: device or resource busy"))
    with pytest.raises(ContainerdError, match="busy"):
        with state.mounted(fake, "k", str(tmp_path / "m")):
            pass


@pytest.mark.parametrize("op", ["mount", "compare", "commit", "unmount"])
@live
def test_interrupted_request_keeps_the_oracle_in_step(op, monkeypatch):
    """A KeyboardInterrupt while waiting for `op`'s answer propagates, and the next scenario on
    the same oracle passes (its calls get their own answers)."""
    original, hit = Oracle._readline, []

    def interrupt_once(self, timeout, what):
        if what == op and not hit:
            hit.append(what)
            raise KeyboardInterrupt        # after the request was written, before its answer
        return original(self, timeout, what)

    monkeypatch.setattr(Oracle, "_readline", interrupt_once)
    scenario = load(REPO / "scenarios/basic/modify-file-in-dir.yaml")
    with runner.Session(runner.RunOptions(build=False, walking=False)) as s:
        with pytest.raises(KeyboardInterrupt):
            runner.run_scenario(scenario, s)
        assert hit == [op]
        assert not state.mounts_under(s.base), "a mount outlived the interrupted scenario"
        r = runner.run_scenario(scenario, s)
        assert r.status == Status.PASS, r.message
