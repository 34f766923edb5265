"""The simulated batteries can carry the simulated Sunny Island's current (``--follow-si``)."""

from __future__ import annotations

import can

from driver.sma import frames
from sim.superb import SiFollower, make_batteries


def frame_305(charging_a: float):  # type: ignore[no-untyped-def]
    # 0x305 carries the current with + = discharging
    return frames.encode_signals(0x305, {"SiBatteryVoltage": 52.0,
                                         "SiBatteryCurrent": -charging_a,
                                         "SiBatteryTemperature": 25.0, "SiSoc": 60.0})


def test_batteries_take_an_equal_share_of_the_sunny_islands_current():
    batteries = make_batteries([1, 2, 3], nominal_voltage=51.2)
    now = [100.0]
    follower = SiFollower(batteries, stale=5.0, clock=lambda: now[0])
    follower.on_message(frame_305(30.0))
    for b in batteries:
        assert b.external_current == 10.0
        b.step(0.1)
        assert b.values["current"] == 10.0
    follower.on_message(frame_305(-45.0))
    batteries[0].step(0.1)
    assert batteries[0].values["current"] == -15.0


def test_other_frames_are_ignored_and_a_quiet_sunny_island_hands_back_to_the_model():
    batteries = make_batteries([1, 2])
    now = [100.0]
    follower = SiFollower(batteries, stale=5.0, clock=lambda: now[0])
    follower.on_message(can.Message(arbitration_id=0x300, data=bytes(8)))
    assert all(b.external_current is None for b in batteries)
    follower.on_message(frame_305(8.0))
    now[0] += 4.0
    follower.expire()
    assert batteries[0].external_current == 4.0
    now[0] += 2.0
    follower.expire()
    assert all(b.external_current is None for b in batteries)
