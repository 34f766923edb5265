# CanBridge: `make demo` runs the whole simulated system, `make test` runs every test.
# Both do all set-up on a fresh Debian 12 machine (Debian packages, then a virtual environment).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DURATION ?= 0
BENCH_DURATION ?= 600
ARTIFACTS ?= artifacts

.PHONY: all deps system venv test lint typecheck pytest demo replay bench soak dist qml clean

all: test

system:
	bash scripts/setup-system.sh

$(STAMP): pyproject.toml scripts/setup-system.sh
	bash scripts/setup-system.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

deps venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check driver webui sim tests bench qml scripts install
	shellcheck -x install/*.sh scripts/*.sh

typecheck: $(STAMP)
	$(VENV)/bin/mypy driver

# The web tests run their D-Bus thread on GLib's default main context, which the in-process
# velib and QML tests also use: they get a pytest process of their own.
pytest: $(STAMP)
	mkdir -p $(ARTIFACTS)
	$(VENV)/bin/pytest -q --ignore=tests/web
	$(VENV)/bin/pytest -q tests/web

test: lint typecheck pytest

demo: $(STAMP)
	$(PY) -m sim.demo --duration $(DURATION)

# the drivers fed with a diagnostic bundle's settings and CAN capture: make replay BUNDLE=x.tar.gz
replay: $(STAMP)
	@test -n "$(BUNDLE)" || { echo "usage: make replay BUNDLE=canbridge-diag-....tar.gz"; exit 2; }
	$(PY) -m sim.demo --replay $(BUNDLE) --duration $(DURATION)

bench: $(STAMP)
	$(PY) -m bench.run_all --duration $(BENCH_DURATION)

soak: $(STAMP)
	$(PY) -m bench.soak --duration $(if $(filter 0,$(DURATION)),3600,$(DURATION))

dist: $(STAMP)
	$(PY) install/make_dist.py

qml: $(STAMP)
	$(PY) -m qml.build

clean:
	rm -rf build dist $(ARTIFACTS) .pytest_cache .mypy_cache .ruff_cache
