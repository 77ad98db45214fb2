# `make test` and `make run` do all their own set-up, so a fresh clone needs
# nothing else. Each set-up step is its own target so later ones (npm, a
# browser) slot in as further prerequisites of `test`.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# Reinstall only when the package's declared dependencies change.
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: test run venv bench

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

run: venv
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/first-job.sh

venv: $(INSTALLED)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml | $(PY)
	$(PIP) install --quiet --editable ".[test,dev]"
	touch $@

# Performance figures beside their goals (see benchmarks/README.md).
bench: venv
	for b in log_latency log_throughput download list_jobs; do $(PY) -m benchmarks.$$b || exit 1; done
