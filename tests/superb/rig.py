"""The driver's CAN port and pollers against quirky SuperB nodes (``sim/superb_quirky.py``) on a
python-can virtual bus, in this process: real frames, the driver's SDO loop, no D-Bus."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import can

from driver.superb.canport import CanPort
from driver.superb.poller import NodePoller, NodeReport, PollConfig
from sim.superb_quirky import QuirkyNode, QuirkyPeer

SERIAL_BASE = 2300000

#: the quirky node's values as the driver must publish them, written from its settings by hand:
#: 13.25 V, 0 A, 64 %, 20.5 °C, no error bits, 150 A discharge and 100 A charge limits,
#: cells 20.0-21.0 °C
EXPECTED_FAST = {"voltage": 13.25, "current": 0.0, "soc": 64, "temperature": 20.5, "errors": 0,
                 "warnings": 0, "max_discharge_current": 150.0, "max_charge_current": 100.0,
                 "cell_temperature_min": 20.0, "cell_temperature_max": 21.0}


class QuirkyRig:
    """Quirky nodes, one CanPort and a NodePoller per node; reports kept in order."""

    def __init__(self, channel: str, nodes: list[QuirkyNode], config: PollConfig,
                 heartbeat_period: float = 0.2) -> None:
        self.channel = channel
        self.nodes = {n.node_id: n for n in nodes}
        self.peer = QuirkyPeer(can.Bus(interface="virtual", channel=channel), nodes,
                               heartbeat_period=heartbeat_period)
        self.peer.start()
        self.port = CanPort(channel, 250000,
                            lambda iface, rate: can.Bus(interface="virtual", channel=iface))
        self.port.start()
        assert self.port.wait_open(2)
        self.config = config
        self.history: dict[int, list[NodeReport]] = {}
        self.arrivals: dict[int, list[float]] = {}  #: monotonic time each report arrived
        self.cond = threading.Condition()
        self.pollers: dict[int, NodePoller] = {}

    def poll(self, *nodes: int) -> None:
        for n in nodes:
            p = NodePoller(n, self.port, lambda: self.config, self._got)
            self.pollers[n] = p
            p.start()

    def _got(self, r: NodeReport) -> None:
        with self.cond:
            self.history.setdefault(r.node_id, []).append(r)
            self.arrivals.setdefault(r.node_id, []).append(time.monotonic())
            self.cond.notify_all()

    def last(self, node: int) -> NodeReport:
        with self.cond:
            return self.history[node][-1]

    def wait(self, what: str, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                try:
                    if pred():
                        return
                except (KeyError, IndexError):
                    pass
                left = deadline - time.monotonic()
                assert left > 0, f"timed out waiting for {what}; last reports: " + repr(
                    {n: h[-1] for n, h in self.history.items() if h})
                self.cond.wait(min(left, 0.1))

    def cycles(self, node: int) -> int:
        with self.cond:
            return len(self.history.get(node, []))

    def close(self) -> None:
        for p in self.pollers.values():
            p.stop(join=False)
        for p in self.pollers.values():
            p.stop()
        self.port.stop()
        self.peer.close()


def node(node_id: int, **quirks: Any) -> QuirkyNode:
    """A quirky node with serial SERIAL_BASE + node_id and fixed values."""
    return QuirkyNode(node_id, SERIAL_BASE + node_id, seed=node_id, **quirks)
