# The two commands of the README. Both set up what is missing first (.ci/bootstrap).
.PHONY: bootstrap conformance test bench mutate

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

# On demand, never in CI: mutation testing of harness/reference/ (docs/mutation.md). Takes hours
# for every mutant; MUTATE_ARGS="--budget 1800" or "--max-mutants 100" for a sample.
mutate: bootstrap
	.venv/bin/python -m pip install -q cosmic-ray==8.7.0
	nice .venv/bin/python mutation/run.py $(MUTATE_ARGS)
