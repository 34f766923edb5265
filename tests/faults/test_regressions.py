"""Regressions the fault matrix exposed, each pinned by a small test, plus the clock audit.

* A battery reading without voltage (the aggregate of batteries that all went offline, or
  one battery's values missing while it is slow) was dropped whole, so its charge limit of 0 A
  was ignored until the ladder's stale step: the bridge kept sending the last good CCL.
* A stored pair of settings bound by a cross-field rule (48 V alarms: low 46.5 V, high
  58.4 V) was refused at start-up because the low one was checked against the *default* of
  the high one (14.8 V), read later: the low-voltage alarm stayed at 11.8 V.
* (D-Bus daemon restart: libdbus ended the processes on the spot, energy counters not
  persisted, BMS gap > 2 s: pinned by ``test_matrix.py::test_dbus_daemon_restarted``.)
* Clock jumps: timing in ``driver/`` must use ``time.monotonic()`` only; the AST audit below
  fails on any wall-clock read there, and the controller test jumps an injected clock.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import dbus

from driver.sma.controller import Battery, Config, Controller, Inputs, Level
from driver.sma.energy import EnergyCounters
from tests.fixtures.procs import child_env
from tests.fixtures.venus import SettingsService
from tests.venus.test_live_settings import Host

ROOT = Path(__file__).resolve().parents[2]
CFG = Config(slew_rate=1000.0, max_charge_current=60.0)


class Clock:
    def __init__(self) -> None:
        self.t = 5000.0

    def __call__(self) -> float:
        return self.t


def reading(clock: Clock, **kw: object) -> Battery:
    base: dict[str, object] = dict(at=clock.t, voltage=52.0, current=2.0, temperature=20.0,
                                   soc=60.0, max_charge_current=50.0,
                                   max_discharge_current=100.0)
    base.update(kw)
    return Battery(**base)  # type: ignore[arg-type]


def test_incomplete_reading_still_restricts_charging_at_once() -> None:
    clock = Clock()
    ctl = Controller(clock)
    for _ in range(3):
        clock.t += 1
        out = ctl.step(Inputs(CFG, battery=reading(clock)))
    assert out.level == Level.NORMAL and out.values.ccl == 50.0
    # all batteries offline: the aggregate publishes CCL 0, DCL 0 and no voltage
    clock.t += 1
    offline = reading(clock, voltage=None, current=None, max_charge_current=0.0,
                      max_discharge_current=0.0, allow_to_charge=False)
    out = ctl.step(Inputs(CFG, battery=offline))
    assert out.level == Level.NORMAL  # the data are not stale yet ...
    assert out.values.ccl == 0.0      # ... but the battery's restriction applies at once
    assert out.values.dcl == 100.0    # discharge: left to the ladder
    # a lower limit without the allow flag, and a charge-blocking alarm, count as well
    clock.t += 1
    out = ctl.step(Inputs(CFG, battery=reading(clock, voltage=None, max_charge_current=7.0)))
    assert out.values.ccl == 7.0
    clock.t += 1
    out = ctl.step(Inputs(CFG, battery=reading(clock, soc=None,
                                                alarms={"HighChargeTemperature": 2})))
    assert out.values.ccl == 0.0
    # a reading that says nothing restrictive does not raise the limit either
    clock.t += 1
    out = ctl.step(Inputs(CFG, battery=reading(clock, voltage=None, max_charge_current=None)))
    assert out.values.ccl == 50.0
    # good data again: the normal limit
    clock.t += 1
    out = ctl.step(Inputs(CFG, battery=reading(clock)))
    assert out.level == Level.NORMAL and out.values.ccl == 50.0


def test_stored_cross_field_pair_accepted_at_start(settings_service: SettingsService) -> None:
    """Both alarms of a 48 V system stored before the driver starts: neither is refused."""
    from driver.schema import load_schema

    schema = load_schema()
    values = {"Superb/Alarms/HighVoltage": 58.4, "Superb/Alarms/LowVoltage": 46.5}
    bus = dbus.bus.BusConnection(settings_service.daemon.address)
    try:
        entries = [{"path": schema.by_key[k].path, "default": schema.by_key[k].dbus_default(),
                    "min": schema.by_key[k].dbus_min(), "max": schema.by_key[k].dbus_max()}
                   for k in values]
        bus.call_blocking("com.victronenergy.settings", "/", "com.victronenergy.Settings",
                          "AddSettings", "aa{sv}", [entries])
        for k, v in values.items():
            assert bus.call_blocking("com.victronenergy.settings", schema.by_key[k].path,
                                     "com.victronenergy.BusItem", "SetValue", "v",
                                     [dbus.Double(v)]) == 0
    finally:
        bus.close()
    extra = {"VELIB_PYTHON": os.environ["VELIB_PYTHON"]} if os.environ.get("VELIB_PYTHON") \
        else {}
    host = Host(child_env(settings_service.daemon.env(), **extra))
    try:
        host.read("ready", 20)
        assert host.cmd("get /Settings/CanBridge/Superb/Alarms/LowVoltage", "value")[
            "value"] == 46.5
        assert host.cmd("get /Settings/CanBridge/Superb/Alarms/HighVoltage", "value")[
            "value"] == 58.4
        assert host.cmd("rejected", "rejected")["rejected"] == {}
    finally:
        host.close()


WALL_CLOCK_CALLS = {("time", "time"), ("time", "time_ns"), ("time", "localtime"),
                    ("time", "gmtime"), ("time", "ctime"), ("datetime", "now"),
                    ("datetime", "utcnow"), ("datetime", "today"), ("date", "today")}


#: driver/ modules that read the calendar on purpose, never for timing
WALL_CLOCK_ALLOWED = {
    # the diagnostic bundle (a command, not a driver): archive member times and the time of
    # the D-Bus snapshot, matched against the capture's calendar timestamps (candump format)
    "driver/diag.py",
}


def test_driver_timing_uses_the_monotonic_clock_only() -> None:
    """No wall-clock read anywhere in driver/ (log timestamps come from logging itself), but
    for the modules listed in ``WALL_CLOCK_ALLOWED``."""
    found = []
    for path in sorted((ROOT / "driver").rglob("*.py")):
        if str(path.relative_to(ROOT)) in WALL_CLOCK_ALLOWED:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and (node.func.value.id, node.func.attr) in WALL_CLOCK_CALLS):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.ImportFrom) and node.module == "time" and any(
                    a.name in ("time", "time_ns") for a in node.names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} (from time import)")
    assert not found, f"wall-clock reads in driver/: {found}"


def test_controller_and_energy_ignore_jumps_of_their_clock() -> None:
    """Jumps of an injected clock: no energy is made up from a negative or hours-long
    interval, and the controller neither crashes nor escalates on a backward jump. (After a
    backward jump the data would look fresh for the jump's length: that is why the real clock
    must be the monotonic one, which the audit above enforces.)"""
    counters = EnergyCounters()
    counters.add([(1000.0, 0.0)], 1, -3 * 3600.0)
    counters.add([(1000.0, 0.0)], 1, 3 * 3600.0)
    assert sum(counters.kwh.values()) == 0.0
    clock = Clock()
    ctl = Controller(clock)
    for _ in range(3):
        clock.t += 1
        out = ctl.step(Inputs(CFG, battery=reading(clock)))
    ccl = out.values.ccl
    clock.t -= 3 * 3600.0  # backwards: data "from the future" must not count as stale
    out = ctl.step(Inputs(CFG, battery=reading(clock)))
    assert out.level == Level.NORMAL and out.values.ccl <= ccl
