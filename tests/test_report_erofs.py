"""explain_erofs on images built with mkfs.erofs, read back with dump.erofs."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from harness.report import explain
from harness.report.explain import explain_erofs, parse_inode, parse_superblock

needs_tools = pytest.mark.skipif(not (shutil.which("mkfs.erofs") and explain.find_dump()),
                                 reason="mkfs.erofs/dump.erofs not installed")
UUID = "00000000-0000-0000-0000-000000000001"


def mkfs(tmp_path, name: str, files: dict, *opts: str) -> str:
    src = tmp_path / f"src-{name}"
    for rel, (content, uid) in files.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
        if uid is not None:
            os.chown(p, uid, 0)
    img = str(tmp_path / f"{name}.img")
    subprocess.run(["mkfs.erofs", "--quiet", "-T0", *opts, img, str(src)], check=True,
                   capture_output=True)
    return img


BASE = {"d/e/g": (b"x\n", None), "f": (b"hi\n", None)}


@needs_tools
def test_identical(tmp_path):
    a = mkfs(tmp_path, "a", BASE, "-U", UUID)
    b = mkfs(tmp_path, "b", BASE, "-U", UUID)
    assert explain_erofs(a, b) == "the EROFS images are identical"


@needs_tools
def test_content_differs_and_uuid_is_nondeterministic(tmp_path):
    a = mkfs(tmp_path, "a", BASE, "-U", UUID)
    b = mkfs(tmp_path, "b", {**BASE, "d/e/g": (b"y\n", None)})
    text = explain_erofs(a, b, ("go", "ref"))
    assert text.splitlines()[0].startswith("erofs images differ at /d/e/g (content)")
    assert "known non-deterministic" in text and "UUID" in text


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
@needs_tools
def test_inode_differs(tmp_path):
    a = mkfs(tmp_path, "a", BASE, "-U", UUID)
    b = mkfs(tmp_path, "b", {**BASE, "f": (b"hi\n", 5)}, "-U", UUID)
    text = explain_erofs(a, b, ("go", "ref"))
    assert "erofs images differ at /f (inode): Uid go=0 ref=5" in text


@needs_tools
def test_extra_entry(tmp_path):
    a = mkfs(tmp_path, "a", BASE, "-U", UUID)
    b = mkfs(tmp_path, "b", {**BASE, "d/e/h": (b"", None)}, "-U", UUID)
    text = explain_erofs(a, b)
    assert "superblock" in text and "inode count" in text
    assert "h (file)" in text


def test_missing_tool(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"\0" * 2048)
    b.write_bytes(b"\0" * 1030 + b"\1" + b"\0" * 1017)
    monkeypatch.setattr(explain, "find_dump", lambda: None)
    text = explain_erofs(str(a), str(b))
    assert "dump.erofs was not found" in text and "erofs-utils" in text
    assert "offset 1030 (superblock)" in text
    assert "does not exist" in explain_erofs(str(a), str(tmp_path / "nope"))


def test_unreadable_image(tmp_path):
    if not explain.find_dump():
        pytest.skip("dump.erofs not installed")
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"\0" * 8192)
    b.write_bytes(b"\1" * 8192)
    assert "dump.erofs could not read them" in explain_erofs(str(a), str(b))


def test_parsers():
    sb = parse_superblock("Filesystem magic number:     0xE0F5E1E2\n"
                          "Filesystem created:          Thu Jan  1 00:00:00 1970\n"
                          "Filesystem UUID:             0000\n")
    assert sb == {"magic number": "0xE0F5E1E2", "created": "Thu Jan  1 00:00:00 1970",
                  "UUID": "0000"}
    info, ls = parse_inode(
        "Path : /\nSize: 66  On-disk size: 66  directory\n"
        "NID: 36   Links: 3   Layout: 2   Compression ratio: 100.00%\n"
        "Inode size: 32   Xattr size: 0\nUid: 0   Gid: 0  Access: 0755/rwxr-xr-x\n"
        "Timestamp: 1970-01-01 00:00:00.000000000\n\n"
        "       NID TYPE  FILENAME\n        36    2  .\n        36    2  ..\n"
        "        40    2  d\n        45    7  with  two spaces\n")
    assert info["type"] == "directory" and info["Uid"] == "0" and info["Access"] == "0755/rwxr-xr-x"
    assert info["Timestamp"] == "1970-01-01 00:00:00.000000000"
    assert ls == [("d", "2", "40"), ("with  two spaces", "7", "45")]
