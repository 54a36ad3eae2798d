# `make run`: the quick pipeline (pipelines/quick.yaml). `make baseline`: train, attack, defend and
# evaluate small_cnn on all of HAM10000. `make test`: the test suite. Each creates .venv and installs first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
# pytest-xdist workers for `make test`: 2 on a 2-core machine (much of the suite waits on child
# processes and I/O); each test module runs on one worker, so its fixtures are made once.
TEST_WORKERS ?= 2
PY := $(VENV)/bin/python
# The real HAM10000 beside the checkout, unless MEDROBUST_DATA says otherwise; made absolute
# here, so a relative MEDROBUST_DATA means the same folder to every test, whatever its folder.
override MEDROBUST_DATA := $(abspath $(or $(MEDROBUST_DATA),../shared/data/ham10000))
export MEDROBUST_DATA

.PHONY: install install-dev run baseline test bench clean

# What the steps need (`make run`, `make baseline`); the test tools (pytest, a notebook kernel,
# Playwright, the Kubernetes client) come on top, for `make test` only.
install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

run: install
	$(PY) -m medrobust pipeline pipelines/quick.yaml

baseline: install
	$(PY) -m medrobust baseline

# The system tests' servers (PostgreSQL, Chromium) are installed first where absent.
test: install-dev
	tests/install_services.sh
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope

bench: install
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_attacks.py
	$(PY) benchmarks/bench_defenses.py
	$(PY) benchmarks/bench_tracing.py

clean:
	rm -rf $(VENV) mlflow.db mlflow.db.lock mlruns mlartifacts
