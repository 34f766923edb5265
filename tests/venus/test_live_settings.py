"""LiveSettings in a child process: device instances, cross-field rules, own writes."""

from __future__ import annotations

import json
import os
import subprocess
import time

import dbus
import pytest

from tests.fixtures.procs import child_env, python_cmd

SETTINGS = "com.victronenergy.settings"


class Host:
    def __init__(self, env: dict[str, str]) -> None:
        self.p = subprocess.Popen(python_cmd("tests.venus.live_settings_host"), env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  bufsize=1)
        self.events: list[dict] = []

    def read(self, key: str, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, e in enumerate(self.events):
                if key in e or e.get("event") == key:
                    return self.events.pop(i)
            line = self.p.stdout.readline()
            if not line:
                break
            self.events.append(json.loads(line))
        raise AssertionError(f"no {key!r} from the host; got {self.events}")

    def cmd(self, text: str, key: str) -> dict:
        self.p.stdin.write(text + "\n")
        self.p.stdin.flush()
        return self.read(key)

    def close(self) -> None:
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.flush()
            self.p.wait(10)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.p.kill()


@pytest.fixture
def host(settings_service):
    extra = {}
    if os.environ.get("VELIB_PYTHON"):
        extra["VELIB_PYTHON"] = os.environ["VELIB_PYTHON"]
    h = Host(child_env(settings_service.daemon.env(), **extra))
    h.read("ready", 20)
    yield h
    h.close()


def _set(address: str, path: str, value) -> int:
    bus = dbus.bus.BusConnection(address)
    try:
        return int(bus.call_blocking(SETTINGS, path, "com.victronenergy.BusItem", "SetValue",
                                     "v", [value]))
    finally:
        bus.close()


def test_device_instances_are_allocated_without_clashes(host):
    a = host.cmd("instance superb_1001 battery 512", "instance")["instance"]
    b = host.cmd("instance superb_1002 battery 512", "instance")["instance"]
    again = host.cmd("instance superb_1001 battery 512", "instance")["instance"]
    assert a == 512 and b != a and b > 512 and again == a


def test_cross_field_rule_refuses_and_keeps_last_good(host, settings_service):
    addr = settings_service.daemon.address
    path = "/Settings/CanBridge/Sma/FloatVoltage"
    assert _set(addr, path, dbus.Double(57.0)) == 0  # in range for the settings service ...
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rej = host.cmd("rejected", "rejected")["rejected"]
        if path in rej:
            break
    assert rej[path] == "float voltage must not be above absorption voltage"
    assert host.cmd(f"get {path}", "value")["value"] == 54.0  # ... but the driver keeps 54.0
    assert _set(addr, path, dbus.Double(53.5)) == 0
    ev = host.read("changed")
    assert ev["path"] == path and ev["old"] == 54.0 and ev["new"] == 53.5


def test_own_write_comes_back_as_a_change(host):
    path = "/Settings/CanBridge/Superb/PollInterval"
    assert host.cmd(f"set {path} 2.0", "result")["result"] == 0
    ev = host.read("changed")
    assert ev == {"event": "changed", "path": path, "old": 1.0, "new": 2.0}


def test_refused_value_applies_once_the_other_side_of_the_rule_moves(host, settings_service):
    addr = settings_service.daemon.address
    absorption = "/Settings/CanBridge/Sma/AbsorptionVoltage"
    floatv = "/Settings/CanBridge/Sma/FloatVoltage"
    assert _set(addr, floatv, dbus.Double(57.5)) == 0  # above absorption 56.8: refused
    deadline = time.monotonic() + 5
    while floatv not in host.cmd("rejected", "rejected")["rejected"]:
        assert time.monotonic() < deadline
    assert _set(addr, absorption, dbus.Double(58.0)) == 0
    first = host.read("changed")
    second = host.read("changed")
    assert (first["path"], first["new"]) == (absorption, 58.0)
    assert (second["path"], second["old"], second["new"]) == (floatv, 54.0, 57.5)
    assert host.cmd("rejected", "rejected")["rejected"] == {}


def test_stored_values_are_checked_against_each_other_not_defaults(settings_service):
    """48 V alarms stored (46.5 / 58.4 V) must not be refused against the 12 V defaults."""
    from driver.schema import load_schema

    schema = load_schema()
    addr = settings_service.daemon.address
    low = schema.by_key["Superb/Alarms/LowVoltage"]
    high = schema.by_key["Superb/Alarms/HighVoltage"]
    bus = dbus.bus.BusConnection(addr)
    try:
        bus.call_blocking(SETTINGS, "/", "com.victronenergy.Settings", "AddSettings", "aa{sv}",
                          [[{"path": s.path, "default": s.dbus_default(), "min": s.dbus_min(),
                             "max": s.dbus_max()} for s in (low, high)]])
    finally:
        bus.close()
    assert _set(addr, high.path, dbus.Double(58.4)) == 0
    assert _set(addr, low.path, dbus.Double(46.5)) == 0
    extra = {}
    if os.environ.get("VELIB_PYTHON"):
        extra["VELIB_PYTHON"] = os.environ["VELIB_PYTHON"]
    h = Host(child_env(settings_service.daemon.env(), **extra))
    try:
        h.read("ready", 20)
        assert h.cmd("rejected", "rejected")["rejected"] == {}
        assert h.cmd(f"get {low.path}", "value")["value"] == 46.5
        assert h.cmd(f"get {high.path}", "value")["value"] == 58.4
    finally:
        h.close()
