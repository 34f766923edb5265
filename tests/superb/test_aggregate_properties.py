"""Property-based tests (hypothesis) over one battery's limits and the aggregate (issue 11):
for any report values — NaN, ±inf, None, huge, negative, wrong types included — values are
produced without raising, no CCL exceeds any cap, and the CCL is 0 whenever a safety-relevant
value of an online battery is unknown, too old or cold. Caps written by hand (100 A per
battery, 1000 A total, 0 °C), not taken from the code's tables."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from driver.superb import battery as bat
from driver.superb.poller import NodeReport

LIMITS = bat.Limits(max_charge_current=100.0, max_discharge_current=150.0,
                    total_max_charge_current=1000.0, total_max_discharge_current=1000.0,
                    value_max_age=4.0)
NOW = 1000.0

weird = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                  st.integers(min_value=-10**12, max_value=10**12), st.text(max_size=3),
                  st.booleans(), st.lists(st.integers(), max_size=1))
good_temp = st.floats(min_value=-40, max_value=80)
KEYS = ("voltage", "current", "soc", "temperature", "errors", "warnings", "max_charge_current",
        "max_discharge_current", "cell_temperature_min", "cell_temperature_max",
        "cell_voltage_min", "cell_voltage_max", "ah_expended", "cycles", "cycles_6050")


@st.composite
def reports(draw: Any, node: int = 1) -> NodeReport:
    values = {k: draw(st.one_of(weird, st.floats(min_value=-100, max_value=500)))
              for k in KEYS}
    stamps = {k: draw(st.floats(min_value=900.0, max_value=NOW)) for k in KEYS}
    cap = draw(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                         st.floats(min_value=1, max_value=1000)))
    return NodeReport(node_id=node, online=draw(st.booleans()), serial=1000 + node,
                      identity={"capacity": cap}, values=values, stamps=stamps)


def _usable(r: NodeReport, key: str, lo: float = -math.inf, hi: float = math.inf) -> bool:
    v = r.values.get(key)
    return (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            and lo <= v <= hi and NOW - r.stamps[key] <= 4.0)


@settings(max_examples=300, deadline=None)
@given(reports())
def test_one_battery_never_above_its_caps_and_closed_when_unknown(r: NodeReport) -> None:
    vals = bat.battery_values(r, LIMITS, True, NOW)
    ccl, dcl = vals["/Info/MaxChargeCurrent"], vals["/Info/MaxDischargeCurrent"]
    assert 0.0 <= ccl <= 100.0 and 0.0 <= dcl <= 150.0
    if _usable(r, "max_charge_current", 0.0, 10000.0):
        assert ccl <= float(r.values["max_charge_current"]) + 1e-9
    temps_ok = all(_usable(r, k, -55.0, 125.0) for k in
                   ("temperature", "cell_temperature_min", "cell_temperature_max"))
    errors = r.values.get("errors")
    errors_ok = isinstance(errors, int) and not isinstance(errors, bool) and errors >= 0 \
        and NOW - r.stamps["errors"] <= 4.0
    if not (r.online and temps_ok and _usable(r, "max_charge_current", 0.0, 10000.0)
            and errors_ok):
        assert ccl == 0.0
    if temps_ok and min(float(r.values[k]) for k in (
            "temperature", "cell_temperature_min", "cell_temperature_max")) <= 0.0:
        assert ccl == 0.0  # at or below 0 °C: no charging
    if not r.online:
        assert dcl == 0.0 and vals["/Dc/0/Voltage"] is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=8), min_size=1, max_size=6, unique=True)
       .flatmap(lambda ns: st.tuples(*(reports(n) for n in ns))),
       st.floats(min_value=0.0, max_value=5.0))
def test_aggregate_never_above_caps_and_zero_when_a_member_blocks(
        rs: tuple[NodeReport, ...], dt: float) -> None:
    members = [bat.Member(f"node {r.node_id}", r, bat.battery_values(r, LIMITS, True, NOW),
                          bat.installed_capacity(r, LIMITS)) for r in rs]
    agg = bat.Aggregator()
    out = agg.compute(members, LIMITS, NOW)
    out2 = agg.compute(members, LIMITS, NOW + dt)  # ramps move with time, never above target
    for o in (out, out2):
        ccl, dcl = o["/Info/MaxChargeCurrent"], o["/Info/MaxDischargeCurrent"]
        assert 0.0 <= ccl <= 1000.0 and 0.0 <= dcl <= 1000.0
        online = [m for m in members if m.report.online]
        assert ccl <= sum(m.values["/Info/MaxChargeCurrent"] for m in online) + 1e-6
        if not online or any(m.values["/Info/MaxChargeCurrent"] == 0 for m in online):
            assert ccl == 0.0
        if not online:
            assert dcl == 0.0
