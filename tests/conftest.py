"""Shared pytest configuration: fixtures live in tests/fixtures/ and are loaded as plugins.

Parallel runs (``pytest -n N``, pytest-xdist, as ``make test`` does): the hooks below decide which
tests must share a worker process (:func:`work_unit`, a scheduler of our own) and in which order
the work is handed out (:func:`pytest_collection_modifyitems`).

* **One worker per module** by default (the tests of a module run together, in file order, in
  one process, as in a serial run): module-scoped fixtures (the fault matrix's running system,
  the QML pages), the in-process GLib main context and dbus-python connections of the velib and
  QML tests, and session-scoped fixtures (the installer's bundles) are then set up once per
  module, never shared between processes.
* **Spread test by test** (:data:`SPREAD`): modules whose every test starts a system of its own
  through function-scoped fixtures (private dbus-daemon in its own temporary directory, loopback
  CAN hub on a free port, child processes with their own environment) and touches no
  process-level state; they are the long process tests, so spreading them shortens the run.
* **Long units first** (:data:`FIRST`, then tests marked ``slow``): a worker that starts a long
  unit late would finish long after the others.

Every fixture is safe with several workers: dbus-daemons listen on unix sockets in a fresh
``mkdtemp`` directory, the CAN hub and web servers bind port 0, ``CANBRIDGE_CANLINK`` and
``DBUS_SESSION_BUS_ADDRESS`` are set in the worker's own environment (a process of its own) and
restored after the test; the fault matrix (one module: one worker, or in ``make test`` a pytest
process of its own) is the only writer of its artifacts.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest_plugins = [
    "tests.fixtures.venus",
    "tests.fixtures.velib",
    "tests.fixtures.canlink",
    "tests.fixtures.procs",
]

#: modules whose tests are independent process tests: distributed one test at a time
SPREAD = (
    "tests/sma/test_process.py",
    "tests/sma/test_sources_and_link.py",
    "tests/sma/test_publish_latency.py",
    "tests/superb/test_faults.py",
    "tests/superb/test_live.py",
    "tests/superb/test_values.py",
    "tests/venus/test_edge.py",
)

#: the longest work units, handed out first (seconds measured serially on a quiet 2-core
#: machine: short soak ~160, fault matrix ~130, the 60 s Sunny Island timeout test ~75)
FIRST = (
    "tests/test_soak.py",
    "tests/faults/test_matrix.py",
    "tests/sma/test_process.py::test_real_60s_timeout_never_reached_when_battery_vanishes",
    "tests/test_demo.py",
    "tests/install/test_dist.py",
    "tests/sma/test_process.py",
    "tests/install/test_supervise.py",
)


def _rank(nodeid: str) -> int:
    for i, prefix in enumerate(FIRST):
        if nodeid == prefix or nodeid.startswith((prefix + "::", prefix + "[")):
            return i
    return len(FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker (the controller does not collect): long units first."""
    if not hasattr(config, "workerinput"):
        return  # a serial run keeps pytest's order
    order = {id(item): n for n, item in enumerate(items)}
    items.sort(key=lambda it: (_rank(it.nodeid), it.get_closest_marker("slow") is None,
                               order[id(it)]))


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its module, or itself in a :data:`SPREAD` module."""
    module = nodeid.split("::", 1)[0]
    return nodeid if module in SPREAD else module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With ``-n N`` (xdist's default ``--dist load``): hand out :func:`work_unit` units, in
    collection order. (xdist's ``loadgroup`` cannot be used: with pytest >= 9.2 it no longer
    renames the node ids it groups by, so every test becomes a unit of its own.)"""
    if config.getoption("dist") != "load":
        return None  # an explicit --dist mode is honoured
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False  # keep the order chosen above
    return ByWorkUnit(config, log)
