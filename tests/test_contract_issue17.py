"""Issue 17: each problem a Venus consumer saw, reproduced against the running services.

Expected values are written by hand from the consumers' sources (gui-v2, dbus_modbustcp,
systemcalc; pinned in docs/contract/pinned.json) and the recordings of real devices.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.sma.conftest import VEBUS, SmaSystem, sma  # noqa: F401 - fixture
from tests.superb.conftest import (  # noqa: F401 - fixtures
    AGGREGATE,
    SETTINGS,
    System,
    battery_service,
    superb,
    superb_settings,
)

BUSITEM = "com.victronenergy.BusItem"


def aggregate_up(superb: System, *sim_args: str) -> Any:  # noqa: F811
    sim = superb.start_sim("--nodes", "1,2,3", *sim_args)
    return sim


def wait_aggregate(superb: System) -> dict[str, Any]:  # noqa: F811
    c = superb.client
    assert c.setting("Mode", 1) == 0
    c.wait("aggregate online",
           lambda: c.has(AGGREGATE) and c.value(AGGREGATE, "/System/NrOfModulesOnline") == 3, 20)
    return dict(c.items(AGGREGATE))


# -- battery ---------------------------------------------------------------------------------

def test_aggregate_publishes_history_of_its_members(superb: System) -> None:  # noqa: F811
    """gui-v2 shows the History menu when any /History path is valid; Modbus 284 reads
    ChargeCycles. The bank's cycles are its most-cycled battery's; Ah returned add up."""
    sim = aggregate_up(superb)
    for node, cycles, ah in ((1, 17, 30.0), (2, 25, 12.5), (3, 4, 2.0)):
        sim.cmd(f"set {node} cycles {cycles}")
        sim.cmd(f"set {node} ah_returned {ah}")
    superb.start_driver()
    wait_aggregate(superb)
    c = superb.client
    c.wait_value(AGGREGATE, "/History/ChargeCycles", lambda v: v == 25, 15)
    c.wait_value(AGGREGATE, "/History/AhReturnedLastCharge",
                 lambda v: v == pytest.approx(44.5, abs=0.2), 15)
    for node, cycles in ((1, 17), (2, 25), (3, 4)):
        assert c.value(battery_service(node), "/History/ChargeCycles") == cycles
    # AhSinceEqualization does not combine: not on the aggregate at all
    assert "/History/AhSinceEqualization" not in c.items(AGGREGATE)
    # an offline battery counts with what it last reported: history does not run back
    sim.cmd("vanish 2")
    # (the aggregate is recomputed right after the member's own update, on the same loop)
    c.wait_value(battery_service(2), "/Connected", lambda v: v == 0, 10)
    c.wait_value(AGGREGATE, "/System/NrOfModulesOffline", lambda v: v == 1, 10)
    agg = c.items(AGGREGATE)
    assert agg["/History/ChargeCycles"] == 25
    assert agg["/History/AhReturnedLastCharge"] == pytest.approx(44.5, abs=0.2)
    assert agg["/System/NrOfCellsPerBattery"] == 4


def test_every_battery_publishes_state(superb: System) -> None:  # noqa: F811
    """systemcalc's battery data and Modbus 1282: 9 = running, 10 = error (attributes.csv)."""
    sim = aggregate_up(superb)
    superb.start_driver()
    wait_aggregate(superb)
    c = superb.client
    for node in (1, 2, 3):
        c.wait_value(battery_service(node), "/State", lambda v: v == 9, 10)
    assert c.value(AGGREGATE, "/State") == 9
    sim.cmd("vanish 2")
    c.wait_value(battery_service(2), "/State", lambda v: v == 10, 10)
    assert c.value(AGGREGATE, "/State") == 9  # the others carry on
    for node in (1, 3):
        sim.cmd(f"vanish {node}")
    c.wait_value(AGGREGATE, "/State", lambda v: v == 10, 10)


def test_aggregate_system_rows_and_short_cell_ids(superb: System) -> None:  # noqa: F811
    """gui-v2's System page rows; a cell id in Modbus is string[4]: at most 8 characters."""
    sim = aggregate_up(superb)
    sim.cmd("set 3 voltage 12.8")  # the lowest cell is node 3's
    superb.start_driver()
    wait_aggregate(superb)
    c = superb.client
    c.wait_value(AGGREGATE, "/System/NrOfCellsPerBattery", lambda v: v is not None, 15)
    c.wait_value(AGGREGATE, "/System/MinVoltageCellId", lambda v: v == "B3", 15)
    agg = c.items(AGGREGATE)
    assert agg["/System/BatteriesParallel"] == 3
    assert agg["/System/BatteriesSeries"] == 1
    assert agg["/System/NrOfCellsPerBattery"] == 4  # 12.8 V LiFePO4: 4 cells
    for path in ("/System/MinVoltageCellId", "/System/MaxVoltageCellId",
                 "/System/MinTemperatureCellId", "/System/MaxTemperatureCellId"):
        short = agg[path]
        assert short in ("B1", "B2", "B3"), (path, short)
        long_ = agg["/CanBridge/" + path.rsplit("/", 1)[1]]
        assert long_ == f"node {short[1]} ({2300000 + int(short[1])})"
    assert agg["/System/MinVoltageCellId"] == "B3"


def test_capacity_is_the_full_capacity_as_a_lynx_publishes_it(superb: System) -> None:  # noqa: F811
    """Lynx Smart BMS recording: /Capacity 50Ah = its configured 50 Ah at 98.8 % SoC;
    systemcalc falls back on /Capacity for the system's capacity."""
    sim = aggregate_up(superb)
    for node in (1, 2, 3):
        sim.cmd(f"set {node} soc 40")
    superb.start_driver()
    wait_aggregate(superb)
    c = superb.client
    c.wait_value(battery_service(1), "/Soc", lambda v: v == 40, 10)
    assert c.value(battery_service(1), "/Capacity") == 100  # the sim's 100 Ah battery
    assert c.value(battery_service(1), "/CanBridge/RemainingCapacity") == pytest.approx(40.0)
    c.wait_value(AGGREGATE, "/Capacity", lambda v: v == 300, 10)
    text = c.bus.get_object(battery_service(1), "/Capacity", introspect=False).GetText(
        dbus_interface=BUSITEM)
    assert text == "100Ah"


def test_device_instances_reachable_over_modbus_and_user_changeable(
        superb: System) -> None:  # noqa: F811
    """dbus_modbustcp takes a unit ID (one byte) as the device instance, or maps it through
    unitid2di.csv (225 -> 512, nothing for 513-515). The user's own instance is kept."""
    aggregate_up(superb)
    # the user picked instance 77 for battery 2 (Device -> VRM instance) before this start
    obj = superb.client.bus.get_object(SETTINGS, "/Settings", introspect=False)
    assert int(obj.AddSetting("Devices/superb_2300002", "ClassAndVrmInstance", "battery:77",
                              "s", 0, 0, dbus_interface="com.victronenergy.Settings")) == 0
    superb.start_driver()
    wait_aggregate(superb)
    c = superb.client
    instances = {s: c.value(s, "/DeviceInstance")
                 for s in (AGGREGATE, *(battery_service(n) for n in (1, 2, 3)))}
    assert instances[battery_service(2)] == 77
    assert all(0 <= i <= 255 for i in instances.values()), instances
    assert len(set(instances.values())) == 4


# -- vebus -----------------------------------------------------------------------------------

def vebus_up(sma: SmaSystem) -> None:  # noqa: F811
    sma.start_si()
    sma.start_battery()
    sma.start_bridge()
    sma.wait_vebus("/CanBridge/Ladder", lambda v: v == "normal", 10)


def text(sma: SmaSystem, path: str) -> str:  # noqa: F811
    return str(sma.call(VEBUS, path, "GetText"))


def value_and_text(sma: SmaSystem, path: str) -> tuple[Any, str]:  # noqa: F811
    """A value and its text, read while the value did not change in between (the simulated
    Sunny Island's AC-in power moves when the bridge starts charging)."""
    deadline = time.monotonic() + 5
    while True:
        before, got, after = sma.vebus(path), text(sma, path), sma.vebus(path)
        if before == after or time.monotonic() > deadline:
            return before, got
        time.sleep(0.05)


def test_sunny_island_current_limits_are_shown_fixed(sma: SmaSystem) -> None:  # noqa: F811
    """gui-v2 lists /Ac/NumberOfAcInputs buttons from /Ac/In/<n>/CurrentLimit; a button is
    clickable unless CurrentLimitIsAdjustable is 0. The limits are the user's copy of the
    Sunny Island's (settings, default 50 A; tests/sma/test_vebus_limits.py); the bridge cannot
    set the Sunny Island's limits: not adjustable, and a write (Modbus 22, a dialog) is
    refused."""
    vebus_up(sma)
    assert sma.vebus("/Ac/NumberOfAcInputs") == 2
    for n in (1, 2):
        assert sma.vebus(f"/Ac/In/{n}/CurrentLimitIsAdjustable") == 0
        assert sma.vebus(f"/Ac/In/{n}/CurrentLimit") == 50.0
        assert sma.call(VEBUS, f"/Ac/In/{n}/CurrentLimit", "SetValue", 16.0) != 0
        assert sma.vebus(f"/Ac/In/{n}/CurrentLimit") == 50.0
    assert sma.vebus("/Ac/ActiveIn/CurrentLimitIsAdjustable") == 0
    assert sma.call(VEBUS, "/Ac/ActiveIn/CurrentLimit", "SetValue", 16.0) != 0
    assert sma.vebus("/Ac/ActiveIn/CurrentLimit") == 50.0
    assert sma.vebus("/State") is not None and "Traceback" not in sma.bridge.output


def test_vebus_bms_flags_follow_the_bridge(sma: SmaSystem) -> None:  # noqa: F811
    """Modbus 57/58 and systemcalc's system state read /Bms/AllowTo*: 1 while the bridge lets
    the Sunny Island charge/discharge, 0 when its own limit for that direction is 0."""
    vebus_up(sma)
    sma.wait_vebus("/Bms/AllowToCharge", lambda v: v == 1, 10)
    assert sma.vebus("/Bms/AllowToDischarge") == 1
    sma.set_battery("/Io/AllowToCharge", 0)  # the battery forbids charging
    sma.wait_vebus("/Bms/AllowToCharge", lambda v: v == 0, 10)
    assert sma.vebus("/CanBridge/Ccl") == 0
    assert sma.vebus("/Bms/AllowToDischarge") == 1


def test_vebus_alarm_rows_have_defined_values(sma: SmaSystem) -> None:  # noqa: F811
    """gui-v2's VE.Bus alarm page (VeBusDeviceAlarmStatusModel): LowBattery, HighTemperature,
    Overload, Ripple for the device and per phase; VoltageSensor, TemperatureSensor,
    PhaseRotation. An invalid row shows "--"; each must be 0/1/2 with text like mk2-dbus."""
    vebus_up(sma)
    rows = []
    for alarm in ("LowBattery", "HighTemperature", "Overload", "Ripple"):
        rows += [f"/Alarms/{alarm}"] + [f"/Alarms/L{n}/{alarm}" for n in (1, 2, 3)]
    rows += ["/Alarms/VoltageSensor", "/Alarms/TemperatureSensor", "/Alarms/PhaseRotation"]
    for path in rows:
        assert sma.vebus(path) == 0, path
        assert text(sma, path) == "ok", path


def test_vebus_custom_name_writable_and_persisted(sma: SmaSystem) -> None:  # noqa: F811
    """Device info -> Name writes /CustomName; Venus keeps it in
    /Settings/Devices/<uid>/CustomName, so it survives a restart."""
    vebus_up(sma)
    assert sma.call(VEBUS, "/CustomName", "SetValue", "Island") == 0
    sma.wait_vebus("/CustomName", lambda v: v == "Island", 5)
    setting = "/Settings/Devices/canbridge_sma_can1/CustomName"
    deadline = time.monotonic() + 5
    while sma.get(SETTINGS, setting) != "Island":
        assert time.monotonic() < deadline, sma.get(SETTINGS, setting)
        time.sleep(0.1)
    assert sma.call(VEBUS, "/CustomName", "SetValue", "x" * 65) != 0  # too long: refused
    sma.bridge.stop()
    sma.start_bridge()
    sma.wait_vebus("/CustomName", lambda v: v == "Island", 10)


def test_vebus_texts_carry_units_like_a_multiplus(sma: SmaSystem) -> None:  # noqa: F811
    """mk2-dbus on a MultiPlus-II (recording): "50.1Hz", "218V", "1.6A", "312W", "13.52V",
    "93.5%", "1.97kWh", "absorption", "on", "yes"."""
    vebus_up(sma)
    # the simulated Sunny Island: 230.0 V, 50.00 Hz, 800 W through, 52.4 V battery, 60 % SoC
    assert text(sma, "/Ac/Out/L1/V") == "230V"
    assert text(sma, "/Ac/Out/L1/F") == "50.0Hz"
    assert text(sma, "/Ac/ActiveIn/L1/F") == "50.0Hz"
    assert text(sma, "/Ac/Out/P") == "800W"
    # AC-in power and current: 800 W / 3.5 A passing through, more once the bridge lets the
    # Sunny Island charge; whatever the value, the text is it with its unit
    p, p_text = value_and_text(sma, "/Ac/ActiveIn/L1/P")
    assert p >= 800 and p_text == f"{p:.0f}W"
    i, i_text = value_and_text(sma, "/Ac/ActiveIn/L1/I")
    assert i >= 3.4 and i_text == f"{i:.1f}A"
    assert text(sma, "/Dc/0/Voltage") == "52.40V"
    assert text(sma, "/Soc") == "60.0%"
    assert text(sma, "/Mode") == "on"
    assert text(sma, "/Ac/ActiveIn/Connected") == "yes"
    assert text(sma, "/State") in ("passthru", "bulk", "absorption", "float")
    assert text(sma, "/Energy/InverterToAcOut").endswith("kWh")
