# kubeforge: `make demo` runs the operator and the samples on a local cluster; `make test` runs every test.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
E2E := PYTHONPATH=e2e $(BIN)/python -m kubeforge_e2e

.PHONY: help venv tools system-deps crds lint unit e2e test demo demo-down cluster-up cluster-down run bench plots clean

help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

venv: $(VENV)/.installed ## create .venv with the pinned Python dependencies
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

tools: ## build the pinned control-plane binaries from Go modules (cached; see e2e/versions.env)
	bash e2e/tools/build.sh

system-deps: ## install Prometheus and promtool from Debian's packages when missing (needs root)
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  echo "installing Debian's prometheus package"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  systemctl disable --now prometheus >/dev/null 2>&1 || true; }

crds: venv ## regenerate crds/ and the chart's crds/ from the pydantic models
	$(BIN)/kubeforge crds

lint: venv ## ruff, mypy --strict, import contracts, CRDs up to date
	$(BIN)/ruff check operator tests e2e bench
	$(BIN)/ruff format --check operator tests e2e bench
	$(BIN)/mypy --strict operator/kubeforge tests e2e bench
	$(BIN)/lint-imports
	$(BIN)/kubeforge crds --check

unit: venv tools system-deps ## fast tests: no cluster, no network (promtool tests the alert rules)
	$(BIN)/pytest tests

e2e: venv tools system-deps ## end-to-end tests on the local control plane (started if not up)
	@# Kueue's manager, which e2e/test_kueue.py runs: built (or found cached) here, before the tests,
	@# not inside a test whose timeout a first build on a fresh machine would exceed.
	bash e2e/tools/build.sh kueue
	$(BIN)/pytest e2e

test: lint unit e2e ## everything CI runs

cluster-up: venv tools ## start the local control plane with simulated GPU nodes (.cluster/)
	$(E2E) up

cluster-down: venv ## stop every process cluster-up started
	$(E2E) down

run: venv ## run the operator against the local cluster in the foreground
	$(BIN)/kubeforge run --kubeconfig .cluster/kubeconfig --metrics-port 18080 --health-port 18081 --bind-address 127.0.0.1

demo: venv tools system-deps ## local cluster + operator + samples, with live progress
	PYTHONPATH=e2e $(BIN)/python -m kubeforge_e2e.demo up

demo-down: venv ## stop the demo's operator, Prometheus and load simulator, then the cluster
	PYTHONPATH=e2e $(BIN)/python -m kubeforge_e2e.demo down

bench: venv tools system-deps ## print the benchmark figures; JSON and PNG charts in build/bench-results/
	PYTHONPATH=e2e $(BIN)/python bench/run_all.py

PLOTS_OUT ?= build/bench-results
plots: venv ## redraw the benchmark charts from build/bench-results/*.json (PLOTS_OUT=docs/img for the README)
	$(BIN)/python bench/plots.py --results build/bench-results --out $(PLOTS_OUT)

clean: cluster-down
	rm -rf .cluster .mypy_cache .ruff_cache .pytest_cache
