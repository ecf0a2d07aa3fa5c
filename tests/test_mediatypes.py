"""harness/reference/mediatypes.py: DiffCompression, the native-EROFS predicates per era,
classify(), the Apply switch table, and the media-type scenario table. No I/O, no Go.

Every DiffCompression value below was also checked against containerd's Go
images.DiffCompression (v2.4.2; identical in v2.1.0 … v2.4.2)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.reference import mediatypes as mt
from harness.reference.mediatypes import (APPLY_SWITCHES, ERAS, ApplyPath, MediaTypeError,
                                          SwitchSet, classify, diff_compression, era_of,
                                          is_native_erofs_suffix, is_native_layer_prefix,
                                          is_native_seed, parse_media_type, switches_for_version)

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "scenarios" / "apply" / "media-types.yaml"
OCI = "application/vnd.oci.image.layer.v1.tar"
DOCKER = "application/vnd.docker.image.rootfs.diff.tar"

# -- DiffCompression ---------------------------------------------------------------------------
DIFF_COMPRESSION = [
    (OCI, ""), (OCI + "+gzip", "gzip"), (OCI + "+zstd", "zstd"),
    (OCI + "+gzip+encrypted", "gzip"), (OCI + "+encrypted+gzip", "gzip"),
    (OCI + "+zstd+encrypted", "zstd"), (OCI + "+encrypted", ""), (OCI + "+foo", ""),
    (OCI + "+", ""), (OCI + "+zstd+gzip", "zstd"), (OCI + "+gzip+zstd", "zstd"),
    (OCI + "+gzip+zz", ""), (OCI + "+Z+gzip", "gzip"), (OCI + "+gzip ", ""),
    (OCI + "+" + "+".join(["x"] * 60) + "+gzip", ""),          # SplitN(…, 50): gzip is not a part
    ("application/vnd.oci.image.layer.nondistributable.v1.tar", ""),
    ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "gzip"),
    ("application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", "zstd"),
    (DOCKER, "unknown"), (DOCKER + "+zstd", ""), (DOCKER + ".gzip", "gzip"),
    (DOCKER + ".gzip+encrypted", ""), (DOCKER + ".zstd", "zstd"), (DOCKER + ".zstd+x", ""),
    ("application/vnd.docker.image.rootfs.foreign.diff.tar", "unknown"),
    ("application/vnd.docker.image.rootfs.foreign.diff.tar+x", ""),
    ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "gzip"),
]
NOT_LAYERS = ["", "+", "+gzip", "application/vnd.docker.image.rootfs.foreign.diff.tar.zstd",
              OCI.upper(), OCI + " ", OCI + ".gzip", "application/vnd.erofs",
              "application/vnd.erofs.layer.v1", "application/vnd.erofs.layer.v1+zstd",
              "application/vnd.oci.image.config.v1+json", "application/octet-stream"]


@pytest.mark.parametrize("media_type,want", DIFF_COMPRESSION)
def test_diff_compression(media_type, want):
    assert diff_compression(media_type) == want


@pytest.mark.parametrize("media_type", NOT_LAYERS)
def test_diff_compression_rejects(media_type):
    with pytest.raises(MediaTypeError) as e:
        diff_compression(media_type)
    assert str(e.value) == f"unrecognised mediatype {media_type}: not implemented"


def test_parse_media_type():
    assert parse_media_type("") == ("", [])
    assert parse_media_type(OCI) == (OCI, [])
    assert parse_media_type(OCI + "+zstd+gzip+encrypted") == (OCI, ["encrypted", "gzip", "zstd"])
    assert parse_media_type("a+") == ("a", [""])
    base, ext = parse_media_type("a+" + "+".join(str(i) for i in range(60)))
    assert len(ext) == 50 and "49+50+51+52+53+54+55+56+57+58+59" in ext


# -- predicates (spec §5.1 truth table) --------------------------------------------------------
PREDICATES = [
    # media type, seed, erofs-suffix, layer-prefix
    ("application/vnd.erofs", False, True, False),
    ("application/vnd.erofs+", True, False, False),
    ("application/vnd.erofs+zstd", False, False, False),
    ("foo.erofs.tar", False, False, False),
    ("", False, False, False),
    (".erofs", False, True, False),
    ("foo.erofs", False, True, False),
    ("application/vnd.oci.image.layer.v1.erofs", False, True, False),
    ("application/vnd.erofs.layer.v1", False, False, True),
    ("application/vnd.erofs.layer.v1+zstd", False, False, True),
    ("application/vnd.erofs.layer.v1+gzip", False, False, True),
    ("application/vnd.erofs.layer.v1+", False, False, True),
    ("application/vnd.erofs.layerX", False, False, True),
    ("application/vnd.erofs.layer.v1.erofs", False, True, True),
    ("application/vnd.erofs.layer.v1.erofs+", True, False, True),
    ("x.erofs+a+", False, False, False),
    (OCI, False, False, False),
]


@pytest.mark.parametrize("media_type,seed,suffix,prefix", PREDICATES)
def test_native_predicates(media_type, seed, suffix, prefix):
    assert is_native_seed(media_type) is seed
    assert is_native_erofs_suffix(media_type) is suffix
    assert is_native_layer_prefix(media_type) is prefix


# -- classify: the spec's truth table, pinned per era -------------------------------------------
def cu(m):
    return f"error: currently unsupported media type: {m}"


def un(m):
    return f"error: unsupported media type: {m}"


TRUTH = [
    # media type, seed (v2.1.0), erofs-suffix (v2.1.1–v2.2.x), layer-prefix (v2.3.0+)
    ("application/vnd.erofs", cu("application/vnd.erofs"), "native-copy", un("application/vnd.erofs")),
    ("application/vnd.erofs+", "native-copy", cu("application/vnd.erofs+"), un("application/vnd.erofs+")),
    ("application/vnd.erofs+zstd", cu("application/vnd.erofs+zstd"), cu("application/vnd.erofs+zstd"),
     un("application/vnd.erofs+zstd")),
    ("", cu(""), cu(""), un("")),
    (".erofs", cu(".erofs"), "native-copy", un(".erofs")),
    ("application/vnd.erofs.layer.v1", cu("application/vnd.erofs.layer.v1"),
     cu("application/vnd.erofs.layer.v1"), "native-copy"),
    ("application/vnd.erofs.layer.v1+zstd", cu("application/vnd.erofs.layer.v1+zstd"),
     cu("application/vnd.erofs.layer.v1+zstd"), "native-zstd"),
    ("application/vnd.erofs.layer.v1+gzip", cu("application/vnd.erofs.layer.v1+gzip"),
     cu("application/vnd.erofs.layer.v1+gzip"), "error: unsupported erofs layer suffix: gzip"),
    ("application/vnd.erofs.layer.v1+", cu("application/vnd.erofs.layer.v1+"),
     cu("application/vnd.erofs.layer.v1+"), "error: unsupported erofs layer suffix: "),
    ("application/vnd.erofs.layer.v1+zstd+x", cu("application/vnd.erofs.layer.v1+zstd+x"),
     cu("application/vnd.erofs.layer.v1+zstd+x"), "error: unsupported erofs layer suffix: zstd+x"),
    (OCI, "tar", "tar", "tar"),
    (OCI + "+gzip", "tar/gzip", "tar/gzip", "tar/gzip"),
    (DOCKER, "tar/unknown", "tar/unknown", "tar/unknown"),
]


@pytest.mark.parametrize("media_type,seed,suffix,prefix", TRUTH)
def test_classify_truth_table(media_type, seed, suffix, prefix):
    for era, want in (("seed", seed), ("erofs-suffix", suffix), ("layer-prefix", prefix)):
        assert classify(media_type, SwitchSet(ERAS[era])).outcome == want, era


def test_classify_fields():
    p = classify("application/vnd.erofs.layer.v1+zstd", SwitchSet.for_version("2.3.0"))
    assert p == ApplyPath("application/vnd.erofs.layer.v1+zstd", "native-zstd", compression="zstd",
                          base="application/vnd.erofs.layer.v1")
    assert p.decompress
    p = classify(OCI + "+foo", SwitchSet.for_version("2.3.0"))
    assert (p.kind, p.compression, p.decompress) == ("tar", "", False)
    p = classify("application/vnd.erofs+", SwitchSet.for_version("2.1.0"))
    assert (p.kind, p.base, p.compression) == ("native-copy", "application/vnd.erofs", None)


def test_layer_prefix_without_native_zstd_rejects_every_suffix():
    prof = SwitchSet({"native-mt-layer-prefix"})
    assert classify("application/vnd.erofs.layer.v1+zstd", prof).error == \
        "unsupported erofs layer suffix: zstd"
    assert classify("application/vnd.erofs.layer.v1", prof).kind == "native-copy"


def test_no_native_switch_means_no_native_types():
    prof = SwitchSet()
    assert classify("application/vnd.erofs", prof).outcome == un("application/vnd.erofs")
    assert era_of(prof) is None


def test_two_native_switches_conflict():
    with pytest.raises(ValueError, match="at most one"):
        classify(OCI, SwitchSet({"native-mt-erofs-suffix", "native-mt-layer-prefix"}))


# -- switches ----------------------------------------------------------------------------------
def test_switch_table_is_well_formed():
    names = [s.name for s in APPLY_SWITCHES]
    assert len(names) == len(set(names))
    for s in APPLY_SWITCHES:
        assert s.name == s.name.lower() and " " not in s.name
        assert s.description and s.reference and s.versions
        for lo, hi in s.versions:
            mt.version_key(lo)
            assert hi is None or mt.version_key(lo) < mt.version_key(hi)


VERSIONS = {
    "2.1.0": {"native-mt-seed-inverted", "error-text-currently-unsupported"},
    "v2.1.1": {"native-mt-erofs-suffix", "error-text-currently-unsupported"},
    "2.1.3": {"native-mt-erofs-suffix", "error-text-currently-unsupported"},
    "2.1.4": {"native-mt-erofs-suffix", "error-text-currently-unsupported", "mkfs-uuid"},
    "2.1.9": {"native-mt-erofs-suffix", "error-text-currently-unsupported", "mkfs-uuid"},
    "2.2.0": {"native-mt-erofs-suffix", "error-text-currently-unsupported", "mkfs-uuid",
              "error-text-convert-tar-to-erofs", "tar-index-mode"},
    "2.2.9": {"native-mt-erofs-suffix", "error-text-currently-unsupported", "mkfs-uuid",
              "error-text-convert-tar-to-erofs", "tar-index-mode"},
    "2.3.0": {"native-mt-layer-prefix", "native-zstd", "mkfs-uuid",
              "error-text-convert-tar-to-erofs", "tar-index-mode", "tar-index-uuid"},
    "2.3.2": {"native-mt-layer-prefix", "native-zstd", "mkfs-uuid",
              "error-text-convert-tar-to-erofs", "tar-index-mode", "tar-index-uuid"},
    "2.3.3": {"native-mt-layer-prefix", "native-zstd", "mkfs-uuid", "mkfs-b4096",
              "error-text-convert-tar-to-erofs", "tar-index-mode", "tar-index-uuid"},
    "2.4.0-beta.0": {"native-mt-layer-prefix", "native-zstd", "mkfs-uuid", "mkfs-b4096",
                     "error-text-convert-tar-to-erofs", "tar-index-mode", "tar-index-uuid",
                     "gzip-reject-reserved-flags", "inflate-klauspost"},
    "v2.4.2": {"native-mt-layer-prefix", "native-zstd", "mkfs-uuid", "mkfs-b4096",
               "error-text-convert-tar-to-erofs", "tar-index-mode", "tar-index-uuid",
               "gzip-reject-reserved-flags", "inflate-klauspost", "apply-refuses-readonly-mounts"},
}


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_switches_for_version(version):
    assert switches_for_version(version) == VERSIONS[version]


def test_version_key_orders_prereleases_first():
    assert mt.version_key("2.4.0-beta.0") < mt.version_key("2.4.0") < mt.version_key("v2.4.1")
    with pytest.raises(ValueError):
        mt.version_key("2.4")


def test_switchset_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown Apply switch"):
        SwitchSet({"mkfs-uuid", "no-such-switch"})


def test_eras():
    assert {e: era_of(SwitchSet(s)) for e, s in ERAS.items()} == \
        {"seed": "seed", "erofs-suffix": "erofs-suffix", "layer-prefix": "layer-prefix"}


def test_profiles_module_merges_the_switches():
    profiles = pytest.importorskip("harness.reference.profiles")
    names = {getattr(q, "name", None) for q in getattr(profiles, "QUIRKS", ())}
    assert {s.name for s in APPLY_SWITCHES} <= names


# -- the scenario table (scenarios/apply/media-types.yaml) -------------------------------------
OUTCOMES = {"native-copy", "native-zstd", "tar", "tar/gzip", "tar/zstd", "tar/unknown"}
SECTION_KEYS = {"blob", "media_type", "descriptor", "mkfs_options", "tar_index", "check", "expect",
                "cases"}
CASE_KEYS = SECTION_KEYS - {"cases"} | {"name"}


def _table():
    return yaml.safe_load(TABLE.read_text())


def _cases():
    return [pytest.param(c, id=f"{i}:{c['media_type']!r}")
            for i, c in enumerate(_table()["apply"]["cases"])]


def test_table_shape():
    data = _table()
    assert data["description"].strip()
    cases = data["apply"]["cases"]
    assert len(cases) >= 30
    fixtures = ROOT / "fixtures"
    blobs = [data["apply"]["blob"]] + [c["blob"] for c in cases if "blob" in c]
    for blob in blobs:
        assert set(blob) == {"fixture"}
        assert (fixtures / blob["fixture"]).is_file(), blob
    for c in cases:
        assert set(c) <= CASE_KEYS
        assert isinstance(c["media_type"], str)
        exp = c["expect"]
        assert set(exp) in ({"all"}, set(ERAS)), exp
        for v in exp.values():
            assert v in OUTCOMES or v.startswith("error: "), v


@pytest.mark.parametrize("case", _cases())
def test_table_matches_classify(case):
    exp = case["expect"]
    for era, switches in ERAS.items():
        want = exp.get(era, exp.get("all"))
        assert classify(case["media_type"], SwitchSet(switches)).outcome == want, era


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios" / "apply").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_apply_scenario_files(path):
    """The fields docs/apply.md proposes, as the loader will need to accept them."""
    data = yaml.safe_load(path.read_text())
    section = data["apply"]
    assert data["description"].strip() and set(section) <= SECTION_KEYS
    cases = section.get("cases") or [section]
    for c in cases:
        assert set(c) <= CASE_KEYS, c
        blob = c.get("blob", section.get("blob"))
        assert blob in ({"from_compare": True},) or set(blob) == {"fixture"}, c
        if "fixture" in blob:
            assert (ROOT / "fixtures" / blob["fixture"]).is_file(), blob
        if "from_compare" in blob:
            assert "media_type" not in c and data.get("upper") is not None
        else:
            assert isinstance(c["media_type"], str)
        for key in ("mkfs_options", "check"):
            v = c.get(key, section.get(key, []))
            assert isinstance(v, list) and all(isinstance(x, str) for x in v)
        assert set(c.get("check", section.get("check", []))) <= {"descriptor", "error", "image", "meaning"}
        assert isinstance(c.get("tar_index", section.get("tar_index", False)), bool)
        ann = c.get("descriptor", {}).get("annotations", {})
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in ann.items())
