"""The meaning check's verdicts (harness/checks/meaning.py `judge`, pure): who is at fault, which
quirk of which tool version explains a difference, and that a check that cannot compare says so."""
from harness.checks.meaning import Context, Reading, judge, layer_context
from harness.reference.profiles import tool_quirk_holds
from harness.result import Status

from trees import S, node, tree


def on(version):
    versions = {"mkfs.erofs": version, "containerd": "v2.4.2"}
    return versions, (lambda q: tool_quirk_holds(q, versions))


def test_three_agreeing_readings_pass():
    t = tree(a=node())
    versions, quirks = on("1.8.6")
    c = judge("x", Reading(t), Reading(t), Reading(t), Context(versions=versions), quirks)
    assert c.status == Status.PASS, c.explanation


def test_image_alone_wrong_blames_mkfs_and_the_fraction_quirk_holds_only_before_1_9_4():
    good = tree(a=node(mtime_ns=1795983873 * S + 500_000_000))
    bad = tree(a=node(mtime_ns=1795983873 * S + 5))
    versions, quirks = on("1.8.6")
    c = judge("x", Reading(good), Reading(good), Reading(bad), Context(versions=versions), quirks)
    assert c.status == Status.XFAIL and c.quirks == ["pax-fraction-as-integer-ns"], c.explanation
    assert "1795983873.500000000" in c.explanation and "1795983873.000000005" in c.explanation
    versions, quirks = on("1.9.4")
    c = judge("x", Reading(good), Reading(good), Reading(bad), Context(versions=versions), quirks)
    assert c.status == Status.FAIL
    assert "/a: mtime" in c.explanation and "[mkfs.erofs 1.9.4]" in c.explanation


def test_an_mtime_difference_of_another_shape_is_no_fraction_quirk():
    good = tree(a=node(mtime_ns=1795983873 * S + 500_000_000))
    bad = tree(a=node(mtime_ns=1795983873 * S))
    versions, quirks = on("1.8.6")
    c = judge("x", Reading(good), Reading(good), Reading(bad), Context(versions=versions), quirks)
    assert c.status == Status.FAIL and not c.quirks


def test_both_containerd_readings_against_the_model_blame_layerconf():
    model = tree(a=node(uid=7))
    real = tree(a=node(uid=0))
    versions, quirks = on("1.8.6")
    c = judge("x", Reading(model), Reading(real), Reading(real), Context(versions=versions), quirks)
    assert c.status == Status.FAIL
    assert "/a: uid" in c.explanation and "layerconf" in c.explanation


def test_a_refused_layer_that_the_default_applier_unpacks_is_a_divergence():
    t = tree(a=node())
    versions, quirks = on("1.8.6")
    err = "failed to convert tar to erofs: exit status 1: <E> erofs: invalid tar @ 512"
    ctx = Context(versions=versions, numeric_oddities={512: frozenset({"nul"})})
    c = judge("x", Reading(t), Reading(t), Reading(skipped="no image"), ctx, quirks,
              image_error=err)
    assert c.status == Status.XFAIL and c.quirks == ["nul-numeric-field-refused"], c.explanation
    ctx = Context(versions=versions, numeric_oddities={0: frozenset({"nul"})})   # another header
    c = judge("x", Reading(t), Reading(t), Reading(skipped="no image"), ctx, quirks,
              image_error=err)
    assert c.status == Status.FAIL and "invalid tar @ 512" in c.explanation


def test_a_check_with_one_reading_is_skipped_not_passed():
    t = tree(a=node())
    versions, quirks = on("1.8.6")
    c = judge("x", Reading(t), Reading(skipped="oracle"), Reading(skipped="no image"),
              Context(versions=versions), quirks)
    assert c.status == Status.SKIP


def test_implied_directories_mode_is_compared_and_their_mtime_is_not():
    meaning = tree(d=node("dir"), **{"d/a": node()})
    applier = tree(d=node("dir", mtime_ns=1800000000 * S), **{"d/a": node()})
    image = tree(d=node("dir", mode=0o777, mtime_ns=0), **{"d/a": node()})
    versions, quirks = on("1.9.4")
    ctx = Context(versions=versions, implicit_dirs=frozenset({b"/d"}))
    c = judge("x", Reading(meaning), Reading(applier), Reading(image), ctx, quirks)
    assert c.status == Status.XFAIL and c.quirks == ["implicit-dir-defaults"], c.explanation
    assert "mtime" not in c.explanation


def test_layer_context_reads_global_paths_sparse_names_truncation_and_nul_fields():
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"path": "g"}) as t:
        info = tarfile.TarInfo("d/a")
        info.size = 700
        t.addfile(info, io.BytesIO(b"x" * 700))
    tar = buf.getvalue()
    ctx = layer_context(tar)
    assert b"path" in ctx.global_keys and ctx.implicit_dirs == {b"/d"}
    assert not ctx.truncated_in_data
    assert layer_context(tar[:512 * 4 + 100]).truncated_in_data


def test_an_image_a_kernel_before_6_7_refuses_for_its_empty_device_tag_is_the_kernels_limit():
    t = tree(a=node())
    refused = ("the kernel could not mount layer.erofs: mount -t erofs -o ro,loop l.erofs m failed: "
               "Invalid argument (kernel log: erofs: (device loop0): erofs_init_device: empty "
               "device tag @ pos 1152)")
    for kernel, status in (("6.1.0-56-amd64", Status.XFAIL), ("6.12.57+deb13-amd64", Status.FAIL)):
        versions = {"mkfs.erofs": "1.8.6", "containerd": "v2.4.2", "kernel": kernel}
        c = judge("x", Reading(t), Reading(t), Reading(error=refused), Context(versions=versions),
                  lambda q: tool_quirk_holds(q, versions))
        assert c.status == status, (kernel, c.explanation)
        if status == Status.XFAIL:
            assert c.quirks == ["tar-index-empty-device-tag-refused"]
            assert "[kernel 6.1.0-56-amd64]" in c.explanation, c.explanation
        else:   # an unexplained refusal still names the image's writer and the kernel
            assert "an image the kernel 6.12.57+deb13-amd64 cannot read" in c.explanation
    other = refused.replace("empty device tag", "unidentified incompatible feature")
    versions = {"mkfs.erofs": "1.8.6", "containerd": "v2.4.2", "kernel": "6.1.0-56-amd64"}
    c = judge("x", Reading(t), Reading(t), Reading(error=other), Context(versions=versions),
              lambda q: tool_quirk_holds(q, versions))
    assert c.status == Status.FAIL and not c.quirks
