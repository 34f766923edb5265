"""The whole driver process (D-Bus, settings) against the quirky node as a process
(``python -m sim.superb_quirky``) on the loopback CAN link: stale, late and unsized answers never
show as a wrong or missing value; a 2-byte SDO response takes the battery offline (issue 11).

Expected values written by hand from the quirky node's defaults: 13.25 V, 64 %, 20.5 °C, 37
charge cycles (6050, U16, unsized answer), 100 Ah."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.superb.conftest import FAST, MANAGER, System, battery_service

SVC = battery_service(1)


@pytest.fixture
def superb_settings() -> dict[str, Any]:
    return {**FAST, "NodeIds": "1"}


def _start(superb: System, *quirks: str) -> Any:
    sim = superb.start_sim("--nodes", "1", "--serial-base", "2300000", "--missing", "2014:00",
                           *quirks, module="sim.superb_quirky", name="quirky")
    superb.start_driver()
    superb.client.wait("connected", lambda: superb.client.value(SVC, "/Connected") == 1, 15)
    return sim


def test_stale_late_unsized_answers_publish_only_right_values(superb: System) -> None:
    sim = _start(superb, "--stale-every", "7", "--late-every", "5", "--late-ms", "150",
                 "--latency-ms", "3", "--jitter-ms", "4", "--unsized")
    c = superb.client
    c.wait_value(SVC, "/History/ChargeCycles", lambda v: v == 37, 10)
    assert c.value(SVC, "/History/TotalAhCharged") is None  # not CiA 418 Ah (37/8 = 4.6)
    end = time.monotonic() + 6.0
    samples = 0
    while time.monotonic() < end:
        items = c.items(SVC)
        assert items["/Connected"] == 1
        assert items["/Dc/0/Voltage"] == pytest.approx(13.25)
        assert items["/Soc"] == 64
        assert items["/Dc/0/Temperature"] == pytest.approx(20.5)
        assert items["/Info/MaxChargeCurrent"] == pytest.approx(100.0)
        assert items["/InstalledCapacity"] == 100
        samples += 1
        time.sleep(0.1)
    assert samples > 20
    node = json.loads(c.value(MANAGER, "/Status/Nodes"))["1"]
    assert node["missing"] == {"cycles": "0x06020000"}
    assert node["sdo_discarded"] > 0
    stats = json.loads(sim.cmd("stats 1"))
    assert stats["stale sent"] > 0 and stats["late sent"] > 0


def test_two_byte_sdo_response_takes_the_battery_offline(superb: System) -> None:
    """Issue 11 reproduction: canopen raises struct.error on a 2-byte 0x580+n answer; the old
    driver republished the last values as valid and kept the node online forever."""
    sim = _start(superb)
    c = superb.client
    c.wait_value(SVC, "/Info/MaxChargeCurrent", lambda v: v == 100.0, 5)
    sim.cmd("quirk 1 short_every 1")
    t0 = time.monotonic()
    c.wait_value(SVC, "/Connected", lambda v: v == 0, 5)
    detect = time.monotonic() - t0
    items = c.items(SVC)
    assert items["/Dc/0/Voltage"] is None and items["/Soc"] is None
    assert items["/Info/MaxChargeCurrent"] == 0 and items["/Info/MaxDischargeCurrent"] == 0
    assert items["/Alarms/BmsCable"] == 2
    assert detect < 3.0
    sim.cmd("quirk 1 short_every 0")
    c.wait_value(SVC, "/Connected", lambda v: v == 1, 5)
    c.wait_value(SVC, "/Info/MaxChargeCurrent", lambda v: v == 100.0, 5)
