"""``dbus-sma`` as a real process: private dbus-daemon, settings service, loopback CAN link,
the simulated Sunny Island and a simulated battery service."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time

import pytest

from tests.sma.conftest import SmaSystem, alarms_of, is_351, limits, soc_of, warnings_of

FAST_LADDER = {"StaleWarningTime": 2.0, "StaleAlarmTime": 5.0, "StopTime": 10.0}


def test_frames_vebus_values_and_setting_latency(sma: SmaSystem) -> None:
    sma.start_si()
    sma.start_battery()
    sma.start_bridge()
    sma.wait_vebus("/CanBridge/Ladder", lambda v: v == "normal", 10)
    # all six BMS frames, every interval
    start = sma.tap.mark()
    got: set[int] = set()
    want = {0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F}  # the six BMS frames (docs/sma.md)

    def all_bms_ids(m):  # type: ignore[no-untyped-def]
        got.add(m.arbitration_id)
        return want <= got

    sma.tap.wait(all_bms_ids, 2.5, start)
    assert want <= got
    # vebus values from the Sunny Island's frames
    assert sma.vebus("/Ac/ActiveIn/ActiveInput") == 0
    assert sma.vebus("/Ac/ActiveIn/Connected") == 1
    assert sma.vebus("/Ac/Out/L1/V") == 230.0
    assert sma.vebus("/Ac/Out/P") == pytest.approx(800.0, abs=1)
    assert sma.vebus("/Dc/0/Current") > 0  # charging, Venus sign
    assert sma.vebus("/State") in (3, 4, 5)
    assert sma.vebus("/FirmwareVersion") >= 0x422
    assert sma.vebus("/DeviceInstance") < 276
    assert sma.vebus("/Ac/NumberOfPhases") == 1 and sma.vebus("/Ac/Out/L2/P") is None
    # a charge-voltage setting change appears in the next 0x351, at once
    mark = sma.tap.mark()
    t0 = time.monotonic()
    sma.set_setting("AbsorptionVoltage", 56.0)
    t1, m = sma.tap.wait(is_351, 2.0, mark)
    assert limits(m)["ChargeVoltageLimit"] == pytest.approx(56.0)
    assert t1 - t0 < 0.5
    # inconsistent settings are refused with a message naming them; frames keep the old value
    mark_log = sma.bridge.mark()
    sma.set_setting("FloatVoltage", 57.0)
    sma.bridge.wait_for("FloatVoltage.*refused|refused.*float voltage", 5, mark_log)
    time.sleep(1.5)
    _, m = sma.tap.wait(is_351, 2.0, sma.tap.mark())
    assert limits(m)["ChargeVoltageLimit"] == pytest.approx(56.0)
    # a DVCC limit written into the vebus service appears in the next 0x351
    mark = sma.tap.mark()
    assert sma.call(sma_vebus(), "/BatteryOperationalLimits/MaxChargeVoltage", "SetValue",
                    55.5) == 0
    _, m = sma.tap.wait(is_351, 2.0, mark)
    assert limits(m)["ChargeVoltageLimit"] == pytest.approx(55.5)
    mark = sma.tap.mark()
    assert sma.call(sma_vebus(), "/Dc/0/MaxChargeCurrent", "SetValue", 12.0) == 0
    _, m = sma.tap.wait(lambda x: is_351(x) and limits(x)["ChargeCurrentLimit"] <= 12.0, 2.0,
                        mark)
    assert sma.call(sma_vebus(), "/Mode", "SetValue", 2) != 0  # inverter-only: refused
    # garbage and short frames are ignored and counted
    before = sma.vebus("/CanBridge/RxIgnored")
    sma.link.control("can1", "garbage")
    sma.wait_vebus("/CanBridge/RxIgnored", lambda v: v is not None and v > before, 5)
    sma.tap.wait(is_351, 2.0, sma.tap.mark())
    assert "Traceback" not in sma.bridge.output


def sma_vebus() -> str:
    from tests.sma.conftest import VEBUS

    return VEBUS


def test_ladder_steps_with_timings_stop_and_start(sma: SmaSystem) -> None:
    """Scaled-down ladder (2/5/10 s) with the battery process frozen (SIGSTOP), then back."""
    sma.start_si()
    bat = sma.start_battery()
    sma.start_bridge(settings=FAST_LADDER)
    sma.wait_vebus("/CanBridge/Ladder", lambda v: v == "normal", 10)
    time.sleep(1.5)
    mark = sma.tap.mark()
    t0 = time.monotonic()
    os.kill(bat.proc.pid, signal.SIGSTOP)
    try:
        def warn(m):  # type: ignore[no-untyped-def]
            return (m.arbitration_id == 0x35A
                    and "General" in warnings_of(m))
        t_warn, _ = sma.tap.wait(warn, 6, mark)
        _, m = sma.tap.wait(is_351, 2, sma.tap.mark())
        assert limits(m)["ChargeCurrentLimit"] <= 5.0
        assert limits(m)["DischargeCurrentLimit"] == 200.0  # the stale step keeps the loads
        def alarm(m):  # type: ignore[no-untyped-def]
            return m.arbitration_id == 0x35A and "General" in alarms_of(m)
        t_alarm, _ = sma.tap.wait(alarm, 8, mark)
        _, m = sma.tap.wait(is_351, 2, sma.tap.mark())
        assert limits(m)["ChargeCurrentLimit"] == 0
        t_stop, _ = sma.tap.wait(lambda m: m.arbitration_id == 0x35C and m.data[0] == 2, 10,
                                 mark)
        sma.si.wait_for("stopped by 0x35C", 3)
        # the last good reading is up to one poll (1 s) older than the freeze
        assert 2.0 - 1.2 <= t_warn - t0 <= 2.0 + 1.5
        assert 5.0 - 1.2 <= t_alarm - t0 <= 5.0 + 1.5
        assert 10.0 - 1.2 <= t_stop - t0 <= 10.0 + 1.5
        assert sma.vebus("/Alarms/BmsConnectionLost") == 2
        # BMS frames never stopped meanwhile
        times = sma.tap.times(0x351, since=t0)
        assert max(b - a for a, b in itertools.pairwise(times)) < 1.5
    finally:
        os.kill(bat.proc.pid, signal.SIGCONT)
    mark = sma.tap.mark()
    sma.tap.wait(lambda m: m.arbitration_id == 0x35C and m.data[0] == 1, 6, mark)
    sma.si.wait_for("started by 0x35C", 10)
    sma.wait_vebus("/CanBridge/Ladder", lambda v: v == "normal", 5)
    assert "SI event: ExtBMSTimeout" not in sma.si.output


def test_implausible_battery_data_zero_charge_current(sma: SmaSystem) -> None:
    sma.start_si()
    sma.start_battery()
    sma.start_bridge()
    sma.wait_vebus("/CanBridge/Ladder", lambda v: v == "normal", 10)
    sma.set_battery("/Test/Hold", 1)
    sma.set_battery("/Soc", 150.0)
    sma.wait_vebus("/CanBridge/Implausible", lambda v: bool(v) and "state of charge" in v, 5)
    _, m = sma.tap.wait(is_351, 2, sma.tap.mark())
    assert limits(m)["ChargeCurrentLimit"] == 0
    _, m = sma.tap.wait(lambda x: x.arbitration_id == 0x355, 2, sma.tap.mark())
    assert soc_of(m) not in (0, 150)
    sma.set_battery("/Soc", 61.0)
    sma.set_battery("/Dc/0/Voltage", 40.0)
    sma.wait_vebus("/CanBridge/Implausible", lambda v: bool(v) and "voltage" in v, 5)
    sma.set_battery("/Dc/0/Voltage", 52.5)
    sma.wait_vebus("/CanBridge/Ladder", lambda v: v == "normal", 5)


def test_charge_cycle_bulk_absorption_float_on_simulator(sma: SmaSystem) -> None:
    sma.start_si("--capacity", "1", "--soc", "93")
    sma.start_battery()
    sma.start_bridge(settings={"ConditionTime": 2.0, "TailCurrent": 15.0,
                               "CurrentSlewRate": 100.0, "SocRateLimit": 10.0})
    seen: list[tuple[str, float]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ph = sma.vebus("/CanBridge/ChargePhase")
        if not seen or seen[-1][0] != ph:
            seen.append((ph, time.monotonic()))
        if ph == "float":
            break
        time.sleep(0.2)
    assert [p for p, _ in seen][-3:] == ["bulk", "absorption", "float"], seen
    t_abs = next(t for p, t in seen if p == "absorption")
    _, m = sma.tap.wait(is_351, 2, sma.tap.mark())
    assert limits(m)["ChargeVoltageLimit"] == pytest.approx(54.0)
    # SoC 100 % only after absorption (never while bulk/absorption ran)
    first100, _ = sma.tap.wait(lambda x: x.arbitration_id == 0x355
                               and soc_of(x) == 100, 15, 0)
    assert first100 > t_abs
    assert "SI event: ExtBMSTimeout" not in sma.si.output


def test_energy_counters_survive_sigterm_and_kill9(sma: SmaSystem) -> None:
    sma.start_si("--load", "3000", "--bms-timeout", "4")
    sma.start_battery()
    sma.start_bridge(settings={"EnergyPersistInterval": 10.0})
    path = "/Energy/AcIn1ToAcOut"
    sma.wait_vebus(path, lambda v: v is not None and v > 0.002, 15)
    state = sma.workdir / "state" / "sma_energy.json"
    # SIGTERM: nothing lost
    before = sma.vebus(path)
    assert sma.bridge is not None
    assert sma.bridge.stop(signal.SIGTERM) == 0
    saved = json.loads(state.read_text())["kwh"]
    assert saved[path.rsplit("/", maxsplit=1)[-1]] >= before
    sma.start_bridge()
    restored = sma.vebus(path)
    # published with 6 decimals (round() keeps a non-decreasing series non-decreasing)
    assert restored >= round(saved["AcIn1ToAcOut"], 6) - 1e-12
    # kill -9: at most one persist interval lost (3 kW x 10 s = 0.0083 kWh, plus a poll)
    time.sleep(12)
    at_kill = sma.vebus(path)
    sma.bridge.stop(signal.SIGKILL)
    # and the simulated Sunny Island (timeout scaled to 4 s here) does time out without us:
    # the ExtBMSTimeout assertions elsewhere can fail
    sma.si.wait_for("SI event: ExtBMSTimeout", 10)
    sma.start_bridge()
    after = sma.vebus(path)
    assert after >= at_kill - (3000 * 11 / 3.6e6)


def test_mode_grid_generator_gridlost_and_shutdown_standby(sma: SmaSystem) -> None:
    sma.start_si()
    sma.start_battery()
    sma.start_bridge(settings={"ShutdownAction": 1})
    sma.wait_vebus("/CanBridge/Ladder", lambda v: v == "normal", 10)
    assert sma.call(sma_vebus(), "/Mode", "SetValue", 4) == 0
    sma.si.wait_for("stopped by 0x35C", 3)
    sma.wait_vebus("/State", lambda v: v == 0, 5)
    assert sma.call(sma_vebus(), "/Mode", "SetValue", 3) == 0
    sma.si.wait_for("started by 0x35C", 10)
    # generator instead of grid
    sma.control_si(grid=False, generator=True)
    sma.wait_vebus("/Ac/ActiveIn/ActiveInput", lambda v: v == 1, 5)
    assert sma.vebus("/Alarms/GridLost") == 0
    # no source at all: GridLost after two 0x307 frames, inverting
    sma.control_si(grid=False, generator=False)
    sma.wait_vebus("/Ac/ActiveIn/ActiveInput", lambda v: v == 240, 5)
    sma.wait_vebus("/Alarms/GridLost", lambda v: v == 2, 5)
    sma.wait_vebus("/State", lambda v: v == 9, 5)
    assert sma.vebus("/Dc/0/Current") < 0
    sma.control_si(grid=True)
    sma.wait_vebus("/Alarms/GridLost", lambda v: v == 0, 5)
    # settings service restart: frames continue, settings re-registered
    mark = sma.tap.mark()
    sma.settings.restart()
    sma.bridge.wait_for("registered again", 10)
    sma.tap.wait(is_351, 2, mark)
    # SIGTERM with ShutdownAction = standby
    sma.bridge.stop(signal.SIGTERM)
    sma.si.wait_for("stopped by 0x35C|standby by 0x00F", 3)
    assert "SI event: ExtBMSTimeout" not in sma.si.output


def test_real_60s_timeout_never_reached_when_battery_vanishes(sma: SmaSystem) -> None:
    """Default ladder (10/25/40 s) against the simulator's real 60 s ExtBMSTimeout.

    The battery service vanishes (its process is killed) and stays away for 70 s: the bridge
    keeps sending BMS frames, commands a stop before 60 s and a start when the battery returns.
    """
    sma.start_si()
    bat = sma.start_battery()
    sma.start_bridge()
    sma.wait_vebus("/CanBridge/Ladder", lambda v: v == "normal", 10)
    mark = sma.tap.mark()
    t0 = time.monotonic()
    bat.stop(signal.SIGKILL)
    t_stop, _ = sma.tap.wait(lambda m: m.arbitration_id == 0x35C and m.data[0] == 2, 50, mark)
    assert 40.0 - 1.5 <= t_stop - t0 <= 40.0 + 1.5
    sma.si.wait_for("stopped by 0x35C", 3)
    time.sleep(max(0.0, t0 + 70 - time.monotonic()))
    times = sma.tap.times(0x351, since=t0)
    assert max(b - a for a, b in itertools.pairwise(times)) < 1.5
    assert "SI event: ExtBMSTimeout" not in sma.si.output
    mark = sma.tap.mark()
    sma.start_battery()
    sma.tap.wait(lambda m: m.arbitration_id == 0x35C and m.data[0] == 1, 6, mark)
    sma.si.wait_for("started by 0x35C", 10)
    assert "SI event: ExtBMSTimeout" not in sma.si.output
