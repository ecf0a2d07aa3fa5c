# The two commands of the README. Both set up what is missing first (.ci/bootstrap).
.PHONY: bootstrap conformance test bench

bootstrap:
	@bash .ci/bootstrap

# The main job: the scenario suite against containerd's real Go differ, inside a QEMU VM.
conformance: bootstrap
	.venv/bin/layerconf run

# The project's tests: unit tests of the pure modules, integration tests, and the scenarios.
test: bootstrap
	.venv/bin/python -m pytest -n 2 -q -k "not slow"

bench: bootstrap
	.venv/bin/python bench/compare_bench.py
