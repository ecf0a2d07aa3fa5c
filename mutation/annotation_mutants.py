"""Mutants inside type annotations that are never evaluated: equivalent, so not worth a run.

Under `from __future__ import annotations` an annotation is kept as a string that nothing in
harness/ reads back (no `typing.get_type_hints`), so `bytes | None` -> `bytes ^ None` cannot
change any output; each such mutant used to cost a full live run to survive. Without the future
import, function and class-level annotations run at import time, so nothing there is skipped.

Positions are (line from 1, column from 0 in characters), as cosmic-ray (parso) gives a
mutation's `start_pos`/`end_pos`; `ast` counts columns in UTF-8 bytes, converted here.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

Pos = tuple[int, int]


def _has_future_annotations(tree: ast.Module) -> bool:
    return any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
               and any(a.name == "annotations" for a in n.names) for n in tree.body)


def _annotations(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            yield node.annotation
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            yield node.returns
        elif isinstance(node, ast.AnnAssign):
            yield node.annotation


def annotation_spans(source: str) -> list[tuple[Pos, Pos]]:
    """The (start, end) of every unevaluated annotation in a module's source (pure)."""
    tree = ast.parse(source)
    if not _has_future_annotations(tree):
        return []
    lines = source.splitlines()

    def chars(line: int, byte_col: int) -> int:
        return len(lines[line - 1].encode()[:byte_col].decode(errors="replace"))

    return [((a.lineno, chars(a.lineno, a.col_offset)),
             (a.end_lineno, chars(a.end_lineno, a.end_col_offset)))
            for a in _annotations(tree)]


def inside(spans: list[tuple[Pos, Pos]], start: Pos, end: Pos) -> bool:
    """Whether the code from `start` to `end` lies wholly within one of the spans (pure)."""
    return any(s <= start and end <= e for s, e in spans)


@lru_cache(maxsize=None)
def _spans_of(path: str) -> tuple:
    return tuple(annotation_spans(Path(path).read_text(encoding="utf-8")))


def in_annotation(item) -> bool:
    """Whether every mutation of a cosmic-ray work item lies in an unevaluated annotation."""
    return all(inside(list(_spans_of(str(m.module_path))), tuple(m.start_pos), tuple(m.end_pos))
               for m in item.mutations)
