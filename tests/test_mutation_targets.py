"""make mutate's choice of checks per mutated module (mutation/targets.py, stages.py) and its
sample estimate (run.py's Wilson interval)."""
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mutation"))
import run  # noqa: E402
import stages  # noqa: E402
import targets  # noqa: E402


def test_an_apply_module_runs_apply_tests_and_scenarios_only():
    assert targets.live_targets("harness/reference/streams.py") == ["scenarios/apply"]
    unit = targets.unit_tests("harness/reference/streams.py")
    assert "tests/test_reference_apply.py" in unit and "tests/test_gotar.py" not in unit


def test_a_compare_module_skips_apply_scenarios_and_mkfs_tests():
    live = targets.live_targets("harness/reference/walk.py")
    assert "scenarios/apply" not in live and "scenarios/whiteout" in live
    assert "tests/test_reference_apply.py" not in targets.unit_tests("harness/reference/walk.py")


def test_a_shared_module_runs_everything_that_imports_it():
    live = targets.live_targets("harness/reference/gotar.py")
    assert "scenarios/apply" in live and "scenarios/names" in live


def test_stage_order_and_unknown_stage():
    assert stages.parse_stages("golden,live,unit") == ["golden", "live", "unit"]
    try:
        stages.parse_stages("golden,nope")
    except ValueError as e:
        assert "nope" in str(e)
    else:
        raise AssertionError("an unknown stage was accepted")


def test_wilson_interval_and_go_score():
    assert run.wilson(95, 100) == (0.888, 0.978)
    assert run.wilson(0, 0) == (0.0, 1.0)
    g = run.go_score(Counter({"killed by golden": 3, "killed by live": 2, "killed by unit": 4,
                              "survived": 1}), 10)
    assert g["killed_by_go"] == 5 and g["fraction"] == 0.5
