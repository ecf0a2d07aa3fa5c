"""Standalone reproducers for upstream: a Go test for containerd's tree (gotest.py, from a
Compare scenario and the spec profile's expectation, expect.py) and a POSIX shell script for
mkfs.erofs (script.py, from an Apply fixture)."""


class ExportError(Exception):
    """A scenario cannot be exported as asked; str() is one paragraph naming it and the cause."""


def run_export(scenarios, *, go_test: bool, containerd: str = "", command: str = "") -> str:
    """The reproducer's text for these scenarios (Go test file, or shell script)."""
    if go_test:
        from . import gotest
        from .expect import ExpectError, spec_expectation
        cases = []
        for s in scenarios:
            if not s.compares:
                raise ExportError(f"{s.path}: has no Compare part (no lowers/upper); --go-test "
                                  "exports Compare scenarios, --script exports Apply fixtures")
            try:
                gotest.check_exportable(s)
                cases.append((s, spec_expectation(s, containerd)))
                gotest.test_func(*cases[-1])
            except (ExpectError, gotest.ExportError) as e:
                raise ExportError(f"{s.path}: {e}" if s.path not in str(e) else str(e)) from None
        return gotest.go_test_file(cases, command)
    from . import script
    try:
        return script.script_file(scenarios, command)
    except script.ExportError as e:
        raise ExportError(str(e)) from None
