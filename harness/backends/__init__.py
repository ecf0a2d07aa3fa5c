"""Where scenario steps run: `host` (this kernel, needs root) or `vm` (a QEMU guest, no root)."""
from __future__ import annotations

import os


class BackendError(Exception):
    """A backend cannot be used here; str() says why and what to do."""


def open_backend(name: str, *, kernel: str = "6.12", options=None, **vm_options):
    """Return an object with run_file(path) -> dict and close(); `vm_options` go to the VM
    (e.g. rw_dirs)."""
    if name == "auto":
        name = "host" if os.geteuid() == 0 else "vm"
    if name == "host":
        from .host import HostBackend
        return HostBackend(options)
    if name == "vm":
        from .vm import VMBackend
        return VMBackend(kernel=kernel, options=options, **vm_options)
    raise BackendError(f"unknown backend {name!r} (use host or vm)")
