"""The poller against simulated batteries in this process (python-can virtual bus):
TPDOs replace polling, one SDO transaction per node at a time, send failures (ENOBUFS)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import can
import pytest

from driver.superb.canport import CanPort
from driver.superb.poller import NodePoller, NodeReport, PollConfig
from driver.superb.scan import scan
from sim.superb import Simulator, make_batteries


class FlakyBus(can.BusABC):
    """A virtual bus whose sends fail like a full socketcan queue while ``failing`` is set."""

    def __init__(self, channel: str) -> None:
        self.inner = can.Bus(interface="virtual", channel=channel)
        self.failing = threading.Event()
        super().__init__(channel=channel)

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        if self.failing.is_set():
            raise can.CanOperationError("Failed to transmit: [Errno 105] No buffer space")
        self.inner.send(msg, timeout)

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        return self.inner.recv(timeout), False

    def shutdown(self) -> None:
        self.inner.shutdown()
        super().shutdown()


class Rig:
    def __init__(self, channel: str, nodes: list[int], **kw: Any) -> None:
        self.sim = Simulator(can.Bus(interface="virtual", channel=channel),
                             make_batteries(nodes, **kw), heartbeat_period=0.2)
        self.sim.start()
        self.buses: list[FlakyBus] = []

        def factory(iface: str, rate: int) -> can.BusABC:
            bus = FlakyBus(iface)
            self.buses.append(bus)
            return bus

        self.port = CanPort(channel, 250000, factory)
        self.port.start()
        assert self.port.wait_open(2)
        self.config = PollConfig(interval=0.1, sdo_timeout=0.05, heartbeat_timeout=0.6)
        self.reports: dict[int, NodeReport] = {}
        self.cond = threading.Condition()
        self.pollers: list[NodePoller] = []

    def poll(self, *nodes: int) -> None:
        for n in nodes:
            p = NodePoller(n, self.port, lambda: self.config, self._got)
            self.pollers.append(p)
            p.start()

    def _got(self, r: NodeReport) -> None:
        with self.cond:
            self.reports[r.node_id] = r
            self.cond.notify_all()

    def wait(self, pred: Callable[[dict[int, NodeReport]], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(self.reports):
                left = deadline - time.monotonic()
                assert left > 0, f"condition not met; reports: {self.reports}"
                self.cond.wait(left)

    def close(self) -> None:
        for p in self.pollers:
            p.stop()
        self.port.stop()
        self.sim.close()


@pytest.fixture
def rig(request: pytest.FixtureRequest) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(nodes: list[int], **kw: Any) -> Rig:
        r = Rig(f"t-{request.node.name}", nodes, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def test_tpdo_objects_are_not_polled(rig: Callable[..., Rig]) -> None:
    r = rig([1, 2], tpdo=[2])
    r.poll(1, 2)
    r.wait(lambda rs: 2 in rs and rs[2].online and "voltage" in rs[2].tpdo_keys)
    before = dict(r.sim.batteries[2].requests)
    r.wait(lambda rs: r.sim.batteries[2].requests.get("upload 6081:00", 0)
           >= before.get("upload 6081:00", 0) + 5)
    after = r.sim.batteries[2].requests
    assert after.get("upload 6060:00", 0) == before.get("upload 6060:00", 0)
    assert after.get("upload 2010:00", 0) == before.get("upload 2010:00", 0)
    assert r.reports[2].values["voltage"] == pytest.approx(
        r.sim.batteries[2].snapshot()["voltage"], abs=0.05)
    assert r.sim.batteries[1].requests.get("upload 6060:00", 0) > 5  # node 1 has no TPDO


def test_one_transaction_per_node_with_scan_running(rig: Callable[..., Rig]) -> None:
    r = rig([1, 2, 3], latency=0.003)
    spy = can.Bus(interface="virtual", channel=r.port.interface)
    outstanding: dict[int, int] = {}
    overlaps: list[int] = []

    def watch() -> None:
        while not stop.is_set():
            msg = spy.recv(0.05)
            if msg is None:
                continue
            node, func = msg.arbitration_id & 0x7F, msg.arbitration_id & 0x780
            if func == 0x600 and msg.data[0] >> 5 in (2, 3):
                outstanding[node] = outstanding.get(node, 0) + 1
                if outstanding[node] > 1:
                    overlaps.append(node)
            elif func == 0x580 or (func == 0x600 and msg.data[0] >> 5 == 4):
                outstanding[node] = 0

    stop = threading.Event()
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    r.poll(1, 2, 3)
    r.wait(lambda rs: all(n in rs and rs[n].online for n in (1, 2, 3)))
    known = {n: {} for n in (1, 2, 3)}  # polled but pretend identity unknown: scan asks too
    for _ in range(3):
        found = scan(r.port, [1, 2, 3, 4, 5], known, timeout=0.05)
        assert [f["node"] for f in found] == [1, 2, 3]
    stop.set()
    t.join(2)
    spy.shutdown()
    assert not overlaps, f"concurrent SDO transactions to nodes {sorted(set(overlaps))}"


def test_send_failures_take_node_offline_and_recover(rig: Callable[..., Rig]) -> None:
    r = rig([1])
    r.poll(1)
    r.wait(lambda rs: 1 in rs and rs[1].online)
    r.buses[-1].failing.set()
    r.wait(lambda rs: not rs[1].online and rs[1].counters.bus_errors >= 3)
    assert rs_values_empty(r.reports[1])
    r.buses[-1].failing.clear()
    r.wait(lambda rs: rs[1].online and rs[1].values.get("voltage") is not None)


def rs_values_empty(rep: NodeReport) -> bool:
    return rep.values == {}
