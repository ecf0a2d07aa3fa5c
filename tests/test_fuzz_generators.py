"""The fuzz generators without root: every generated Compare case is a valid scenario, every
Apply blob is what its recipe says, and a re-encoded header field keeps its value."""
import gzip
import io
import tarfile

import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.fuzz.compare import compare_cases
from harness.fuzz.engine import scenario_text, signature
from harness.fuzz.tars import MATCHING, _frame, _reencode, apply_cases
from harness.result import Check, ScenarioResult, Status
from harness.scenario import load

FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@FAST
@given(case=compare_cases())
def test_every_generated_compare_case_is_a_valid_scenario(tmp_path_factory, case):
    d = tmp_path_factory.mktemp("c")
    (d / "case.yaml").write_text(scenario_text(case))
    s = load(d / "case.yaml", root=d)          # raises ScenarioError if the generator is wrong
    assert 1 <= len(s.lowers) <= 3 and all(len(layer) <= 5 for layer in s.lowers)


@FAST
@given(case=apply_cases())
def test_every_apply_case_loads_with_its_blob_beside_it(tmp_path_factory, case):
    d = tmp_path_factory.mktemp("a")
    (d / "blob").write_bytes(case.blob)
    (d / "case.yaml").write_text(scenario_text(case.scenario("./blob")))
    s = load(d / "case.yaml", root=d)
    (c,) = s.apply_cases
    assert open(c.fixture, "rb").read() == case.blob and c.media_type == case.media_type


@given(framing=st.sampled_from(sorted(MATCHING)), data=st.binary(max_size=3000))
def test_framings_decode_to_the_tar(framing, data):
    blob = _frame(data, framing)
    if framing.startswith("gzip"):
        assert gzip.decompress(blob) == data
    elif framing.startswith("zstd"):
        rest, got = blob, b""
        while rest:                            # frame by frame
            d = zstandard.ZstdDecompressor().decompressobj()
            got += d.decompress(rest)
            rest = d.unused_data
        assert got == data
    else:
        assert blob == data


def _one_file_tar(fmt=tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        ti = tarfile.TarInfo("a")
        ti.size, ti.uid, ti.mtime = 3, 1234, 1700000000
        tf.addfile(ti, io.BytesIO(b"abc"))
    return buf.getvalue()


def test_reencoded_fields_keep_their_value_and_a_valid_checksum():
    blob = _one_file_tar()
    for field, want in (("uid", 1234), ("mtime", 1700000000), ("size", 3)):
        for style in ("base256", "spaces", "noterm"):
            new = _reencode(blob, 0, field, style)
            assert new != blob, (field, style)
            with tarfile.open(fileobj=io.BytesIO(new)) as tf:    # checksum checked here
                m = tf.getmembers()[0]
                assert {"uid": m.uid, "mtime": m.mtime, "size": m.size}[field] == want
                assert tf.extractfile(m).read() == b"abc"


def test_signature_masks_media_types_paths_and_names():
    def result(name, status=Status.FAIL, message=""):
        return ScenarioResult(scenario="x", path="x", status=status, message=message,
                              checks=[Check(name, status, "why")] if name else [])
    a = signature(result("compare application/vnd.oci.image.layer.v1.tar: go vs ref"))
    b = signature(result("compare application/vnd.oci.image.layer.v1.tar+zstd: go vs ref"))
    assert a == b == "fail: compare <mt>: go vs ref"
    e1 = signature(result("", Status.ERROR, "/tmp/x/case.yaml: line 5: mkdir 'a' failed: File exists"))
    e2 = signature(result("", Status.ERROR, "/tmp/y/case.yaml: line 9: mkdir 'zz' failed: File exists"))
    assert e1 == e2 and "File exists" in e1
