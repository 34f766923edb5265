"""A SuperB-like CANopen node written like a small embedded stack, directly on python-can.

Unlike ``sim/superb.py`` (canopen's ``LocalNode``, answers by the book), this node is written
from the frame layout of CiA 301 and the object list of the SuperB Epsilon V2 with its own,
hand-written object dictionary (no import of the driver's object table), and it has the quirks
a real installation shows, each configurable:

* ``latency`` + ``jitter``: every answer after latency + uniform(0, jitter) seconds;
* ``stale_every=N``: every Nth request is first answered with a repeat of the previous answer
  (another object's multiplexer), then with the right answer;
* ``late_every=N``: every Nth answer comes after ``late`` seconds (later than the client's
  timeout), while the node goes on answering the next requests;
* ``short_every=N``: every Nth answer is cut to 2 bytes (DLC 2) and the right one never comes;
* ``unsized``: expedited answers without the size indicated (4 data bytes, the rest padding);
* ``missing``: objects answered with "object does not exist" (0x06020000) or, for a sub-index
  of an object that exists, "sub-index does not exist" (0x06090011);
* ``aborts``: objects answered with a given abort code (e.g. 0x08000024 no data, transient);
* ``silent``: objects the node never answers (the rest still answer).

Requests are counted per node (initiate uploads); the Nth in each rule counts from the first.
Segmented uploads (1008, 100A strings) follow the protocol, toggle bit included.

In-process (tests, benchmarks)::

    node = QuirkyNode(4, serial=2300004, stale_every=7, late_every=5, late=0.45)
    peer = QuirkyPeer(can.Bus(interface="virtual", channel="x"), [node]); peer.start()

As a process (``make demo``), with the control commands of ``sim/superb.py`` (``set``, ``get``,
``stats``, ``vanish``/``back``, ``nosdo``/``sdo``, ``hold``) plus ``quirk N NAME VALUE``,
``missing N IDX SUB`` / ``present N IDX SUB``, ``silent N IDX SUB`` / ``answer N IDX SUB`` and
``abort N IDX SUB CODE`` / ``unabort N IDX SUB``::

    python -m sim.superb_quirky --nodes 4 --stale-every 7 --late-every 5 [--unsized] ...

Nothing here opens a socket off 127.0.0.1.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import math
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import can

log = logging.getLogger("sim.superb_quirky")

ABORT_NOT_EXIST = 0x06020000
ABORT_NO_SUB = 0x06090011
ABORT_NO_DATA = 0x08000024


@dataclass(frozen=True)
class Entry:
    """One object of the node's dictionary: value key, wire type and scale."""

    key: str
    kind: str  #: "u", "i" or "str"
    size: int  #: bytes (0 for strings)
    scale: float = 1.0
    min_fw: tuple[int, ...] = ()


#: The node's object dictionary, written from PROTOCOLS.md §1 by hand (not the driver's table).
DICTIONARY: dict[tuple[int, int], Entry] = {
    (0x6060, 0): Entry("voltage", "u", 4, 1 / 1024),
    (0x2010, 0): Entry("current", "i", 4, 0.001),
    (0x6081, 0): Entry("soc", "u", 1),
    (0x6010, 0): Entry("temperature", "i", 2, 0.125),
    (0x2004, 0): Entry("errors", "u", 2),
    (0x2005, 0): Entry("warnings", "u", 2),
    (0x5021, 1): Entry("max_discharge_current", "i", 4, 0.001),
    (0x5021, 2): Entry("max_charge_current", "i", 4, 0.001),
    (0x6050, 0): Entry("cycles", "u", 2),
    (0x6051, 0): Entry("ah_expended", "u", 2, 0.125, (1, 2)),
    (0x6052, 0): Entry("ah_returned", "u", 2, 0.125, (1, 2)),
    (0x6053, 0): Entry("ah_since_equalization", "u", 2, 0.125),
    (0x6070, 0): Entry("charge_current_request", "u", 2, 1 / 16),
    (0x2022, 1): Entry("cell_voltage_min", "i", 2, 0.001),
    (0x2022, 2): Entry("cell_voltage_max", "i", 2, 0.001),
    (0x2023, 1): Entry("cell_temperature_min", "i", 2, 0.1),
    (0x2023, 2): Entry("cell_temperature_max", "i", 2, 0.1),
    (0x2006, 0): Entry("awake", "u", 1),
    (0x1017, 0): Entry("heartbeat_ms", "u", 2),
    (0x1018, 1): Entry("vendor", "u", 4),
    (0x1018, 2): Entry("product", "u", 4),
    (0x1018, 3): Entry("revision", "u", 4),
    (0x1018, 4): Entry("serial", "u", 4),
    (0x1008, 0): Entry("device_name", "str", 0),
    (0x100A, 0): Entry("software_version", "str", 0),
    (0x6020, 1): Entry("battery_type", "u", 1),
    (0x6020, 2): Entry("capacity", "u", 2),
    (0x6020, 3): Entry("rated_charge_current", "u", 2),
    (0x6020, 4): Entry("cells", "u", 1),
}
#: records: sub-index 0 is the number of entries
RECORDS = {0x1018: 4, 0x5021: 2, 0x2022: 2, 0x2023: 2, 0x6020: 4}


class QuirkyNode:
    """One node: its values, its quirks and its SDO server state."""

    def __init__(self, node_id: int, serial: int, *, firmware: tuple[int, ...] = (1, 3, 0),
                 latency: float = 0.002, jitter: float = 0.0, stale_every: int = 0,
                 late_every: int = 0, late: float = 0.5, short_every: int = 0,
                 unsized: bool = False, pad: int = 0x00,
                 missing: set[tuple[int, int]] | None = None, capacity: float = 100.0,
                 nominal_voltage: float = 12.8, seed: int | None = None,
                 phase: float = 0.0) -> None:
        self.node_id = node_id
        self.firmware = firmware
        self.latency, self.jitter = latency, jitter
        self.stale_every, self.late_every, self.late = stale_every, late_every, late
        self.short_every = short_every
        self.unsized, self.pad = unsized, pad
        self.missing: set[tuple[int, int]] = set(missing or ())
        self.aborts: dict[tuple[int, int], int] = {}
        self.silent: set[tuple[int, int]] = set()
        self.rng = random.Random(seed)
        self.phase = phase
        self.lock = threading.Lock()
        self.sdo_enabled = True
        self.heartbeat = True
        self.hold = True
        self.external_current: float | None = None  #: set by sim.superb.SiFollower
        self.values: dict[str, Any] = {
            "voltage": 13.25, "current": 0.0, "soc": 64.0, "temperature": 20.5, "errors": 0,
            "warnings": 0, "max_discharge_current": 150.0, "max_charge_current": 100.0,
            "cycles": 37, "ah_expended": 10.0, "ah_returned": 25.0,
            "ah_since_equalization": 30.0, "charge_current_request": 50.0,
            "cell_voltage_min": 3.305, "cell_voltage_max": 3.318,
            "cell_temperature_min": 20.0, "cell_temperature_max": 21.0, "awake": 1,
            "heartbeat_ms": 1000, "vendor": 0x37C, "product": 0x0E12,
            "revision": (firmware[0] << 16) | firmware[1], "serial": serial,
            "device_name": "Epsilon V2 12V100Ah",
            "software_version": ".".join(map(str, firmware)),
            "battery_type": 1, "capacity": capacity, "rated_charge_current": 100, "cells": 4,
        }
        self.capacity_ah = capacity
        self.nominal = nominal_voltage
        if nominal_voltage != 12.8:  # a 24/48 V pack: 8/16 cells of the same chemistry
            k = nominal_voltage / 12.8
            self.values.update(voltage=round(13.25 * k, 3), cells=round(4 * k))
        self._count = 0  #: initiate-upload requests received
        self._last_answer: bytes | None = None
        self._segment: tuple[bytes, int, int] | None = None  # (data, position, next toggle)
        self.stats: dict[str, int] = {}

    # -- bookkeeping ---------------------------------------------------------------------------
    def _stat(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    def set_value(self, key: str, value: Any) -> None:
        with self.lock:
            if key not in self.values:
                raise KeyError(key)
            cur = self.values[key]
            self.values[key] = value if isinstance(cur, str) else type(cur)(float(value))

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.values)

    def step(self, dt: float) -> None:
        """Let the values move a little (demo); nothing moves while ``hold`` is set."""
        with self.lock:
            if self.hold and self.external_current is None:
                return
            v = self.values
            if self.external_current is not None:
                current = self.external_current
            else:
                current = 20.0 * math.sin(time.monotonic() / 40.0 + self.phase)
            v["current"] = round(current, 3)
            v["soc"] = max(0.0, min(100.0, v["soc"] + current * dt / 36.0 / self.capacity_ah
                                    * 30.0))
            k = self.nominal / 12.8
            v["voltage"] = round((12.9 + 0.4 * v["soc"] / 100.0 + 0.004 * current) * k, 4)
            v["cell_voltage_min"] = round(v["voltage"] / v["cells"] - 0.006, 3)
            v["cell_voltage_max"] = round(v["voltage"] / v["cells"] + 0.006, 3)

    # -- encoding (CiA 301 expedited / segmented upload) ---------------------------------------
    def _encode(self, entry: Entry) -> bytes:
        value = self.values[entry.key]
        if entry.kind == "str":
            return str(value).encode("ascii")
        raw = round(float(value) / entry.scale)
        return int(raw).to_bytes(entry.size, "little", signed=entry.kind == "i")

    def _lookup(self, index: int, sub: int) -> bytes | int:
        """The object's bytes, or an abort code."""
        if (index, sub) in self.aborts:
            return self.aborts[(index, sub)]
        if (index, sub) in self.missing:
            return ABORT_NO_SUB if index in RECORDS and sub != 0 else ABORT_NOT_EXIST
        if sub == 0 and index in RECORDS:
            return bytes([RECORDS[index]])
        entry = DICTIONARY.get((index, sub))
        if entry is None or (entry.min_fw and self.firmware < entry.min_fw):
            return ABORT_NO_SUB if index in RECORDS else ABORT_NOT_EXIST
        return self._encode(entry)

    @staticmethod
    def _abort(index: int, sub: int, code: int) -> bytes:
        return bytes([0x80]) + index.to_bytes(2, "little") + bytes([sub]) + \
            code.to_bytes(4, "little")

    def answer(self, request: bytes, now: float) -> list[tuple[float, bytes]]:
        """What the node sends for one request: [(when, frame data)] (lock held by caller)."""
        if len(request) < 1:
            return []
        ccs = request[0] >> 5
        delay = self.latency + (self.rng.uniform(0.0, self.jitter) if self.jitter else 0.0)
        if ccs == 4:  # the client aborted: forget a segmented transfer in progress
            self._segment = None
            self._stat("client aborts")
            return []
        if ccs == 3:  # upload segment
            self._stat("upload-segment")
            if self._segment is None:
                return [(now + delay, self._abort(0, 0, 0x05040001))]
            data, pos, toggle = self._segment
            if request[0] & 0x10 != toggle:
                return [(now + delay, self._abort(0, 0, 0x05030000))]
            chunk = data[pos:pos + 7]
            last = pos + 7 >= len(data)
            cmd = toggle | ((7 - len(chunk)) << 1) | (1 if last else 0)
            self._segment = None if last else (data, pos + 7, toggle ^ 0x10)
            return [(now + delay, bytes([cmd]) + chunk.ljust(7, b"\0"))]
        if ccs != 2 or len(request) < 4:
            self._stat("other")
            return [(now + delay, self._abort(0, 0, 0x05040001))]
        index = int.from_bytes(request[1:3], "little")
        sub = request[3]
        self._count += 1
        k = self._count
        self._stat("upload")
        self._stat(f"upload {index:04X}:{sub:02X}")
        if (index, sub) in self.silent:
            self._stat("ignored")
            return []
        found = self._lookup(index, sub)
        mux = request[1:4]
        if isinstance(found, int):
            frame = self._abort(index, sub, found)
        elif len(found) <= 4:
            if self.unsized:
                frame = bytes([0x42]) + mux + found.ljust(4, bytes([self.pad]))
            else:
                frame = bytes([0x43 | ((4 - len(found)) << 2)]) + mux + found.ljust(4, b"\0")
        else:
            self._segment = (found, 0, 0x00)
            frame = bytes([0x41]) + mux + len(found).to_bytes(4, "little")
        out: list[tuple[float, bytes]] = []
        if self.stale_every and k % self.stale_every == 0 and self._last_answer is not None:
            out.append((now + delay / 2, self._last_answer))
            self._stat("stale sent")
        when = now + delay
        if self.late_every and k % self.late_every == 0:
            when = now + self.late
            self._stat("late sent")
        if self.short_every and k % self.short_every == 0:
            out.append((when, frame[:2]))
            self._stat("short sent")
        else:
            out.append((when, frame))
        self._last_answer = frame
        return out


class QuirkyPeer:
    """Quirky nodes on one python-can bus: receive thread, timed sender, heartbeats."""

    def __init__(self, bus: can.BusABC, nodes: list[QuirkyNode],
                 heartbeat_period: float = 1.0) -> None:
        self.bus = bus
        self.nodes = {n.node_id: n for n in nodes}
        self.hb_period = heartbeat_period
        self._heap: list[tuple[float, int, int, bytes]] = []
        self._seq = 0
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True, name=f"quirky-{f.__name__}")
                         for f in (self._receive, self._sender, self._clock)]

    def start(self) -> None:
        for n in self.nodes.values():
            self._send(0x700 + n.node_id, b"\x00")  # boot-up
        for t in self._threads:
            t.start()

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(2)
        self.bus.shutdown()

    def _send(self, can_id: int, data: bytes) -> None:
        try:
            with self._send_lock:
                self.bus.send(can.Message(arbitration_id=can_id, data=data, is_extended_id=False))
        except can.CanError as exc:
            log.warning("cannot send 0x%03X: %s", can_id, exc)

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.bus.recv(0.1)
            except can.CanError:
                continue
            if msg is None or msg.is_extended_id or msg.is_remote_frame or msg.is_error_frame:
                continue
            if msg.arbitration_id & 0x780 != 0x600:
                continue
            node = self.nodes.get(msg.arbitration_id & 0x7F)
            if node is None:
                continue
            now = time.monotonic()
            with node.lock:
                if not node.sdo_enabled:
                    continue
                frames = node.answer(bytes(msg.data), now)
            with self._cond:
                for when, data in frames:
                    self._seq += 1
                    heapq.heappush(self._heap, (when, self._seq, 0x580 + node.node_id, data))
                self._cond.notify_all()

    def _sender(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                while not self._heap and not self._stop.is_set():
                    self._cond.wait(0.2)
                if self._stop.is_set():
                    return
                when, _, can_id, data = self._heap[0]
                left = when - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._heap)
            self._send(can_id, data)

    def _clock(self) -> None:
        next_hb = time.monotonic()
        last = time.monotonic()
        while not self._stop.wait(0.1):
            now = time.monotonic()
            for n in self.nodes.values():
                n.step(now - last)
            last = now
            if now >= next_hb:
                next_hb = now + self.hb_period
                for n in self.nodes.values():
                    if n.heartbeat:
                        self._send(0x700 + n.node_id, b"\x05")

    # -- control (the commands of sim/superb.py where they apply) -------------------------------
    def command(self, line: str) -> str:
        parts = line.split()
        if not parts:
            return "ERR empty"
        cmd, args = parts[0], parts[1:]
        if cmd == "nodes":
            return "OK " + ",".join(str(n) for n in sorted(self.nodes))
        try:
            n = self.nodes[int(args[0])]
        except (ValueError, KeyError, IndexError):
            return "ERR no such node"
        if cmd == "set":
            try:
                n.set_value(args[1], args[2])
            except KeyError:
                return f"ERR unknown key {args[1]}"
            return "OK"
        if cmd == "get":
            return "OK " + json.dumps(n.snapshot())
        with n.lock:
            if cmd == "stats":
                return "OK " + json.dumps(n.stats)
            if cmd in ("vanish", "back"):
                n.sdo_enabled = n.heartbeat = cmd == "back"
            elif cmd in ("nosdo", "sdo"):
                n.sdo_enabled = cmd == "sdo"
            elif cmd == "hold":
                n.hold = bool(int(args[1]))
            elif cmd == "quirk":
                name, value = args[1], args[2]
                if name in ("stale_every", "late_every", "short_every"):
                    setattr(n, name, int(value))
                elif name in ("latency", "jitter", "late"):
                    setattr(n, name, float(value) / 1000.0)  # milliseconds
                elif name == "unsized":
                    n.unsized = bool(int(value))
                else:
                    return f"ERR unknown quirk {name}"
            elif cmd in ("silent", "answer"):
                addr = (int(args[1], 16), int(args[2], 16))
                if cmd == "silent":
                    n.silent.add(addr)
                else:
                    n.silent.discard(addr)
            elif cmd in ("missing", "present"):
                addr = (int(args[1], 16), int(args[2], 16))
                if cmd == "missing":
                    n.missing.add(addr)
                else:
                    n.missing.discard(addr)
            elif cmd == "abort":
                n.aborts[(int(args[1], 16), int(args[2], 16))] = int(args[3], 16)
            elif cmd == "unabort":
                n.aborts.pop((int(args[1], 16), int(args[2], 16)), None)
            else:
                return f"ERR unknown command {cmd}"
        return "OK"


def _addresses(text: str) -> set[tuple[int, int]]:
    out = set()
    for part in filter(None, text.split(",")):
        idx, _, sub = part.partition(":")
        out.add((int(idx, 16), int(sub or "0", 16)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="A quirky SuperB-like CANopen node (python-can).")
    ap.add_argument("--nodes", default="4")
    ap.add_argument("--channel", default="vecan0")
    ap.add_argument("--serial-base", type=int, default=2300000)
    ap.add_argument("--latency-ms", type=float, default=3.0)
    ap.add_argument("--jitter-ms", type=float, default=4.0)
    ap.add_argument("--stale-every", type=int, default=7)
    ap.add_argument("--late-every", type=int, default=5)
    ap.add_argument("--late-ms", type=float, default=450.0, help="delay of a late answer")
    ap.add_argument("--short-every", type=int, default=0)
    ap.add_argument("--unsized", action="store_true", help="expedited answers without size")
    ap.add_argument("--missing", default="2014:00",
                    help="objects that do not exist, e.g. 2014:00,6070:00")
    ap.add_argument("--capacity", type=float, default=100.0)
    ap.add_argument("--nominal-voltage", type=float, default=12.8)
    ap.add_argument("--si-batteries", type=int, default=0,
                    help="batteries sharing the Sunny Island's current (0: ours)")
    ap.add_argument("--moving", action="store_true", help="let the values move")
    ap.add_argument("--control-port", type=int, default=0)
    ap.add_argument("--follow-si", metavar="CHANNEL", default="")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from driver.canbus import open_bus
    from driver.schema import parse_node_ids
    from sim.superb import ControlServer, SiFollower

    nodes = [QuirkyNode(n, args.serial_base + n, latency=args.latency_ms / 1000,
                        jitter=args.jitter_ms / 1000, stale_every=args.stale_every,
                        late_every=args.late_every, late=args.late_ms / 1000,
                        short_every=args.short_every, unsized=args.unsized,
                        missing=_addresses(args.missing), capacity=args.capacity,
                        nominal_voltage=args.nominal_voltage, phase=n * 1.3)
             for n in parse_node_ids(args.nodes)]
    for n in nodes:
        n.hold = not args.moving
    peer = QuirkyPeer(open_bus(args.channel), nodes)
    server = ControlServer(peer, args.control_port)  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True, name="quirky-control").start()
    peer.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"SIMCONTROL=127.0.0.1:{server.server_address[1]}", flush=True)
    log.info("quirky SuperB nodes %s on %s", args.nodes, args.channel)
    follower = None
    if args.follow_si:
        follower = SiFollower(nodes, total=args.si_batteries)  # type: ignore[arg-type]
        si_bus = open_bus(args.follow_si, 500000)
        si_notifier = can.Notifier(si_bus, [follower.on_message], timeout=0.2)
    while not stop.wait(1.0):
        if follower is not None:
            follower.expire()
    if follower is not None:
        si_notifier.stop()
        si_bus.shutdown()
    server.shutdown()
    peer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
