"""The pure charge controller and safety ladder, driven by a fake clock."""

from __future__ import annotations

from dataclasses import replace

import pytest

from driver.schema import load_schema
from driver.sma.controller import (
    Battery,
    Config,
    ConfigError,
    Controller,
    Dvcc,
    Inputs,
    Level,
    Phase,
    SiMeasurement,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


CFG = Config(slew_rate=1000.0)  # no slew unless a test wants it


def batt(clock: Clock, **kw: object) -> Battery:
    base: dict[str, object] = dict(at=clock.t, voltage=52.0, current=20.0, temperature=20.0,
                                   soc=60.0, soh=98.0, capacity=200.0)
    base.update(kw)
    return Battery(**base)  # type: ignore[arg-type]


def run(ctl: Controller, clock: Clock, inp: Inputs, seconds: float, *, fresh: bool = True,
        step: float = 1.0, **bkw: object):  # type: ignore[no-untyped-def]
    out = None
    end = clock.t + seconds
    while clock.t < end - 1e-9:
        clock.t += step
        b = batt(clock, **bkw) if fresh else inp.battery
        out = ctl.step(replace(inp, battery=b))
    return out


def test_config_defaults_match_schema() -> None:
    schema = load_schema()
    cfg = Config.from_settings(lambda key: schema.by_key[key].dbus_default())
    assert cfg == Config()


def test_inconsistent_settings_refused_naming_them() -> None:
    with pytest.raises(ConfigError, match=r"FloatVoltage \(57\) must be at most AbsorptionVolt"):
        replace(CFG, float_voltage=57.0).check()
    with pytest.raises(ConfigError, match=r"StaleAlarmTime .* must be below StopTime"):
        replace(CFG, stale_alarm_time=45.0).check()
    with pytest.raises(ConfigError, match="RebulkVoltage"):
        replace(CFG, rebulk_voltage=54.0).check()


def test_startup_conservative_frames(clock: Clock) -> None:
    ctl = Controller(clock)
    clock.t += 1
    ctl.step(Inputs(CFG))
    clock.t += 1
    out = ctl.step(Inputs(CFG))
    v = out.values
    assert out.level == Level.STARTUP
    assert v.soc == 50 and v.soc != 0
    assert v.ccl == CFG.stale_charge_current
    assert v.dcl == min(CFG.max_discharge_current, CFG.stale_discharge_current)
    assert v.cvl == CFG.float_voltage
    assert "General" in v.warnings and out.command is None


def test_startup_without_data_escalates_to_stop(clock: Clock) -> None:
    ctl = Controller(clock)
    clock.t += CFG.stale_alarm_time
    assert ctl.step(Inputs(CFG)).level == Level.ALARM
    clock.t = ctl.started + CFG.stop_time
    out = ctl.step(Inputs(CFG))
    assert out.level == Level.STOPPED and out.command is False
    assert out.values.ccl == 0 and out.values.dcl == 0


def test_normal_limits_are_minimum_of_config_bms_and_dvcc(clock: Clock) -> None:
    ctl = Controller(clock)
    inp = Inputs(CFG, dvcc=Dvcc(max_charge_voltage=56.0, max_charge_current=80.0,
                                max_discharge_current=150.0, dc_max_charge_current=90.0))
    out = run(ctl, clock, inp, 2, max_charge_current=70.0, max_discharge_current=120.0,
              max_charge_voltage=57.0)
    assert out.level == Level.NORMAL
    assert out.values.cvl == 56.0
    assert out.values.ccl == 70.0
    assert out.values.dcl == 120.0
    out = run(ctl, clock, replace(inp, dvcc=Dvcc(max_charge_current=30.0)), 1)
    assert out.values.ccl == 30.0


def test_ladder_steps_with_timings(clock: Clock) -> None:
    ctl = Controller(clock)
    inp = Inputs(CFG)
    out = run(ctl, clock, inp, 3)
    assert out.level == Level.NORMAL and out.values.ccl == 100.0
    soc_before = out.values.soc
    last = ctl.good_at
    # data stop arriving: the battery reading keeps its old timestamp
    stale_inp = replace(inp, battery=ctl.good)
    clock.t = last + CFG.stale_warning_time - 0.5
    assert ctl.step(stale_inp).level == Level.NORMAL
    clock.t = last + CFG.stale_warning_time
    out = ctl.step(stale_inp)
    assert out.level == Level.STALE
    assert out.values.soc == soc_before  # held
    assert out.values.cvl == CFG.float_voltage
    assert out.values.ccl <= CFG.stale_charge_current
    assert out.values.dcl <= CFG.stale_discharge_current
    assert "General" in out.values.warnings and not out.values.alarms
    clock.t = last + CFG.stale_alarm_time
    out = ctl.step(stale_inp)
    assert out.level == Level.ALARM and out.values.ccl == 0
    assert "General" in out.values.alarms and out.command is None
    clock.t = last + CFG.stop_time
    out = ctl.step(stale_inp)
    assert out.level == Level.STOPPED and out.command is False
    assert out.values.ccl == 0 and out.values.dcl == 0
    # stop repeated, not on every tick
    clock.t += 1
    assert ctl.step(stale_inp).command is None
    clock.t += 5
    assert ctl.step(stale_inp).command is False
    # data return: start commanded, repeated every StartRepeatInterval (5 s) while the
    # Sunny Island does not report Run
    cmds = []
    for _ in range(11):
        clock.t += 1
        o = ctl.step(replace(inp, battery=batt(clock)))
        cmds.append(o.command)
    assert o.level == Level.NORMAL
    assert cmds == [True, None, None, None, None, True, None, None, None, None, True]
    assert o.start_commands == 3
    # a 0x307 from before the first start saying Run does not count; one after it does
    first = clock.t - 10
    cmds = []
    for run_at in (first - 1, first - 1, first - 1, first - 1, first - 1, clock.t + 0.5,
                   clock.t + 0.5, clock.t + 0.5, clock.t + 0.5, clock.t + 0.5, clock.t + 0.5):
        clock.t += 1
        si = SiMeasurement(at=clock.t, voltage=52.0, current=0.0, run=True, run_at=run_at)
        cmds.append(ctl.step(replace(inp, battery=batt(clock), si=si)).command)
    assert cmds[:5] == [None, None, None, None, True]
    assert cmds[5:] == [None] * 6


def test_stop_start_disabled(clock: Clock) -> None:
    cfg = replace(CFG, use_stop_start=False)
    ctl = Controller(clock)
    run(ctl, clock, Inputs(cfg), 2)
    clock.t += 100
    out = ctl.step(Inputs(cfg, battery=batt(clock, at=clock.t - 100)))
    assert out.level == Level.STOPPED and out.command is None and out.values.ccl == 0


def test_user_mode_off_stops_and_on_starts(clock: Clock) -> None:
    ctl = Controller(clock)
    run(ctl, clock, Inputs(CFG), 2)
    clock.t += 1
    assert ctl.step(Inputs(CFG, battery=batt(clock), mode_on=False)).command is False
    clock.t += 1
    assert ctl.step(Inputs(CFG, battery=batt(clock), mode_on=True)).command is True


@pytest.mark.parametrize("kw,why", [
    (dict(soc=101.0), "state of charge"),
    (dict(soc=-1.0), "state of charge"),
    (dict(voltage=40.5), "voltage"),
    (dict(voltage=63.5), "voltage"),
])
def test_implausible_data_treated_as_stale_and_alarm(clock: Clock, kw: dict, why: str) -> None:
    ctl = Controller(clock)
    run(ctl, clock, Inputs(CFG), 2)
    good_at = ctl.good_at
    clock.t += 1
    out = ctl.step(Inputs(CFG, battery=batt(clock, **kw)))
    assert why in out.implausible
    assert ctl.good_at == good_at
    assert out.level == Level.ALARM and out.values.ccl == 0
    assert out.values.soc != 0


def test_dc_coupled_solar_currents_never_compared(clock: Clock) -> None:
    """MPPTs produce more than the load: battery +20 A charging, Sunny Island 20 A
    discharging (0x305 is its own current). Plausible for an hour of simulated time."""
    ctl = Controller(clock)
    for _ in range(3600):
        clock.t += 1
        si = SiMeasurement(at=clock.t, voltage=52.1, current=-20.0)
        out = ctl.step(Inputs(CFG, battery=batt(clock, current=20.0), si=si))
        assert out.implausible == "" and out.level == Level.NORMAL
        assert out.command is None


def test_voltage_compared_with_the_sunny_islands(clock: Clock) -> None:
    ctl = Controller(clock)
    run(ctl, clock, Inputs(CFG), 2)
    # a mismatch shorter than PlausibleVoltageTime (10 s) is a load step, not implausible
    for _ in range(10):   # first seen at t, still < 10 s at t + 9
        clock.t += 1
        si = SiMeasurement(at=clock.t, voltage=55.0, current=0.0)
        out = ctl.step(Inputs(CFG, battery=batt(clock, voltage=52.0), si=si))
        assert out.implausible == "" and out.level == Level.NORMAL
    clock.t += 1
    si = SiMeasurement(at=clock.t, voltage=55.0, current=0.0)
    out = ctl.step(Inputs(CFG, battery=batt(clock, voltage=52.0), si=si))
    assert "differs from the Sunny Island's 55 V" in out.implausible
    assert out.level == Level.ALARM and out.values.ccl == 0
    clock.t += 1
    si = SiMeasurement(at=clock.t, voltage=54.4, current=0.0)  # within 2.5 V
    out = ctl.step(Inputs(CFG, battery=batt(clock, voltage=52.0), si=si))
    assert out.implausible == "" and out.level == Level.NORMAL
    # old measurements (either side) are not compared
    for _ in range(15):
        clock.t += 1
        si = SiMeasurement(at=clock.t - 6, voltage=60.0, current=0.0)
        out = ctl.step(Inputs(CFG, battery=batt(clock, voltage=52.0), si=si))
        assert out.implausible == ""
    b = batt(clock, voltage=52.0)
    for _ in range(8):
        clock.t += 1
        si = SiMeasurement(at=clock.t, voltage=49.0, current=-300.0)
        out = ctl.step(Inputs(CFG, battery=b, si=si))
        assert out.implausible == ""


def test_temperature_rules(clock: Clock) -> None:
    ctl = Controller(clock)
    assert ctl.temperature_factor(0.0, CFG) == 0.0
    assert ctl.temperature_factor(-5.0, CFG) == 0.0
    assert ctl.temperature_factor(2.5, CFG) == pytest.approx(0.5)
    assert ctl.temperature_factor(5.0, CFG) == 1.0
    assert ctl.temperature_factor(45.0, CFG) == 1.0
    assert ctl.temperature_factor(45.5, CFG) == 0.0
    out = run(ctl, clock, Inputs(CFG), 2, temperature=0.0)
    assert out.values.ccl == 0 and "ChargeLowTemperature" in out.values.warnings
    out = run(ctl, clock, Inputs(CFG), 1, temperature=2.5)
    assert out.values.ccl == 50.0
    out = run(ctl, clock, Inputs(CFG), 1, temperature=46.0)
    assert out.values.ccl == 0 and "ChargeHighTemperature" in out.values.warnings
    out = run(ctl, clock, Inputs(CFG), 1, temperature=56.0)
    assert out.values.dcl == 0 and "HighTemperature" in out.values.alarms


def test_slew_limit_rises_and_drops_at_once(clock: Clock) -> None:
    cfg = replace(CFG, slew_rate=5.0)
    ctl = Controller(clock)
    out = run(ctl, clock, Inputs(cfg), 1)
    assert out.values.ccl == 0.0  # first tick: dt 0, from 0
    out = run(ctl, clock, Inputs(cfg), 1)
    assert out.values.ccl == 5.0
    out = run(ctl, clock, Inputs(cfg), 3)
    assert out.values.ccl == 20.0
    out = run(ctl, clock, Inputs(cfg, dvcc=Dvcc(max_charge_current=2.0)), 1)
    assert out.values.ccl == 2.0
    out = run(ctl, clock, Inputs(cfg, dvcc=Dvcc(max_charge_current=0.5)), 1)
    assert out.values.ccl == 0.0  # below the smallest step: 0


def test_charge_cycle_bulk_absorption_float_rebulk(clock: Clock) -> None:
    cfg = replace(CFG, condition_time=10.0, absorption_time=30.0, soc_rate=100.0)
    ctl = Controller(clock)
    out = run(ctl, clock, Inputs(cfg), 2, voltage=53.0, current=80.0, soc=90.0)
    assert out.phase == Phase.BULK and out.values.ccl == 100.0 and out.values.cvl == 56.8
    # voltage enters the taper band: absorption, current tapers
    out = run(ctl, clock, Inputs(cfg), 1, voltage=56.6, current=50.0, soc=99.5)
    assert out.phase == Phase.ABSORPTION
    assert out.values.ccl == pytest.approx(50.0)   # (56.8-56.6)/0.4 of 100
    assert out.values.soc == 99                    # no 100 before absorption is complete
    out = run(ctl, clock, Inputs(cfg), 1, voltage=56.8, current=5.0, soc=100.0)
    assert out.values.ccl == 0.0
    # tail current for ConditionTime ends absorption
    out = run(ctl, clock, Inputs(cfg), 9, voltage=56.8, current=5.0, soc=100.0)
    assert out.phase == Phase.ABSORPTION
    out = run(ctl, clock, Inputs(cfg), 2, voltage=56.8, current=5.0, soc=100.0)
    assert out.phase == Phase.FLOAT and out.absorption_done
    assert out.values.cvl == 54.0
    out = run(ctl, clock, Inputs(cfg), 5, voltage=54.0, current=0.0, soc=100.0)
    assert out.values.soc == 100
    # re-bulk: voltage below the re-bulk voltage for ConditionTime
    out = run(ctl, clock, Inputs(cfg), 5, voltage=51.5, current=-20.0, soc=95.0)
    assert out.phase == Phase.FLOAT
    out = run(ctl, clock, Inputs(cfg), 7, voltage=51.5, current=-20.0, soc=95.0)
    assert out.phase == Phase.BULK and not out.absorption_done
    assert out.values.soc <= 99


def test_absorption_ends_on_maximum_time(clock: Clock) -> None:
    cfg = replace(CFG, absorption_time=1.0)  # minutes
    ctl = Controller(clock)
    run(ctl, clock, Inputs(cfg), 2, voltage=56.7, current=50.0)
    assert ctl.phase == Phase.ABSORPTION
    out = run(ctl, clock, Inputs(cfg), 58, voltage=56.7, current=50.0)
    assert out.phase == Phase.ABSORPTION
    # time below the target voltage does not count
    out = run(ctl, clock, Inputs(cfg), 30, voltage=55.0, current=-30.0)
    assert out.phase == Phase.ABSORPTION   # 59 s at target, 30 s below
    out = run(ctl, clock, Inputs(cfg), 1, voltage=56.7, current=50.0)
    assert out.phase == Phase.FLOAT


def test_rebulk_on_soc(clock: Clock) -> None:
    cfg = replace(CFG, absorption_time=0.0)
    ctl = Controller(clock)
    out = run(ctl, clock, Inputs(cfg), 2, voltage=56.7, current=1.0, soc=100.0)
    assert out.phase == Phase.FLOAT
    out = run(ctl, clock, Inputs(cfg), 1, voltage=53.0, current=-10.0, soc=90.0)
    assert out.phase == Phase.BULK


def test_soc_rate_limited_never_placeholder_zero(clock: Clock) -> None:
    cfg = replace(CFG, soc_rate=1.0)
    ctl = Controller(clock)
    out = run(ctl, clock, Inputs(cfg), 1, soc=60.0)
    assert out.values.soc == 60  # first reading replaces the placeholder
    out = run(ctl, clock, Inputs(cfg), 1, soc=20.0)
    assert out.values.soc == 59
    out = run(ctl, clock, Inputs(cfg), 5, soc=20.0)
    assert out.values.soc == 54


def test_battery_alarms_and_allow_flags(clock: Clock) -> None:
    ctl = Controller(clock)
    out = run(ctl, clock, Inputs(CFG), 2, alarms={"HighCellVoltage": 2, "LowSoc": 1,
                                                     "CellImbalance": 1})
    assert "HighVoltage" in out.values.alarms and "CellImbalance" in out.values.warnings
    assert out.values.ccl == 0
    out = run(ctl, clock, Inputs(CFG), 1, allow_to_discharge=False)
    assert out.values.dcl == 0 and out.values.ccl > 0


def test_dvl_from_bms_and_dvcc_clamped_to_sunny_island_range(clock: Clock) -> None:
    ctl = Controller(clock)
    out = run(ctl, clock, Inputs(CFG, dvcc=Dvcc(battery_low_voltage=46.0)), 2)
    assert out.values.dvl == 46.0
    out = run(ctl, clock, Inputs(CFG, dvcc=Dvcc(battery_low_voltage=50.0)), 1)
    assert out.values.dvl == 48.0


def test_missing_values_are_no_data_not_implausible(clock: Clock) -> None:
    ctl = Controller(clock)
    run(ctl, clock, Inputs(CFG), 2)
    good_at = ctl.good_at
    clock.t += CFG.stale_warning_time
    out = ctl.step(Inputs(CFG, battery=batt(clock, soc=None)))
    assert ctl.good_at == good_at and out.implausible == ""
    assert out.level == Level.STALE


def test_unknown_temperature_is_no_charging_not_full_current(clock: Clock) -> None:
    """Issue 11: temperature_factor(None) was 1.0 (full charge current)."""
    assert Controller.temperature_factor(None, CFG) == 0.0
    ctl = Controller(clock)
    out = run(ctl, clock, Inputs(CFG), 3, temperature=None)
    assert out.values.ccl == 0 and "temperature unknown" in out.reasons
    # the Sunny Island's own 0x305 temperature is the fallback while fresh
    clock.t += 1
    si = SiMeasurement(at=clock.t, voltage=52.0, current=0.0, temperature=15.0)
    out = ctl.step(Inputs(CFG, battery=batt(clock, temperature=None), si=si))
    assert out.values.ccl == 100.0 and out.values.temperature == 15.0
    clock.t += 6  # 0x305 older than 5 s: unknown again
    out = ctl.step(Inputs(CFG, battery=batt(clock, temperature=None), si=si))
    assert out.values.ccl == 0
    # a cold cell counts even when the pack reads warm (the lowest temperature known)
    out = run(ctl, clock, Inputs(CFG), 1, temperature=20.0, cell_temperature_min=-1.0)
    assert out.values.ccl == 0


def test_tail_current_only_at_target_voltage(clock: Clock) -> None:
    """Issue 13's reproduction: 3 s in the taper band, then discharge: the old code declared
    absorption done ConditionTime later (a discharge current is below the tail current)."""
    cfg = replace(CFG, condition_time=30.0, absorption_time=60.0)
    ctl = Controller(clock)
    run(ctl, clock, Inputs(cfg), 2, voltage=53.0, current=50.0)
    out = run(ctl, clock, Inputs(cfg), 3, voltage=56.6, current=30.0)
    assert out.phase == Phase.ABSORPTION
    out = run(ctl, clock, Inputs(cfg), 120, voltage=52.5, current=-40.0)
    assert out.phase == Phase.ABSORPTION and not out.absorption_done
    # at the target with a small current: the tail condition ends it
    out = run(ctl, clock, Inputs(cfg), 31, voltage=56.7, current=5.0)
    assert out.phase == Phase.FLOAT and out.absorption_done


def test_phases_follow_the_cvl_actually_sent(clock: Clock) -> None:
    """Battery cap 55.2 V under AbsorptionVoltage 56.8 V: absorption at 55.2 V."""
    cfg = replace(CFG, condition_time=5.0)
    ctl = Controller(clock)
    out = run(ctl, clock, Inputs(cfg), 2, voltage=54.0, current=50.0, max_charge_voltage=55.2)
    assert out.phase == Phase.BULK and out.values.cvl == 55.2
    out = run(ctl, clock, Inputs(cfg), 1, voltage=55.0, current=30.0, max_charge_voltage=55.2)
    assert out.phase == Phase.ABSORPTION
    out = run(ctl, clock, Inputs(cfg), 6, voltage=55.2, current=3.0, max_charge_voltage=55.2)
    assert out.phase == Phase.FLOAT and out.values.cvl == 54.0
    # the same with a DVCC cap
    ctl = Controller(clock)
    inp = Inputs(cfg, dvcc=Dvcc(max_charge_voltage=55.0))
    run(ctl, clock, inp, 2, voltage=54.0, current=50.0)
    out = run(ctl, clock, inp, 1, voltage=54.8, current=30.0)
    assert out.phase == Phase.ABSORPTION
    out = run(ctl, clock, inp, 6, voltage=55.0, current=3.0)
    assert out.phase == Phase.FLOAT


def test_dvcc_values_expire(clock: Clock) -> None:
    ctl = Controller(clock)
    d = Dvcc(max_charge_current=10.0, written={"max_charge_current": clock.t})
    out = run(ctl, clock, Inputs(CFG, dvcc=d), 2)
    assert out.values.ccl == 10.0 and out.dvcc_expired == ()
    out = run(ctl, clock, Inputs(CFG, dvcc=d), CFG.dvcc_timeout)
    assert out.values.ccl == 100.0 and out.dvcc_expired == ("max_charge_current",)
