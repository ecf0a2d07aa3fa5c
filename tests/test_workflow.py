"""The GitHub Actions workflow (.github/workflows/conformance.yml) passes actionlint, built from
the Go module proxy at a pinned version."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ACTIONLINT = "github.com/rhysd/actionlint/cmd/actionlint@v1.7.12"


def test_workflow_passes_actionlint(tmp_path):
    if shutil.which("go") is None:
        pytest.skip("no Go toolchain to build actionlint")
    env = dict(os.environ, GOBIN=str(tmp_path), GOFLAGS="-mod=mod")
    built = subprocess.run(["go", "install", ACTIONLINT], capture_output=True, text=True,
                           timeout=600, env=env, cwd=tmp_path)
    if built.returncode != 0:
        pytest.skip(f"actionlint could not be built here: {built.stderr.strip()[-300:]}")
    r = subprocess.run([str(tmp_path / "actionlint"), ".github/workflows/conformance.yml"],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
