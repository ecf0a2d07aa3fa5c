"""containerd's mkfs.erofs run (recorded by harness/mkfs_shim.py on the oracle's PATH) against
the reference's: the argv word for word, and how much of the stream mkfs took."""
from __future__ import annotations

import os

from .report.worddiff import word_diff
from .result import Check, Status

LAYER = "<snapshot>/layer.erofs"
# Pipes between the feeder and mkfs hold up to 64 KiB each (the recorder adds one more pipe and
# a 32 KiB read), so how far an early-stopping mkfs got is timing; beyond this it is not.
PIPE_SLACK = 3 * (64 << 10) + (32 << 10)


def pipe_slack() -> int:
    """PIPE_SLACK, plus the host's credit in a guest whose mkfs runs go to the host: the
    reference counts what the shim in front of its mkfs took, which may be that much ahead of
    mkfs (harness/backends/mkfs_forward.py)."""
    from .mkfs_shim import CREDIT, HOST_ENV
    return PIPE_SLACK + (CREDIT if os.environ.get(HOST_ENV) else 0)


def conversion_runs(records: list[dict]) -> list[dict]:
    """The records of tar conversions (--tar=f) and tar-index runs (--tar=i): Apply's mkfs."""
    return [r for r in records if any(a.startswith("--tar=") for a in r.get("argv", []))]


def normalise_argv(args: list[str]) -> list[str]:
    """Each differ writes into its own snapshot directory: the layer path is not compared."""
    return [LAYER if a.endswith("/layer.erofs") else a for a in args]


def check_mkfs(name: str, go_records: list[dict], ref_argv: list[str] | None,
               ref_fed: int | None, stream_len: int | None) -> Check | None:
    """None when neither differ ran mkfs for a conversion (native layers, media-type errors)."""
    runs = conversion_runs(go_records)
    if not runs and ref_argv is None:
        return None
    name = f"mkfs {name}"
    if len(runs) > 1:
        return Check(name, Status.ERROR, f"containerd ran mkfs.erofs {len(runs)} times for one "
                     "Apply; the recording cannot tell which run to compare")
    if not runs or ref_argv is None:
        who = "go-erofs" if runs else "ref"
        return Check(name, Status.FAIL, f"mkfs.erofs ran for {who} only"
                     + (f": {' '.join(runs[0]['argv'])}" if runs else f": {' '.join(ref_argv[1:])}"))
    go = runs[0]
    problems = []
    go_args, ref_args = normalise_argv(go["argv"]), normalise_argv(list(ref_argv[1:]))
    if go_args != ref_args:
        problems.append("mkfs.erofs argv differs:\n" + word_diff(go_args, ref_args, ("go-erofs", "ref")))
    go_whole = bool(go.get("eof"))
    ref_whole = ref_fed is not None and stream_len is not None and ref_fed >= stream_len
    feed = (f"fed to mkfs.erofs: go-erofs {go['fed']} bytes"
            f" ({'whole stream' if go_whole else 'mkfs stopped reading'}), ref {ref_fed} bytes"
            + (f" of {stream_len}" if stream_len is not None else ""))
    if ref_fed is not None and stream_len is not None:
        if go_whole and ref_whole and go["fed"] != ref_fed:
            problems.append(f"both mkfs.erofs read their whole stream, of different lengths: {feed}")
        elif go_whole != ref_whole:
            short = stream_len - (ref_fed if go_whole else go["fed"])
            if short > pipe_slack():    # more than pipe buffers can hide: mkfs read differently
                who = "ref" if go_whole else "go-erofs"
                problems.append(f"{who}'s mkfs.erofs stopped reading {short} bytes before the "
                                f"end, the other read everything: {feed}")
    if problems:
        return Check(name, Status.FAIL, "\n".join(problems))
    return Check(name, Status.PASS, f"same argv; {feed}")


def log_offset(oracle) -> int:
    """Where the oracle's mkfs recording ends now (0 when it has none)."""
    from .mkfs_shim import LOG_ENV, read_log
    return read_log(getattr(oracle, "env", {}).get(LOG_ENV), 0)[1]


def check_apply_run(label: str, oracle, offset: int, ref_out) -> Check | None:
    """The check for one Apply: containerd's runs recorded since `offset` against the reference's
    ApplyOutput. None when the oracle runs without the recorder (then nothing can be said)."""
    from .mkfs_shim import LOG_ENV, read_log
    log = getattr(oracle, "env", {}).get(LOG_ENV)
    if not log:
        return None
    records, _ = read_log(log, offset)
    size = (ref_out.descriptor or {}).get("size") if ref_out.argv is not None and ref_out.ok else None
    return check_mkfs(label, records, ref_out.argv, ref_out.fed, size)
