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


def _get(address: str, path: str, service: str = SETTINGS):
    bus = dbus.bus.BusConnection(address)
    try:
        v = bus.call_blocking(service, path, "com.victronenergy.BusItem", "GetValue", "", [])
        return str(v) if isinstance(v, dbus.String) else (
            float(v) if isinstance(v, dbus.Double) else int(v))
    finally:
        bus.close()


def _wait(cond, timeout: float = 8.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_refused_value_is_written_back_and_published(host, settings_service):
    """Issue 14: the settings service (so every page) shows the value in force, and the
    refusal (setting, rule, value refused, when) is on the driver's service."""
    addr = settings_service.daemon.address
    floatv = "/Settings/CanBridge/Sma/FloatVoltage"
    host.cmd("publish com.victronenergy.canbridge.testhost", "published")
    t0 = time.monotonic()
    assert _set(addr, floatv, dbus.Double(57.5)) == 0  # above absorption 56.8
    _wait(lambda: _get(addr, floatv) == 54.0, what="the value in force written back")
    svc = "com.victronenergy.canbridge.testhost"
    text = _wait(lambda: _get(addr, "/CanBridge/LastRefusal", svc), what="the refusal text")
    assert text == ("Sma/FloatVoltage = 57.5 refused: float voltage must not be above "
                    "absorption voltage; 54.0 stays in force")
    published = json.loads(_get(addr, "/CanBridge/Refusals", svc))
    assert len(published) == 1
    r = published[0]
    assert (r["setting"], r["path"], r["value"], r["in_force"], r["rule"]) == (
        "Sma/FloatVoltage", floatv, 57.5, 54.0,
        "float voltage must not be above absorption voltage")
    assert t0 - 1 <= r["monotonic"] <= time.monotonic() + 1  # one clock for the machine
    assert _get(addr, "/CanBridge/RefusalCount", svc) == 1
    # no feedback loop: our own write-back comes back as a change to the value in force
    time.sleep(1.0)
    state = host.cmd("refusals", "refusals")
    assert state["write_backs"] == 1 and state["count"] == 1
    assert host.cmd(f"get {floatv}", "value")["value"] == 54.0
    assert _get(addr, floatv) == 54.0


def test_a_written_back_refusal_stays_refused_when_the_rule_later_allows_it(
        host, settings_service):
    """One truth: once 54.0 is written back, raising absorption does not bring back the
    refused 57.5 (nobody sees it stored any more); a new valid value clears the refusal."""
    addr = settings_service.daemon.address
    absorption = "/Settings/CanBridge/Sma/AbsorptionVoltage"
    floatv = "/Settings/CanBridge/Sma/FloatVoltage"
    assert _set(addr, floatv, dbus.Double(57.5)) == 0
    _wait(lambda: _get(addr, floatv) == 54.0, what="the write-back")
    assert _set(addr, absorption, dbus.Double(58.0)) == 0
    ev = host.read("changed")
    assert (ev["path"], ev["new"]) == (absorption, 58.0)
    assert host.cmd(f"get {floatv}", "value")["value"] == 54.0
    assert [r["setting"] for r in host.cmd("refusals", "refusals")["refusals"]] == [
        "Sma/FloatVoltage"]
    assert _set(addr, floatv, dbus.Double(57.5)) == 0  # allowed now
    ev = host.read("changed")
    assert (ev["path"], ev["old"], ev["new"]) == (floatv, 54.0, 57.5)
    assert host.cmd("refusals", "refusals")["refusals"] == []
    assert host.cmd("rejected", "rejected")["rejected"] == {}


def test_value_refused_at_start_falls_back_to_the_last_good_value(settings_service, tmp_path):
    """Issue 14: a value refused at start uses the value in force before (kept in the state
    file), not the schema default; and that value is written back."""
    addr = settings_service.daemon.address
    floatv = "/Settings/CanBridge/Sma/FloatVoltage"
    extra = {"CANBRIDGE_STATE_DIR": str(tmp_path)}
    if os.environ.get("VELIB_PYTHON"):
        extra["VELIB_PYTHON"] = os.environ["VELIB_PYTHON"]
    env = child_env(settings_service.daemon.env(), **extra)
    h = Host(env)
    try:
        h.read("ready", 20)
        assert _set(addr, floatv, dbus.Double(53.2)) == 0  # valid: in force, remembered
        ev = h.read("changed")
        assert (ev["path"], ev["new"]) == (floatv, 53.2)
    finally:
        h.close()
    saved = json.loads((tmp_path / "lastgood-Sma-Superb.json").read_text())
    assert saved[floatv] == 53.2
    assert _set(addr, floatv, dbus.Double(57.9)) == 0  # written while the driver is away
    h = Host(env)
    try:
        h.read("ready", 20)
        assert h.cmd(f"get {floatv}", "value")["value"] == 53.2  # not the default 54.0
        _wait(lambda: _get(addr, floatv) == 53.2, what="the last good value written back")
        rej = h.cmd("refusals", "refusals")["refusals"]
        assert [(r["value"], r["in_force"]) for r in rej] == [(57.9, 53.2)]
    finally:
        h.close()


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
