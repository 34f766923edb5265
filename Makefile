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

.PHONY: all deps system venv test lint typecheck pytest pytest-faults pytest-main pytest-web pytest-soak demo replay bench soak dist qml clean

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

# Four pytest processes at once (most of the tests' time is spent waiting for simulated devices,
# timeouts and the safety ladder, not computing):
# * pytest-faults: the fault matrix (one running system, one fault after another);
# * pytest-main: every other test but the web tests and the short soak, over PYTEST_WORKERS
#   worker processes (pytest-xdist; tests/conftest.py says which tests share a worker and what
#   starts first);
# * pytest-web: the web tests, in a process of their own: they run their D-Bus thread on GLib's
#   default main context, which the in-process velib and QML tests also use;
# * pytest-soak: the short soak (the full system with seeded random faults; `make soak` is the
#   long one).
# CPU priorities (nice) keep the tests' load from disturbing the real-time properties they check:
# the fault matrix comes first (its tightest check: a D-Bus daemon restart must not pause the BMS
# frames for more than 2 s, and dbus-sma's restart, Python start-up included, takes most of that
# when the CPU is busy), the process tests of pytest-main next (ladder steps within 1.5 s, setting
# latencies), the web tests and the soak (no tight timing) last.
# Each one's output is printed in one piece when it ends. make fails when any of them fails:
# every non-zero exit status counts, pytest's 5 ("no tests collected") included.
pytest: $(STAMP)
	mkdir -p $(ARTIFACTS)
	$(MAKE) --no-print-directory -j4 --output-sync=target \
		pytest-faults pytest-main pytest-web pytest-soak

pytest-faults: $(STAMP)
	$(PYTEST) tests/faults

pytest-main: $(STAMP)
	nice -n 10 $(PYTEST) -n $(PYTEST_WORKERS) --ignore=tests/web --ignore=tests/faults \
		--ignore=tests/test_soak.py

pytest-web: $(STAMP)
	nice -n 15 $(PYTEST) tests/web

pytest-soak: $(STAMP)
	nice -n 15 $(PYTEST) tests/test_soak.py

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
