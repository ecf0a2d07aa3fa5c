"""The committed tar-feature fixtures are the ones MANIFEST.json describes (no tools needed)."""
import hashlib
import json
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent.parent / "fixtures" / "tarfeatures"
MANIFEST = json.loads((HERE / "MANIFEST.json").read_text())
NOT_FIXTURES = {"MANIFEST.json", "README.md", "generate.py"}
ENTRIES = sorted(MANIFEST["fixtures"].items())


@pytest.mark.parametrize("name,entry", ENTRIES, ids=[n for n, _ in ENTRIES])
def test_fixture_matches_manifest(name, entry):
    data = (HERE / entry["file"]).read_bytes()
    assert len(data) == entry["size"], f"{entry['file']}: size differs from MANIFEST.json"
    assert hashlib.sha256(data).hexdigest() == entry["sha256"], \
        f"{entry['file']}: sha256 differs from MANIFEST.json (regenerate with generate.py)"


def test_manifest_lists_every_file():
    on_disk = {p.name for p in HERE.iterdir() if p.is_file()} - NOT_FIXTURES
    listed = {e["file"] for e in MANIFEST["fixtures"].values()}
    assert on_disk == listed, f"unlisted: {sorted(on_disk - listed)}, missing: {sorted(listed - on_disk)}"


def test_manifest_names_tool_version_and_command():
    for name, e in MANIFEST["fixtures"].items():
        assert e["tool"] in MANIFEST["tools"], name
        assert e["tool_version"] == MANIFEST["tools"][e["tool"]], name
        assert e["command"] and e["description"], name


def test_folder_stays_small():
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    assert total < 2 * 1024 * 1024, f"fixtures/tarfeatures is {total} bytes"


def test_every_fixture_is_in_a_scenario():
    scen = Path(__file__).resolve().parent.parent / "scenarios" / "apply"
    text = "".join(p.read_text() for p in scen.glob("tar-*.yaml"))
    left_out = {"cut-zstd-no-trailer", "cut-zstd-last-byte"}   # see tar-features.yaml's header
    missing = [e["file"] for n, e in MANIFEST["fixtures"].items()
               if n not in left_out and f"tarfeatures/{e['file']}" not in text]
    assert not missing, f"fixtures no tar-*.yaml scenario applies: {missing}"
