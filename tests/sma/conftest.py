"""Fixtures for the Sunny Island bridge's process tests.

``sma`` starts, on a private dbus-daemon with the settings service and the loopback CAN link:
the simulated Sunny Island (``python -m sim.sma``), a simulated battery service that mirrors it
(``python -m sim.sma.battery --follow can1``) and ``dbus-sma`` itself, plus a CAN tap in the
test process that records every frame on ``can1`` with its arrival time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can
import dbus
import pytest

from sim.sma import wire
from tests.fixtures.canlink import CanLink
from tests.fixtures.procs import Proc, python_cmd, stop_all
from tests.fixtures.venus import DbusDaemon, SettingsService, wait_for_name

BATTERY = "com.victronenergy.battery.sim_sma"
VEBUS = "com.victronenergy.vebus.canbridge_sma_can1"
PREFIX = "/Settings/CanBridge/Sma/"


class Tap(can.Listener):
    """Records frames seen on a channel of the loopback link."""

    def __init__(self, channel: str) -> None:
        self.bus = can.Bus(interface="canlink", channel=channel)
        self.frames: list[tuple[float, can.Message]] = []
        self.cond = threading.Condition()
        self.notifier = can.Notifier(self.bus, [self], timeout=0.1)

    def on_message_received(self, msg: can.Message) -> None:
        with self.cond:
            self.frames.append((time.monotonic(), msg))
            self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.frames)

    def wait(self, pred: Callable[[can.Message], bool], timeout: float,
             start: int = 0) -> tuple[float, can.Message]:
        deadline = time.monotonic() + timeout
        with self.cond:
            i = start
            while True:
                while i < len(self.frames):
                    t, m = self.frames[i]
                    i += 1
                    if pred(m):
                        return t, m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching frame within {timeout} s")
                self.cond.wait(left)

    def times(self, fid: int, since: float = 0.0) -> list[float]:
        with self.cond:
            return [t for t, m in self.frames if m.arbitration_id == fid and t >= since]

    def send(self, msg: can.Message) -> None:
        self.bus.send(msg)

    def close(self) -> None:
        self.notifier.stop()
        self.bus.shutdown()


@dataclass
class SmaSystem:
    daemon: DbusDaemon
    settings: SettingsService
    link: CanLink
    procs: list[Proc]
    workdir: Path
    tap: Tap
    bridge: Proc | None = None
    si: Proc | None = None
    battery: Proc | None = None
    control: Path = field(default_factory=Path)
    bus: Any = None

    def env(self) -> dict[str, str]:
        return self.daemon.env(CANBRIDGE_CANLINK=self.link.address, PYTHONUNBUFFERED="1")

    def start_si(self, *args: str) -> Proc:
        self.control = self.workdir / "si_control.json"
        p = Proc(python_cmd("sim.sma", "--channel", "can1", "--control", str(self.control),
                            *args), self.env(), name="sim.sma")
        self.procs.append(p)
        p.wait_for("simulated Sunny Island on", 15)
        self.si = p
        return p

    def start_battery(self, follow: bool = True) -> Proc:
        args = ["--follow", "can1"] if follow else []
        p = Proc(python_cmd("sim.sma.battery", *args), self.env(), name="battery")
        self.procs.append(p)
        wait_for_name(self.daemon.address, BATTERY, 15)
        self.battery = p
        return p

    def start_bridge(self, *args: str, battery: str | None = BATTERY,
                     settings: dict[str, Any] | None = None,
                     env: dict[str, str] | None = None) -> Proc:
        state = self.workdir / "state"
        p = Proc(python_cmd("driver.sma.main", "--state-dir", str(state), *args),
                 {**self.env(), **(env or {})}, name="dbus-sma")
        self.procs.append(p)
        self.bridge = p
        p.wait_for("registered .* settings", 20)
        if battery is not None:
            self.set_setting("BatteryService", battery)
        for k, v in (settings or {}).items():
            self.set_setting(k, v)
        wait_for_name(self.daemon.address, VEBUS, 15)
        return p

    def dbus(self) -> Any:
        if self.bus is None:
            self.bus = dbus.bus.BusConnection(self.daemon.address)
        return self.bus

    def call(self, service: str, path: str, method: str, *args: Any) -> Any:
        obj = self.dbus().get_object(service, path, introspect=False)
        return getattr(obj, method)(*args, dbus_interface="com.victronenergy.BusItem")

    def set_setting(self, key: str, value: Any) -> None:
        assert self.call("com.victronenergy.settings", PREFIX + key, "SetValue", value) == 0

    def get(self, service: str, path: str) -> Any:
        v = self.call(service, path, "GetValue")
        if isinstance(v, dbus.Array) and len(v) == 0:
            return None
        if isinstance(v, dbus.Double):
            return float(v)
        if isinstance(v, (dbus.Int32, dbus.UInt32, dbus.Int16, dbus.UInt16, dbus.Byte,
                          dbus.Int64, dbus.UInt64)):
            return int(v)
        if isinstance(v, dbus.String):
            return str(v)
        return v

    def vebus(self, path: str) -> Any:
        return self.get(VEBUS, path)

    def set_battery(self, path: str, value: Any) -> None:
        assert self.call(BATTERY, path, "SetValue", value) == 0

    def control_si(self, **kw: Any) -> None:
        data = json.loads(self.control.read_text()) if self.control.exists() else {}
        data.update(kw)
        tmp = self.control.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.control)

    def wait_vebus(self, path: str, pred: Callable[[Any], bool], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        v = None
        while time.monotonic() < deadline:
            try:
                v = self.vebus(path)
            except dbus.exceptions.DBusException:
                v = None
            if pred(v):
                return v
            time.sleep(0.1)
        raise AssertionError(f"{path} = {v!r} did not match within {timeout} s")


#: measured detection times of the input faults (rendered into docs/RELIABILITY.md by
#: bench/reliability_report.py)
RESULTS = Path(__file__).resolve().parents[2] / "artifacts" / "faults" / "sma_inputs.json"


def record(key: str, *, fault: str, expected: str, detect: float | None, signal: str,
           note: str = "") -> None:
    """Merge one measured fault into ``artifacts/faults/sma_inputs.json``."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        data = {}
    data[key] = {"fault": fault, "expected": expected,
                 "detect": None if detect is None else round(detect, 2), "signal": signal,
                 "note": note, "at": time.strftime("%Y-%m-%d %H:%M:%S")}
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(RESULTS)


def limits(msg: can.Message) -> dict[str, Any]:
    """0x351 decoded with the tests' own hand-written layout (sim/sma/wire.py)."""
    lim = wire.decode_351(bytes(msg.data))
    return {"ChargeVoltageLimit": lim.cvl, "ChargeCurrentLimit": lim.ccl,
            "DischargeCurrentLimit": lim.dcl, "DischargeVoltageLimit": lim.dvl}


def soc_of(msg: can.Message) -> int:
    """0x355 SoC (hand-written layout)."""
    return wire.decode_355(bytes(msg.data))[0]


def alarms_of(msg: can.Message) -> set[str]:
    return wire.decode_35a(bytes(msg.data))[0]


def warnings_of(msg: can.Message) -> set[str]:
    return wire.decode_35a(bytes(msg.data))[1]


def is_351(m: can.Message) -> bool:
    return m.arbitration_id == 0x351


@pytest.fixture
def sma(dbus_daemon: DbusDaemon, settings_service: SettingsService, canlink: CanLink,
        procs: list[Proc]) -> Iterator[SmaSystem]:
    tap = Tap("can1")
    system = SmaSystem(dbus_daemon, settings_service, canlink, procs, dbus_daemon.workdir, tap)
    try:
        yield system
    finally:
        stop_all(procs)
        procs.clear()
        tap.close()
        if system.bus is not None:
            system.bus.close()
