"""Issue 11 on the Sunny Island side, with real processes on the loopback bus: hostile values
from the battery service and exceptions in every stage never pause 0x351 and never open a
charge limit. Frames are decoded with the tests' own tables (sim/sma/wire.py)."""

from __future__ import annotations

import itertools
import math
import time

import dbus

from tests.sma.conftest import SmaSystem, alarms_of, is_351, limits, record

NAN = float("nan")
INF = float("inf")


def gaps_ok(sma: SmaSystem, since: float, limit: float = 1.5) -> float:
    times = sma.tap.times(0x351, since=since)
    assert len(times) >= 2
    worst = max(b - a for a, b in itertools.pairwise([since, *times, time.monotonic()]))
    assert worst < limit, f"0x351 paused for {worst:.2f} s"
    return worst


def test_nan_and_inf_over_dbus_never_pause_0x351(sma: SmaSystem) -> None:
    """The reproduction: NaN/+-inf in /Dc/0/Temperature, /Soh, /InstalledCapacity made the
    frame build raise and the sender send nothing (old code: 0x351 stopped)."""
    sma.start_si()
    sma.start_battery()
    sma.start_bridge()
    sma.wait_vebus("/CanBridge/Ladder", lambda v: v == "normal", 10)
    t0 = time.monotonic()
    for path in ("/Dc/0/Temperature", "/Soh", "/InstalledCapacity"):
        for bad in (NAN, INF, -INF):
            sma.set_battery("/Test/Hold", 1)
            sma.set_battery(path, bad)
            time.sleep(2.2)  # two polls with the hostile value
            sma.set_battery(path, 20.0 if path == "/Dc/0/Temperature" else 100.0)
            sma.set_battery("/Test/Hold", 0)
    worst = gaps_ok(sma, t0)
    assert sma.bridge.proc.poll() is None
    assert "Traceback" not in sma.bridge.output
    assert sma.vebus("/CanBridge/BuildFailures") == 0
    record("nan_inf", fault="NaN / ±inf in the battery's /Dc/0/Temperature, /Soh, "
           "/InstalledCapacity (9 values, 2 s each)",
           expected="invalid at the edge; temperature falls back to the Sunny Island's 0x305; "
           "no build failure; 0x351 never pauses", detect=None,
           signal="nothing to detect", note=f"0x351 gap max {worst:.2f} s")


def test_strings_empty_arrays_and_bools_are_invalid_not_open_limits(sma: SmaSystem) -> None:
    """A string where a number belongs, Venus's empty array, a bool: invalid at the edge.
    An invalid charge limit or allow-to-charge means CCL 0 (not "no limit"); an invalid
    temperature falls back to the Sunny Island's own 0x305 temperature."""
    sma.start_si()
    sma.start_battery()
    sma.start_bridge(settings={"CurrentSlewRate": 100.0})
    sma.wait_vebus("/CanBridge/Ladder", lambda v: v == "normal", 10)
    sma.tap.wait(lambda m: is_351(m) and limits(m)["ChargeCurrentLimit"] > 20, 10,
                 sma.tap.mark())
    t0 = time.monotonic()
    empty = dbus.Array([], signature="i")
    detect: list[float] = []
    for path, bad in (("/Info/MaxChargeCurrent", "lots"), ("/Info/MaxChargeCurrent", empty),
                      ("/Io/AllowToCharge", empty), ("/Io/AllowToCharge", 2),
                      ("/Alarms/HighChargeCurrent", "x")):
        mark = sma.tap.mark()
        t_set = time.monotonic()
        sma.set_battery(path, bad)
        t, _ = sma.tap.wait(lambda m: is_351(m) and limits(m)["ChargeCurrentLimit"] == 0, 4,
                            mark)
        detect.append(t - t_set)
        # (identical log lines are rate-limited by the logging setup: look from the start)
        sma.bridge.wait_for(f"publishes invalid .*{path.lstrip('/')}.*no charging", 4)
        sma.set_battery(path, {"/Info/MaxChargeCurrent": 150.0, "/Io/AllowToCharge": 1,
                               "/Alarms/HighChargeCurrent": 0}[path])
        sma.tap.wait(lambda m: is_351(m) and limits(m)["ChargeCurrentLimit"] > 0, 6,
                     sma.tap.mark())
    # temperature as a string: the Sunny Island's fresh 0x305 temperature (20 °C) is used
    sma.set_battery("/Test/Hold", 1)
    sma.set_battery("/Dc/0/Temperature", "warm")
    time.sleep(2.5)
    _, m = sma.tap.wait(is_351, 2, sma.tap.mark())
    assert limits(m)["ChargeCurrentLimit"] > 0
    worst = gaps_ok(sma, t0)
    assert "Traceback" not in sma.bridge.output
    record("invalid_values", fault="a string, an empty array or 2 in /Info/MaxChargeCurrent, "
           "/Io/AllowToCharge, /Alarms/HighChargeCurrent",
           expected="invalid safety value: CCL 0 and a log line naming the path; back when valid",
           detect=max(detect), signal="first 0x351 with CCL 0 (worst of 5)",
           note=f"0x351 gap max {worst:.2f} s")


def test_frozen_battery_values_stop_charging(sma: SmaSystem) -> None:
    """A service that answers but whose values never change: the age comes from the
    source's own updates; after FrozenDataTime, no charging, with a log line."""
    sma.start_si()
    sma.start_battery()
    sma.start_bridge(settings={"FrozenDataTime": 60.0})
    sma.wait_vebus("/CanBridge/Ladder", lambda v: v == "normal", 10)
    sma.set_battery("/Test/Hold", 1)   # the service keeps answering, values frozen
    t0 = time.monotonic()
    reasons = sma.wait_vebus("/CanBridge/ChargeReasons",
                             lambda v: v is not None and "unchanged" in v, 75)
    assert time.monotonic() - t0 >= 55
    assert "battery values unchanged for 1 min" in reasons
    t, m = sma.tap.wait(is_351, 2, sma.tap.mark())
    assert limits(m)["ChargeCurrentLimit"] == 0
    record("frozen", fault="battery service answers, values never change (FrozenDataTime 60 s)",
           expected="no charging after FrozenDataTime, reason on /CanBridge/ChargeReasons",
           detect=t - t0, signal="0x351 with CCL 0 after the values froze")
    sma.set_battery("/Test/Hold", 0)
    sma.tap.wait(lambda x: is_351(x) and limits(x)["ChargeCurrentLimit"] > 0, 10,
                 sma.tap.mark())


def test_exception_in_every_stage_sends_the_safe_set(sma: SmaSystem) -> None:
    inject = sma.workdir / "inject"
    sma.start_si()
    sma.start_battery()
    sma.start_bridge(env={"CANBRIDGE_SMA_INJECT": str(inject)},
                     settings={"MaxSendFailureTime": 60.0})
    sma.wait_vebus("/CanBridge/Ladder", lambda v: v == "normal", 10)
    t0 = time.monotonic()
    detect: list[float] = []
    for stage in ("inputs", "controller", "encoder"):
        mark_log = sma.bridge.mark()
        mark0 = sma.tap.mark()
        t_inj = time.monotonic()
        inject.write_text(stage)
        t_safe, _ = sma.tap.wait(lambda x: is_351(x) and limits(x)["ChargeCurrentLimit"] == 0,
                                 3, mark0)
        detect.append(t_safe - t_inj)
        sma.bridge.wait_for(f"building the BMS frames failed .*{stage} stage.*safe set", 4,
                            mark_log)
        mark = sma.tap.mark()
        _, m = sma.tap.wait(is_351, 2, mark)
        assert limits(m)["ChargeCurrentLimit"] == 0
        _, a = sma.tap.wait(lambda x: x.arbitration_id == 0x35A, 2, mark)
        assert "General" in alarms_of(a)
        _, s = sma.tap.wait(lambda x: x.arbitration_id == 0x355, 2, mark)
        assert 1 <= s.data[0] <= 100  # the last SoC sent, never 0
        time.sleep(2.0)
        inject.write_text("")
        sma.tap.wait(lambda x: is_351(x) and limits(x)["ChargeCurrentLimit"] > 0, 10,
                     sma.tap.mark())
    worst = gaps_ok(sma, t0)
    assert sma.vebus("/CanBridge/BuildFailures") >= 6
    assert sma.bridge.proc.poll() is None
    record("stage_exception", fault="exception in the frame build (inputs, controller, "
           "encoder stage; 2 s each)", expected="safe set (CCL 0, last SoC, alarm bit) every "
           "tick, logged, counted; normal frames when it stops",
           detect=max(detect), signal="first 0x351 with CCL 0 (worst of 3 stages)",
           note=f"0x351 gap max {worst:.2f} s")


def test_repeated_build_failure_exits_for_the_supervisor(sma: SmaSystem) -> None:
    inject = sma.workdir / "inject"
    sma.start_si()
    sma.start_battery()
    sma.start_bridge(env={"CANBRIDGE_SMA_INJECT": str(inject)},
                     settings={"MaxSendFailureTime": 5.0})
    sma.tap.wait(is_351, 5, sma.tap.mark())
    t0 = time.monotonic()
    inject.write_text("controller")
    sma.bridge.proc.wait(20)
    assert sma.bridge.proc.returncode == 1
    t_exit = time.monotonic() - t0
    assert 4.0 <= t_exit < 12.0
    record("build_failing", fault="frame build fails on every tick (MaxSendFailureTime 5 s)",
           expected="safe set until the limit, then exit 1 for the supervisor",
           detect=t_exit, signal="process exit")
    assert "injected fault in the controller stage" in sma.bridge.output
    sent = sma.tap.times(0x351, since=t0)
    assert len(sent) >= 4


def test_exception_in_the_poll_timer_exits_for_the_supervisor(sma: SmaSystem) -> None:
    """PyGObject drops a raising timeout silently; the guard logs and exits instead."""
    inject = sma.workdir / "inject"
    sma.start_si()
    sma.start_battery()
    sma.start_bridge(env={"CANBRIDGE_SMA_INJECT": str(inject)})
    sma.wait_vebus("/CanBridge/Ladder", lambda v: v == "normal", 10)
    t0 = time.monotonic()
    inject.write_text("poll")
    sma.bridge.proc.wait(15)
    assert sma.bridge.proc.returncode == 1
    t_exit = time.monotonic() - t0
    assert t_exit < 5.0
    record("poll_exception", fault="exception in the main loop's poll timer",
           expected="traceback logged, counters persisted, exit 1 for the supervisor "
           "(PyGObject alone drops the timer silently)", detect=t_exit,
           signal="process exit")
    out = sma.bridge.output
    assert "Traceback" in out and "injected fault in the poll stage" in out
    assert "dbus-sma poll failed" in out and "exiting so the supervisor restarts us" in out
    assert "energy counters saved" in out
    assert math.isfinite(t0)
