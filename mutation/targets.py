"""Which checks can notice a change in a module of harness/reference/: a check whose code never
imports the module cannot kill its mutants, so a mutant runs only the checks that import it.

Read from the source (the import statements, followed through harness/), never from a list kept
by hand, so a new test or a new import is picked up by itself.

    unit_tests(module)      the unit-test files (UNIT) that import the module, directly or not
    golden_sees(module)     whether `layerconf run --oracle golden` (Compare only) imports it
    live_targets(module)    the scenario folders whose checks import it (Apply, Compare or both)
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = "harness/reference"

# The reference's unit tests, fast files first (the run stops at the first failure); Apply's
# tests run real mkfs.erofs and come last.
UNIT = ("tests/test_gotar.py", "tests/test_reference_compare.py",
        "tests/test_reference_compression.py", "tests/test_reference_streams.py",
        "tests/test_reference_profiles.py", "tests/test_mediatypes.py",
        "tests/test_erofs_superblock.py", "tests/test_tarread.py", "tests/test_layermeaning.py",
        "tests/test_reference_fuzz.py", "tests/test_report_tardiff.py",
        "tests/test_reference_apply.py")
# What each kind of check runs: the golden run replays Compare; Apply cases run the reference's
# Apply and the meaning check; Compare scenarios run the reference's Compare.
GOLDEN_ENTRY = ("harness/golden.py",)
APPLY_ENTRY = ("harness/applycheck.py", "harness/checks/meaning.py", "harness/reference/apply.py")
COMPARE_ENTRY = ("harness/reference/compare.py", "harness/verdict.py")
APPLY_SCENARIOS = "scenarios/apply"


def _module_file(name: str) -> str | None:
    """'harness.reference.gotar' -> 'harness/reference/gotar.py' (or a package's __init__)."""
    base = ROOT / name.replace(".", "/")
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return str(p.relative_to(ROOT))
    return None


def _package(path: str) -> str:
    parts = Path(path).with_suffix("").parts
    return ".".join(parts[:-1])


@lru_cache(maxsize=None)
def _imports(path: str) -> frozenset[str]:
    """The harness/ files one file imports (absolute and relative, `from x import module`)."""
    tree = ast.parse((ROOT / path).read_text(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = _package(path).split(".")
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            if n.startswith("harness"):
                f = _module_file(n)
                if f:
                    found.add(f)
    return frozenset(found)


@lru_cache(maxsize=None)
def closure(path: str) -> frozenset[str]:
    """Every harness/ file that importing ``path`` loads (``path`` included)."""
    seen, todo = set(), [path]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo.extend(_imports(f))
        # importing harness.x.y runs harness/__init__.py and harness/x/__init__.py first
        parts = Path(f).parts
        for i in range(1, len(parts)):
            init = str(Path(*parts[:i], "__init__.py"))
            if (ROOT / init).is_file():
                todo.append(init)
    return frozenset(seen)


def _reaches(entries, module: str) -> bool:
    return any(module in closure(e) for e in entries)


def unit_tests(module: str | None) -> list[str]:
    if module is None:
        return list(UNIT)
    return [t for t in UNIT if module in closure(t)]


def golden_sees(module: str | None) -> bool:
    return module is None or _reaches(GOLDEN_ENTRY, module)


def live_targets(module: str | None) -> list[str]:
    """Scenario folders (relative to the repository) whose checks can see ``module``."""
    every = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "scenarios").iterdir() if p.is_dir())
    if module is None:
        return every
    apply, compare = _reaches(APPLY_ENTRY, module), _reaches(COMPARE_ENTRY, module)
    return [d for d in every
            if (apply if d == APPLY_SCENARIOS else compare)]
