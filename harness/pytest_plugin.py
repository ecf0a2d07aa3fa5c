"""pytest collects every scenarios/**/*.yaml as a test item; items call the same runner as the CLI.

    pytest scenarios/            pytest -k whiteout            pytest -n 2
"""
from __future__ import annotations

from pathlib import Path

import pytest

from .result import Status
from .scenario import ScenarioError, load


def pytest_addoption(parser):
    group = parser.getgroup("layerconf")
    group.addoption("--containerd", default="", help="containerd version of the oracle and profile")
    group.addoption("--backend", default="auto", choices=("auto", "host", "vm"),
                    help="where scenarios run: host (root, fast), vm (QEMU), auto (host if root)")
    group.addoption("--kernel", default="6.12", help="guest kernel for the vm backend")
    group.addoption("--keep", default=None, help="keep artifacts of failing scenarios in this folder")
    from .runner import DEFAULT_PATH
    group.addoption("--path", default=DEFAULT_PATH, choices=("daemon", "direct", "both"),
                    help="how containerd is reached: daemon (default; a real containerd through "
                         "its API), direct (in-process wiring), both (each, then compared)")


class _Backend:
    """Per-process (per xdist worker) backend, opened on first use and closed at session end."""

    def __init__(self, config):
        self.config = config
        self.impl = None

    def run(self, path: str):
        if self.impl is None:
            from . import runner
            from .backends import open_backend
            opt = self.config.getoption
            self.impl = open_backend(opt("--backend"), kernel=opt("--kernel"),
                                     options=runner.RunOptions(containerd=opt("--containerd"),
                                                               keep=opt("--keep"),
                                                               path=opt("--path")))
        return self.impl.run_file(path)

    def close(self):
        if self.impl is not None:
            self.impl.close()
            self.impl = None


def pytest_configure(config):
    from .cli import terminate_as_interrupt
    terminate_as_interrupt()
    config._layerconf = _Backend(config)


def pytest_unconfigure(config):
    backend = getattr(config, "_layerconf", None)
    if backend:
        backend.close()


def pytest_collect_file(parent, file_path: Path):
    if file_path.suffix == ".yaml" and "scenarios" in file_path.parts[:-1]:
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    def collect(self):
        try:
            scenario = load(self.path)
        except ScenarioError as e:
            raise BadScenario(str(e)) from None
        item = ScenarioItem.from_parent(self, name=scenario.name, scenario=scenario)
        for tag in scenario.tags:
            mark = tag.replace("-", "_")
            self.config.addinivalue_line("markers", f"{mark}: scenarios tagged {tag}")
            item.add_marker(mark)
        yield item

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, BadScenario):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class BadScenario(Exception):
    pass


class ScenarioFailed(Exception):
    pass


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario, **kw):
        super().__init__(**kw)
        self.scenario = scenario
        self.keywords.update({t: True for t in scenario.tags})

    def runtest(self):
        if "corpus" in self.scenario.requires:
            _ensure_corpus()
        result = self.config._layerconf.run(str(self.path))
        status = Status(result["status"])
        self.user_properties.append(("status", status.value))
        for key in ("containerd", "erofs-utils", "kernel", "backend"):
            if key in result.get("environment", {}):
                self.user_properties.append((key, str(result["environment"][key])))
        text = _explain(result)
        if status == Status.SKIP:
            pytest.skip(result["message"])
        if status == Status.XFAIL:
            pytest.xfail(text.splitlines()[0] if text else "known divergence")
        if status.failed:
            raise ScenarioFailed(f"{status.value}: {text}")

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, ScenarioFailed):
            return f"{self.scenario.path}\n{excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, f"scenario {self.scenario.name}"


def _ensure_corpus():
    """The real-world corpus, built on first use where it can be (root, the Debian mirror);
    else the scenario is skipped with the reason."""
    from . import capabilities, corpus
    try:
        reason = corpus.ensure(log=lambda message: None)
    except corpus.CorpusError as e:
        raise ScenarioFailed(f"error: the Debian mirror answers but the real-world corpus could "
                             f"not be built: {e}") from None
    if reason:
        pytest.skip(reason)
    capabilities._LAZY_CACHE.pop("corpus", None)   # probed before the build in this process


def _explain(result: dict) -> str:
    parts = [result.get("message", "")] if result.get("message") else []
    for c in result.get("checks", []):
        if c["status"] in ("fail", "xpass", "error", "xfail") and c.get("explanation"):
            parts.append(f"[{c['status']}] {c['name']}\n{c['explanation']}")
    if result.get("artifacts"):
        parts.append(f"artifacts: {result['artifacts']}")
    return "\n".join(parts)
