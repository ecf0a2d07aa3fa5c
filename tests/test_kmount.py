"""The harness's own mounts (harness/kmount.py through roundtrip.merged_layers): an erofs image
on a loop device under a read-only overlay, the loop device and the mounts gone afterwards,
failures and hangs as one-line errors."""
import os
import shutil
import subprocess
import time

import pytest

from harness import kmount, roundtrip

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mkfs.erofs") is None or not os.path.exists("/dev/loop-control"),
    reason="mounting needs root, mkfs.erofs and /dev/loop-control")


def _mounts_under(d) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(d))]


def _loops_over(path) -> list[str]:
    """Loop devices whose backing file is `path` (sysfs; no losetup needed)."""
    out = []
    for name in os.listdir("/sys/block"):
        try:
            with open(f"/sys/block/{name}/loop/backing_file") as f:
                if f.read().strip() == str(path):
                    out.append(name)
        except OSError:
            pass
    return out


@needs_root
def test_image_mounted_read_only_then_gone(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("hi")
    image = tmp_path / "layer.erofs"
    subprocess.run(["mkfs.erofs", "--quiet", str(image), str(src)], check=True, timeout=60)
    with roundtrip.merged_layers([str(image)], str(tmp_path / "w")) as merged:
        assert (tmp_path / "w" / "merged" / "d" / "f").read_text() == "hi"
        assert merged == str(tmp_path / "w" / "merged")
        assert len(_mounts_under(tmp_path)) == 2 and len(_loops_over(image)) == 1
        with pytest.raises(OSError):
            (tmp_path / "w" / "merged" / "new").write_text("x")      # read-only
    assert _mounts_under(tmp_path) == [] and _loops_over(image) == []


@needs_root
def test_not_an_image_is_a_mount_error_and_leaves_no_loop(tmp_path):
    bogus = tmp_path / "not-erofs"
    bogus.write_bytes(b"\0" * 8192)
    with pytest.raises(roundtrip.MountError, match=f"mount -t erofs -o ro,loop {bogus} .* failed: "):
        with roundtrip.merged_layers([str(bogus)], str(tmp_path / "w")):
            pass
    assert _mounts_under(tmp_path) == [] and _loops_over(bogus) == []


def test_a_call_that_hangs_meets_its_deadline():
    t = time.monotonic()
    with pytest.raises(kmount.KernelMountError, match="mount x did not return within 0.2 s"):
        kmount._call("mount x", lambda: time.sleep(5), 0.2)
    assert time.monotonic() - t < 2
