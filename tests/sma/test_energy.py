"""Energy flow case analysis, integration and the state file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from driver.sma import energy
from driver.sma.energy import EnergyCounters, split


@pytest.mark.parametrize("p_in,p_inv,inp,expected", [
    # import, inverter assisting
    (1000, 500, 1, {"AcIn1ToAcOut": 1000, "InverterToAcOut": 500}),
    # import, charging, loads still supplied
    (3000, -2000, 1, {"AcIn1ToAcOut": 1000, "AcIn1ToInverter": 2000}),
    # import and AC-out PV both charging (out negative)
    (500, -2000, 2, {"AcIn2ToInverter": 500, "OutToInverter": 1500}),
    # export from the inverter, loads supplied
    (-1000, 3000, 1, {"InverterToAcIn1": 1000, "InverterToAcOut": 2000}),
    # export: inverter and AC-out PV both feed the grid
    (-3000, 1000, 1, {"InverterToAcIn1": 1000, "AcOutToAcIn1": 2000}),
    # export while charging from AC-out PV
    (-1000, -500, 2, {"AcOutToAcIn2": 1000, "OutToInverter": 500}),
    # off-grid
    (0, 800, None, {"InverterToAcOut": 800}),
    (0, -800, None, {"OutToInverter": 800}),
    (0, 0, 1, {}),
])
def test_split_cases(p_in: float, p_inv: float, inp: int | None, expected: dict) -> None:
    got = split(p_in, p_inv, inp)
    assert got == expected
    assert all(v > 0 for v in got.values())


def test_split_conserves_power() -> None:
    """What enters (AC in import, inverter, out source) equals what leaves, in every case."""
    for p_in in (-3000, -500, 0, 700, 2500):
        for p_inv in (-2500, -100, 0, 300, 2800):
            f = split(p_in, p_inv, 1)
            sources = (f.get("AcIn1ToAcOut", 0) + f.get("AcIn1ToInverter", 0)
                       - f.get("InverterToAcIn1", 0) - f.get("AcOutToAcIn1", 0))
            assert sources == pytest.approx(p_in)
            inverter = (f.get("InverterToAcOut", 0) + f.get("InverterToAcIn1", 0)
                        - f.get("AcIn1ToInverter", 0) - f.get("OutToInverter", 0))
            assert inverter == pytest.approx(p_inv)


def test_integration_exact_factor_and_monotonic() -> None:
    c = EnergyCounters()
    c.add([(1000.0, 0.0)], 1, 3.6)          # 3600 W s = 0.001 kWh
    assert c.kwh["AcIn1ToAcOut"] == pytest.approx(0.001, abs=1e-15)
    before = dict(c.kwh)
    c.add([(-1000.0, 0.0), (0.0, 500.0)], 1, 1.0)
    assert all(c.kwh[k] >= before[k] for k in energy.FLOWS)
    c.add([(1000.0, 0.0)], 1, 60.0)         # a gap: not integrated
    c.add([(1000.0, 0.0)], 1, -1.0)
    assert c.kwh["AcIn1ToAcOut"] == pytest.approx(0.001 + 0.0, abs=1e-12)


def test_three_phases_summed() -> None:
    c = EnergyCounters()
    c.add([(1000.0, 0.0), (2000.0, 0.0), (0.0, 1000.0)], 1, 3.6)
    assert c.kwh["AcIn1ToAcOut"] == pytest.approx(0.003)
    assert c.kwh["InverterToAcOut"] == pytest.approx(0.001)


def test_save_load_atomic(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "energy.json"
    energy.save(p, {"AcIn1ToAcOut": 1.25, "OutToInverter": 0.5})
    assert energy.load(p) == {"AcIn1ToAcOut": 1.25, "OutToInverter": 0.5}
    assert [x.name for x in p.parent.iterdir()] == ["energy.json"]  # no temp file left


def test_load_missing_or_broken(tmp_path: Path) -> None:
    assert energy.load(tmp_path / "none.json") == {}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert energy.load(bad) == {}
    bad.write_text(json.dumps({"kwh": {"AcIn1ToAcOut": -5, "Bogus": 1, "OutToInverter": 2}}))
    assert energy.load(bad) == {"OutToInverter": 2.0}
    c = EnergyCounters({"AcIn1ToAcOut": -1.0, "OutToInverter": 2.0})
    assert c.kwh["AcIn1ToAcOut"] == 0.0 and c.kwh["OutToInverter"] == 2.0
