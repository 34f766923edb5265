"""Faults: SDO aborts, slow and missing answers, wrong sizes, heartbeat loss, reboots, bus-off,
a missing CAN interface and bad node lists in the settings."""

from __future__ import annotations

import json

from tests.superb.conftest import MANAGER, System, battery_service

SVC1 = battery_service(1)


def _nodes(c) -> dict:  # type: ignore[no-untyped-def]
    return dict(json.loads(c.value(MANAGER, "/Status/Nodes")))


def _start(superb: System, nodes: str = "1") -> None:
    superb.start_sim("--nodes", nodes, "--hold")
    superb.start_driver()
    for n in nodes.split(","):
        svc = battery_service(int(n))
        superb.client.wait(f"{svc}", lambda s=svc: superb.client.value(s, "/Connected") == 1, 15)


def test_transient_abort_retried_missing_object_remembered(superb: System) -> None:
    """A "no data" abort (0x08000024) makes the value invalid and is asked again every cycle:
    the value returns without a reboot (issue 11). Objects a firmware does not have (6051/6052
    before 1.2) are not asked at all (issue 12; remembered "does not exist" answers are in
    test_quirky.py)."""
    superb.start_sim("--nodes", "1,3", "--hold", "--old-firmware", "3")
    superb.client.setting("NodeIds", "1,3")
    superb.start_driver()
    c, sim = superb.client, superb.sim
    assert sim is not None
    for n in (1, 3):
        c.wait(f"node {n}", lambda n=n: c.value(battery_service(n), "/Connected") == 1, 15)
    sim.cmd("abort 1 6010 0")
    # the temperature is read every MediumPollInterval (5 s): the abort meets the next read
    c.wait_value(SVC1, "/Dc/0/Temperature", lambda v: v is None, 10)
    # unknown temperature: charging is not allowed (fail safe), the battery stays online
    c.wait("node 1 CCL 0", lambda: _nodes(c)["1"].get("ccl") == 0, 3)
    assert c.value(SVC1, "/Connected") == 1
    c.wait("abort listed", lambda: "temperature" in _nodes(c)["1"].get("aborted", {}), 3)
    assert "temperature" not in _nodes(c)["1"].get("missing", {})
    asked = json.loads(sim.cmd("stats 1"))["upload 6010:00"]
    c.wait("asked again", lambda: json.loads(sim.cmd("stats 1"))["upload 6010:00"] >= asked + 3,
           5)
    sim.cmd("unabort 1 6010 0")  # no reboot: the next read brings it back
    c.wait_value(SVC1, "/Dc/0/Temperature", lambda v: v is not None, 5)
    c.wait("node 1 CCL back", lambda: (_nodes(c)["1"].get("ccl") or 0) > 0, 3)
    # firmware 1.1 has no 6051/6052: the table by firmware says so, they are never asked
    c.wait("slow objects read", lambda: "upload 6053:00" in json.loads(sim.cmd("stats 3")), 5)
    stats = json.loads(sim.cmd("stats 3"))
    assert "upload 6051:00" not in stats and "upload 6052:00" not in stats


def test_slow_answers_and_timeouts(superb: System) -> None:
    _start(superb)
    c, sim = superb.client, superb.sim
    assert sim is not None
    sim.cmd("slow 1 40")  # slower than usual, within the 0.1 s SDO timeout
    sim.cmd("set 1 soc 55")
    c.wait_value(SVC1, "/Soc", lambda v: v == 55, 5)
    assert c.value(SVC1, "/Connected") == 1
    sim.cmd("slow 1 400")  # slower than the SDO timeout: every read times out
    c.wait_value(SVC1, "/Connected", lambda v: v == 0, 5)
    assert c.value(SVC1, "/Soc") is None
    assert c.value(SVC1, "/Alarms/BmsCable") == 2
    c.wait("timeouts counted", lambda: _nodes(c)["1"].get("sdo_timeouts", 0) >= 3, 2)
    sim.cmd("slow 1 0")
    c.wait_value(SVC1, "/Connected", lambda v: v == 1, 5)
    c.wait_value(SVC1, "/Soc", lambda v: v == 55, 3)


def test_wrong_size_response_is_invalid(superb: System) -> None:
    _start(superb)
    c, sim = superb.client, superb.sim
    assert sim is not None
    sim.cmd("size 1 voltage 3")
    c.wait_value(SVC1, "/Dc/0/Voltage", lambda v: v is None, 5)
    assert c.value(SVC1, "/Dc/0/Power") is None
    assert c.value(SVC1, "/Soc") is not None  # the rest still works
    assert c.value(SVC1, "/Connected") == 1
    c.wait("bad responses counted", lambda: _nodes(c)["1"].get("bad_responses", 0) > 0, 2)
    sim.cmd("size 1 voltage 4")
    c.wait_value(SVC1, "/Dc/0/Voltage", lambda v: v is not None, 5)


def test_heartbeat_loss_alone_is_not_offline_but_sdo_loss_is(superb: System) -> None:
    _start(superb)
    c, sim = superb.client, superb.sim
    assert sim is not None
    c.wait("a heartbeat heard", lambda: _nodes(c)["1"].get("heartbeat_age") is not None, 3)
    sim.cmd("nohb 1")
    c.wait("heartbeat old", lambda: (_nodes(c)["1"].get("heartbeat_age") or 0) > 2.0, 5)
    assert c.value(SVC1, "/Connected") == 1  # still answers SDO
    sim.cmd("hb 1")
    sim.cmd("nosdo 1")  # heartbeats but no answers
    c.wait_value(SVC1, "/Connected", lambda v: v == 0, 5)
    sim.cmd("sdo 1")
    c.wait_value(SVC1, "/Connected", lambda v: v == 1, 3)


def test_bus_off_and_back(superb: System) -> None:
    _start(superb, "1,2")
    c = superb.client
    superb.link.control("vecan0", "busoff")
    for n in (1, 2):
        c.wait_value(battery_service(n), "/Connected", lambda v: v == 0, 5)
    superb.link.control("vecan0", "buson")
    for n in (1, 2):
        c.wait_value(battery_service(n), "/Connected", lambda v: v == 1, 5)
    superb.link.control("vecan0", "garbage")  # malformed frames must not hurt
    assert superb.driver is not None and superb.driver.proc.poll() is None
    c.wait_value(SVC1, "/Connected", lambda v: v == 1, 3)


def test_missing_interface_retries_then_recovers(superb: System) -> None:
    _start(superb)
    c = superb.client
    assert c.setting("CanInterface", "socketcan:cbnone0") == 0
    c.wait("status", lambda: "cannot open socketcan:cbnone0" in c.value(MANAGER, "/Status/Can"),
           5)
    assert c.value(MANAGER, "/Status/CanOpen") == 0
    c.wait_value(SVC1, "/Connected", lambda v: v == 0, 5)
    assert c.has(SVC1)  # the service stays registered
    assert superb.driver is not None and superb.driver.proc.poll() is None  # no crash
    assert c.setting("CanInterface", "vecan0") == 0
    c.wait_value(SVC1, "/Connected", lambda v: v == 1, 5)
    assert c.value(MANAGER, "/Status/CanOpen") == 1


def test_bad_node_lists_refused_last_good_kept(superb: System) -> None:
    _start(superb, "1,2")
    c = superb.client
    assert c.setting("NodeIds", "1-2") == 0
    c.wait_value(MANAGER, "/Status/NodeIds", lambda v: v == "1,2", 3)
    for bad in ("1,2,2", "1,200", "1,x"):
        c.setting("NodeIds", bad)
        c.wait("refusal shown", lambda: c.value(MANAGER, "/Status/NodeIdsError") != "", 3)
        assert c.value(MANAGER, "/Status/NodeIds") == "1,2"
        assert superb.driver is not None
        superb.driver.wait_for(r"NodeIds.*refused", 3)
    assert c.value(battery_service(2), "/Connected") == 1
    assert c.setting("NodeIds", "2") == 0
    c.wait("node 1 removed", lambda: not c.has(SVC1), 5)
    assert c.value(MANAGER, "/Status/NodeIdsError") == ""
