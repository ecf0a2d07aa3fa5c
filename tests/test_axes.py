"""The axes of a run (harness/axes.py), overlay options (harness/overlayopts.py), the matrix
table, and the kernel capability records (vm/record_capabilities.py): pure, no root, no VM."""
from __future__ import annotations

import pytest

from harness import axes, overlayopts
from harness.backends import vm as vmb
from harness.cli import matrix_table
from harness.result import Check, ScenarioResult, Status
from harness.scenario import ScenarioError, load

rc = vmb._load("record_capabilities")


# -- overlay options ---------------------------------------------------------------------------

def test_overlay_options_parse_check_and_order():
    assert overlayopts.parse("") == overlayopts.parse("default") == ()
    assert overlayopts.parse("metacopy=on, redirect_dir=on") == ("redirect_dir=on", "metacopy=on")
    assert overlayopts.parse("userxattr") == ("userxattr",)
    with pytest.raises(overlayopts.OverlayOptionError, match="unknown overlay option 'lowerdir=/x'"):
        overlayopts.parse("lowerdir=/x")
    with pytest.raises(overlayopts.OverlayOptionError, match="redirect_dir takes on|follow"):
        overlayopts.parse("redirect_dir=yes")
    with pytest.raises(overlayopts.OverlayOptionError, match="userxattr takes no value"):
        overlayopts.parse("userxattr=on")


def test_scenario_overlay_options_win_over_the_run():
    assert overlayopts.merge(("redirect_dir=on", "index=on"), ("redirect_dir=off",)) == \
        ("redirect_dir=off", "index=on")
    assert overlayopts.label(()) == "default"
    assert overlayopts.label(("redirect_dir=on", "index=on")) == "redirect_dir=on,index=on"


def test_loader_names_the_line_of_a_bad_overlay_option(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("description: x\nlowers:\n  - - {path: a, content: x}\n"
                 "overlay: [redirect_dir=on, metacopy=maybe]\n")
    with pytest.raises(ScenarioError, match=r"s.yaml:4: overlay: overlay option metacopy takes on\|off"):
        load(f)
    f.write_text("description: x\nlowers:\n  - - {path: a, content: x}\noverlay: [metacopy=on]\n")
    assert load(f).overlay == ("metacopy=on",)


# -- axes and cells ----------------------------------------------------------------------------

def test_cells_are_the_product_and_name_what_varies():
    cells, varying = axes.cells({"containerd": ["v2.4.2"], "mkfs": ["all"], "kernel": ["all"]})
    mkfs = axes.AXES_BY_NAME["mkfs"].values(["all"])
    kernels = vmb.kernel_names("all")
    assert varying == ["mkfs", "kernel"]
    assert len(cells) == len(mkfs) * len(kernels) and len(kernels) >= 3
    assert [(c.get("mkfs"), c.get("kernel")) for c in cells] == [(m, k) for m in mkfs for k in kernels]
    first = cells[0]
    assert first.run_options() == {"containerd": "v2.4.2", "mkfs": mkfs[0], "overlay": (),
                                   "writer": "mkfs"}
    assert first.label(varying) == f"mkfs {mkfs[0]}, kernel {kernels[0]}"
    assert "/" not in first.slug() and " " not in first.slug()


def test_writer_axis_all_is_a_cell_each():
    assert axes.AXES_BY_NAME["writer"].values([]) == ["mkfs"]
    assert axes.AXES_BY_NAME["writer"].values(["all"]) == ["mkfs", "go-erofs"]
    cells, varying = axes.cells({"writer": ["all"]})
    assert varying == ["writer"] and [c.get("writer") for c in cells] == ["mkfs", "go-erofs"]
    with pytest.raises(axes.AxisError, match="--writer: gzip is not an EROFS writer"):
        axes.cells({"writer": ["gzip"]})


def test_overlay_axis_all_and_sets():
    values = axes.AXES_BY_NAME["overlay"].values(["all"])
    assert values[0] == () and ("redirect_dir=on",) in values and ("metacopy=on",) in values
    assert axes.AXES_BY_NAME["overlay"].values(["redirect_dir=on,index=on", "default"]) == [
        ("redirect_dir=on", "index=on"), ()]
    with pytest.raises(axes.AxisError, match="--overlay: unknown overlay option 'bogus'"):
        axes.cells({"overlay": ["bogus"]})


def test_axis_errors_name_the_flag():
    with pytest.raises(axes.AxisError, match="--mkfs: erofs-utils 0.1 is not pinned"):
        axes.cells({"mkfs": ["0.1"]})
    with pytest.raises(axes.AxisError, match="--kernel: unknown kernel 5.10"):
        axes.cells({"kernel": ["5.10"]})


def test_defaults_are_one_cell():
    cells, varying = axes.cells({})
    assert len(cells) == 1 and varying == []
    assert cells[0].get("kernel") is None and cells[0].get("overlay") == ()


# -- the matrix table ----------------------------------------------------------------------------

def _r(name, status, quirks=()):
    checks = [Check("round trip: x", status, "why", list(quirks))] if status != Status.PASS else []
    return ScenarioResult(scenario=name, path=name, status=status, checks=checks)


def test_matrix_table_marks_rows_that_differ_and_says_why():
    cells, varying = axes.cells({"overlay": ["default", "metacopy=on"]})
    ran = [(cells[0], [_r("a", Status.PASS), _r("b", Status.XFAIL, ["q"])]),
           (cells[1], [_r("a", Status.XFAIL, ["no-redirect-metacopy"]), _r("b", Status.XFAIL, ["q"])])]
    text = matrix_table(ran, varying)
    rows = text.splitlines()
    assert rows[0].split() == ["SCENARIO", "overlay", "default", "overlay", "metacopy=on"]
    assert rows[1].startswith("* a") and rows[2].startswith("  b")
    assert "1 scenario(s) differ between cells:" in text
    assert "overlay metacopy=on: known quirk (quirks only here: no-redirect-metacopy)" in text
    assert "    overlay default: identical\n" in text
    # the same status explained by other quirks is a difference too
    ran[1] = (cells[1], [_r("a", Status.PASS), _r("b", Status.XFAIL, ["other"])])
    text = matrix_table(ran, varying)
    assert text.splitlines()[2].startswith("* b")
    assert "overlay default: known quirk (quirks only here: q)" in text
    assert "overlay metacopy=on: known quirk (quirks only here: other)" in text


# -- kernel capability records -------------------------------------------------------------------

def test_config_subset_reads_unset_options_as_n():
    text = ("CONFIG_OVERLAY_FS=m\n# CONFIG_OVERLAY_FS_REDIRECT_DIR is not set\n"
            "CONFIG_EROFS_FS_ZIP_LZMA=y\nCONFIG_EXT4_FS=m\n# a comment\n")
    assert rc.config_subset(text) == {"CONFIG_EROFS_FS_ZIP_LZMA": "y", "CONFIG_OVERLAY_FS": "m",
                                      "CONFIG_OVERLAY_FS_REDIRECT_DIR": "n"}


def test_record_keeps_kernel_facts_only_and_refuses_a_failed_probe():
    probe = {"kernel": {"release": "R"}, "mkfs_erofs": "mkfs.erofs 1.8.6", "errors": {},
             "erofs_compressors": {"zstd": "RuntimeError: mount: /run/x/probe-ab12_x/mp: failed"}}
    rec = rc.record({"package": "p", "version": "v", "release": "R"}, probe, "")
    assert "mkfs_erofs" not in rec["probe"]          # the host's tool, not the kernel's
    assert rec["probe"]["erofs_compressors"]["zstd"] == "RuntimeError: mount: /run/x/probe-*/mp: failed"
    with pytest.raises(ValueError, match="probe had errors"):
        rc.record({"package": "p", "version": "v", "release": "R"}, dict(probe, errors={"x": "y"}), "")


@pytest.mark.parametrize("kernel", vmb.kernel_names("all"))
def test_every_pinned_kernel_has_a_record_of_its_pin(kernel):
    import json
    rec = json.loads(rc.path_for(kernel).read_text())
    pin = vmb.fetch_kernel().load_pins()["kernels"][kernel]
    assert (rec["package"], rec["version"], rec["release"]) == (pin["package"], pin["version"],
                                                                pin["release"])
    assert rec["probe"]["kernel"]["release"] == pin["release"]
    # the overlay features Debian builds off: the module parameters the record shows agree
    for feature, param in (("REDIRECT_DIR", "redirect_dir"), ("INDEX", "index"),
                           ("METACOPY", "metacopy"), ("XINO_AUTO", "xino_auto")):
        on = rec["config"][f"CONFIG_OVERLAY_FS_{feature}"] == "y"
        assert (rec["probe"]["overlay_parameters"][param] == "Y") is on
