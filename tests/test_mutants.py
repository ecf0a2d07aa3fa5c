"""Bugs planted in the reference must be caught by a live check against containerd's Go code.

Each test plants one bug (monkeypatch), runs the scenario that should expose it through the real
oracle, and asserts that the named check fails with an explanation that points at the bug. The
unplanted baseline passes the same checks, so each assertion can fail. Needs root and the oracle.
"""
import textwrap
from pathlib import Path

import pytest
from hostmode import HOST_MODE

from harness import runner
from harness.oracle import default_version
from harness.reference import apply as ref_apply
from harness.reference import compression, profiles, streams, walk
from harness.result import Status
from harness.scenario import load

REPO = Path(__file__).resolve().parent.parent
NAMES = REPO / "scenarios/names/byte-order-not-code-points.yaml"

pytestmark = HOST_MODE


@pytest.fixture(scope="module")
def session():
    with runner.Session(runner.RunOptions(build=False, walking=False, round_trip=False)) as s:
        yield s


def apply_scenario(tmp_path, fixture: str, media_type: str) -> Path:
    f = tmp_path / "scenarios" / "apply" / "one.yaml"
    f.parent.mkdir(parents=True)
    f.write_text(textwrap.dedent(f"""
        description: one fixture through Apply, Go vs reference
        apply:
          mkfs_options: ["-T0", "--mkfs-time"]
          check: [descriptor, error, image]
          cases:
            - {{media_type: {media_type}, blob: {{fixture: {fixture}}}}}
    """))
    return f


def checks(result, prefix: str):
    found = [c for c in result.checks if c.name.startswith(prefix)]
    assert found, f"no {prefix!r} check in {[c.name for c in result.checks]}"
    return found


def failing(result, prefix: str) -> str:
    bad = [c for c in checks(result, prefix) if c.status == Status.FAIL]
    assert bad, f"no {prefix!r} check failed: {[(c.name, c.status) for c in result.checks]}"
    return "\n".join(c.explanation for c in bad)


# -- the baselines: the same checks pass without a planted bug ---------------------------------

def test_baseline_compare_checks_pass(session):
    r = runner.run_scenario(load(NAMES), session)
    assert r.status == Status.PASS, r.message
    assert {c.name for c in checks(r, "compare")} >= {
        "compare application/vnd.oci.image.layer.v1.tar+gzip: go-erofs vs ref@containerd@" + default_version()}


def test_baseline_apply_checks_pass(session, tmp_path):
    r = runner.run_scenario(load(apply_scenario(tmp_path, "dialects/trailing-100k.tar.gz",
                                                "application/vnd.oci.image.layer.v1.tar+gzip")),
                            session)
    assert r.status == Status.PASS, r.message
    assert all(c.status == Status.PASS for c in checks(r, "mkfs apply"))


# -- the planted bugs --------------------------------------------------------------------------

def test_names_sorted_by_decoded_text(session, monkeypatch):
    def decoded_order(names):
        names.sort(key=lambda n: n.decode("utf-8", "surrogateescape"))
    monkeypatch.setattr(walk, "sort_names", decoded_order)
    r = runner.run_scenario(load(NAMES), session)
    text = failing(r, "compare application/vnd.oci.image.layer.v1.tar:")
    assert "go-erofs" in text and "ref@containerd" in text


def test_gzip_level_9_instead_of_6(session, monkeypatch):
    monkeypatch.setattr(compression, "GO_GZIP_LEVEL", 9)
    r = runner.run_scenario(load(NAMES), session)
    text = failing(r, "compare application/vnd.oci.image.layer.v1.tar+gzip")
    assert "gzip header" in text and "XFL 0x00 vs 0x02" in text, text
    assert "this difference is quirk" not in text       # the tars agree: no quirk to blame


def test_gzip_os_byte(session, monkeypatch):
    monkeypatch.setattr(compression, "GO_OS_UNKNOWN", 3)
    r = runner.run_scenario(load(NAMES), session)
    text = failing(r, "compare application/vnd.oci.image.layer.v1.tar+gzip")
    assert "gzip header" in text and "OS 0xff vs 0x03" in text, text
    assert "this difference is quirk" not in text


def test_mkfs_argv_without_b4096(session, monkeypatch, tmp_path):
    monkeypatch.setattr(ref_apply, "default_mkfs_options", lambda opts, profile: list(opts))
    r = runner.run_scenario(load(apply_scenario(tmp_path, "dialects/ustar.tar",
                                                "application/vnd.oci.image.layer.v1.tar")), session)
    text = failing(r, "mkfs apply")
    assert "argv differs" in text and "[--b4096-]" in text, text


def test_feed_stopped_at_epipe_without_drain(session, monkeypatch, tmp_path):
    """mkfs.erofs stops reading at the end blocks; Go drains the rest into the digest. A
    reference that stops at EPIPE describes only what mkfs took."""
    def feed_until_epipe(chunks, write, digest, stop):
        fed = 0
        for chunk in chunks:
            try:
                write(chunk)
            except BrokenPipeError:
                return fed              # the planted bug: the rest never reaches the digest
            digest.update(chunk)
            fed += len(chunk)
        return fed

    monkeypatch.setattr(ref_apply, "feed", feed_until_epipe)
    r = runner.run_scenario(load(apply_scenario(tmp_path, "dialects/trailing-1536k.tar.zst",
                                                "application/vnd.oci.image.layer.v1.tar+zstd")),
                            session)
    text = failing(r, "apply ")
    assert "descriptor" in text and "1575936" in text, text


def test_wrong_epoch_handling_names_the_epoch_quirk(session, monkeypatch):
    """The reference clamps to SOURCE_DATE_EPOCH, which containerd ignores (a profile without
    epoch-ignored): the failure names that quirk, not the generic mtime rule."""
    real = profiles.containerd_profile
    monkeypatch.setattr(profiles, "containerd_profile",
                        lambda v: real(v).without("epoch-ignored", name=real(v).name))
    r = runner.run_scenario(load(REPO / "scenarios/epoch/newer-dir-older-child.yaml"), session)
    text = failing(r, "compare application/vnd.oci.image.layer.v1.tar:")
    assert text.startswith("this difference is quirk epoch-ignored"), text
    assert "clamped this mtime to the epoch" in text and "quirk epoch-ignored (" in text


def test_inflate_length_table_off_by_one(session, monkeypatch, tmp_path):
    """Go's inflate replay (the reference's only decoder for corrupt deflate) with one length
    base wrong: the tar it hands mkfs.erofs differs from Go's before the decoder error."""
    bases = list(streams._GoInflate._LEN_BASE)
    bases[20] += 1                                  # length code 277: 67 -> 68
    monkeypatch.setattr(streams._GoInflate, "_LEN_BASE", tuple(bases))
    r = runner.run_scenario(load(apply_scenario(tmp_path, "gzipframing/deflate-reserved-block.tar.gz",
                                                "application/vnd.oci.image.layer.v1.tar+gzip")),
                            session)
    assert any(c.status == Status.FAIL for c in r.checks if c.name.startswith(("apply ", "mkfs apply"))), \
        [(c.name, c.status) for c in r.checks]


def test_inflate_stdlib_offsets_under_klauspost(session, monkeypatch, tmp_path):
    """v2.4's klauspost inflate counts a stored block's read-ahead bytes twice in 'corrupt
    input before offset N'; a reference replaying Go's stdlib decoder names another offset."""
    stdlib_init = streams._GoInflate.__init__
    monkeypatch.setattr(streams._GoInflate, "__init__",
                        lambda self, data, klauspost=False: stdlib_init(self, data, False))
    r = runner.run_scenario(load(apply_scenario(tmp_path, "gzipframing/deflate-reserved-block.tar.gz",
                                                "application/vnd.oci.image.layer.v1.tar+gzip")),
                            session)
    text = failing(r, "apply ")
    assert "corrupt input before offset [-2257-] {+2256+}" in text, text
