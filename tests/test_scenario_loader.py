"""The scenario loader: good files load into plain data; every broken file gets one clear
FILE:LINE message (no traceback), from the library, the CLI and pytest collection alike."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.scenario import ScenarioError, load
from harness.scenario.model import DEFAULT_MEDIA_TYPES

BAD = sorted((Path(__file__).parent / "bad_scenarios").glob("*.yaml"))
REPO = Path(__file__).resolve().parent.parent


def expectation(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), path
    return first[len("# expect: "):]


def test_at_least_25_broken_files():
    assert len(BAD) >= 25


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_broken_file_is_reported_with_file_and_line(path):
    with pytest.raises(ScenarioError) as info:
        load(path)
    text = str(info.value)
    line, _, message = expectation(path).rpartition(": ") if re.match(r"^\d+: ", expectation(path)) \
        else ("", "", expectation(path))
    assert f"{path}:{line}:" in text if line else str(path) in text, text
    assert message in text, text
    assert "Traceback" not in text


def test_validate_cli_reports_every_broken_file_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "validate", *map(str, BAD)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    for path in BAD:
        assert f"{path}:" in proc.stdout
    assert f"0 valid, {len(BAD)} invalid" in proc.stdout


def test_good_file_loads_into_plain_data(tmp_path):
    f = tmp_path / "scenarios" / "whiteout" / "x.yaml"
    f.parent.mkdir(parents=True)
    f.write_text("""
description: a file and a raw-byte name
tags: [whiteout]
lowers:
  - - {path: a, content: "hi", mode: 0o4755, mtime: 1700000000, uid: 3000000}
    - {path: {hex: "ff61"}, type: symlink, target: a}
    - {path: h, type: hardlink, target: a}
upper:
  - {op: rm, path: a}
  - {op: mtime, path: h, mtime: "-1.25"}
compare:
  source_date_epoch: 1700000000
""")
    s = load(f)
    assert s.name == "whiteout/x"
    assert s.tags == ("whiteout",)
    a, raw, h = s.lowers[0]
    assert (a.path, a.content, a.mode, a.mtime_ns, a.uid) == (b"a", b"hi", 0o4755, 1700000000 * 10**9, 3000000)
    assert (raw.path, raw.type, raw.target) == (b"\xffa", "symlink", b"a")
    assert s.upper[1].mtime_ns == -1_250_000_000
    assert s.media_types == DEFAULT_MEDIA_TYPES
    assert s.source_date_epoch == 1700000000
    assert s.upper[0].line == 9


def test_missing_file_is_a_scenario_error(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read the file"):
        load(tmp_path / "nope.yaml")


def test_fixture_beside_the_scenario_file(tmp_path):
    """`./NAME` names a blob beside the scenario file (how `layerconf fuzz` writes one)."""
    (tmp_path / "blob.tar").write_bytes(b"\0" * 1024)
    f = tmp_path / "x.yaml"
    f.write_text("description: d\napply:\n  media_type: application/vnd.oci.image.layer.v1.tar\n"
                 "  blob: {fixture: ./blob.tar}\n")
    (case,) = load(f).apply_cases
    assert case.fixture == str(tmp_path / "blob.tar")
    f.write_text(f.read_text().replace("./blob.tar", "./missing.tar"))
    with pytest.raises(ScenarioError) as info:
        load(f)
    assert f"{f}:3: apply: fixture './missing.tar' does not exist beside the scenario file" \
        in str(info.value)
