"""Live changes through the settings service: mode, node list, limits; the aggregate battery
(PROTOCOLS.md §4) and the DVCC view; the battery scan; per-device custom names."""

from __future__ import annotations

import json
import time

import pytest

from tests.superb.conftest import AGGREGATE, MANAGER, System, battery_service

BATTERY_PREFIX = "com.victronenergy.battery."


def _bms_services(superb: System) -> list[str]:
    """What DVCC sees: connected battery services with /Info/MaxChargeVoltage."""
    c = superb.client
    out = []
    for name in c.services(BATTERY_PREFIX):
        items = c.items(name)
        if items.get("/Info/MaxChargeVoltage") is not None and items.get("/Connected") == 1:
            out.append(name)
    return out


def _all_connected(superb: System, nodes: tuple[int, ...]) -> None:
    c = superb.client
    for n in nodes:
        c.wait(f"node {n}", lambda n=n: c.value(battery_service(n), "/Connected") == 1, 15)


def test_mode_switch_and_dvcc_view(superb: System) -> None:
    sim = superb.start_sim("--nodes", "1,2,3", "--hold")
    for n, (v, i, soc) in {1: (13.0, 10.0, 50), 2: (13.2, -4.0, 80), 3: (13.4, 6.0, 20)}.items():
        sim.cmd(f"set {n} voltage {v}")
        sim.cmd(f"set {n} current {i}")
        sim.cmd(f"set {n} soc {soc}")
    sim.cmd("set 2 max_charge_current 30")
    superb.start_driver()
    c = superb.client
    _all_connected(superb, (1, 2, 3))
    # Mode is individual (0), but with three batteries the aggregate is the one BMS: individual
    # mode is refused, logged and shown (issue 12)
    assert c.has(AGGREGATE)
    assert _bms_services(superb) == [AGGREGATE]
    assert "individual mode refused for 3 batteries" in c.value(MANAGER, "/Status/ModeNote")
    assert c.value(MANAGER, "/Status/Mode") == 1
    assert superb.driver is not None
    superb.driver.wait_for(r"individual mode refused for 3 batteries", 2)

    assert c.setting("Mode", 1) == 0
    c.wait("note cleared", lambda: c.value(MANAGER, "/Status/ModeNote") == "", 2)
    c.wait("aggregate online", lambda: c.value(AGGREGATE, "/System/NrOfModulesOnline") == 3, 5)
    _all_connected(superb, (1, 2, 3))
    assert _bms_services(superb) == [AGGREGATE]  # exactly one BMS for DVCC
    for n in (1, 2, 3):
        items = c.items(battery_service(n))
        for path in ("/Info/MaxChargeVoltage", "/Info/MaxChargeCurrent",
                     "/Info/MaxDischargeCurrent"):
            assert path not in items
        assert items["/CanBridge/MaxChargeCurrent"] == pytest.approx(30.0 if n == 2 else 100.0)
    # limits rise at LimitRampRate from where they were while batteries were still joining
    c.wait_value(AGGREGATE, "/Info/MaxDischargeCurrent", lambda v: v == pytest.approx(450.0), 3)
    agg = c.items(AGGREGATE)
    assert agg["/Dc/0/Current"] == pytest.approx(12.0, abs=0.01)
    assert agg["/Dc/0/Voltage"] == pytest.approx(13.2, abs=0.01)
    assert agg["/Soc"] == pytest.approx(50.0, abs=0.1)  # equal capacities: plain mean
    assert agg["/InstalledCapacity"] == pytest.approx(300)
    # CCL: node 2 allows 30 A with a third of the capacity -> 90 A for the pack
    assert agg["/Info/MaxChargeCurrent"] == pytest.approx(90.0, abs=0.1)
    assert agg["/Info/MaxDischargeCurrent"] == pytest.approx(450.0, abs=0.1)
    assert agg["/Info/MaxChargeVoltage"] == pytest.approx(14.2)
    assert agg["/System/NrOfBatteries"] == 3
    assert agg["/Alarms/BmsCable"] == 0

    # a battery that vanishes: the aggregate stays, recomputed over the others
    sim.cmd("vanish 3")
    c.wait_value(AGGREGATE, "/System/NrOfModulesOffline", lambda v: v == 1, 5)
    agg = c.items(AGGREGATE)
    assert agg["/Dc/0/Current"] == pytest.approx(6.0, abs=0.01)
    assert agg["/Alarms/BmsCable"] == 1
    assert agg["/Info/MaxChargeCurrent"] == pytest.approx(60.0, abs=0.1)
    # its last SoC is held for the grace period: (50 + 80 + 20) / 3
    assert agg["/Soc"] == pytest.approx(50.0, abs=0.1)
    for n in (1, 2):
        sim.cmd(f"vanish {n}")
    c.wait_value(AGGREGATE, "/System/NrOfModulesOnline", lambda v: v == 0, 5)
    agg = c.items(AGGREGATE)
    assert agg["/Info/MaxChargeCurrent"] == 0
    assert agg["/Info/MaxDischargeCurrent"] == 0
    assert agg["/Alarms/BmsCable"] == 2
    assert c.has(AGGREGATE)
    for n in (1, 2, 3):
        sim.cmd(f"back {n}")
    c.wait_value(AGGREGATE, "/System/NrOfModulesOnline", lambda v: v == 3, 5)

    # individual mode with one battery: that battery is the BMS, the aggregate goes
    assert c.setting("Mode", 0) == 0
    assert c.setting("NodeIds", "1") == 0
    c.wait("aggregate gone", lambda: not c.has(AGGREGATE), 3)
    _all_connected(superb, (1,))
    c.wait("one BMS: battery 1", lambda: _bms_services(superb) == [battery_service(1)], 5)
    assert c.value(MANAGER, "/Status/ModeNote") == ""
    # two batteries again: straight back to the aggregate, never two BMSes
    assert c.setting("NodeIds", "1,2") == 0
    c.wait("aggregate back", lambda: _bms_services(superb) == [AGGREGATE], 5)


def test_node_list_and_limits_live(superb: System) -> None:
    superb.start_sim("--nodes", "1,2,3", "--hold")
    superb.start_driver()
    c = superb.client
    assert c.setting("NodeIds", "1,2") == 0
    c.wait("node 3 removed", lambda: not c.has(battery_service(3)), 3)
    _all_connected(superb, (1, 2))
    assert c.setting("NodeIds", "1-3") == 0
    _all_connected(superb, (1, 2, 3))
    t0 = time.monotonic()
    assert c.setting("MaxChargeCurrent", 42.0) == 0
    c.wait_value(AGGREGATE, "/Info/MaxChargeCurrent", lambda v: v == 3 * 42.0, 2)
    assert time.monotonic() - t0 <= 1.0
    assert c.setting("ChargeVoltage", 14.0) == 0
    c.wait_value(AGGREGATE, "/Info/MaxChargeVoltage", lambda v: v == 14.0, 1)
    # poll interval: from 0.3 s to 2 s, seen in the simulator's request counts
    assert c.setting("PollInterval", 2.0) == 0
    sim = superb.sim
    assert sim is not None

    def next_read(after: int) -> tuple[int, float]:
        box: dict[str, int] = {}

        def grew() -> bool:
            box["n"] = json.loads(sim.cmd("stats 1"))["upload 6060:00"]
            return box["n"] > after

        c.wait("a voltage read", grew, 5)
        return box["n"], time.monotonic()

    n, _ = next_read(json.loads(sim.cmd("stats 1"))["upload 6060:00"])
    n, _ = next_read(n)  # the cycle started when the setting changed
    n, t1 = next_read(n)
    _, t2 = next_read(n)
    assert 1.8 <= t2 - t1 <= 2.5


def test_unanswered_node_counts_as_offline_from_the_first_second(superb: System) -> None:
    """Issue 12: three nodes configured (Mode individual, the default), none answering yet: the
    aggregate is the BMS from the start, with every node offline and CCL 0; when two answer, the
    third still has its place as offline: CCL for the two (2 × 100 A), BmsCable 1."""
    superb.start_driver()
    c = superb.client
    t0 = time.monotonic()
    c.wait("aggregate", lambda: c.has(AGGREGATE), 2)
    c.wait("all offline", lambda: c.value(AGGREGATE, "/System/NrOfModulesOffline") == 3, 2)
    assert time.monotonic() - t0 <= 2.0
    agg = c.items(AGGREGATE)
    assert agg["/System/NrOfBatteries"] == 3
    assert agg["/Info/MaxChargeCurrent"] == 0 and agg["/Info/MaxDischargeCurrent"] == 0
    assert agg["/Alarms/BmsCable"] == 2
    assert _bms_services(superb) == [AGGREGATE]  # the one BMS, with CCL 0, from the start
    superb.start_sim("--nodes", "1,2", "--hold")
    c.wait("two online", lambda: c.value(AGGREGATE, "/System/NrOfModulesOnline") == 2, 15)
    agg = c.items(AGGREGATE)
    assert agg["/System/NrOfModulesOffline"] == 1
    assert agg["/Alarms/BmsCable"] == 1
    c.wait_value(AGGREGATE, "/Info/MaxChargeCurrent", lambda v: v == 200.0, 5)
    assert _bms_services(superb) == [AGGREGATE]
