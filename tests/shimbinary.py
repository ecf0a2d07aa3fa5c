"""The compiled recording mkfs.erofs (oracle/mkfsshim/) as a session fixture, for the tests of
the shim and of its forwarding to the host."""
import shutil

import pytest

from harness import mkfs_shim


@pytest.fixture(scope="session")
def shim_binary():
    if shutil.which("go") is None and not mkfs_shim.BINARY.exists():
        pytest.skip("the Go toolchain (`go`) is not on PATH; cannot build oracle/mkfsshim")
    return mkfs_shim.ensure_built() if shutil.which("go") else mkfs_shim.BINARY
