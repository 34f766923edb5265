"""Hypothesis properties over the Sunny Island controller, its stages and the frame builder:
for any inputs (NaN, +-inf, None, huge, negative included, as they arrive before and after
the edge parsers) a frame set is produced, CCL never exceeds any cap, and CCL is 0 whenever a
safety-relevant value is unknown, stale or cold. Frames are checked with the tests' own
hand-written layouts (sim/sma/wire.py), never the DBC."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from driver import safety
from driver.sma import frames
from driver.sma.controller import (
    Battery,
    Config,
    Controller,
    Dvcc,
    Inputs,
    Level,
    SiMeasurement,
    build_values,
    caps,
    safe_values,
    slew,
    taper,
)
from driver.sma.main import parse_battery
from sim.sma import wire

CFG = Config()
RAW = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True, allow_infinity=True),
                st.integers(min_value=-(10**12), max_value=10**12), st.text(max_size=3),
                st.just([]), st.lists(st.integers(), max_size=2))
NUM = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
KEYS = ("Dc/0/Voltage", "Dc/0/Current", "Dc/0/Temperature", "Soc", "Soh", "InstalledCapacity",
        "Info/MaxChargeVoltage", "Info/MaxChargeCurrent", "Info/MaxDischargeCurrent",
        "Info/BatteryLowVoltage", "Io/AllowToCharge", "Io/AllowToDischarge",
        "Alarms/HighChargeCurrent", "Alarms/HighTemperature", "System/MinCellTemperature",
        "Connected", "ProductName")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def check_frames(values: Any) -> dict[int, bytes]:
    fs = frames.encode_bms(values)
    by = {f.arbitration_id: bytes(f.data) for f in fs}
    assert set(by) == {0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F}
    return by


@settings(max_examples=300, deadline=None)
@given(raw=st.dictionaries(st.sampled_from(KEYS), RAW),
       si_v=NUM, si_t=NUM, si_age=st.floats(0, 100), age=st.floats(0, 100),
       dvcc=st.tuples(NUM, NUM, NUM, NUM, NUM), mode=st.booleans(),
       steps=st.integers(1, 4))
def test_any_dbus_values_give_a_frame_set_and_never_open_a_limit(
        *, raw: dict[str, Any], si_v: float | None, si_t: float | None, si_age: float,
        age: float, dvcc: tuple[Any, ...], mode: bool, steps: int) -> None:
    clock = Clock()
    ctl = Controller(clock)
    # DVCC values come through the edge parser too (main._dvcc_written)
    d = Dvcc(*(safety.parse_number(v, safety.LIMIT_CURRENT) for v in dvcc))
    for _ in range(steps):
        clock.t += 1.0
        b = parse_battery(raw, clock.t - age)
        si = SiMeasurement(at=clock.t - si_age, voltage=safety.parse_number(si_v),
                           current=None, temperature=safety.parse_number(si_t,
                                                                         safety.TEMPERATURE))
        out = ctl.step(Inputs(CFG, battery=b, si=si, dvcc=d, mode_on=mode))
        v = out.values
        by = check_frames(v)
        lim = wire.decode_351(by[0x351])
        assert lim.ccl >= 0.0 and lim.dcl >= 0.0
        cap = min(x for x in (CFG.max_charge_current, d.max_charge_current,
                              d.dc_max_charge_current,
                              b.max_charge_current if b else None) if x is not None)
        assert lim.ccl <= cap + 0.05
        assert 41.0 <= lim.cvl <= 63.0 and 41.0 <= lim.dvl <= 48.0
        assert 1 <= wire.decode_355(by[0x355])[0] <= 100 or out.level == Level.NORMAL
        # unknown, stale or cold -> no charging
        g = ctl.good
        if out.level in (Level.ALARM, Level.STOPPED):
            assert lim.ccl == 0
        if g is None or out.level != Level.NORMAL:
            assert lim.ccl <= CFG.stale_charge_current
        elif g is not None:
            temps = [t for t in (g.temperature, g.cell_temperature_min,
                                 g.cell_temperature_max) if t is not None]
            si_temp_ok = si.temperature is not None and si_age <= 5.0
            if not temps and not si_temp_ok:
                assert lim.ccl == 0, "unknown temperature must block charging"
            if temps and min(temps) <= CFG.min_charge_temperature:
                assert lim.ccl == 0, "cold must block charging"
            if g.invalid or g.allow_to_charge is not True:
                assert lim.ccl == 0


@settings(max_examples=300, deadline=None)
@given(cvl=NUM, ccl=NUM, dcl=NUM, dvl=NUM, soc=NUM, volt=NUM, cur=NUM, temp=NUM, soh=NUM,
       cap=NUM)
def test_frame_builder_any_values(*, cvl: float | None, ccl: float | None, dcl: float | None,
                                  dvl: float | None, soc: float | None, volt: float | None,
                                  cur: float | None, temp: float | None, soh: float | None,
                                  cap: float | None) -> None:
    """build_values never lets a non-finite value reach the encoder."""
    def f(x: float | None, default: float) -> float:
        return default if x is None else x
    g = Battery(at=0.0, voltage=volt, current=cur, temperature=temp, soc=soc, soh=soh,
                capacity=cap)
    v = build_values(cvl=f(cvl, 54.0), ccl=f(ccl, 0.0), dcl=f(dcl, 0.0),
                     dvl=max(41.0, min(48.0, f(dvl, 44.8))) if dvl is not None
                     and math.isfinite(dvl) else 44.8, soc=f(soc, 50.0), g=g, si=None,
                     temperature=temp, alarms=set(), warnings=set(), cfg=CFG)
    by = check_frames(v)
    lim = wire.decode_351(by[0x351])
    assert lim.ccl >= 0 and lim.dcl >= 0
    if ccl is not None and math.isfinite(ccl):
        assert lim.ccl <= max(0.0, ccl) + 0.05


@given(soc=NUM)
def test_safe_set_always_encodes(soc: float | None) -> None:
    by = check_frames(safe_values(soc, CFG))
    lim = wire.decode_351(by[0x351])
    assert lim.ccl == 0
    assert "General" in wire.decode_35a(by[0x35A])[0]
    assert 1 <= wire.decode_355(by[0x355])[0] <= 100


@given(prev=st.floats(0, 1000), target=st.floats(allow_nan=True, allow_infinity=True),
       rate=st.floats(0.1, 200), dt=st.floats(0, 5), step=st.floats(0.1, 20))
def test_slew_never_negative_never_above_target(prev: float, target: float, rate: float,
                                                dt: float, step: float) -> None:
    out = slew(prev, target, rate, dt, step)
    assert out >= 0 and math.isfinite(out)
    if math.isfinite(target):
        assert out <= max(0.0, target)
        assert out <= prev + rate * dt + 1e-9 or out <= prev


@given(ccl=st.floats(0, 1000), v=NUM, cvl=st.floats(41, 63), band=st.floats(0.05, 5))
def test_taper_never_raises_the_limit(ccl: float, v: float | None, cvl: float,
                                      band: float) -> None:
    out = taper(ccl, v, cvl, band)
    assert 0 <= out <= ccl


@given(dvcc=st.tuples(NUM, NUM, NUM, NUM, NUM), bat=st.tuples(NUM, NUM, NUM, NUM))
def test_caps_are_minimum_of_valid_values(dvcc: tuple[Any, ...], bat: tuple[Any, ...]) -> None:
    d = Dvcc(*(safety.parse_number(x, safety.LIMIT_CURRENT) for x in dvcc))
    mcv, mcc, mdc, blv = (safety.parse_number(x, safety.LIMIT_CURRENT) for x in bat)
    g = Battery(at=0, voltage=52.0, current=0.0, temperature=20.0, soc=50.0,
                max_charge_voltage=mcv, max_charge_current=mcc, max_discharge_current=mdc,
                battery_low_voltage=blv)
    c = caps(g, d, CFG)
    assert 0 <= c.ccl <= CFG.max_charge_current
    assert 0 <= c.dcl <= CFG.max_discharge_current
    assert c.cvl <= CFG.absorption_voltage and 41.0 <= c.dvl <= 48.0
    for x in (d.max_charge_current, d.dc_max_charge_current, mcc):
        if x is not None:
            assert c.ccl <= x


def test_replace_keeps_config_frozen() -> None:
    assert replace(CFG, max_charge_current=5.0).max_charge_current == 5.0
