"""A battery that vanishes, with the default timing (1 s polls, 0.3 s SDO timeout, 3 timeouts,
3.5 s heartbeat timeout): within 5 s its service shows ``/Connected`` 0, invalid values and the
``BmsCable`` alarm, and it stays registered; when it returns it is back within two cycles."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.superb.conftest import AGGREGATE, System, battery_service


@pytest.fixture
def superb_settings() -> dict[str, Any]:
    return {"NodeIds": "1,2"}  # everything else at its default


def test_vanish_and_return_default_timing(superb: System) -> None:
    sim = superb.start_sim("--nodes", "1,2")
    superb.start_driver()
    c = superb.client
    svc = battery_service(2)
    for n in (1, 2):
        c.wait(f"node {n}", lambda n=n: c.value(battery_service(n), "/Connected") == 1, 15)
    assert c.value(svc, "/Dc/0/Voltage") is not None
    t0 = time.monotonic()
    sim.cmd("vanish 2")
    c.wait("node 2 offline", lambda: c.value(svc, "/Connected") == 0, 6)
    took = time.monotonic() - t0
    assert took <= 5.0, f"offline after {took:.1f} s"
    items = c.items(svc)
    assert items["/Alarms/BmsCable"] == 2
    for path in ("/Dc/0/Voltage", "/Dc/0/Current", "/Soc", "/Dc/0/Temperature",
                 "/Dc/0/Power", "/Capacity"):
        assert items[path] is None, path
    # two batteries: the aggregate is the BMS; it counts battery 2 as offline
    assert "/Info/MaxChargeVoltage" not in items and "/Info/MaxChargeCurrent" not in items
    c.wait_value(AGGREGATE, "/System/NrOfModulesOffline", lambda v: v == 1, 2)
    assert c.value(AGGREGATE, "/Alarms/BmsCable") == 1
    assert c.value(AGGREGATE, "/Info/MaxChargeVoltage") is not None
    assert c.value(battery_service(1), "/Connected") == 1  # the other one is unaffected
    t0 = time.monotonic()
    sim.cmd("back 2")
    c.wait("node 2 back", lambda: c.value(svc, "/Connected") == 1, 4)
    took = time.monotonic() - t0
    assert took <= 2.0 + 0.5, f"back after {took:.1f} s"
    c.wait_value(svc, "/Dc/0/Voltage", lambda v: v is not None, 2)
    assert c.value(svc, "/Alarms/BmsCable") == 0
