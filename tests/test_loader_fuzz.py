"""Loader robustness under Hypothesis: generated scenario documents (valid ones, and mutations
of the real files under scenarios/) either fail validation with FILE:LINE messages, or load into
a Scenario every field of which the runner takes (fsops.preflight: what the state builder's os
calls accept). No other exception may escape load()."""
import json
import re
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import corpus, fsops
from harness.capabilities import KNOWN, NETWORK
from harness.fuzz.compare import compare_cases
from harness.fuzz.engine import scenario_text
from harness.scenario import ScenarioError, load
from harness.scenario.loader import _Loader

REPO = Path(__file__).resolve().parent.parent
REAL = sorted((REPO / "scenarios").rglob("*.yaml"))


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    return x


REAL_DATA = [_plain(yaml.load(p.read_bytes(), Loader=_Loader)) for p in REAL]

ODD = [None, 10**30, 2**63, 2**64, -1, -(2**63) - 1, 1.5, float("inf"), float("nan"), "1e309",
       "-1e400", "1e999999999", True, [], {}, [None], {"hex": "zz"}, {"hex": None}, "", "\0",
       "a\0b", "\ud800", "é", "\u202e", "../x", "/abs", "a//b", ".", b"\xff\x00", 0o7777 + 1,
       "0o644", {"fixture": "../../etc/passwd"}, {"annotations": [1]}, ["warp-drive"],
       "x" * 5000]


def _positions(x, path=()):
    """Every (container, key) in a nested document."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield x, k
            yield from _positions(v)
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield x, i
            yield from _positions(v)


@st.composite
def mutated(draw, base):
    doc = _copy(base)
    for _ in range(draw(st.integers(1, 4))):
        spots = list(_positions(doc))
        if not spots:
            break
        container, key = draw(st.sampled_from(spots))
        action = draw(st.sampled_from(["replace", "drop", "odd-int", "text"]))
        if action == "drop":
            del container[key]
        elif action == "odd-int":
            container[key] = draw(st.integers(-(2**70), 2**70))
        elif action == "text":
            container[key] = draw(st.text(max_size=6))
        else:
            container[key] = _copy(draw(st.sampled_from(ODD)))
    return doc


def _copy(x):
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_copy(v) for v in x]
    return x


documents = st.one_of(
    compare_cases(),
    st.sampled_from(REAL_DATA).flatmap(mutated),
    compare_cases().flatmap(mutated),
)

LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+): \S")


def _check_runnable(s):
    fsops.preflight(s.lowers, s.upper + s.upperdir)        # raises OpError if not
    assert s.media_types and all(isinstance(m, str) and m for m in s.media_types)
    assert s.source_date_epoch is None or 0 <= s.source_date_epoch < 2**63
    assert set(s.requires) <= set(KNOWN)
    assert isinstance(s.description, str) and s.description
    for case in s.apply_cases:
        # a corpus blob is built or fetched on demand, into the corpus cache: the scenario
        # requires the corpus or the registry it comes from, and skips until then
        in_corpus = Path(case.fixture or "").is_relative_to(corpus.CACHE)
        assert case.from_compare or Path(REPO / "fixtures" / case.fixture).is_file() \
            or (in_corpus and set(s.requires) & ({"corpus"} | NETWORK))
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in case.annotations)
        assert isinstance(case.tar_index, bool)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(doc=documents)
def test_load_rejects_with_file_line_or_returns_a_runnable_scenario(tmp_path_factory, doc):
    d = tmp_path_factory.mktemp("s")
    path = d / "case.yaml"
    try:
        text = scenario_text(doc)
    except yaml.YAMLError:
        return
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        s = load(path, root=d)
    except ScenarioError as e:
        lines = str(e).splitlines()
        assert lines
        for line in lines:
            m = LINE.match(line)
            assert m and m["file"] == str(path), line
            assert int(m["line"]) >= 1, line
        return
    _check_runnable(s)


def test_every_real_scenario_is_runnable():
    for p in REAL:
        _check_runnable(load(p))


def test_schema_lists_exactly_the_known_capabilities():
    schema = json.loads((REPO / "scenarios" / "schema.json").read_text())
    assert set(schema["properties"]["requires"]["items"]["enum"]) == set(KNOWN)
