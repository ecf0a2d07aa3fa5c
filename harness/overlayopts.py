"""Overlay mount options for the overlay the upper ops run through (pure).

containerd's erofs snapshotter mounts that overlay with its own `lowerdir=`, `upperdir=`,
`workdir=` (and `ro`, `uidmap=`/`gidmap=` in some modes) and appends its `ovl_mount_options`
config verbatim; everything else is the kernel's default (the overlay module's parameters,
from the kernel's build config). A scenario's `overlay:` and the run's `--overlay` axis set
options the same way, so what they show is what a node with that config gets.
"""
from __future__ import annotations

# name -> allowed values (None: a flag without a value). Debian's kernels (6.1, 6.12, 7.3) build
# all of redirect_dir, index, xino and metacopy off (CONFIG_OVERLAY_FS_REDIRECT_DIR,
# _INDEX, _XINO_AUTO, _METACOPY unset); vm/capabilities/ records each kernel's defaults.
OPTIONS: dict[str, tuple[str, ...] | None] = {
    "redirect_dir": ("on", "follow", "nofollow", "off"),
    "metacopy": ("on", "off"),
    "index": ("on", "off"),
    "xino": ("on", "off", "auto"),
    "nfs_export": ("on", "off"),
    "uuid": ("on", "off", "null", "auto"),
    "userxattr": None,
    "volatile": None,
}

# `--overlay all`: the kernel's defaults, then each feature that changes what the upper holds.
ALL = ("", "redirect_dir=on", "metacopy=on", "index=on", "xino=on", "userxattr")


class OverlayOptionError(ValueError):
    """An overlay option the harness does not know or a value the kernel does not take."""


def _key(option: str) -> str:
    return option.split("=", 1)[0]


def check(option: str) -> str:
    """The option if it is one overlayfs takes, else OverlayOptionError saying which are."""
    name, _, value = option.partition("=")
    if name not in OPTIONS:
        raise OverlayOptionError(f"unknown overlay option {option!r} (known: "
                                 f"{', '.join(OPTIONS)})")
    allowed = OPTIONS[name]
    if allowed is None and "=" in option:
        raise OverlayOptionError(f"overlay option {name} takes no value (not {option!r})")
    if allowed is not None and value not in allowed:
        raise OverlayOptionError(f"overlay option {name} takes {'|'.join(allowed)}, "
                                 f"not {value!r}")
    return option


def parse(text: str) -> tuple[str, ...]:
    """'redirect_dir=on,metacopy=on' -> the options, checked; '' or 'default' -> ()."""
    if text.strip() in ("", "default"):
        return ()
    return normalise(o.strip() for o in text.split(",") if o.strip())


def normalise(options) -> tuple[str, ...]:
    """Checked options, one per name (a later one wins), in a stable order."""
    by_name: dict[str, str] = {}
    for o in options:
        by_name[_key(check(o))] = o
    return tuple(by_name[n] for n in OPTIONS if n in by_name)


def merge(run: tuple[str, ...], scenario: tuple[str, ...]) -> tuple[str, ...]:
    """The run's options with the scenario's on top: a scenario that needs redirect_dir=on
    keeps it whatever the axis says."""
    return normalise(tuple(run) + tuple(scenario))


def label(options: tuple[str, ...]) -> str:
    return ",".join(options) or "default"
