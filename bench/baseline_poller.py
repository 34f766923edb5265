"""A deliberately simple SuperB poller, in the style of most existing SuperB / Sunny Island scripts.

This is the **baseline** the benchmarks compare CanBridge with, not production code: one shared
python-can bus, a hand-made expedited SDO upload request per object, then a blocking ``recv()``
loop until the matching response (or a timeout), every object of every node one after another,
driven by a GLib timer on the main loop (so the main loop is blocked for the whole cycle). It is
read-only like the driver (SDO upload requests only).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

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


#: what the driver reads in every cycle (temperatures and warnings only every MediumPollInterval)
FAST_OBJECTS = tuple(o for o in objs.OBJECTS if o.rate is objs.Rate.FAST)
#: what the driver reads in a full cycle (every object but the identity), like for like
FULL_OBJECTS = tuple(o for o in objs.OBJECTS
                     if o.rate in (objs.Rate.FAST, objs.Rate.MEDIUM, objs.Rate.SLOW))


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))] if s else float("nan")


def probe_main_loop(setup: Callable[[Any], Callable[[], None]], duration: float,
                    probe_ms: int = 10) -> dict[str, float]:
    """Run a GLib main loop for ``duration`` s with a ``probe_ms`` timer and measure how late it
    fires: the longest lateness is the longest time the main loop was blocked.

    ``setup(GLib)`` is called on the loop before it runs (it adds the work under test: a GLib
    timer, threads handing results over with ``GLib.idle_add``) and returns a clean-up function.
    """
    from gi.repository import GLib

    loop = GLib.MainLoop()
    late: list[float] = []
    due = [0.0]

    def probe() -> bool:
        now = time.monotonic()
        if due[0]:
            late.append(max(0.0, now - due[0]) * 1000)
        due[0] = now + probe_ms / 1000
        return True

    src = GLib.timeout_add(probe_ms, probe)
    cleanup = setup(GLib)
    GLib.timeout_add(int(duration * 1000), lambda: loop.quit() or False)
    loop.run()
    GLib.source_remove(src)  # the default context outlives this loop: leave nothing behind
    cleanup()
    return {"probes": len(late), "late_p50_ms": round(pct(late, 50), 2),
            "late_p99_ms": round(pct(late, 99), 2), "blocked_max_ms": round(max(late), 1)}


def run_on_glib(bus: can.BusABC, nodes: list[int], objects: Iterable[objs.ObjectDef], *,
                interval: float = 1.0, duration: float = 10.0,
                timeout: float = 0.3) -> dict[str, float]:
    """The baseline as such scripts run it: ``cycle()`` from a GLib timer every ``interval`` s
    on the main loop (which also serves D-Bus in those scripts), so the loop is blocked for the
    whole cycle. Returns the main-loop probe figures and the median cycle time."""
    objects = list(objects)
    seconds: list[float] = []

    def setup(GLib: Any) -> Callable[[], None]:
        def tick() -> bool:
            seconds.append(cycle(bus, nodes, objects, timeout).seconds)
            return True

        src = GLib.timeout_add(int(interval * 1000), tick)
        return lambda: GLib.source_remove(src)

    res = probe_main_loop(setup, duration)
    res["cycles"] = len(seconds)
    res["cycle_ms"] = round(statistics.median(seconds) * 1000, 1) if seconds else float("nan")
    return res
