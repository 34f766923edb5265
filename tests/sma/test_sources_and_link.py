"""``dbus-sma`` with the system battery as source, three phases, a CAN interface that goes."""

from __future__ import annotations

import time

import pytest

from driver.sma import frames
from tests.fixtures.procs import Proc, python_cmd
from tests.fixtures.venus import wait_for_name
from tests.sma.conftest import SmaSystem, is_351

SYSTEM = "com.victronenergy.system"


def _is(fid: int):
    return lambda m: m.arbitration_id == fid


def test_system_battery_is_the_default_source(sma: SmaSystem) -> None:
    sma.start_si()
    p = Proc(python_cmd("sim.sma.battery", "--system", "--follow", "can1"), sma.env(),
             name="system")
    sma.procs.append(p)
    wait_for_name(sma.daemon.address, SYSTEM, 15)
    sma.start_bridge(battery=None)  # Sma/BatteryService empty: the Venus system battery
    sma.wait_vebus("/CanBridge/Ladder", lambda v: v == "normal", 15)
    # Freeze the mirror and give the system battery values of our own: they reach 0x355/0x356.
    assert sma.call(SYSTEM, "/Test/Hold", "SetValue", 1) == 0
    assert sma.call(SYSTEM, "/Dc/Battery/Voltage", "SetValue", 51.23) == 0
    mark = sma.tap.mark()
    _, m = sma.tap.wait(lambda x: _is(0x356)(x) and abs(
        frames.decode_signals(x)["BatteryVoltage"] - 51.23) < 0.006, 5, mark)
    assert frames.decode_signals(m)["BatteryVoltage"] == pytest.approx(51.23, abs=0.006)
    # The system service vanishing makes the data stale: the ladder leaves "normal".
    p.stop()
    sma.wait_vebus("/CanBridge/Ladder", lambda v: v not in (None, "normal"), 20)
    assert "Traceback" not in sma.bridge.output


def test_three_phase_cluster_values(sma: SmaSystem) -> None:
    sma.start_si("--phases", "3", "--load", "2400")
    sma.start_battery()
    sma.start_bridge(settings={"Phases": 3})
    sma.wait_vebus("/Ac/Out/L3/P", lambda v: v is not None, 15)
    assert sma.vebus("/Ac/NumberOfPhases") == 3
    per_phase = [sma.vebus(f"/Ac/Out/L{n}/P") for n in (1, 2, 3)]
    assert all(v is not None and v > 0 for v in per_phase)
    assert sum(per_phase) == pytest.approx(sma.vebus("/Ac/Out/P"), abs=1)
    assert all(sma.vebus(f"/Ac/Out/L{n}/V") is not None for n in (1, 2, 3))


def test_can_interface_disappears_and_returns(sma: SmaSystem) -> None:
    sma.start_si()
    sma.start_battery()
    sma.start_bridge()
    sma.tap.wait(is_351, 5, sma.tap.mark())
    pid = sma.bridge.proc.pid
    mark_log = sma.bridge.mark()
    assert sma.link.control("can1", f"unplug:{pid}") == "OK"
    sma.bridge.wait_for(r"cannot open CAN link .*retrying in", 10, mark_log)
    time.sleep(2.0)
    assert sma.link.control("can1", f"plug:{pid}") == "OK"
    t0 = time.monotonic()
    t, _ = sma.tap.wait(is_351, 10, sma.tap.mark())
    assert t - t0 < 6.0  # back-off is at most 5 s
    sma.bridge.wait_for("sending to the Sunny Island again", 10, mark_log)
    assert sma.bridge.proc.poll() is None
    assert "Traceback" not in sma.bridge.output


def test_bridge_exits_for_its_supervisor_when_it_cannot_send(sma: SmaSystem) -> None:
    sma.start_si()
    sma.start_battery()
    sma.start_bridge(settings={"MaxSendFailureTime": 5.0})
    sma.tap.wait(is_351, 5, sma.tap.mark())
    t0 = time.monotonic()
    assert sma.link.control("can1", f"unplug:{sma.bridge.proc.pid}") == "OK"
    sma.bridge.proc.wait(20)
    elapsed = time.monotonic() - t0
    assert sma.bridge.proc.returncode not in (0, None)
    assert 4.0 <= elapsed < 12.0, elapsed
    assert "cannot send to the Sunny Island for" in sma.bridge.output
