"""A deliberately simple SuperB poller, in the style of most existing SuperB / Sunny Island scripts.

This is the **baseline** the benchmarks compare CanBridge with, not production code: one shared
python-can bus, a hand-made expedited SDO upload request per object, then a blocking ``recv()``
loop until the matching response (or a timeout), every object of every node one after another,
driven by a GLib timer on the main loop (so the main loop is blocked for the whole cycle). It is
read-only like the driver (SDO upload requests only).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import can

from driver.superb import objects as objs

SDO_REQ = 0x600
SDO_RESP = 0x580


@dataclass
class BaselineResult:
    """What one baseline cycle read and how long it took."""

    seconds: float
    values: dict[tuple[int, str], float | int | str | None] = field(default_factory=dict)
    timeouts: int = 0


def upload(bus: can.BusABC, node: int, obj: objs.ObjectDef, timeout: float) -> bytes | None:
    """Expedited SDO upload as simple scripts do it: send, then ``recv()`` until it matches."""
    req = bytes([0x40, obj.index & 0xFF, obj.index >> 8, obj.subindex, 0, 0, 0, 0])
    bus.send(can.Message(arbitration_id=SDO_REQ + node, data=req, is_extended_id=False))
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        msg = bus.recv(left)
        if msg is None:
            return None
        if msg.arbitration_id != SDO_RESP + node or len(msg.data) < 8:
            continue
        d = bytes(msg.data)
        if (d[1] | d[2] << 8) != obj.index or d[3] != obj.subindex:
            continue
        if d[0] == 0x80:  # abort
            return None
        if d[0] & 0xE2 == 0x42:  # expedited upload response
            n = 4 - ((d[0] >> 2) & 3) if d[0] & 0x01 else 4
            return d[4:4 + n]
        return None  # segmented transfers are beyond such scripts


def cycle(bus: can.BusABC, nodes: Iterable[int], objects: Iterable[objs.ObjectDef],
          timeout: float = 0.3) -> BaselineResult:
    """Read every object of every node, one after another."""
    t0 = time.perf_counter()
    result = BaselineResult(0.0)
    objects = list(objects)
    for node in nodes:
        for obj in objects:
            data = upload(bus, node, obj, timeout)
            if data is None:
                result.timeouts += 1
                result.values[(node, obj.key)] = None
                continue
            try:
                result.values[(node, obj.key)] = objs.decode(obj, data)
            except objs.DecodeError:
                result.values[(node, obj.key)] = None
    result.seconds = time.perf_counter() - t0
    return result


FAST_OBJECTS = tuple(o for o in objs.OBJECTS if o.rate is objs.Rate.FAST)
