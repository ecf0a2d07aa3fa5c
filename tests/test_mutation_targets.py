"""make mutate's choice of checks per mutated module (mutation/targets.py, stages.py) and its
sample estimate (run.py's Wilson interval)."""
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mutation"))
import run  # noqa: E402
import stages  # noqa: E402
import targets  # noqa: E402
import annotation_mutants  # noqa: E402


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


# -- mutants inside unevaluated type annotations (mutation/annotation_mutants.py) -------------

ANNOTATED = '''from __future__ import annotations
x: int | None = 1 | 2


def f(a: bytes | None, é: "str" = "ü" ) -> dict[str, int | None]:
    return {"k": a | é}
'''


def _pos_of(source: str, needle: str, nth: int = 0) -> tuple:
    """(line, character column) of the nth occurrence of needle, as parso counts them."""
    seen = 0
    for no, line in enumerate(source.splitlines(), 1):
        col = line.find(needle)
        while col != -1:
            if seen == nth:
                return (no, col)
            seen += 1
            col = line.find(needle, col + 1)
    raise AssertionError(f"{needle!r} #{nth} not in the source")


def _is_annotation(source: str, nth: int) -> bool:
    start = _pos_of(source, "|", nth)
    return annotation_mutants.inside(annotation_mutants.annotation_spans(source), start,
                                     (start[0], start[1] + 1))


def test_operators_in_annotations_are_found_and_code_is_not():
    # the | of: x's annotation, x's value, a's, the return's, the body
    assert [_is_annotation(ANNOTATED, n) for n in range(5)] == [True, False, True, True, False]


def test_columns_count_characters_after_non_ascii_text():
    # é is two bytes in UTF-8: ast says byte column 4, cosmic-ray (parso) says character 3
    source = "from __future__ import annotations\né: int = 1\n"
    assert annotation_mutants.annotation_spans(source) == [((2, 3), (2, 6))]


def test_without_the_future_import_annotations_run_and_nothing_is_skipped():
    source = ANNOTATED.replace("from __future__ import annotations\n", "")
    assert annotation_mutants.annotation_spans(source) == []


def test_every_reference_module_defers_its_annotations():
    # otherwise its annotation mutants would run (and be judged) like any other
    ref = Path(__file__).resolve().parent.parent / "harness" / "reference"
    for p in sorted(ref.glob("*.py")):
        spans = annotation_mutants.annotation_spans(p.read_text(encoding="utf-8"))
        assert spans or "->" not in p.read_text(encoding="utf-8"), p.name
