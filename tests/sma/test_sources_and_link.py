"""``dbus-sma`` with the system battery as source, three phases, a CAN interface that goes."""

from __future__ import annotations

import json
import time

import dbus
import pytest

from tests.fixtures.procs import Proc, python_cmd
from tests.fixtures.venus import wait_for_name
from tests.sma.conftest import BATTERY, VEBUS, SmaSystem, is_351, limits, record, soc_of
from tests.sma.test_process import FAST_LADDER

SYSTEM = "com.victronenergy.system"


def _is(fid: int):
    return lambda m: m.arbitration_id == fid


def start_systemcalc(sma: SmaSystem, active: str = "com.victronenergy.battery/512") -> Proc:
    p = Proc(python_cmd("sim.sma.battery", "--system", "--active", active, "--follow", "can1"),
             sma.env(), name="systemcalc")
    sma.procs.append(p)
    wait_for_name(sma.daemon.address, SYSTEM, 15)
    return p


def test_default_source_is_systemcalcs_active_battery_never_a_vebus(sma: SmaSystem) -> None:
    """Issue 13: with Sma/BatteryService empty the source is systemcalc's
    /ActiveBatteryService; when that is a vebus service (systemcalc's fallback without a
    battery monitor: this bridge's own) it is refused and "no BMS data" goes through the
    ladder. The old code read systemcalc's /Dc/Battery (the Sunny Island's own values) and
    stayed normal with full charge current."""
    sma.start_si()
    sma.start_battery()
    start_systemcalc(sma)
    sma.start_bridge(battery=None, settings=FAST_LADDER)
    sma.wait_vebus("/CanBridge/Ladder", lambda v: v == "normal", 15)
    # systemcalc falls back to the vebus service (ours, at its own device instance) as the
    # battery
    own = sma.vebus("/DeviceInstance")
    assert isinstance(own, int)
    t0 = time.monotonic()
    assert sma.call(SYSTEM, "/ActiveBatteryService", "SetValue",
                    f"com.victronenergy.vebus/{own}") == 0
    # no BMS data: the ladder escalates (scaled 2/5/10 s) to charge current 0 and a stop
    sma.wait_vebus("/CanBridge/Ladder", lambda v: v is not None and v.startswith("alarm"), 12)
    t_alarm = time.monotonic() - t0
    _, m = sma.tap.wait(is_351, 3, sma.tap.mark())
    assert limits(m)["ChargeCurrentLimit"] == 0
    reason = sma.vebus("/CanBridge/BatterySourceReason")
    assert "refused" in reason and "this bridge's own vebus service" in reason
    assert sma.vebus("/CanBridge/BatterySource") == ""
    sma.tap.wait(lambda m: m.arbitration_id == 0x35C and m.data[0] == 2, 15, sma.tap.mark())
    record("own_vebus_source", fault="systemcalc's /ActiveBatteryService becomes this "
           "bridge's own vebus (no battery monitor)", expected="refused, reason published; "
           "no BMS data goes through the ladder (scaled 2/5/10 s): CCL 0, stop",
           detect=t_alarm, signal="ladder alarm, CCL 0 (StaleAlarmTime 5 s)")
    # a vebus service named in the setting is refused too
    sma.set_setting("BatteryService", VEBUS)
    sma.wait_vebus("/CanBridge/BatterySourceReason",
                   lambda v: v is not None and "refused" in v and "vebus" in v, 5)
    # back to the battery: normal again, started
    sma.set_setting("BatteryService", "")
    assert sma.call(SYSTEM, "/ActiveBatteryService", "SetValue",
                    "com.victronenergy.battery/512") == 0
    sma.wait_vebus("/CanBridge/Ladder", lambda v: v == "normal", 10)
    sma.si.wait_for("started by 0x35C", 15)
    assert sma.vebus("/CanBridge/BatterySource") == BATTERY
    assert "ActiveBatteryService" in sma.vebus("/CanBridge/BatterySourceReason")
    assert BATTERY in json.loads(sma.vebus("/CanBridge/BatteryServices"))
    assert "Traceback" not in sma.bridge.output


def test_soc_source_separate_from_the_bms(sma: SmaSystem) -> None:
    """A SmartShunt-like monitor gives the SoC; limits still come from the BMS."""
    sma.start_si()
    sma.start_battery()
    shunt = "com.victronenergy.battery.shunt"
    p = Proc(python_cmd("sim.sma.battery", "--name", shunt, "--instance", "513"), sma.env(),
             name="shunt")
    sma.procs.append(p)
    wait_for_name(sma.daemon.address, shunt, 15)
    assert sma.call(shunt, "/Soc", "SetValue", 77.0) == 0
    sma.start_bridge(settings={"SocService": shunt, "SocRateLimit": 10.0})
    sma.wait_vebus("/CanBridge/SocSource", lambda v: v == shunt, 10)
    sma.tap.wait(lambda m: m.arbitration_id == 0x355 and soc_of(m) == 77, 10, sma.tap.mark())
    # the BMS's charge limit still applies
    sma.set_battery("/Info/MaxChargeCurrent", 7.0)
    sma.tap.wait(lambda m: is_351(m) and 0 < limits(m)["ChargeCurrentLimit"] <= 7.0, 10,
                 sma.tap.mark())
    # the shunt's SoC becomes invalid: the BMS's SoC is used, and why is published
    assert sma.call(shunt, "/Soc", "SetValue", dbus.Array([], signature="i")) == 0
    sma.wait_vebus("/CanBridge/SocSourceReason", lambda v: v is not None and "no valid" in v,
                   10)
    assert sma.vebus("/CanBridge/SocSource") == BATTERY


def test_three_phase_cluster_values(sma: SmaSystem) -> None:
    sma.start_si("--phases", "3", "--load", "2400")
    sma.start_battery()
    sma.start_bridge(settings={"Phases": 3})
    sma.wait_vebus("/Ac/Out/L3/P", lambda v: v is not None, 15)
    assert sma.vebus("/Ac/NumberOfPhases") == 3
    per_phase = [sma.vebus(f"/Ac/Out/L{n}/P") for n in (1, 2, 3)]
    assert all(v is not None and v > 0 for v in per_phase)
    assert sum(per_phase) == pytest.approx(sma.vebus("/Ac/Out/P"), abs=1)
    assert all(sma.vebus(f"/Ac/Out/L{n}/V") is not None for n in (1, 2, 3))


def test_can_interface_disappears_and_returns(sma: SmaSystem) -> None:
    sma.start_si()
    sma.start_battery()
    sma.start_bridge()
    sma.tap.wait(is_351, 5, sma.tap.mark())
    pid = sma.bridge.proc.pid
    mark_log = sma.bridge.mark()
    assert sma.link.control("can1", f"unplug:{pid}") == "OK"
    sma.bridge.wait_for(r"cannot open CAN link .*retrying in", 10, mark_log)
    time.sleep(2.0)
    assert sma.link.control("can1", f"plug:{pid}") == "OK"
    t0 = time.monotonic()
    t, _ = sma.tap.wait(is_351, 10, sma.tap.mark())
    assert t - t0 < 6.0  # back-off is at most 5 s
    sma.bridge.wait_for("sending to the Sunny Island again", 10, mark_log)
    assert sma.bridge.proc.poll() is None
    assert "Traceback" not in sma.bridge.output


def test_bridge_exits_for_its_supervisor_when_it_cannot_send(sma: SmaSystem) -> None:
    sma.start_si()
    sma.start_battery()
    sma.start_bridge(settings={"MaxSendFailureTime": 5.0})
    sma.tap.wait(is_351, 5, sma.tap.mark())
    t0 = time.monotonic()
    assert sma.link.control("can1", f"unplug:{sma.bridge.proc.pid}") == "OK"
    sma.bridge.proc.wait(20)
    elapsed = time.monotonic() - t0
    assert sma.bridge.proc.returncode not in (0, None)
    assert 4.0 <= elapsed < 12.0, elapsed
    assert "cannot send to the Sunny Island for" in sma.bridge.output
