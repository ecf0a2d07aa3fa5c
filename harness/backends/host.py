"""Host mode: scenarios run on this machine's kernel, in this process. Needs root."""
from __future__ import annotations

import dataclasses

from .. import runner


class HostBackend:
    name = "host"

    def __init__(self, options: runner.RunOptions | None = None):
        self.options = options or runner.RunOptions()
        self.session = runner.Session(self.options)

    def run_file(self, path: str) -> dict:
        try:
            scenario = runner.load(path, start=self.options.start_dir)
        except runner.ScenarioError as e:
            return runner.result_to_dict(runner.ScenarioResult(
                scenario=str(path), path=str(path), status=runner.Status.ERROR, message=str(e)))
        return runner.result_to_dict(runner.run_scenario(scenario, self.session))

    def run_files(self, paths, on_result=None) -> list[dict]:
        results = []
        for p in paths:
            results.append(self.run_file(str(p)))
            if on_result:
                on_result(results[-1])
        return results

    def run_scenario(self, scenario):
        return runner.run_scenario(scenario, self.session)

    def options_dict(self) -> dict:
        return dataclasses.asdict(self.options)

    def close(self):
        self.session.close()
