"""The marks of a test module that runs scenarios on this machine's kernel against the real Go
oracle: it skips, with the reason, where that cannot work."""
import os

import pytest

from harness import capabilities
from harness.oracle import binary_path, default_version

HOST_MODE = [
    pytest.mark.skipif(os.geteuid() != 0, reason="host mode needs root (mounts, trusted xattrs)"),
    pytest.mark.skipif(not binary_path(default_version()).exists(),
                       reason="the Go oracle is not built (make bootstrap)"),
    pytest.mark.skipif(bool(capabilities.missing(())),
                       reason="kernel lacks erofs/overlay or mkfs.erofs lacks --tar="),
]
