"""Values on D-Bus equal the simulator's within scaling; the services look like a real BMS."""

from __future__ import annotations

import json

import pytest

from tests.superb.conftest import AGGREGATE, MANAGER, SERIAL_BASE, System, battery_service

# The paths a Lynx Smart BMS publishes (reference recording) that a SuperB can feed too.
BMS_PATHS = ("/Dc/0/Voltage", "/Dc/0/Current", "/Dc/0/Power", "/Dc/0/Temperature", "/Soc",
             "/Capacity", "/InstalledCapacity", "/ConsumedAmphours", "/TimeToGo",
             "/Info/MaxChargeVoltage", "/Info/MaxChargeCurrent", "/Info/MaxDischargeCurrent",
             "/Info/BatteryLowVoltage", "/Io/AllowToCharge", "/Io/AllowToDischarge",
             "/Alarms/LowSoc", "/Alarms/BmsCable", "/Alarms/HighTemperature",
             "/Alarms/LowCellVoltage", "/History/ChargeCycles", "/Mgmt/ProcessName",
             "/Mgmt/ProcessVersion", "/Mgmt/Connection", "/DeviceInstance", "/ProductId",
             "/ProductName", "/CustomName", "/FirmwareVersion", "/Serial", "/Connected")


def test_values_match_simulator(superb: System) -> None:
    sim = superb.start_sim("--nodes", "1,2,3", "--hold", "--old-firmware", "3")
    for node, (volt, cur, soc, temp) in {1: (13.25, 12.5, 64, 21.5), 2: (13.1, -20.25, 40, 4.0),
                                        3: (12.9, 0.0, 7, -2.0)}.items():
        sim.cmd(f"set {node} voltage {volt}")
        sim.cmd(f"set {node} current {cur}")
        sim.cmd(f"set {node} soc {soc}")
        sim.cmd(f"set {node} temperature {temp}")
    sim.cmd("set 1 ah_expended 10.5")
    superb.start_driver()
    c = superb.client
    for node in (1, 2, 3):
        svc = battery_service(node)
        c.wait(f"{svc} connected", lambda s=svc: c.value(s, "/Connected") == 1, 15)
    items = {n: c.items(battery_service(n)) for n in (1, 2, 3)}
    # three batteries: the aggregate is the one BMS, the batteries carry no /Info/Max* paths;
    # their own limits are on the manager's /Status/Nodes
    limit_paths = {"/Info/MaxChargeVoltage", "/Info/MaxChargeCurrent",
                   "/Info/MaxDischargeCurrent"}
    c.wait_value(MANAGER, "/Status/Online", lambda v: v == 3, 3)  # status lags by a tick
    nodes = json.loads(c.value(MANAGER, "/Status/Nodes"))
    for n, it in items.items():
        missing = [p for p in BMS_PATHS if p not in it and p not in limit_paths]
        assert not missing, f"node {n} lacks {missing}"
        assert not limit_paths & set(it), f"node {n} publishes BMS limits"
        it["/Info/MaxChargeCurrent"] = nodes[str(n)]["ccl"]
        it["/Info/MaxDischargeCurrent"] = nodes[str(n)]["dcl"]
        assert it["/Serial"] == str(SERIAL_BASE + n)
        assert it["/ProductId"] == 0xBA77
    one, two, three = items[1], items[2], items[3]
    assert one["/Dc/0/Voltage"] == pytest.approx(13.25, abs=1 / 1024)
    assert one["/Dc/0/Current"] == pytest.approx(12.5, abs=0.001)
    assert one["/Dc/0/Power"] == pytest.approx(13.25 * 12.5, abs=0.2)
    assert one["/Soc"] == 64
    assert one["/Dc/0/Temperature"] == pytest.approx(21.5, abs=0.125)
    assert one["/InstalledCapacity"] == 100
    assert one["/Capacity"] == 100  # full capacity, as a Lynx Smart BMS (issue 17)
    assert one["/CanBridge/RemainingCapacity"] == pytest.approx(64.0)
    assert one["/ConsumedAmphours"] == pytest.approx(-10.5)
    assert one["/TimeToGo"] is None  # charging: no time to go
    assert c.value(AGGREGATE, "/Info/MaxChargeVoltage") == pytest.approx(14.2)
    assert one["/Info/MaxChargeCurrent"] == pytest.approx(100.0)
    assert one["/Info/MaxDischargeCurrent"] == pytest.approx(150.0)
    assert one["/Io/AllowToCharge"] == 1
    assert one["/History/ChargeCycles"] == 17
    assert one["/Alarms/BmsCable"] == 0
    assert one["/FirmwareVersion"] == "1.3.0"
    # node 2: discharging, 4 °C -> charge current derated to 4/5 of 100 A
    assert two["/Dc/0/Current"] == pytest.approx(-20.25, abs=0.001)
    assert two["/TimeToGo"] == pytest.approx(40.0 / 20.25 * 3600, abs=2)
    assert two["/Info/MaxChargeCurrent"] == pytest.approx(80.0, abs=0.1)
    assert two["/Alarms/LowChargeTemperature"] == 0
    # node 3: below 0 °C -> no charging; SoC 7 % -> low SoC alarm; old firmware
    assert three["/Info/MaxChargeCurrent"] == 0
    assert three["/Io/AllowToCharge"] == 0
    assert three["/Io/AllowToDischarge"] == 1
    assert three["/Alarms/LowChargeTemperature"] == 1
    assert three["/Alarms/LowSoc"] == 2
    assert three["/FirmwareVersion"] == "1.1.0"
    assert three["/History/AhReturnedLastCharge"] is None  # 6052 not in firmware 1.1
    c.wait_value(MANAGER, "/Status/Online", lambda v: v == 3, 2)


def test_alarm_bits_and_battery_limits(superb: System) -> None:
    sim = superb.start_sim("--nodes", "1", "--hold")
    assert superb.client.setting("NodeIds", "1") == 0  # one battery: it is the BMS itself
    superb.start_driver()
    c = superb.client
    svc = battery_service(1)
    c.wait("connected", lambda: c.value(svc, "/Connected") == 1, 15)
    sim.cmd("set 1 max_charge_current 35.5")
    c.wait_value(svc, "/Info/MaxChargeCurrent", lambda v: v == pytest.approx(35.5))
    sim.cmd("set 1 errors 1")  # cell over-voltage: an alarm, and no charging
    c.wait_value(svc, "/Alarms/HighCellVoltage", lambda v: v == 2)
    assert c.value(svc, "/Info/MaxChargeCurrent") == 0
    assert c.value(svc, "/Io/AllowToCharge") == 0
    assert c.value(svc, "/Io/AllowToDischarge") == 1
    sim.cmd("set 1 errors 0")
    sim.cmd("set 1 warnings 8")  # pack under-voltage warning
    c.wait_value(svc, "/Alarms/LowVoltage", lambda v: v == 1)
    assert c.value(svc, "/Alarms/HighCellVoltage") == 0
    assert c.value(svc, "/Io/AllowToCharge") == 1
    sim.cmd("set 1 warnings 0")
    sim.cmd("set 1 temperature 51")  # above the high temperature alarm setting (50 °C)
    c.wait_value(svc, "/Alarms/HighTemperature", lambda v: v == 2)
    assert c.value(svc, "/Alarms/HighChargeTemperature") == 1
    assert c.value(svc, "/Info/MaxChargeCurrent") == 0
