#!/usr/bin/env python3
"""Record what each pinned guest kernel can do, as committed JSON (vm/capabilities/NAME.json).

    python3 -m vm.record_capabilities [NAME|all]      # boots each kernel (TCG: a minute or two)

A record holds the pin, the kernel probes of vm/probe.py that depend on the kernel alone (not on
the host's mkfs.erofs), and the overlayfs/erofs lines of the kernel's build config, where
`# CONFIG_X is not set` reads "n": the overlay features a distribution turns on by default show
there and in the overlay module's parameters. tests/test_vm.py checks each record against a
live probe, so a record that no longer matches its pin fails until it is regenerated.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

VM_DIR = Path(__file__).resolve().parent
OUT = VM_DIR / "capabilities"

# Probe keys that depend on the kernel (and the scratch fs the VM gives it), not on the host.
PROBE_KEYS = ("kernel", "filesystems", "erofs_features", "overlay_parameters", "scratch_fs",
              "erofs_file_backed", "erofs_file_backed_tmpfs", "erofs_loop", "erofs_compressors",
              "overlay_whiteout", "overlay_opaque_xattr", "overlay_xwhiteout", "overlay_userxattr",
              "user_xattr", "overlay_options")

_CONFIG = re.compile(r"^(?:# )?(CONFIG_(?:OVERLAY_FS|EROFS_FS)[A-Z0-9_]*)(?:=(.*)| is not set)$")


def config_subset(text: str) -> dict[str, str]:
    """CONFIG_OVERLAY_FS* and CONFIG_EROFS_FS* of a kernel config; unset options read "n"."""
    out = {}
    for line in text.splitlines():
        if m := _CONFIG.match(line):
            out[m.group(1)] = m.group(2) if m.group(2) is not None else "n"
    return dict(sorted(out.items()))


def stable(value):
    """The value without what changes from one boot to the next (the probe's scratch folder in
    error texts)."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [stable(v) for v in value]
    if isinstance(value, str):
        return re.sub(r"/probe-[A-Za-z0-9_]+/", "/probe-*/", value)
    return value


def recorded_probe(probe: dict) -> dict:
    """The part of a live probe a record keeps."""
    return stable({k: probe[k] for k in PROBE_KEYS if k in probe})


def record(pin: dict, probe: dict, config_text: str) -> dict:
    """The committed record of one kernel (pure)."""
    if probe.get("errors"):
        raise ValueError(f"the probe had errors: {probe['errors']}")
    return {
        "package": pin["package"], "version": pin["version"], "release": pin["release"],
        "config": config_subset(config_text),
        "probe": recorded_probe(probe),
    }


def path_for(name: str) -> Path:
    return OUT / f"{name}.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kernel", nargs="?", default="all", help="a pinned kernel, a comma list or all")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(VM_DIR.parent))
    from harness.backends.vm import VM, VMError, fetch_kernel, kernel_names
    fk = fetch_kernel()
    pins = fk.load_pins()["kernels"]
    try:
        names = kernel_names(args.kernel)
    except ValueError as e:
        print(f"record_capabilities: {e}", file=sys.stderr)
        return 2
    OUT.mkdir(exist_ok=True)
    for name in names:
        art = fk.ensure_kernel(name, log=lambda *a: None)
        try:
            with VM(name) as vm:
                probe = vm.call("probe", timeout=300)
        except VMError as e:
            print(f"record_capabilities: {name}: {e}", file=sys.stderr)
            return 1
        rec = record(pins[name], probe, (art.dir / "config").read_text(errors="replace"))
        path_for(name).write_text(json.dumps(rec, indent=2, sort_keys=True) + "\n")
        print(f"{name}: {path_for(name).relative_to(VM_DIR.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
