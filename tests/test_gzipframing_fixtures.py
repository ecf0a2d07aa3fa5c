"""The committed gzip-framing fixtures are what generate.py makes and what MANIFEST.json lists,
and each is applied by scenarios/apply/gzip-framing.yaml (checked there against Go)."""
import hashlib
import importlib.util
import json
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HERE = REPO / "fixtures" / "gzipframing"
MANIFEST = json.loads((HERE / "MANIFEST.json").read_text())
NOT_FIXTURES = {"MANIFEST.json", "README.md", "generate.py"}


def generator():
    spec = importlib.util.spec_from_file_location("gzipframing_generate", HERE / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_files_match_manifest():
    on_disk = {p.name for p in HERE.iterdir() if p.is_file()} - NOT_FIXTURES
    assert on_disk == {e["file"] for e in MANIFEST["fixtures"].values()}
    for e in MANIFEST["fixtures"].values():
        data = (HERE / e["file"]).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (e["size"], e["sha256"]), e["file"]


def test_generator_rebuilds_the_committed_bytes():
    made_with = MANIFEST["tools"]["python-zlib"].rsplit(" ", 1)[-1]
    if made_with != zlib.ZLIB_RUNTIME_VERSION:
        pytest.skip(f"the fixtures were made with zlib {made_with}, this is "
                    f"{zlib.ZLIB_RUNTIME_VERSION}: deflate output may differ")
    _, files = generator().build()
    assert {f: hashlib.sha256(d).hexdigest() for f, d in files.items()} == \
        {e["file"]: e["sha256"] for e in MANIFEST["fixtures"].values()}


def test_every_fixture_is_applied_against_go():
    text = (REPO / "scenarios" / "apply" / "gzip-framing.yaml").read_text()
    missing = [e["file"] for e in MANIFEST["fixtures"].values()
               if f"gzipframing/{e['file']}" not in text]
    assert not missing
