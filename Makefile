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

LABEXT := labextension
LABEXT_OUT := dlaas_jupyter/labextension/package.json
CHROMIUM := /usr/bin/chromium

.PHONY: test run first-job venv bench labextension chromium wheel

test: venv labextension chromium
	$(PY) -m pytest $(PYTEST_ARGS)

# JupyterLab with the side panel, the server extension and the embedded
# Trainer (started on first use), on the quickstart notebook. The extensions
# are found through JUPYTER_PATH / JUPYTER_CONFIG_PATH, as an installed wheel
# would place them, without writing into the venv.
LAB_SHARE := $(VENV)/dlaas-share
run: venv labextension
	mkdir -p $(LAB_SHARE)/labextensions
	ln -sfn $(abspath dlaas_jupyter/labextension) $(LAB_SHARE)/labextensions/dlaas-jupyter-labextension
	JUPYTER_PATH="$(abspath $(LAB_SHARE))" JUPYTER_CONFIG_PATH="$(abspath jupyter-config)" \
	  PATH="$(abspath $(VENV))/bin:$$PATH" jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/quickstart.ipynb

# A first job end to end from the command line, no browser needed.
first-job: venv
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/first-job.sh

venv: $(INSTALLED)

$(PY):
	$(PYTHON) -m venv $(VENV)

# SKIP_JUPYTER_BUILDER: the lab extension is built by its own target below
# (npm ci from the committed lock), not by the wheel's build hook.
$(INSTALLED): pyproject.toml | $(PY)
	SKIP_JUPYTER_BUILDER=1 $(PIP) install --quiet --editable ".[test,dev]"
	touch $@

# The prebuilt JupyterLab extension (jupyter-builder comes from the venv's
# jupyterlab), rebuilt when its sources or the committed lock change.
labextension: $(LABEXT_OUT)

$(LABEXT)/node_modules/.package-lock.json: $(LABEXT)/package.json $(LABEXT)/package-lock.json
	cd $(LABEXT) && npm ci --no-audit --no-fund

$(LABEXT_OUT): $(LABEXT)/node_modules/.package-lock.json $(wildcard $(LABEXT)/src/*) $(wildcard $(LABEXT)/style/*) $(LABEXT)/schema/plugin.json $(LABEXT)/tsconfig.json | venv
	cd $(LABEXT) && PATH="$(abspath $(VENV))/bin:$$PATH" npm run build

# The wheel, with the prebuilt lab extension inside so installing it needs no
# Node. A bare `pip wheel .` works too: its build hook builds the extension
# with npm when it is missing, and fails rather than leave it out.
wheel: venv labextension
	$(PIP) wheel --no-deps -w dist .

# Debian's Chromium for the browser tests (tests/browser). Only root can
# install it; anyone else is told how, and the browser tests fail saying so.
chromium:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "$(CHROMIUM) is missing: the browser tests will fail. Install it with:" \
	  "sudo apt-get update && sudo apt-get install -y chromium" >&2; fi

# Performance figures beside their goals; each benchmark's docstring says what it measures.
bench: venv labextension chromium
	for b in log_latency log_throughput download list_jobs regex_extraction packaging \
	         notebook_submit monitor_load lab_panel; do $(PY) -m benchmarks.$$b || exit 1; done
