"""The axes a run spans, as one table: containerd x erofs-utils x kernel x overlay options x
EROFS writer.

Each axis turns its command-line values into a list of values; a cell is one value of each
axis; `run` and `matrix` both run every cell. An axis sets one field of the runner's options
(`option`), except the kernel, which picks the VM backend's guest. A new axis
is one more entry in AXES and a RunOptions field of the same name (as `writer` is).
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Callable


class AxisError(ValueError):
    """A value an axis does not know; str() names the axis and what it takes."""


@dataclass(frozen=True)
class Axis:
    name: str                                   # the flag (--NAME) and the RunOptions field
    help: str
    values: Callable[[list[str]], list]         # the flag's values -> the axis' values
    label: Callable[[object], str]              # one value as the cell's label shows it
    option: bool = True                         # sets RunOptions.<name>; False: the backend's


def _split(given: list[str]) -> list[str]:
    """Flag values, repeatable and comma lists both: ['a,b', 'c'] -> ['a', 'b', 'c']."""
    return [v.strip() for g in given for v in g.split(",") if v.strip()]


def _containerd(given: list[str]) -> list[str]:
    """'all' = every version of oracle/versions.txt; versions, commits and source trees are
    resolved to the oracle's names, sorted by (base) version; none: the default version."""
    from .oracle import resolve, versions
    from .reference.profiles import parse_version
    if not given:
        return [resolve("")]
    picked = versions() if given == ["all"] else [resolve(v) for v in given]
    return sorted(dict.fromkeys(picked), key=parse_version)


def _mkfs(given: list[str]) -> list[str]:
    from . import erofs_utils
    pinned = erofs_utils.versions()
    picked = pinned if _split(given) == ["all"] else _split(given)
    bad = [v for v in picked if v not in pinned]
    if bad:
        raise AxisError(f"--mkfs: erofs-utils {', '.join(bad)} is not pinned "
                        f"(erofs-utils/versions.txt: {', '.join(pinned)}, or all)")
    return picked or [""]


def _kernel(given: list[str]) -> list:
    from .backends.vm import kernel_names
    if not _split(given):
        return [None]
    try:
        return list(dict.fromkeys(k for g in _split(given) for k in kernel_names(g)))
    except ValueError as e:
        raise AxisError(f"--kernel: {e}") from None


def _overlay(given: list[str]) -> list[tuple[str, ...]]:
    """Each value one set of options ('redirect_dir=on,index=on'); 'all' = overlayopts.ALL."""
    from . import overlayopts
    sets = [s for g in given for s in (overlayopts.ALL if g == "all" else (g,))]
    try:
        return list(dict.fromkeys(overlayopts.parse(s) for s in sets)) or [()]
    except overlayopts.OverlayOptionError as e:
        raise AxisError(f"--overlay: {e}") from None


def _writer(given: list[str]) -> list[str]:
    """'all' = each EROFS writer in turn (harness/goerofs.py WRITERS); default: mkfs only."""
    from .goerofs import WRITERS
    picked = list(WRITERS) if _split(given) == ["all"] else _split(given)
    bad = [v for v in picked if v not in WRITERS]
    if bad:
        raise AxisError(f"--writer: {', '.join(bad)} is not an EROFS writer "
                        f"({', '.join(WRITERS)}, or all)")
    return list(dict.fromkeys(picked)) or ["mkfs"]


def _overlay_label(v) -> str:
    from . import overlayopts
    return overlayopts.label(v)


AXES: tuple[Axis, ...] = (
    Axis("containerd", "containerd versions (repeatable; all: oracle/versions.txt), module "
         "pseudo-versions, commit hashes or local source trees", _containerd, str),
    Axis("mkfs", "erofs-utils versions (erofs-utils/versions.txt; default: the system's "
         "mkfs.erofs), a comma list, or all", _mkfs, lambda v: v or "system"),
    Axis("kernel", "guest kernels of the vm backend (vm/kernels.toml), a comma list, or all",
         _kernel, lambda v: v or "default", option=False),
    Axis("overlay", "overlay mount options of the upper's overlay, one set per flag "
         "(redirect_dir=on,metacopy=on; default: the kernel's), or all", _overlay, _overlay_label),
    Axis("writer", "EROFS writers whose image of each tar layer is checked against what the "
         "layer means: mkfs (containerd's layer.erofs, default), go-erofs (also against "
         "mkfs.erofs' image), a comma list, or all", _writer, str),
)
AXES_BY_NAME = {a.name: a for a in AXES}


@dataclass(frozen=True)
class Cell:
    values: tuple[tuple[str, object], ...]      # (axis name, value) in AXES order

    def get(self, name: str):
        return dict(self.values)[name]

    def label(self, names=None) -> str:
        """'mkfs 1.9.4, kernel 7.3' for the axes `names` (default: all)."""
        return ", ".join(f"{n} {AXES_BY_NAME[n].label(v)}" for n, v in self.values
                         if names is None or n in names)

    def slug(self, names=None) -> str:
        """The label as a file name part."""
        return re.sub(r"[^A-Za-z0-9._=+-]+", "-", self.label(names)).strip("-") or "default"

    def run_options(self) -> dict:
        """The RunOptions fields this cell sets."""
        return {n: v for n, v in self.values if AXES_BY_NAME[n].option}


def cells(given: dict[str, list[str]]) -> tuple[list[Cell], list[str]]:
    """Every combination of the axes' values (the first axis varies slowest), and the names of
    the axes with more than one value (what tells the cells apart)."""
    values = [(a.name, a.values(list(given.get(a.name) or []))) for a in AXES]
    varying = [n for n, vs in values if len(vs) > 1]
    combos = itertools.product(*[[(n, v) for v in vs] for n, vs in values])
    return [Cell(tuple(c)) for c in combos], varying
