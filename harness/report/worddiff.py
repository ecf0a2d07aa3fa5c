"""Word diffs of two texts or argvs, for error texts and mkfs command lines: both in full, then
one line marking what only one side has, so a person sees the difference without comparing
two long lines by eye."""
from __future__ import annotations

import difflib


def marked(a: list[str], b: list[str]) -> str:
    """The words of both, `[-x-]` where only `a` has x, `{+y+}` where only `b` has y."""
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out += a[i1:i2]
            continue
        if i2 > i1:
            out.append("[-" + " ".join(a[i1:i2]) + "-]")
        if j2 > j1:
            out.append("{+" + " ".join(b[j1:j2]) + "+}")
    return " ".join(out)


def word_diff(a: list[str] | str, b: list[str] | str, labels: tuple[str, str]) -> str:
    """Indented lines: each side in full, then the marked diff (lists are argvs, strings are
    split at whitespace)."""
    wa = a.split() if isinstance(a, str) else list(a)
    wb = b.split() if isinstance(b, str) else list(b)
    ta = a if isinstance(a, str) else " ".join(a)
    tb = b if isinstance(b, str) else " ".join(b)
    w = max(len(labels[0]), len(labels[1]), len("diff"))
    return (f"  {labels[0]:<{w}}: {ta}\n  {labels[1]:<{w}}: {tb}\n"
            f"  {'diff':<{w}}: {marked(wa, wb)}   ([-{labels[0]} only-] {{+{labels[1]} only+}})")
