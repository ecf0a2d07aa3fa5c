"""Names and field values the generators draw from, and their YAML forms. Pure data."""
from __future__ import annotations

from hypothesis import strategies as st

# Short names sort in interesting ways: ASCII, a '.'-prefixed one (sorts before letters), a
# non-ASCII UTF-8 one, an invalid-UTF-8 one (a surrogate-escaped 0xff byte) and a long one.
NAMES = ["a", "b", "c", "d", ".e", "é", "x\udcff", "n" * 120, "sub", "wh.f"]
ODD_MTIMES = [1700000000, 0, -1, "1700000000.5", 2**33, 2**33 - 1, 4102444800, 1]
IDS = [0, 1000, 2097151, 2097152, 2**32 - 2]
MODES = [0o644, 0o755, 0o600, 0o4755, 0o2755, 0o1777, 0o000, 0o777]
XATTR_NAMES = ["user.a", "user.b", "trusted.t"]

mtimes = st.one_of(st.sampled_from(ODD_MTIMES), st.integers(0, 2**34))
ids = st.one_of(st.sampled_from(IDS), st.integers(0, 2**32 - 2))
modes = st.one_of(st.sampled_from(MODES), st.integers(0, 0o7777))
xattr_values = st.one_of(st.just("v"), st.text(max_size=8), st.binary(max_size=8))
texts = st.one_of(st.just("x\n"), st.text(max_size=40), st.binary(max_size=300))


def path_bytes(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def yaml_path(path: str):
    """A path as a scenario file holds it: text when it is UTF-8, {hex} otherwise."""
    b = path_bytes(path)
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": b.hex()}


def yaml_value(v) -> dict:
    """Content or an xattr value: text when it is printable UTF-8, {hex} otherwise."""
    if isinstance(v, str) and v.isprintable() or v == "x\n":
        return v
    b = v.encode("utf-8", "surrogatepass") if isinstance(v, str) else v
    return {"hex": b.hex()}
