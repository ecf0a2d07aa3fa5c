"""Generated scenario content, so large inputs need no large YAML. Pure: no I/O.

`content: {size: N, seed: S}` is the concatenation of SHAKE-256 blocks keyed by (seed, stream,
block number), cut to N bytes: the same bytes on every machine and Python version, produced in
bounded memory. The `many` op names its files with a `str.format` pattern of `i`.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator

BLOCK = 1 << 20


def pseudo_random(size: int, seed: int = 0, stream: int = 0) -> Iterator[bytes]:
    """`size` deterministic pseudo-random bytes, in chunks of at most BLOCK bytes."""
    block = 0
    left = size
    while left > 0:
        n = min(left, BLOCK)
        key = b"layerconf-content\0%d\0%d\0%d" % (seed, stream, block)
        yield hashlib.shake_256(key).digest(n)
        left -= n
        block += 1


def pseudo_random_bytes(size: int, seed: int = 0, stream: int = 0) -> bytes:
    return b"".join(pseudo_random(size, seed, stream))


class PatternError(ValueError):
    pass


def many_path(pattern: str, i: int) -> str:
    """The i-th name of a `many` pattern such as 'd/f{i:04}'."""
    try:
        return pattern.format(i=i)
    except (KeyError, IndexError, ValueError) as e:
        raise PatternError(f"path pattern {pattern!r} must use only {{i}} (e.g. 'd/f{{i:04}}'): "
                           f"{e}") from None


def check_pattern(pattern: str, count: int) -> None:
    """Raise PatternError unless the pattern gives `count` distinct names."""
    if "{i" not in pattern:
        raise PatternError(f"path pattern {pattern!r} has no {{i}} (e.g. 'd/f{{i:04}}')")
    first = many_path(pattern, 0)
    if count > 1 and many_path(pattern, count - 1) == first:
        raise PatternError(f"path pattern {pattern!r} gives the same name for every i")
