# CanBridge: `make demo` runs the whole simulated system, `make test` runs every test.
# Both do all set-up on a fresh Debian 12 machine (Debian packages, then a virtual environment).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DURATION ?= 0
BENCH_DURATION ?= 600
ARTIFACTS ?= artifacts
PYTEST_WORKERS ?= 4
PYTEST := $(VENV)/bin/pytest -q

.PHONY: all deps system venv test lint typecheck pytest pytest-main pytest-web pytest-soak demo bench soak dist qml clean

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

# Three pytest processes at once (most of the tests' time is spent waiting for simulated
# devices, timeouts and the safety ladder, not computing):
# * pytest-main: every test but the web tests and the short soak, over PYTEST_WORKERS worker
#   processes (pytest-xdist; tests/conftest.py says which tests share a worker and what starts
#   first);
# * pytest-web: the web tests, in a process of their own: they run their D-Bus thread on GLib's
#   default main context, which the in-process velib and QML tests also use;
# * pytest-soak: the short soak (the full system with seeded random faults; `make soak` is the
#   long one).
# The web tests and the soak run at a lower CPU priority (nice): they have no tight timing, while
# the fault matrix and the process tests in pytest-main check real-time properties of the system
# (no BMS frame gap over 2 s, ladder steps within 1.5 s) that the other tests' load must not
# disturb. Each one's output is printed in one piece when it ends. make fails when any of them
# fails: every non-zero exit status counts, pytest's 5 ("no tests collected") included.
pytest: $(STAMP)
	mkdir -p $(ARTIFACTS)
	$(MAKE) --no-print-directory -j3 --output-sync=target pytest-main pytest-web pytest-soak

pytest-main: $(STAMP)
	$(PYTEST) -n $(PYTEST_WORKERS) --ignore=tests/web --ignore=tests/test_soak.py

pytest-web: $(STAMP)
	nice -n 10 $(PYTEST) tests/web

pytest-soak: $(STAMP)
	nice -n 10 $(PYTEST) tests/test_soak.py

test: lint typecheck pytest

demo: $(STAMP)
	$(PY) -m sim.demo --duration $(DURATION)

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
