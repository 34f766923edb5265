"""dbus-sma's edge: battery values parsed into valid-or-None, the source rules, and the
sender's safe set (unit level; the process tests are in test_hostile.py / test_field.py)."""

from __future__ import annotations

import math
import threading
from typing import Any

import can
import pytest

from driver.sma.controller import Config, Controller, Inputs
from driver.sma.main import parse_battery, refuse_source, source_class
from driver.sma.sender import BmsSender
from sim.sma import wire

GOOD = {"Dc/0/Voltage": 52.0, "Dc/0/Current": 10.0, "Dc/0/Temperature": 20.0, "Soc": 60.0,
        "Soh": 99.0, "InstalledCapacity": 200.0, "Info/MaxChargeCurrent": 100.0,
        "Io/AllowToCharge": 1, "Alarms/HighChargeCurrent": 0}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "20", None, [], True])
@pytest.mark.parametrize("key", ["Dc/0/Temperature", "Soh", "InstalledCapacity", "Soc",
                                 "Dc/0/Voltage"])
def test_non_numbers_are_invalid(key: str, bad: Any) -> None:
    b = parse_battery({**GOOD, key: bad}, 1.0)
    assert b is not None
    field = {"Dc/0/Temperature": "temperature", "Soh": "soh", "InstalledCapacity": "capacity",
             "Soc": "soc", "Dc/0/Voltage": "voltage"}[key]
    assert getattr(b, field) is None
    assert not b.invalid  # none of these blocks charging by itself


@pytest.mark.parametrize("key,bad", [("Info/MaxChargeCurrent", math.nan),
                                     ("Info/MaxChargeCurrent", "100"),
                                     ("Info/MaxChargeCurrent", -5.0),
                                     ("Io/AllowToCharge", []), ("Io/AllowToCharge", 2),
                                     ("Alarms/HighChargeCurrent", None),
                                     ("Alarms/HighChargeCurrent", 7)])
def test_invalid_safety_values_are_named(key: str, bad: Any) -> None:
    b = parse_battery({**GOOD, key: bad}, 1.0)
    assert b is not None and key in b.invalid


def test_missing_paths_are_not_invalid_and_offline_is_no_data() -> None:
    b = parse_battery({"Dc/0/Voltage": 52.0, "Dc/0/Current": 1.0, "Soc": 50.0}, 1.0)
    assert b is not None and not b.invalid and b.allow_to_charge is True
    assert b.max_charge_current is None
    for conn in (0, [], "1", math.nan):
        off = parse_battery({**GOOD, "Connected": conn}, 1.0)
        assert off is not None and not off.complete
    assert parse_battery("garbage", 1.0) is None
    assert parse_battery({**GOOD, "System/MinCellTemperature": -2.0}, 1.0).cell_temperature_min \
        == -2.0  # type: ignore[union-attr]


def test_vebus_sources_are_refused() -> None:
    own = ("com.victronenergy.vebus.canbridge_sma_can1", "com.victronenergy.vebus/261")
    assert "this bridge's own" in refuse_source("com.victronenergy.vebus/261", own)
    assert "this bridge's own" in refuse_source("com.victronenergy.vebus.canbridge_sma_can1",
                                                own)
    assert "a vebus service" in refuse_source("com.victronenergy.vebus.ttyS4", own)
    assert refuse_source("com.victronenergy.battery.ttyS5", own) == ""
    assert source_class("com.victronenergy.battery/512") == "com.victronenergy.battery"


class FakeLink:
    """Records sent frames; always open."""

    def __init__(self) -> None:
        self.bus: Any = object()
        self.broken = False
        self.reopens = 1
        self.describe = "fake"
        self.sent: list[can.Message] = []
        self.event = threading.Event()

    def send(self, msg: can.Message) -> None:
        self.sent.append(msg)
        self.event.set()

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass


class Exploding(Controller):
    def step(self, inp: Inputs) -> Any:
        raise ZeroDivisionError("boom")


def test_sender_sends_the_safe_set_when_the_controller_raises() -> None:
    link = FakeLink()
    fatal: list[str] = []
    s = BmsSender(link, Inputs(Config()), 0.2, max_failure_time=0.5,  # type: ignore[arg-type]
                  on_fatal=fatal.append, controller=Exploding())
    s.start()
    try:
        deadline = threading.Event()
        for _ in range(50):
            if fatal:
                break
            deadline.wait(0.1)
    finally:
        s.stop()
    ids = [m.arbitration_id for m in link.sent]
    assert ids.count(0x351) >= 3
    for m in link.sent:
        if m.arbitration_id == 0x351:
            assert wire.decode_351(bytes(m.data)).ccl == 0
        if m.arbitration_id == 0x35A:
            assert "General" in wire.decode_35a(bytes(m.data))[0]
    assert s.stats.build_failures >= 3
    assert fatal and "ZeroDivisionError: boom" in fatal[0]  # counted toward the exit
