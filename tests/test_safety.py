"""The shared safety policy (driver/safety.py): examples written from the rules, and hypothesis
properties over arbitrary inputs (NaN, +-inf, None, strings, arrays, huge and negative)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driver import safety
from driver.safety import Level, Reading, TemperaturePolicy

P = TemperaturePolicy(min_charge=0.0, derate_to=5.0, max_charge=45.0, max_discharge=55.0)


class FakeDbusBoolean(int):
    """Stands in for dbus.Boolean (an int subclass named Boolean)."""


FakeDbusBoolean.__name__ = "Boolean"

#: anything a peer could publish
ANYTHING = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
    st.binary(max_size=4), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))


# -- edge parsers ----------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [None, math.nan, math.inf, -math.inf, "20", "", [], [1], (),
                                 b"\x14", {}, True, False, FakeDbusBoolean(1), object()])
def test_parse_number_invalid(raw: Any) -> None:
    assert safety.parse_number(raw) is None


def test_parse_number_valid_and_range() -> None:
    assert safety.parse_number(20) == 20.0 and isinstance(safety.parse_number(20), float)
    assert safety.parse_number(-3.5, safety.TEMPERATURE) == -3.5
    assert safety.parse_number(125.0, safety.TEMPERATURE) == 125.0   # inclusive
    assert safety.parse_number(125.1, safety.TEMPERATURE) is None
    assert safety.parse_number(-0.1, safety.PERCENT) is None
    assert safety.parse_number(100.0, safety.PERCENT) == 100.0
    assert safety.parse_number(10**400) is None  # too large for a float


@pytest.mark.parametrize("raw,want", [(0, False), (1, True), (True, True), (False, False),
                                      (1.0, True), (FakeDbusBoolean(0), False), (2, None),
                                      (0.5, None), (math.nan, None), ("1", None), ([], None),
                                      (None, None), (-1, None)])
def test_parse_flag(raw: Any, want: bool | None) -> None:
    assert safety.parse_flag(raw) is want


@pytest.mark.parametrize("raw,want", [(0, 0), (1, 1), (2, 2), (2.0, 2), (3, None), (-1, None),
                                      (True, None), ("2", None), (math.nan, None), ([], None)])
def test_parse_level(raw: Any, want: int | None) -> None:
    assert safety.parse_level(raw) == want


def test_parse_text() -> None:
    assert safety.parse_text(" SuperB\x00 ") == "SuperB"
    assert safety.parse_text(5) is None and safety.parse_text([]) is None


@given(ANYTHING)
def test_parsers_never_raise_and_numbers_are_finite(raw: Any) -> None:
    v = safety.parse_number(raw, safety.TEMPERATURE)
    assert v is None or (math.isfinite(v) and -55.0 <= v <= 125.0)
    assert safety.parse_flag(raw) in (None, True, False)
    assert safety.parse_level(raw) in (None, 0, 1, 2)
    t = safety.parse_text(raw)
    assert t is None or isinstance(t, str)


# -- readings --------------------------------------------------------------------------------

def test_reading_age_and_usable() -> None:
    r = Reading(21.0, at=100.0)
    assert r.valid and r.age(110.0) == 10.0
    assert r.usable(110.0, 10.0) == 21.0
    assert r.usable(110.1, 10.0) is None
    assert Reading(None, 100.0).usable(100.0, 10.0) is None
    assert not safety.invalid().valid
    assert safety.invalid().usable(0.0, 1e9) is None


# -- temperature rule ------------------------------------------------------------------------

@pytest.mark.parametrize("lo,hi,f", [
    (None, None, 0.0), (-5.0, 20.0, 0.0), (0.0, 20.0, 0.0), (2.5, 20.0, 0.5),
    (5.0, 20.0, 1.0), (20.0, 45.0, 1.0), (20.0, 45.1, 0.0), (1.0, 46.0, 0.0),
    (math.nan, 20.0, 0.0)])
def test_temperature_factor_examples(lo: float | None, hi: float | None, f: float) -> None:
    assert safety.temperature_factor(lo, hi, P)[0] == pytest.approx(f)


def test_temperature_factor_reasons() -> None:
    assert safety.temperature_factor(None, None, P)[1] == "temperature unknown"
    assert "at or below 0" in safety.temperature_factor(0.0, 10.0, P)[1]
    assert "above 45" in safety.temperature_factor(10.0, 50.0, P)[1]
    assert safety.temperature_factor(20.0, 20.0, P)[1] == ""


def test_lowest_temperature_governs_cold_and_highest_governs_hot() -> None:
    temps = [Reading(20.0, 0.0), Reading(-1.0, 0.0)]  # pack 20 °C, coldest cell -1 °C
    v = safety.charge_verdict(now=1.0, max_age=10.0, policy=P, temperatures=temps)
    assert v.blocked and v.lowest == -1.0 and v.highest == 20.0
    temps = [Reading(20.0, 0.0), Reading(47.0, 0.0)]
    v = safety.charge_verdict(now=1.0, max_age=10.0, policy=P, temperatures=temps)
    assert v.blocked and v.highest == 47.0


def test_unknown_or_stale_temperature_blocks_charging() -> None:
    fresh = Reading(20.0, 0.0)
    for temps in ([], [Reading(None, 0.0)], [fresh, Reading(None, 0.0)], [Reading(20.0, -11.0)]):
        v = safety.charge_verdict(now=0.0, max_age=10.0, policy=P, temperatures=temps)
        assert v.blocked and "temperature unknown" in v.reasons
    assert not safety.charge_verdict(now=0.0, max_age=10.0, policy=P,
                                     temperatures=[fresh]).blocked


def test_required_and_blocks() -> None:
    t = [Reading(20.0, 0.0)]
    ok = safety.charge_verdict(now=5.0, max_age=10.0, policy=P, temperatures=t,
                               required={"charge limit": Reading(100.0, 0.0)})
    assert ok.factor == 1.0 and ok.reasons == ()
    v = safety.charge_verdict(now=5.0, max_age=10.0, policy=P, temperatures=t,
                              required={"charge limit": Reading(None, 0.0)})
    assert v.blocked and v.reasons == ("charge limit unknown",)
    v = safety.charge_verdict(now=20.0, max_age=30.0, policy=P,
                              temperatures=[Reading(20.0, 19.0)],
                              required={"error bits": Reading(0, 0.0)})
    assert not v.blocked
    v = safety.charge_verdict(now=20.0, max_age=10.0, policy=P,
                              temperatures=[Reading(20.0, 19.0)],
                              required={"error bits": Reading(0, 0.0)})
    assert v.blocked and v.reasons == ("error bits 20 s old",)
    v = safety.charge_verdict(now=5.0, max_age=10.0, policy=P, temperatures=t,
                              blocks={"battery disallows charging": True, "alarm": False})
    assert v.blocked and v.reasons == ("battery disallows charging",)


def test_discharge_allowed_by_highest_only() -> None:
    assert safety.discharge_allowed(None, P)        # unknown: the ladder decides
    assert safety.discharge_allowed(55.0, P)
    assert not safety.discharge_allowed(55.5, P)


def test_charge_limit() -> None:
    full = safety.ChargeVerdict(1.0, (), 20.0, 20.0)
    half = safety.ChargeVerdict(0.5, ("x",), 2.5, 20.0)
    assert safety.charge_limit(100.0, full) == 100.0
    assert safety.charge_limit(100.0, half) == 50.0
    for cap in (None, math.nan, math.inf, -5.0, 0.0):
        assert safety.charge_limit(cap, full) == 0.0
    assert safety.min_valid(None, 80.0, math.nan, 70.0) == 70.0
    assert safety.min_valid(None, math.inf) is None


# -- ladder ----------------------------------------------------------------------------------

@pytest.mark.parametrize("age,had,lvl", [
    (0.0, True, Level.NORMAL), (9.9, True, Level.NORMAL), (10.0, True, Level.STALE),
    (25.0, True, Level.ALARM), (40.0, True, Level.STOPPED), (None, True, Level.STOPPED),
    (math.nan, True, Level.STOPPED), (3.0, False, Level.STARTUP), (12.0, False, Level.STARTUP),
    (25.0, False, Level.ALARM), (-5.0, True, Level.NORMAL)])
def test_ladder_level(age: float | None, had: bool, lvl: Level) -> None:
    assert safety.ladder_level(age, 10.0, 25.0, 40.0, had) == lvl


@pytest.mark.parametrize("lvl,normal,want", [
    (Level.NORMAL, 200.0, 200.0), (Level.NORMAL, None, 50.0), (Level.NORMAL, math.nan, 50.0),
    (Level.STALE, 200.0, 50.0), (Level.STALE, 20.0, 20.0), (Level.ALARM, 200.0, 50.0),
    (Level.STARTUP, 200.0, 50.0), (Level.STOPPED, 200.0, 0.0)])
def test_discharge_limit_follows_ladder(lvl: Level, normal: float | None, want: float) -> None:
    assert safety.discharge_limit(lvl, normal, 50.0) == want


# -- properties ------------------------------------------------------------------------------

NUM = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
READ = st.builds(Reading, NUM, st.floats(min_value=-1e6, max_value=1e6))


@settings(max_examples=300)
@given(temps=st.lists(READ, max_size=4), req=st.dictionaries(st.sampled_from("abc"), READ),
       blocks=st.dictionaries(st.sampled_from("xyz"), st.booleans()),
       now=st.floats(min_value=-1e6, max_value=1e6), max_age=st.floats(0.0, 1e3),
       cap=NUM)
def test_property_verdict_never_opens_a_limit(*, temps: list[Reading[float]],
                                              req: dict[str, Reading[Any]],
                                              blocks: dict[str, bool], now: float,
                                              max_age: float, cap: float | None) -> None:
    # readings parsed at the edge: non-finite values are invalid
    temps = [Reading(safety.parse_number(r.value, safety.TEMPERATURE), r.at) for r in temps]
    v = safety.charge_verdict(now=now, max_age=max_age, policy=P, temperatures=temps,
                              required=req, blocks=blocks)
    assert 0.0 <= v.factor <= 1.0
    ccl = safety.charge_limit(cap, v)
    assert ccl >= 0.0 and math.isfinite(ccl)
    if cap is not None and math.isfinite(cap):
        assert ccl <= max(0.0, cap)
    else:
        assert ccl == 0.0
    unknown_temp = not temps or any(r.usable(now, max_age) is None for r in temps)
    unknown_req = any(r.usable(now, max_age) is None for r in req.values())
    cold = not unknown_temp and min(r.value for r in temps) <= P.min_charge  # type: ignore
    hot = not unknown_temp and max(r.value for r in temps) > P.max_charge  # type: ignore
    if unknown_temp or unknown_req or cold or hot or any(blocks.values()):
        assert v.blocked and ccl == 0.0 and v.reasons


@given(age=NUM, normal=NUM, reduced=st.floats(allow_nan=True, allow_infinity=True),
       had=st.booleans())
def test_property_ladder_and_dcl(age: float | None, normal: float | None, reduced: float,
                                 had: bool) -> None:
    lvl = safety.ladder_level(age, 10.0, 25.0, 40.0, had)
    dcl = safety.discharge_limit(lvl, normal, reduced)
    assert dcl >= 0.0 and math.isfinite(dcl)
    if lvl == Level.STOPPED:
        assert dcl == 0.0
    if lvl != Level.NORMAL:
        assert dcl <= max(0.0, reduced if math.isfinite(reduced) else 0.0)
