"""Battery values, charge limits and the aggregate rules, on reports built by hand."""

from __future__ import annotations

import pytest

from driver.superb import battery as bat
from driver.superb.poller import NodeReport

BASE = {"voltage": 13.2, "current": -10.0, "soc": 50, "temperature": 20.0, "errors": 0,
        "warnings": 0, "max_charge_current": 100.0, "max_discharge_current": 150.0,
        "cell_temperature_min": 19.5, "cell_temperature_max": 20.5}


def report(node: int = 1, online: bool = True, capacity: int | None = 100,
           **values: object) -> NodeReport:
    v = dict(BASE)
    v.update(values)
    return NodeReport(node_id=node, online=online, serial=1000 + node,
                      identity={"capacity": capacity} if capacity else {},
                      values=v if online else {})


def test_derating_and_cold_and_unknown_temperature() -> None:
    lim = bat.Limits()
    assert bat.charge_limits(report(temperature=20.0), lim).ccl == 100.0
    assert bat.charge_limits(report(temperature=2.5), lim).ccl == pytest.approx(50.0)
    cold = bat.charge_limits(report(temperature=0.0), lim)
    assert cold.ccl == 0 and not cold.allow_charge and cold.allow_discharge
    unknown = bat.charge_limits(report(temperature=None), lim)
    assert unknown.ccl == 0 and not unknown.allow_charge
    hot = bat.charge_limits(report(temperature=56.0), lim)
    assert hot.ccl == 0 and hot.dcl == 0


def test_lowest_cell_temperature_decides_charging() -> None:
    """One temperature rule (driver/safety.py): the lowest temperature known, the lowest cell
    temperature (2023:01) included; a cell temperature the battery does not have is absent,
    one it has but that is unknown blocks charging."""
    lim = bat.Limits()
    cold_cell = bat.charge_limits(report(temperature=10.0, cell_temperature_min=0.0), lim)
    assert cold_cell.ccl == 0 and not cold_cell.allow_charge and cold_cell.dcl == 150.0
    cool_cell = bat.charge_limits(report(temperature=10.0, cell_temperature_min=1.0), lim)
    assert cool_cell.ccl == pytest.approx(20.0)  # 1 °C: 1/5 of the way from 0 to 5 °C
    hot_cell = bat.charge_limits(report(temperature=30.0, cell_temperature_max=46.0), lim)
    assert hot_cell.ccl == 0 and hot_cell.dcl == 150.0
    unknown_cell = bat.charge_limits(report(cell_temperature_min=None), lim)
    assert unknown_cell.ccl == 0
    absent = report(cell_temperature_min=None, cell_temperature_max=None)
    absent = NodeReport(**{**absent.__dict__, "missing": {"cell_temperature_min": 0x06090011,
                                                          "cell_temperature_max": 0x06090011}})
    assert bat.charge_limits(absent, lim).ccl == 100.0


def test_values_too_old_are_unknown() -> None:
    """A value read longer ago than value_max_age counts as unknown (no charging)."""
    lim = bat.Limits(value_max_age=4.0)
    fresh = {k: 100.0 for k in BASE}
    r = NodeReport(node_id=1, online=True, values=dict(BASE), stamps=fresh)
    assert bat.charge_limits(r, lim, now=103.0).ccl == 100.0
    old = NodeReport(node_id=1, online=True, values=dict(BASE),
                     stamps={**fresh, "max_charge_current": 95.0})
    verdict = bat.charge_limits(old, lim, now=103.0)
    assert verdict.ccl == 0 and verdict.dcl == 150.0
    assert any("8 s old" in why for why in verdict.reasons)


def test_battery_limit_and_error_bits_lower_the_settings() -> None:
    lim = bat.Limits(max_charge_current=80.0)
    assert bat.charge_limits(report(max_charge_current=35.0), lim).ccl == 35.0
    uv = bat.charge_limits(report(errors=1 << 3), lim)  # pack under-voltage
    assert uv.allow_charge and not uv.allow_discharge and uv.dcl == 0


def test_unknown_battery_limits_and_error_bits_fail_closed() -> None:
    """Issue 11: 5021 unreadable (abort, bad answer, too old) is 0, never the 80 A setting;
    an unreadable error bitfield blocks charging."""
    lim = bat.Limits(max_charge_current=80.0, max_discharge_current=120.0)
    no_ccl = bat.charge_limits(report(max_charge_current=None), lim)
    assert no_ccl.ccl == 0 and not no_ccl.allow_charge and no_ccl.dcl == 120.0
    no_dcl = bat.charge_limits(report(max_discharge_current=None), lim)
    assert no_dcl.dcl == 0 and not no_dcl.allow_discharge and no_dcl.ccl == 80.0
    no_err = bat.charge_limits(report(errors=None), lim)
    assert no_err.ccl == 0 and not no_err.allow_charge and no_err.dcl == 120.0


def test_values_offline_are_invalid_not_zero() -> None:
    vals = bat.battery_values(report(online=False), bat.Limits())
    assert vals["/Dc/0/Voltage"] is None and vals["/Soc"] is None
    assert vals["/Alarms/BmsCable"] == 2
    assert vals["/Info/MaxChargeCurrent"] == 0
    assert bat.CVL_PATH in vals
    assert bat.CVL_PATH not in bat.battery_values(report(), bat.Limits(), with_cvl=False)


def test_consumed_ah_never_positive_and_time_to_go() -> None:
    vals = bat.battery_values(report(soc=50), bat.Limits())
    assert vals["/ConsumedAmphours"] == -50.0
    assert vals["/TimeToGo"] == 50 / 10 * 3600
    assert bat.battery_values(report(current=5.0), bat.Limits())["/TimeToGo"] is None
    assert bat.battery_values(report(capacity=None), bat.Limits())["/InstalledCapacity"] is None


def test_cycle_counter_never_by_response_size() -> None:
    """Issue 12: 6050 means charge cycles whatever the length of the answer (4 bytes is not
    CiA 418 Ah); 2014:00 wins when the battery has it. The report does not carry the answers'
    lengths at all: the poller decodes by the object table, the model sees values only."""
    assert not any("size" in f for f in NodeReport.__dataclass_fields__)
    r = NodeReport(node_id=1, online=True, values={**BASE, "cycles_6050": 37})
    vals = bat.battery_values(r, bat.Limits())
    assert vals["/History/ChargeCycles"] == 37 and vals["/History/TotalAhCharged"] is None
    r2 = NodeReport(node_id=1, online=True, values={**BASE, "cycles_6050": 12, "cycles": 15})
    assert bat.battery_values(r2, bat.Limits())["/History/ChargeCycles"] == 15


def _members(*reports: NodeReport, limits: bat.Limits | None = None) -> list[bat.Member]:
    lim = limits or bat.Limits()
    return [bat.Member(f"node {r.node_id}", r, bat.battery_values(r, lim),
                       bat.installed_capacity(r, lim)) for r in reports]


def test_aggregate_share_rule_not_lowest_times_n() -> None:
    lim = bat.Limits(total_max_charge_current=1000.0)
    ms = _members(report(1, capacity=100, max_charge_current=50.0),
                  report(2, capacity=300, max_charge_current=100.0), limits=lim)
    out = bat.Aggregator().compute(ms, lim, 0.0)
    # node 1: 50 A / 0.25 share = 200 A; node 2: 100 / 0.75 = 133 A; sum of limits 150 A
    assert out["/Info/MaxChargeCurrent"] == pytest.approx(133.3, abs=0.1)
    assert out["/Soc"] == pytest.approx(50.0)
    capped = bat.Aggregator().compute(ms, bat.Limits(total_max_charge_current=90.0), 0.0)
    assert capped["/Info/MaxChargeCurrent"] == 90.0


def test_aggregate_blocking_alarms_and_ramp() -> None:
    lim = bat.Limits(limit_ramp_rate=10.0)
    agg = bat.Aggregator()
    ok = _members(report(1), report(2))
    assert agg.compute(ok, lim, 0.0)["/Info/MaxChargeCurrent"] == 200.0
    cold = _members(report(1), report(2, temperature=-1.0))
    out = agg.compute(cold, lim, 1.0)
    assert out["/Info/MaxChargeCurrent"] == 0 and out["/Io/AllowToCharge"] == 0
    assert out["/System/NrOfModulesBlockingCharge"] == 1
    assert out["/Alarms/LowChargeTemperature"] == 1
    # recovery ramps at 10 A/s
    assert agg.compute(ok, lim, 2.0)["/Info/MaxChargeCurrent"] == pytest.approx(10.0)
    assert agg.compute(ok, lim, 4.0)["/Info/MaxChargeCurrent"] == pytest.approx(30.0)


def test_aggregate_all_offline_and_soc_hold() -> None:
    lim = bat.Limits(soc_hold_time=60.0)
    ms = _members(report(1, online=False), report(2, online=False))
    ms[0].last_soc, ms[0].last_soc_time = 40.0, 0.0
    out = bat.Aggregator().compute(ms, lim, 30.0)
    assert out["/Info/MaxChargeCurrent"] == 0 and out["/Info/MaxDischargeCurrent"] == 0
    assert out["/Alarms/BmsCable"] == 2 and out["/Soc"] == 40.0
    assert bat.Aggregator().compute(ms, lim, 61.0)["/Soc"] is None


def test_aggregate_min_max_cells_carry_label() -> None:
    ms = _members(report(1, cell_voltage_min=3.20, cell_voltage_max=3.30),
                  report(2, cell_voltage_min=3.25, cell_voltage_max=3.40))
    out = bat.Aggregator().compute(ms, bat.Limits(), 0.0)
    assert out["/System/MinCellVoltage"] == 3.2 and out["/System/MinVoltageCellId"] == "node 1"
    assert out["/System/MaxCellVoltage"] == 3.4 and out["/System/MaxVoltageCellId"] == "node 2"
