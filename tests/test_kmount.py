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


def test_kernel_messages_keep_the_text_of_records_that_name_the_device():
    records = [b"3,1201,29701202,-;erofs: (device loop0): erofs_init_device: empty device tag @ pos 1152\n",
               b"6,1202,29701300,-;loop1: detected capacity change from 0 to 24\n",
               b"4,1203,29701400,c;overlayfs: failed to resolve 'x': -2\n SUBSYSTEM=block\n",
               b"garbage without a header"]
    assert kmount.kernel_messages(records, "(device loop0)", "loop0:") == [
        "erofs: (device loop0): erofs_init_device: empty device tag @ pos 1152"]
    assert kmount.kernel_messages(records, "overlayfs:") == ["overlayfs: failed to resolve 'x': -2"]
    assert kmount.kernel_messages(records, "loop7:") == []


@needs_root
@pytest.mark.skipif(not os.access("/dev/kmsg", os.R_OK), reason="the kernel log is not readable")
def test_a_refused_image_names_what_the_kernel_logged(tmp_path):
    bogus = tmp_path / "not-erofs"
    bogus.write_bytes(b"\0" * 8192)
    target = tmp_path / "m"
    target.mkdir()
    with pytest.raises(kmount.KernelMountError, match=r"failed: .*\(kernel log: .*erofs:? \(device loop\d+\)"):
        kmount.mount_image(str(bogus), str(target), timeout=60)
    assert _mounts_under(tmp_path) == [] and _loops_over(bogus) == []
