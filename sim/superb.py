"""Simulated SuperB Epsilon V2 batteries: canopen ``LocalNode`` SDO servers on a CAN bus.

Run as a separate process beside the driver, on the loopback CAN link::

    python -m sim.superb --nodes 1,2,3 [--channel vecan0] [--latency-ms 2] [--control-port 0]

Each battery answers SDO uploads from an object dictionary built from the driver's own object
table (:mod:`driver.superb.objects`), sends a heartbeat about every second, and has values that
move plausibly: the current follows a slow charge/discharge cycle, the state of charge follows
the current, voltage follows state of charge and current, temperature follows the load.

Firmware variants: ``--old-firmware 3`` gives node 3 firmware 1.1, which answers 6051/6052 with
an SDO abort (0x06020000). ``--tpdo 2`` makes node 2 transmit TPDO1 (0x180+n) mapping
6060:00 and 2010:00, configured in its 1800/1A00 objects.

``--follow-si can1`` makes the batteries carry the simulated Sunny Island's battery current
(an equal share of its 0x305 current each), as the full simulated system needs (``sim.demo``).

Fault injection through the control port (one text line per command, answer ``OK ...`` or
``ERR ...``; the port is printed as ``SIMCONTROL=127.0.0.1:<port>``)::

    vanish N            stop answering SDO and stop the heartbeat (battery unplugged)
    back N              answer and heartbeat again (sends a boot-up message first if rebooted)
    reboot N            boot-up message, then normal operation
    nosdo N / sdo N     stop / resume answering SDO only
    nohb N / hb N       stop / resume the heartbeat only
    slow N MS           answer every SDO after MS milliseconds
    abort N IDX SUB     answer IDX:SUB (hex) with an SDO abort; unabort N IDX SUB undoes it
    size N KEY BYTES    answer object KEY with BYTES bytes (a wrong-size response)
    set N KEY VALUE     set a value (engineering units: voltage V, current A, soc %, ...)
    hold N 0|1          freeze the battery's values (1) or let them move again (0)
    get N               JSON of the battery's current values
    stats N             JSON of the SDO requests it received, by kind

Nothing here opens a socket off 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import queue
import random
import signal
import socket
import socketserver
import sys
import threading
import time
from typing import Any

import can
import canopen
from canopen.objectdictionary import ODRecord, ODVariable, datatypes
from canopen.sdo.exceptions import SdoAbortedError

from driver.superb import objects as objs

log = logging.getLogger("sim.superb")

_TYPES = {("u", 1): datatypes.UNSIGNED8, ("u", 2): datatypes.UNSIGNED16,
          ("u", 4): datatypes.UNSIGNED32, ("i", 1): datatypes.INTEGER8,
          ("i", 2): datatypes.INTEGER16, ("i", 4): datatypes.INTEGER32}

ABORT_NOT_EXIST = 0x06020000
ABORT_NO_DATA = 0x08000024


def _var(name: str, index: int, sub: int, kind: str, size: int) -> ODVariable:
    var = ODVariable(name, index, sub)
    var.data_type = datatypes.VISIBLE_STRING if kind == "str" else _TYPES[(kind, size)]
    var.access_type = "ro"
    return var


def build_od(firmware: tuple[int, ...], tpdo: bool) -> canopen.ObjectDictionary:
    """The object dictionary of a battery with ``firmware`` (from the driver's table)."""
    od = canopen.ObjectDictionary()
    records: dict[int, ODRecord] = {}
    for o in objs.OBJECTS:
        if o.min_fw and firmware < o.min_fw:
            continue
        var = _var(o.key, o.index, o.subindex, o.kind, o.size)
        if o.subindex == 0 and o.index not in (0x1018, 0x2022, 0x2023, 0x5021, 0x6020):
            od.add_object(var)
            continue
        rec = records.get(o.index)
        if rec is None:
            rec = ODRecord(f"obj{o.index:04X}", o.index)
            rec.add_member(_var("count", o.index, 0, "u", 1))
            records[o.index] = rec
            od.add_object(rec)
        rec.add_member(var)
    hb = _var("producer heartbeat time", 0x1017, 0, "u", 2)
    od.add_object(hb)
    if tpdo:
        comm = ODRecord("TPDO1 communication", 0x1800)
        for sub, name, size in ((0, "count", 1), (1, "cob id", 4), (2, "type", 1)):
            comm.add_member(_var(name, 0x1800, sub, "u", size))
        od.add_object(comm)
        mapping = ODRecord("TPDO1 mapping", 0x1A00)
        for sub in range(3):
            mapping.add_member(_var(f"map{sub}", 0x1A00, sub, "u", 1 if sub == 0 else 4))
        od.add_object(mapping)
    return od


class Battery:
    """One simulated battery: its values, its faults and its SDO server."""

    def __init__(self, node_id: int, serial: int, *, firmware: tuple[int, ...] = (1, 3, 0),
                 nominal_voltage: float = 12.8, capacity: float = 100.0,
                 latency: float = 0.0, tpdo: bool = False, phase: float = 0.0) -> None:
        self.node_id = node_id
        self.serial = serial
        self.firmware = firmware
        self.nominal = nominal_voltage
        self.capacity_ah = capacity
        self.latency = latency
        self.tpdo = tpdo
        self.phase = phase
        self.lock = threading.Lock()
        self.values: dict[str, Any] = {
            "voltage": 13.2 * nominal_voltage / 12.8, "current": 0.0,
            "soc": 60.0 + 10 * math.sin(phase), "temperature": 21.0, "errors": 0,
            "warnings": 0, "max_discharge_current": 150.0, "max_charge_current": 100.0,
            "ah_expended": 12.5, "ah_returned": 30.0, "ah_since_equalization": 40.0,
            "cycles_6050": 17, "cycles": 17, "charge_current_request": 50.0,
            "cell_voltage_min": 3.29, "cell_voltage_max": 3.31,
            "cell_temperature_min": 20.5, "cell_temperature_max": 21.5, "awake": 1,
            "vendor": objs.SUPERB_VENDOR_ID, "product": 0x0E12,
            "revision": (firmware[0] << 16) | firmware[1], "serial": serial,
            "device_name": "Epsilon V2", "software_version": ".".join(map(str, firmware)),
            "battery_type": 1, "capacity": capacity, "rated_charge_current": 100,
            "cells": round(nominal_voltage / 3.2),
        }
        self.hold = False
        #: current (A, + = charging) imposed from outside (``--follow-si``); None: own model
        self.external_current: float | None = None
        self.sdo_enabled = True
        self.heartbeat = True
        self.aborts: set[tuple[int, int]] = set()
        self.sizes: dict[str, int] = {}
        self.requests: dict[str, int] = {}
        self.booted = False  #: send a boot-up message before the next heartbeat
        self.od = build_od(firmware, tpdo)
        self.node = canopen.LocalNode(node_id, self.od)
        self.node.get_data = self._get_data  # type: ignore[method-assign]
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._worker = threading.Thread(target=self._serve, daemon=True,
                                        name=f"sim-sdo-{node_id}")
        self._t0 = time.monotonic()

    # -- SDO server ----------------------------------------------------------------------------
    def attach(self, network: canopen.Network) -> None:
        network.add_node(self.node)
        # Answer from our own worker thread, so a slow battery never holds up the others.
        network.unsubscribe(self.node.sdo.rx_cobid, self.node.sdo.on_request)
        network.subscribe(self.node.sdo.rx_cobid, self._on_request)
        self._worker.start()

    def stop(self) -> None:
        self._queue.put(None)

    def _on_request(self, can_id: int, data: bytearray, timestamp: float) -> None:
        kind = objs.sdo_request_kind(bytes(data))
        key = kind
        if kind == "upload" and len(data) >= 4:
            _, index, sub = objs.SDO_ADDR.unpack_from(bytes(data))
            key = f"upload {index:04X}:{sub:02X}"
        with self.lock:
            self.requests[kind] = self.requests.get(kind, 0) + 1
            if key != kind:
                self.requests[key] = self.requests.get(key, 0) + 1
        self._queue.put(bytes(data))

    def _serve(self) -> None:
        while True:
            data = self._queue.get()
            if data is None:
                return
            with self.lock:
                enabled, latency = self.sdo_enabled, self.latency
            if not enabled:
                continue
            if latency > 0:
                time.sleep(latency)
            try:
                self.node.sdo.on_request(self.node.sdo.rx_cobid, bytearray(data), time.time())
            except can.CanError as exc:
                log.warning("node %d: cannot answer: %s", self.node_id, exc)

    def _get_data(self, index: int, subindex: int, check_readable: bool = False) -> bytes:
        if (index, subindex) in self.aborts:
            raise SdoAbortedError(ABORT_NO_DATA)
        if index in (0x1800, 0x1A00) and self.tpdo:
            return self._pdo_config(index, subindex)
        if index == 0x1017 and subindex == 0:
            return (1000).to_bytes(2, "little")
        obj = objs.BY_ADDRESS.get((index, subindex))
        if obj is None or (obj.min_fw and self.firmware < obj.min_fw):
            if index in self.od and subindex == 0:
                return bytes([4])
            raise SdoAbortedError(ABORT_NOT_EXIST)
        with self.lock:
            value = self.values[obj.key]
            size = self.sizes.get(obj.key)
        return objs.encode(obj, value, size)

    def _pdo_config(self, index: int, subindex: int) -> bytes:
        if index == 0x1800:
            table = {0: (2, 1), 1: (0x180 + self.node_id, 4), 2: (0xFE, 1)}
        else:
            table = {0: (2, 1), 1: ((0x6060 << 16) | 32, 4), 2: ((0x2010 << 16) | 32, 4)}
        if subindex not in table:
            raise SdoAbortedError(0x06090011)
        value, size = table[subindex]
        return int(value).to_bytes(size, "little")

    # -- values --------------------------------------------------------------------------------
    def step(self, dt: float) -> None:
        """Advance the battery's state by ``dt`` seconds."""
        with self.lock:
            if self.hold:
                return
            v = self.values
            t = time.monotonic() - self._t0
            if self.external_current is not None:
                current = self.external_current
            else:
                current = 25.0 * math.sin(t / 40.0 + self.phase) + random.uniform(-0.3, 0.3)
            if v["soc"] >= 99.5 and current > 0:
                current *= 0.1
            if v["soc"] <= 5.0 and current < 0:
                current *= 0.1
            v["current"] = round(current, 3)
            soc = v["soc"] + current * dt / 3600.0 / self.capacity_ah * 100.0 * 30.0
            v["soc"] = max(0.0, min(100.0, soc))
            if current < 0:
                v["ah_expended"] = min(v["ah_expended"] - current * dt / 3600.0 * 30, 6000.0)
            elif v["soc"] >= 99.5:
                v["ah_expended"] = 0.0
            ocv = 12.0 + 1.0 * min(v["soc"], 20.0) / 20.0 + 0.3 * max(0.0, v["soc"] - 20) / 80
            v["voltage"] = round((ocv + 0.004 * current) * self.nominal / 12.8, 4)
            target_t = 21.0 + 0.05 * abs(current)
            v["temperature"] += (target_t - v["temperature"]) * min(1.0, dt / 30.0)
            cell = v["voltage"] / v["cells"]
            v["cell_voltage_min"] = round(cell - 0.008, 3)
            v["cell_voltage_max"] = round(cell + 0.008, 3)
            v["cell_temperature_min"] = v["temperature"] - 0.5
            v["cell_temperature_max"] = v["temperature"] + 0.5

    def tpdo_frame(self) -> bytes:
        with self.lock:
            return (objs.encode(objs.BY_KEY["voltage"], self.values["voltage"])
                    + objs.encode(objs.BY_KEY["current"], self.values["current"]))

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.values)


class Simulator:
    """Several batteries on one CAN bus, their heartbeats, TPDOs and the value model."""

    def __init__(self, bus: can.BusABC, batteries: list[Battery],
                 heartbeat_period: float = 1.0, tpdo_period: float = 0.5) -> None:
        self.bus = bus
        self.network = canopen.Network(bus)
        self.network.connect()
        self.batteries = {b.node_id: b for b in batteries}
        for b in batteries:
            b.attach(self.network)
        self.hb_period = heartbeat_period
        self.tpdo_period = tpdo_period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sim-clock")

    def start(self) -> None:
        for b in self.batteries.values():
            self._send(0x700 + b.node_id, b"\x00")  # boot-up
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        for b in self.batteries.values():
            b.stop()
        self.network.disconnect()

    def _send(self, can_id: int, data: bytes) -> None:
        try:
            self.network.send_message(can_id, data)
        except can.CanError as exc:
            log.warning("cannot send 0x%03X: %s", can_id, exc)

    def _run(self) -> None:
        dt = 0.1
        next_hb = time.monotonic()
        next_pdo = time.monotonic()
        while not self._stop.wait(dt):
            now = time.monotonic()
            for b in self.batteries.values():
                b.step(dt)
            if now >= next_hb:
                next_hb = now + self.hb_period
                for b in self.batteries.values():
                    with b.lock:
                        hb, booted = b.heartbeat, b.booted
                        b.booted = False
                    if booted:
                        self._send(0x700 + b.node_id, b"\x00")
                    if hb:
                        self._send(0x700 + b.node_id, b"\x05")
            if now >= next_pdo:
                next_pdo = now + self.tpdo_period
                for b in self.batteries.values():
                    with b.lock:
                        send = b.tpdo and b.heartbeat and b.sdo_enabled
                    if send:
                        self._send(0x180 + b.node_id, b.tpdo_frame())

    # -- control ---------------------------------------------------------------------------------
    def command(self, line: str) -> str:
        """Execute one control command; returns the answer line."""
        parts = line.split()
        if not parts:
            return "ERR empty"
        cmd, args = parts[0], parts[1:]
        try:
            b = self.batteries[int(args[0])] if args else None
        except (ValueError, KeyError):
            return f"ERR no battery {args[0]}"
        if b is None:
            if cmd == "nodes":
                return "OK " + ",".join(str(n) for n in sorted(self.batteries))
            return "ERR missing node id"
        with b.lock:
            if cmd == "vanish":
                b.sdo_enabled = b.heartbeat = False
            elif cmd == "back":
                b.sdo_enabled = b.heartbeat = True
            elif cmd == "reboot":
                b.sdo_enabled = b.heartbeat = True
                b.booted = True
            elif cmd in ("nosdo", "sdo"):
                b.sdo_enabled = cmd == "sdo"
            elif cmd in ("nohb", "hb"):
                b.heartbeat = cmd == "hb"
            elif cmd == "slow":
                b.latency = float(args[1]) / 1000.0
            elif cmd in ("abort", "unabort"):
                addr = (int(args[1], 16), int(args[2], 16))
                if cmd == "abort":
                    b.aborts.add(addr)
                else:
                    b.aborts.discard(addr)
            elif cmd == "size":
                b.sizes[args[1]] = int(args[2])
            elif cmd == "set":
                key = args[1]
                if key not in b.values:
                    return f"ERR unknown key {key}"
                cur = b.values[key]
                b.values[key] = type(cur)(float(args[2])) if not isinstance(cur, str) else args[2]
            elif cmd == "hold":
                b.hold = bool(int(args[1]))
            elif cmd == "get":
                return "OK " + json.dumps(b.values)
            elif cmd == "stats":
                return "OK " + json.dumps(b.requests)
            else:
                return f"ERR unknown command {cmd}"
        return "OK"


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        sim: Simulator = self.server.sim  # type: ignore[attr-defined]
        for raw in self.rfile:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                answer = sim.command(line)
            except (ValueError, IndexError) as exc:
                answer = f"ERR {exc}"
            self.wfile.write((answer + "\n").encode())
            self.wfile.flush()


class ControlServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, sim: Simulator, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.sim = sim


def control(address: str, line: str, timeout: float = 5.0) -> str:
    """Send one command to a running simulator's control port and return the answer."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout) as s:
        s.sendall((line + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return buf.decode().strip()


class SiFollower:
    """Make the batteries carry the simulated Sunny Island's battery current (``--follow-si``).

    In the full simulated system the SuperB batteries are the Sunny Island's battery: without
    this their own charge/discharge cycle would disagree in sign with the Sunny Island's 0x305,
    which the bridge rightly treats as implausible data. Each battery takes an equal share of
    the 0x305 current; without a 0x305 for ``stale`` seconds they return to their own model.
    """

    def __init__(self, batteries: list[Battery], stale: float = 5.0,
                 clock: Any = time.monotonic, total: int = 0) -> None:
        self.batteries = batteries
        #: batteries the current is shared over (also those of other simulator processes)
        self.total = total or len(batteries)
        self.stale = stale
        self._clock = clock
        self._last = 0.0

    def on_message(self, msg: can.Message) -> None:
        if msg.arbitration_id != 0x305:
            return
        from driver.sma import frames

        try:
            _, values = frames.decode_si(msg)
        except frames.FrameError:
            return
        current = values.get("BatteryCurrentCharging")
        if current is None:
            return
        self._last = self._clock()
        share = float(current) / max(1, self.total)
        for b in self.batteries:
            with b.lock:
                b.external_current = round(share, 3)

    def expire(self) -> None:
        """Back to the batteries' own model when the Sunny Island has gone quiet."""
        if self._last and self._clock() - self._last > self.stale:
            self._last = 0.0
            for b in self.batteries:
                with b.lock:
                    b.external_current = None


def _node_list(text: str) -> list[int]:
    from driver.schema import parse_node_ids

    return parse_node_ids(text) if text else []


def make_batteries(nodes: list[int], *, serial_base: int = 2300000, old: list[int] | None = None,
                   tpdo: list[int] | None = None, latency: float = 0.0,
                   nominal_voltage: float = 12.8, capacity: float = 100.0) -> list[Battery]:
    """Batteries for ``nodes`` with serial ``serial_base + node``."""
    return [Battery(n, serial_base + n, firmware=(1, 1, 0) if n in (old or []) else (1, 3, 0),
                    nominal_voltage=nominal_voltage, capacity=capacity, latency=latency,
                    tpdo=n in (tpdo or []), phase=n * 1.3) for n in nodes]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Simulated SuperB Epsilon V2 batteries (CANopen).")
    ap.add_argument("--nodes", default="1,2,3", help="node IDs, e.g. 1,2,3 or 1-8")
    ap.add_argument("--channel", default="vecan0",
                    help="CAN channel (loopback link when $CANBRIDGE_CANLINK is set)")
    ap.add_argument("--latency-ms", type=float, default=2.0, help="SDO response latency")
    ap.add_argument("--control-port", type=int, default=0,
                    help="TCP control port on 127.0.0.1 (0: a free one, printed)")
    ap.add_argument("--nominal-voltage", type=float, default=12.8)
    ap.add_argument("--capacity", type=float, default=100.0, help="Ah per battery")
    ap.add_argument("--serial-base", type=int, default=2300000)
    ap.add_argument("--old-firmware", default="", help="nodes with firmware 1.1 (no 6051/6052)")
    ap.add_argument("--tpdo", default="", help="nodes that transmit TPDO1 (6060, 2010)")
    ap.add_argument("--heartbeat", type=float, default=1.0, help="heartbeat period (s)")
    ap.add_argument("--hold", action="store_true", help="start with frozen values")
    ap.add_argument("--follow-si", metavar="CHANNEL", default="",
                    help="carry the Sunny Island's battery current (0x305 on CHANNEL, 500 kbit/s)")
    ap.add_argument("--si-batteries", type=int, default=0,
                    help="batteries sharing that current, other simulators' included (0: ours)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("canopen").setLevel(logging.WARNING)

    from driver.canbus import open_bus

    bus = open_bus(args.channel)
    batteries = make_batteries(_node_list(args.nodes), serial_base=args.serial_base,
                               old=_node_list(args.old_firmware), tpdo=_node_list(args.tpdo),
                               latency=args.latency_ms / 1000.0,
                               nominal_voltage=args.nominal_voltage, capacity=args.capacity)
    for b in batteries:
        b.hold = args.hold
    sim = Simulator(bus, batteries, heartbeat_period=args.heartbeat)
    server = ControlServer(sim, args.control_port)
    threading.Thread(target=server.serve_forever, daemon=True, name="sim-control").start()
    sim.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"SIMCONTROL=127.0.0.1:{server.server_address[1]}", flush=True)
    log.info("simulating SuperB batteries %s on %s", ",".join(str(b.node_id) for b in batteries),
             args.channel)
    follower = None
    if args.follow_si:
        follower = SiFollower(batteries, total=args.si_batteries)
        si_bus = open_bus(args.follow_si, 500000)
        si_notifier = can.Notifier(si_bus, [follower.on_message], timeout=0.2)
        log.info("batteries carry the Sunny Island's current (0x305 on %s)", args.follow_si)
    while not stop.wait(1.0):
        if follower is not None:
            follower.expire()
    if follower is not None:
        si_notifier.stop()
        si_bus.shutdown()
    server.shutdown()
    sim.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
