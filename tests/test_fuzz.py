"""`layerconf fuzz` end to end: a bug planted in the reference is found, shrunk to a small
scenario file, and that file fails under `layerconf run` with the bug and passes without it.
Also the short fixed-seed run CI does. Needs root and the built oracle."""
import re

from hostmode import HOST_MODE

from harness import runner
from harness.cli import main
from harness.fuzz.engine import FuzzOptions, Fuzzer
from harness.reference import changes
from harness.reference.gotar import TYPE_LINK
from harness.scenario import load

pytestmark = HOST_MODE


def plant_hardlink_bug(monkeypatch):
    """containerd links every later path of an inode to the first one written; the planted bug
    links each to the one written just before it (a, b -> a, c -> b)."""
    original = changes.ChangeWriter.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        latest, write = {}, self.tw.write_header

        def write_header(hdr):
            if hdr.typeflag == TYPE_LINK:
                first = hdr.linkname
                hdr.linkname = latest.get(first, first)
                latest[first] = hdr.name
            return write(hdr)
        self.tw.write_header = write_header

    monkeypatch.setattr(changes.ChangeWriter, "__init__", init)


def test_planted_bug_is_found_shrunk_and_reproduced(tmp_path, monkeypatch, capsys):
    plant_hardlink_bug(monkeypatch)
    out = tmp_path / "findings"
    # A count, not a time, bounds the search, so the run is the same on a slow machine; the
    # round trip and the walking differ are off to halve the cost of a case (the bug is in the
    # tar the reference writes, which the Compare checks see).
    with runner.Session(runner.RunOptions(build=False, round_trip=False, walking=False)) as session:
        fuzzer = Fuzzer(FuzzOptions(seconds=600, seed=4, targets=("compare",), out=str(out),
                                    max_examples=150, shrink_seconds=90), session, log=print)
        stats = fuzzer.run()["compare"]
    found = [(sig, path) for sig, path in stats.findings if sig.startswith("fail")]
    assert found, f"the planted bug was not found: {stats}"
    sig, path = found[0]
    assert "compare" in sig and "ref@containerd" in sig, sig
    s = load(path)
    size = sum(len(layer) for layer in s.lowers) + len(s.upper)
    assert size <= 5, open(path).read() + capsys.readouterr().out
    assert sum(op.op == "link" for op in s.upper) + sum(
        e.type == "hardlink" for layer in s.lowers for e in layer) >= 2, open(path).read()
    keep = str(tmp_path / "artifacts")
    assert main(["run", "--backend", "host", "-q", "--keep", keep, path]) == 1
    monkeypatch.undo()
    assert main(["run", "--backend", "host", "-q", "--keep", keep, path]) == 0


def test_short_fixed_seed_run_finds_nothing_new(tmp_path, capsys):
    """What CI runs: both targets, a fixed seed and count. A new finding here is a real
    divergence (or a generator bug): the written scenario file says which. The count ends the
    run, not the time: --seconds is only a safety net, far above the ~2 min an idle machine
    needs (at 240 s, a machine shared with other heavy jobs ran out of time after 57 cases)."""
    out = tmp_path / "findings"
    rc = main(["fuzz", "--seed", "1", "--max-examples", "160", "--seconds", "1200",
               "--target", "both", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text + "\n".join(p.read_text() for p in out.glob("*.yaml"))
    assert not out.exists() or not list(out.iterdir())
    for target in ("compare", "apply"):
        m = re.search(rf"^{target}: (\d+) case\(s\).* = [0-9.]+ cases/s", text, re.M)
        assert m and int(m[1]) == 80, text


def test_an_oracle_killed_from_outside_is_restarted_not_reported(tmp_path, monkeypatch):
    """A one-off oracle death (here: killed in the middle of the third case) costs one restart;
    the case runs again on a fresh oracle and nothing is written."""
    calls = []
    real, real_compare = runner.run_scenario, runner.go_compare

    def run_scenario(scenario, session):
        calls.append(scenario.name)
        return real(scenario, session)

    def go_compare(oracle, *args, **kw):
        if len(calls) == 3 and oracle.alive:
            oracle.kill()                     # dies while the case is running
        return real_compare(oracle, *args, **kw)

    monkeypatch.setattr(runner, "run_scenario", run_scenario)
    monkeypatch.setattr(runner, "go_compare", go_compare)
    out = tmp_path / "findings"
    with runner.Session(runner.RunOptions(build=False, round_trip=False, walking=False)) as session:
        fuzzer = Fuzzer(FuzzOptions(seconds=120, seed=3, targets=("compare",), out=str(out),
                                    max_examples=6), session, log=print)
        stats = fuzzer.run()["compare"]
    assert fuzzer.restarts == 1
    assert stats.cases == 6 and not stats.findings and not out.exists()
    assert stats.statuses["error"] == 0, stats
