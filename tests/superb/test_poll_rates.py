"""Poll rates (issue 12's CPU target with issue 11's temperature rule): the temperatures and the
warning bits are read every ``MediumPollInterval``, not every cycle, and each value is judged by
the age limit of its own rate. Real SDO transactions on a python-can virtual bus against
``sim.superb`` nodes; expected numbers written by hand from the configuration the test sets."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import can
import pytest

from driver.superb import battery as bat
from driver.superb.canport import CanPort
from driver.superb.poller import NodePoller, NodeReport, PollConfig
from sim.superb import Simulator, make_batteries

VOLTAGE, CELL_T_MIN, CELL_T_MAX, PACK_T, WARNINGS, ERRORS, LIMIT = (
    "upload 6060:00", "upload 2023:01", "upload 2023:02", "upload 6010:00", "upload 2005:00",
    "upload 2004:00", "upload 5021:02")


class Rig:
    def __init__(self, channel: str) -> None:
        self.sim = Simulator(can.Bus(interface="virtual", channel=channel),
                             make_batteries([1]), heartbeat_period=0.2)
        self.sim.start()
        self.port = CanPort(channel, 250000,
                            lambda iface, rate: can.Bus(interface="virtual", channel=iface))
        self.port.start()
        assert self.port.wait_open(2)
        # 0.1 s cycles, temperatures and warnings every 0.5 s: every 5th cycle
        self.config = PollConfig(interval=0.1, medium_interval=0.5, slow_interval=30.0,
                                 sdo_timeout=0.05, heartbeat_timeout=0.6, max_age=0.3)
        self.reports: list[NodeReport] = []
        self.cond = threading.Condition()
        self.poller = NodePoller(1, self.port, lambda: self.config, self._got)

    def _got(self, r: NodeReport) -> None:
        with self.cond:
            self.reports.append(r)
            self.cond.notify_all()

    def wait_online(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not (self.reports and self.reports[-1].online
                       and self.reports[-1].values.get(bat_key := "cell_temperature_min")
                       is not None):
                left = deadline - time.monotonic()
                assert left > 0, f"node 1 not online with {bat_key}: {self.reports[-1:]}"
                self.cond.wait(left)

    def counts(self) -> dict[str, int]:
        return dict(self.sim.batteries[1].requests)

    def close(self) -> None:
        self.poller.stop()
        self.port.stop()
        self.sim.close()


@pytest.fixture
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    r = Rig(f"rates-{request.node.name}")
    r.poller.start()
    try:
        yield r
    finally:
        r.close()


def _delta(before: dict[str, int], after: dict[str, int], key: str) -> int:
    return after.get(key, 0) - before.get(key, 0)


def test_temperatures_and_warnings_are_read_every_medium_interval(rig: Rig) -> None:
    rig.wait_online()
    before = rig.counts()
    with rig.cond:
        start = len(rig.reports)
    time.sleep(3.0)
    after = rig.counts()
    with rig.cond:
        reports = rig.reports[start:]
    volts, t_min = _delta(before, after, VOLTAGE), _delta(before, after, CELL_T_MIN)
    assert volts >= 15, f"only {volts} voltage reads in 3 s at a 0.1 s interval"
    # every 5th cycle (4-6 with the scheduling tolerance), never every cycle
    assert 3.5 <= volts / max(t_min, 1) <= 7, (volts, t_min)
    assert _delta(before, after, CELL_T_MAX) == pytest.approx(t_min, abs=1)
    assert _delta(before, after, PACK_T) == pytest.approx(t_min, abs=1)
    assert _delta(before, after, WARNINGS) == pytest.approx(t_min, abs=1)
    # the error bits and the battery's own limit decide charging at once: every cycle
    assert _delta(before, after, ERRORS) == pytest.approx(volts, abs=1)
    assert _delta(before, after, LIMIT) == pytest.approx(volts, abs=1)
    # ... and they stay valid in every report in between (their own age limit: 0.5 + 0.3 s)
    online = [r for r in reports if r.online]
    assert online and all(r.values.get("cell_temperature_min") is not None
                          and r.values.get("temperature") is not None for r in online)
    last = online[-1]
    assert last.max_ages["voltage"] == pytest.approx(0.4)
    assert last.max_ages["cell_temperature_min"] == pytest.approx(0.8)
    assert last.max_ages["temperature"] == pytest.approx(0.8)
    assert last.max_ages["warnings"] == pytest.approx(0.8)
    assert last.max_ages["errors"] == pytest.approx(0.4)


def test_a_failed_temperature_read_is_asked_again_in_the_next_cycle(rig: Rig) -> None:
    rig.wait_online()
    rig.sim.batteries[1].aborts.add((0x2023, 1))
    time.sleep(0.5)  # the abort is met by the next due read
    before = rig.counts()
    time.sleep(2.0)
    after = rig.counts()
    volts, t_min = _delta(before, after, VOLTAGE), _delta(before, after, CELL_T_MIN)
    # asked in every cycle, like the voltage (counts taken a moment apart: +-2)
    assert t_min >= volts - 2, (volts, t_min)
    with rig.cond:
        last = rig.reports[-1]
    assert last.values.get("cell_temperature_min") is None
    assert bat.charge_limits(last, bat.Limits(), now=time.monotonic()).ccl == 0
    rig.sim.batteries[1].aborts.discard((0x2023, 1))
    rig.wait_online()
    before = rig.counts()
    time.sleep(2.0)
    after = rig.counts()
    volts, t_min = _delta(before, after, VOLTAGE), _delta(before, after, CELL_T_MIN)
    assert 3.5 <= volts / max(t_min, 1) <= 7, (volts, t_min)


BASE = {"voltage": 13.3, "current": 5.0, "soc": 80, "temperature": 20.0, "errors": 0,
        "warnings": 0, "max_charge_current": 100.0, "max_discharge_current": 150.0,
        "cell_temperature_min": 19.0, "cell_temperature_max": 21.0}
#: the driver's defaults written out: 1 s poll, temperatures and warnings every 5 s, 3 s
#: ValueMaxAge
AGES = {k: 4.0 for k in BASE} | {"temperature": 8.0, "cell_temperature_min": 8.0,
                                  "cell_temperature_max": 8.0, "warnings": 8.0}


def _report(stamps: dict[str, float]) -> NodeReport:
    return NodeReport(node_id=1, online=True, values=dict(BASE), stamps=stamps,
                      max_ages=dict(AGES))


def test_each_value_is_judged_by_the_age_limit_of_its_rate() -> None:
    lim = bat.Limits(value_max_age=4.0)  # what the driver sets for a 1 s poll + 3 s
    now = 1000.0
    fresh = {k: now - 0.5 for k in BASE}
    # temperatures read 7 s ago are within their 8 s: charging allowed
    ok = _report(fresh | {k: now - 7.0 for k in ("temperature", "cell_temperature_min",
                                                  "cell_temperature_max")})
    assert bat.charge_limits(ok, lim, now=now).ccl == 100.0
    # 9 s ago: unknown, no charging
    for key in ("temperature", "cell_temperature_min", "cell_temperature_max"):
        old = _report(fresh | {key: now - 9.0})
        verdict = bat.charge_limits(old, lim, now=now)
        assert verdict.ccl == 0 and not verdict.allow_charge, key
        assert "temperature unknown" in verdict.reasons, (key, verdict.reasons)
    # a value read every cycle does not get the temperatures' 8 s: 5 s old is too old
    stale_limit = _report(fresh | {"max_charge_current": now - 5.0})
    verdict = bat.charge_limits(stale_limit, lim, now=now)
    assert verdict.ccl == 0 and any("5 s old" in why for why in verdict.reasons)
    stale_errors = _report(fresh | {"errors": now - 5.0})
    assert bat.charge_limits(stale_errors, lim, now=now).ccl == 0
