"""The contract's presentation rules as pure functions (docs/paths.md, Decisions)."""

from __future__ import annotations

import pytest

from driver.sma import vebus
from driver.superb import dbus_services as ds


def test_aggregate_history_combines_only_what_is_known() -> None:
    a = {"/History/ChargeCycles": 17.0, "/History/AhReturnedLastCharge": 30.0}
    b = {"/History/ChargeCycles": 25.0, "/History/AhReturnedLastCharge": 12.5,
         "/History/TotalAhCharged": 800.0}
    out = ds.aggregate_history([a, b], 2)
    assert out == {"/History/ChargeCycles": 25, "/History/AhReturnedLastCharge": 42.5,
                   "/History/TotalAhCharged": None}  # a does not know its Ah charged
    assert isinstance(out["/History/ChargeCycles"], int)
    # a configured battery without a service (never answered): nothing is combined
    assert set(ds.aggregate_history([a, b], 3).values()) == {None}
    assert set(ds.aggregate_history([], None).values()) == {None}
    assert "/History/AhSinceEqualization" not in out


def test_aggregate_system_rows() -> None:
    assert ds.aggregate_system({}, [16, 16, 16], 3) == {
        "/System/BatteriesParallel": 3, "/System/BatteriesSeries": 1,
        "/System/NrOfCellsPerBattery": 16}
    # mixed or unknown cell counts: no single answer
    assert ds.aggregate_system({}, [16, 4], 2)["/System/NrOfCellsPerBattery"] is None
    assert ds.aggregate_system({}, [16, None], 2)["/System/NrOfCellsPerBattery"] is None
    assert ds.aggregate_system({}, [16], 2)["/System/NrOfCellsPerBattery"] is None
    assert ds.aggregate_system({}, [], 0)["/System/BatteriesParallel"] is None


@pytest.mark.parametrize(("label", "short"), [
    ("node 3 (2300003)", "B3"), ("node 127", "B127"), (None, None),
    ("a very long label", "a very l")])
def test_cell_ids_fit_a_modbus_string4(label: str | None, short: str | None) -> None:
    assert ds.cell_id(label) == (short, label)
    assert short is None or len(short) <= 8


def test_battery_state() -> None:
    assert ds.battery_state({}, True, False) == 9
    assert ds.battery_state({}, False, False) == 10
    assert ds.battery_state({"/System/NrOfModulesOnline": 1}, True, True) == 9
    assert ds.battery_state({"/System/NrOfModulesOnline": 0}, True, True) == 10
    assert ds.battery_state({"/System/NrOfModulesOnline": None}, True, True) == 10


@pytest.mark.parametrize(("path", "value", "text"), [
    ("/Ac/Out/L1/F", 50.10256576538086, "50.1Hz"),   # recording: 50.1Hz
    ("/Ac/ActiveIn/L1/V", 217.8300018310547, "218V"),  # recording: 218V
    ("/Ac/ActiveIn/L1/I", 1.6399999856948853, "1.6A"),
    ("/Ac/ActiveIn/P", 312, "312W"),
    ("/Ac/Out/L1/I", -0.05000000074505806, "-0.1A"),  # recording: -0.1A
    ("/Dc/0/Voltage", 13.520000457763672, "13.52V"),
    ("/Dc/0/Current", 21.0, "21.0A"),
    ("/Dc/0/Current", -0.04, "0.0A"),
    ("/Soc", 93.5, "93.5%"),
    ("/Energy/AcIn1ToAcOut", 1.9660799503326416, "1.97kWh"),
    ("/BatteryOperationalLimits/MaxChargeVoltage", 13.5, "13.5V"),
    ("/BatteryOperationalLimits/MaxDischargeCurrent", 600.0, "600.0A"),
    ("/State", 4, "absorption"), ("/State", 9, "inverting"), ("/Mode", 3, "on"),
    ("/VebusChargeState", 2, "absorption"), ("/VebusMainState", 9, "charge"),
    ("/VebusMainState", 4, "invert"), ("/Ac/ActiveIn/Connected", 1, "yes"),
    ("/Alarms/L1/Ripple", 0, "ok"), ("/Alarms/LowBattery", 2, "alarm"),
    ("/Ac/In/1/CurrentLimit", 30.0, "30.0A"), ("/Ac/In/1/CurrentLimit", None, "---"),
    ("/Ac/NumberOfAcInputs", 2, "2"),
])
def test_vebus_texts_match_mk2_dbus(path: str, value: object, text: str) -> None:
    """Values and texts from the MultiPlus-II recording (and mk2-dbus's words)."""
    assert vebus.text(path, value) == text
