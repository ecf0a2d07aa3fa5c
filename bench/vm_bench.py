#!/usr/bin/env python3
"""VM backend benchmark (run on demand; not a test).

    python3 bench/vm_bench.py                       # 5 boots per kernel, op overheads
    python3 bench/vm_bench.py --kernel 6.1 --runs 10
    python3 bench/vm_bench.py --boots 100 --kernel 6.1 --boot-timeout 30   # hang count

Measures, per kernel:
  1st              the first start, which saves the guest's state when there is none yet
  ready            qemu start -> the agent's ready message (median, min, max over --runs):
                   a restore of the saved state ("by": restore), or a boot with --cold
  qemu cpu         CPU seconds qemu used until ready (less inflated by a loaded machine)
  qemu up          qemu start -> its agent socket; setup>ready: guest seconds from reading the
                   setup line to mounted (guest uptime, console); agent: guest uptime at ready
  op overhead      agent `ping` (in-process) and `run true` (a shell command), median of --ops
  first op         the first `run` after ready (cold python subprocess start)
  boots            with --boots N: N consecutive boots; hangs (timeout), other failures
Prints a table and the machine's load average (TCG timings scale with free CPU).

    python3 bench/vm_bench.py --suite                       # every scenario, VM (6.12) and host
    python3 bench/vm_bench.py --suite scenarios/whiteout --kernel 6.1

--suite runs scenario files through the VM backend (as `layerconf run` does: one guest per CPU)
and (as root) the host backend, one after the other in this process, and prints the wall time of each, their ratio, the seconds per phase
summed over the scenarios (harness/phases.py; docs/vm.md names them) and every scenario whose
status differs between the two.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.backends import vm as vmb  # noqa: E402

MARKS = re.compile(r"LAYERCONF-INIT-\w+ (.*)")


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (qemu), in seconds: what the start cost in CPU, which
    other users of the machine do not inflate the way they inflate wall time."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _console_marks(text: str) -> dict:
    """key=value numbers of the console's LAYERCONF-INIT-* lines (guest uptimes)."""
    out = {}
    for m in MARKS.finditer(text):
        for kv in m.group(1).split():
            k, _, v = kv.partition("=")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def boot_once(kernel: str, args) -> dict:
    t0 = time.monotonic()
    vm = vmb.VM(kernel, accel=args.accel, retries=0, boot_timeout=args.boot_timeout,
                scratch=args.scratch, python=args.python, saved_state=not args.cold)
    try:
        vm.start()
        rec = {"ok": True, "boot": vm.boot_seconds, "agent_uptime": vm.ready.get("uptime"),
               "by": vm.started_by, "cpu": _cpu_seconds(vm.pid), **vm.boot_stages}
        marks = _console_marks(vm.console_log.read_text(errors="replace"))
        if "setup" in marks and "ready" in marks:
            rec["setup_to_ready"] = marks["ready"] - marks["setup"]
        if args.ops:
            t = time.monotonic()
            vm.run("true")
            rec["first_run"] = time.monotonic() - t
        return rec
    except vmb.VMError as e:
        return {"ok": False, "kind": e.kind, "error": str(e)[:300], "log": e.console_log,
                "elapsed": time.monotonic() - t0}
    finally:
        vm.kill()


def op_overhead(kernel: str, args) -> dict:
    with vmb.VM(kernel, accel=args.accel, scratch=args.scratch, python=args.python) as vm:
        vm.run("true")  # warm
        pings, runs = [], []
        for _ in range(args.ops):
            t = time.monotonic()
            vm.call("ping")
            pings.append(time.monotonic() - t)
        for _ in range(args.ops):
            t = time.monotonic()
            vm.run("true")
            runs.append(time.monotonic() - t)
        t = time.monotonic()
        big = vm.run("head -c 10000000 /dev/zero | tr '\\0' x")
        t_big = time.monotonic() - t
        assert len(big["stdout"]) == 10_000_000
        t = time.monotonic()
        vm.call("probe", timeout=300)
        t_probe = time.monotonic() - t
        return {"ping": med(pings), "run_true": med(runs), "run_10MB": t_big, "probe": t_probe,
                "accel": vm.accel}


def _cpu_self_and_children() -> float:
    import resource
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def run_suite(backend, files) -> tuple[float, dict, dict]:
    """(wall seconds, {scenario: status}, {phase: seconds summed}) of the files on `backend`;
    the phase `cpu` is the CPU seconds of this process and every child it waited for (qemu; the
    oracle, containerd and mkfs.erofs on the host), counted once the backend is closed."""
    t0, cpu0 = time.monotonic(), _cpu_self_and_children()
    statuses, phases = {}, {}
    try:
        for d in backend.run_files(files):
            statuses[d["scenario"]] = d["status"]
            if d["status"] == "error":
                print(f"  {d['scenario']}: error: {(d.get('message') or '').strip()[:600]}")
            for k, v in (d.get("phases") or {}).items():
                phases[k] = phases.get(k, 0.0) + v
    finally:
        backend.close()
    phases["cpu"] = _cpu_self_and_children() - cpu0
    return time.monotonic() - t0, statuses, phases


def suite(args) -> int:
    from harness import cli, runner
    from harness.backends.host import HostBackend
    files = cli._scenario_files(args.suite)
    kernel = vmb.kernel_names(args.kernel if args.kernel != "all" else "6.12")[0]
    print(f"# {len(files)} scenario files, kernel {kernel}, {args.guests or 'one per CPU'} guest(s), "
          f"load {os.getloadavg()[0]:.2f}")
    opts = runner.RunOptions(path=args.path)
    runs = {"vm": run_suite(vmb.VMBackend(kernel, opts, guests=args.guests), files)}
    if os.geteuid() == 0:
        runs["host"] = run_suite(HostBackend(opts), files)
    names = sorted({k for _, _, ph in runs.values() for k in ph})
    print(f"\n{'phase (s, summed)':24}" + "".join(f"{b:>10}" for b in runs))
    for k in names:
        print(f"{k:24}" + "".join(f"{runs[b][2].get(k, 0.0):>10.2f}" for b in runs))
    print(f"{'wall':24}" + "".join(f"{runs[b][0]:>10.2f}" for b in runs))
    for b, (_, st, _) in runs.items():
        counts = {}
        for v in st.values():
            counts[v] = counts.get(v, 0) + 1
        print(f"{b}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    differ = 0
    if "host" in runs:
        print(f"VM/host wall-time ratio: {runs['vm'][0] / runs['host'][0]:.2f}")
        vm_st, host_st = runs["vm"][1], runs["host"][1]
        for name in sorted(set(vm_st) | set(host_st)):
            if vm_st.get(name) != host_st.get(name):
                differ += 1
                print(f"  differs: {name}: vm {vm_st.get(name)}, host {host_st.get(name)}")
    print(f"# load average at the end: {os.getloadavg()[0]:.2f}")
    return 1 if differ else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", default="all", help="6.1, 6.12 or all")
    ap.add_argument("--runs", type=int, default=5, help="boots for the boot-to-ready figure")
    ap.add_argument("--ops", type=int, default=30, help="agent round trips per op kind (0: skip)")
    ap.add_argument("--boots", type=int, default=0, help="consecutive boots counting hangs")
    ap.add_argument("--boot-timeout", type=float, default=60.0)
    ap.add_argument("--accel", default=None, help="auto (default), tcg or kvm")
    ap.add_argument("--scratch", default="ext4", choices=("ext4", "tmpfs"))
    ap.add_argument("--python", default=None, help="python the guest runs (default: this one)")
    ap.add_argument("--cold", action="store_true", help="boot every guest (no saved state)")
    ap.add_argument("--guests", type=int, default=None, help="--suite: guests at once (default: "
                    "one per CPU, as `layerconf run`)")
    ap.add_argument("--path", default="direct", choices=("direct", "daemon"),
                    help="--suite: how containerd is reached (harness/runner.py)")
    ap.add_argument("--suite", nargs="*", default=None, metavar="PATH",
                    help="time scenario files (default: all) in the VM and on the host")
    args = ap.parse_args()
    if args.suite is not None:
        return suite(args)

    print(f"# host: {os.uname().release}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"qemu {vmb._qemu_version(vmb.qemu_binary() or 'qemu-system-x86_64')}; "
          f"guest python {args.python or vmb.default_python()}; scratch {args.scratch}")
    rows = []
    for k in vmb.kernel_names(args.kernel):
        reason = vmb.unavailable_reason(k)
        if reason:
            print(f"{k}: skipped: {reason}")
            continue
        t = time.monotonic()
        first = boot_once(k, args)      # saves the state when there is none yet
        first_wall = time.monotonic() - t
        recs = [boot_once(k, args) for _ in range(args.runs)]
        ok = [r for r in recs if r["ok"]]
        row = {"kernel": k, "n": len(recs), "failed": len(recs) - len(ok) + (not first["ok"]),
               "first": first_wall, "by": ",".join(sorted({r["by"] for r in ok})) or "-",
               "boot_med": med([r["boot"] for r in ok]),
               "boot_min": min((r["boot"] for r in ok), default=float("nan")),
               "boot_max": max((r["boot"] for r in ok), default=float("nan")),
               "cpu": med([r["cpu"] for r in ok]),
               "qemu": med([r["qemu"] for r in ok if "qemu" in r]),
               "setup_to_ready": med([r["setup_to_ready"] for r in ok if "setup_to_ready" in r]),
               "agent_up": med([r["agent_uptime"] for r in ok if r.get("agent_uptime")]),
               "first_run": med([r["first_run"] for r in ok if "first_run" in r])}
        if args.ops:
            row.update(op_overhead(k, args))
        if args.boots:
            t = time.monotonic()
            hangs = fails = 0
            times = []
            for i in range(args.boots):
                r = boot_once(k, argparse.Namespace(**{**vars(args), "ops": 0}))
                if r["ok"]:
                    times.append(r["boot"])
                elif r["kind"] == "timeout":
                    hangs += 1
                    print(f"  boot {i + 1}: HANG: {r['error']}", file=sys.stderr)
                else:
                    fails += 1
                    print(f"  boot {i + 1}: FAIL ({r['kind']}): {r['error']}", file=sys.stderr)
            row.update({"boots": args.boots, "hangs": hangs, "boot_fails": fails,
                        "boots_med": med(times), "boots_max": max(times, default=float("nan")),
                        "boots_wall": time.monotonic() - t})
        for r in recs:
            if not r["ok"]:
                print(f"  {k}: boot failed ({r['kind']}): {r['error']}", file=sys.stderr)
        rows.append(row)

    print()
    print(f"{'kernel':7} {'n':>3} {'by':8} {'1st':>6} | {'ready med':>9} {'min':>6} {'max':>6} "
          f"{'qemu cpu':>8} | {'qemu up':>7} {'setup>ready':>11} {'agent':>6} | {'1st run':>7}")
    for r in rows:
        print(f"{r['kernel']:7} {r['n']:>3} {r['by']:8} {r['first']:>5.1f}s | {r['boot_med']:>8.2f}s "
              f"{r['boot_min']:>5.2f}s {r['boot_max']:>5.2f}s {r['cpu']:>7.2f}s | {r['qemu']:>6.2f}s "
              f"{r['setup_to_ready']:>10.2f}s {r['agent_up']:>5.2f}s | {r['first_run'] * 1000:>5.0f}ms")
    if args.ops:
        print()
        print(f"{'kernel':7} {'accel':5} {'ping':>8} {'run true':>9} {'run 10MB':>9} {'probe':>7}")
        for r in rows:
            if "ping" in r:
                print(f"{r['kernel']:7} {r['accel']:5} {r['ping'] * 1000:>6.1f}ms "
                      f"{r['run_true'] * 1000:>7.1f}ms {r['run_10MB']:>8.2f}s {r['probe']:>6.2f}s")
    if args.boots:
        print()
        print(f"{'kernel':7} {'boots':>5} {'hangs':>5} {'fails':>5} {'median':>7} {'max':>6} {'wall':>7}")
        for r in rows:
            print(f"{r['kernel']:7} {r['boots']:>5} {r['hangs']:>5} {r['boot_fails']:>5} "
                  f"{r['boots_med']:>6.2f}s {r['boots_max']:>5.2f}s {r['boots_wall']:>6.0f}s")
    print(f"# load average at the end: {os.getloadavg()[0]:.2f}")
    return 1 if any(r.get("hangs") or r.get("boot_fails") or r["failed"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
