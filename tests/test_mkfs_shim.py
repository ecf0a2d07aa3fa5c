"""The recording mkfs.erofs (oracle/mkfsshim, installed by harness/mkfs_shim.py): argv, fed
bytes, EOF, exit status, signals. (That the real mkfs sees argv[0] `mkfs.erofs`, which it quotes
in usage errors, shows here and in the live Apply cases whose error texts must match
containerd's.)"""
import json
import os
import signal
import subprocess
import time

import pytest

from harness import mkfs_shim
from shimbinary import shim_binary  # noqa: F401 - a fixture


@pytest.fixture
def shim(tmp_path, monkeypatch, shim_binary):
    """A fake real mkfs that reads `$READ` bytes (all when unset), prints its argv[0], how many
    bytes it got and whether the shim's variables reached it, then exits with `$RC` (or kills
    itself with `$SIG`); the shim installed in front of it."""
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    fake = real_dir / "mkfs.erofs"
    fake.write_text("#!/usr/bin/env python3\n"
                    "import os, signal, sys\n"
                    "n = int(os.environ.get('READ', '-1'))\n"
                    "data = sys.stdin.buffer.read() if n < 0 else sys.stdin.buffer.read(n)\n"
                    "leaked = [k for k in os.environ if k.startswith('LAYERCONF_MKFS_')]\n"
                    "print(sys.argv[0], len(data), ','.join(leaked) or '-', flush=True)\n"
                    "if os.environ.get('SIG'): os.kill(os.getpid(), int(os.environ['SIG']))\n"
                    "sys.exit(int(os.environ.get('RC', '0')))\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{real_dir}{os.pathsep}{os.environ['PATH']}")
    log = tmp_path / "calls.jsonl"
    env = dict(os.environ, **mkfs_shim.install(str(tmp_path / "shim"), str(log)))
    return env, log


def run(env, stdin: bytes, **extra):
    return subprocess.run(["mkfs.erofs", "--tar=f", "--quiet", "/x/layer.erofs"], input=stdin,
                          capture_output=True, env=dict(env, **extra), timeout=60)


def test_records_argv_and_whole_stream(shim):
    env, log = shim
    p = run(env, b"a" * 100_000)
    assert p.returncode == 0
    assert p.stdout.split()[1:] == [b"100000", b"-"]   # the whole stream; no shim variables
    before = time.time()
    records, offset = mkfs_shim.read_log(str(log))
    timing = [{k: r.pop(k) for k in ("seconds", "end")} for r in records]
    assert records == [{"argv": ["--tar=f", "--quiet", "/x/layer.erofs"], "fed": 100_000,
                        "eof": True, "returncode": 0}]
    assert 0 < timing[0]["seconds"] < 60 and timing[0]["end"] <= before
    assert mkfs_shim.read_log(str(log), offset) == ([], offset)


def test_early_stop_is_recorded_and_passed_on(shim):
    env, log = shim
    big = b"b" * (4 << 20)
    p = subprocess.Popen(["mkfs.erofs", "--tar=f", "/x/layer.erofs"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, env=dict(env, READ="1000"))
    broken = False
    try:
        p.stdin.write(big)
        p.stdin.close()
    except BrokenPipeError:
        broken = True                 # the caller meets EPIPE, as without the shim
    p.stdout.read()
    assert p.wait(timeout=60) == 0 and broken
    (rec,), _ = mkfs_shim.read_log(str(log))
    assert rec["eof"] is False and 1000 <= rec["fed"] < len(big)


def test_exit_status_passes_through(shim):
    env, log = shim
    assert run(env, b"", RC="3").returncode == 3
    (rec,), _ = mkfs_shim.read_log(str(log))
    assert rec["returncode"] == 3 and json.dumps(rec)


def test_killing_signal_passes_through(shim):
    env, log = shim
    p = run(env, b"x" * 10, SIG=str(int(signal.SIGTERM)))
    assert p.returncode == -signal.SIGTERM      # the caller sees "signal: terminated"
    (rec,), _ = mkfs_shim.read_log(str(log))
    assert rec["returncode"] == -signal.SIGTERM and rec["fed"] == 10 and rec["eof"] is True


def test_no_stdin_is_an_empty_stream(shim):
    env, log = shim
    p = subprocess.run(["mkfs.erofs", "/x/layer.erofs", "/x/dir"], stdin=subprocess.DEVNULL,
                       capture_output=True, env=env, timeout=60)
    assert p.returncode == 0 and p.stdout.split()[1] == b"0"
    (rec,), _ = mkfs_shim.read_log(str(log))
    assert rec["argv"] == ["/x/layer.erofs", "/x/dir"] and rec["fed"] == 0 and rec["eof"] is True


def test_unbuilt_shim_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(mkfs_shim, "BINARY", tmp_path / "missing" / "layerconf-mkfs-shim")
    with pytest.raises(mkfs_shim.ShimError, match="oracle/mkfsshim/build.sh"):
        mkfs_shim.install(str(tmp_path / "shim"), str(tmp_path / "log"))


def test_without_go_the_built_shim_is_used_or_missing_is_said(tmp_path, monkeypatch, shim_binary):
    monkeypatch.setattr(mkfs_shim.shutil, "which", lambda name, *a, **k: None)
    assert mkfs_shim.ensure_built() == mkfs_shim.BINARY          # no Go: the built one, as it is
    monkeypatch.setattr(mkfs_shim, "BINARY", tmp_path / "none" / "layerconf-mkfs-shim")
    with pytest.raises(mkfs_shim.ShimError, match="not built, and Go is not on PATH"):
        mkfs_shim.ensure_built()
