"""Fixtures for the fault-injection matrix: one running system per module, and the results.

``fault_system`` starts the whole system once (see :mod:`tests.faults.system`) and checks that
it is in its steady state before each test hands it over. ``matrix`` collects one record per
fault; at the end of the session the records are merged into ``artifacts/faults/results.json``
(``bench/reliability_report.py`` renders ``docs/RELIABILITY.md`` from it).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.system import SYSTEM_SETTINGS, FaultSystem

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "artifacts" / "faults" / "results.json"


class Matrix:
    """Records of the faults run in this session, keyed by fault id."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def record(self, key: str, **fields: Any) -> None:
        fields.setdefault("recorded", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self.records[key] = fields

    def write(self) -> None:
        if not self.records:
            return
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {}
        if RESULTS.exists():
            try:
                data = json.loads(RESULTS.read_text())
            except ValueError:
                data = {}
        faults = data.get("faults", {})
        faults.update(self.records)
        data = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "system": platform.platform()},
            "settings": SYSTEM_SETTINGS,
            "faults": faults,
        }
        tmp = RESULTS.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        tmp.replace(RESULTS)


@pytest.fixture(scope="session")
def matrix() -> Iterator[Matrix]:
    m = Matrix()
    try:
        yield m
    finally:
        m.write()


@pytest.fixture(scope="module")
def fault_system() -> Iterator[FaultSystem]:
    """The whole system, started once per module (short temp path: unix sockets)."""
    workdir = Path(tempfile.mkdtemp(prefix="cbf-"))
    system = FaultSystem(workdir)
    try:
        system.start()
        system.wait_steady(60)
        yield system
    finally:
        system.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def steady(fault_system: FaultSystem) -> FaultSystem:
    """The system, back in its steady state before a fault is injected."""
    fault_system.wait_steady(60)
    return fault_system
