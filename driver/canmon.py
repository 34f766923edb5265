"""``canbridge-canmon``: print the frames on a CAN interface, decoded, for diagnosing a bus.

    canbridge-canmon vecan0                 # decoded, one line per frame
    canbridge-canmon vecan0 --json          # one JSON object per frame (for scripts and tests)
    canbridge-canmon can1 --count 100 --duration 10

It only listens: it never transmits.

Decoders are pluggable. A decoder is a function ``(can_id, data) -> str | None`` registered for
a range of 11-bit identifiers with :func:`register_decoder`; the first registered range that
contains an identifier decodes it. Built in: CANopen (NMT, SYNC/EMCY, TPDO, SDO with the SuperB
object table, heartbeat). Another area adds its own by exposing ``register(registry)`` in a
module named in :data:`DECODER_MODULES` (e.g. the SMA bridge registers 0x300-0x35F there);
modules that do not exist yet are skipped.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import can

from driver.superb import objects as objs

log = logging.getLogger("canbridge.canmon")

Decoder = Callable[[int, bytes], "str | None"]

#: modules imported by :func:`load_plugins`; each may define ``register(registry)``
DECODER_MODULES: tuple[str, ...] = ("driver.sma.canmon_decoders",)


@dataclass
class DecoderRegistry:
    """Decoders by identifier range; later registrations win over earlier, broader ones."""

    entries: list[tuple[int, int, str, Decoder]] = field(default_factory=list)

    def register(self, first_id: int, last_id: int, name: str, fn: Decoder) -> None:
        if not 0 <= first_id <= last_id <= 0x7FF:
            raise ValueError(f"bad identifier range 0x{first_id:X}-0x{last_id:X}")
        self.entries.insert(0, (first_id, last_id, name, fn))

    def decode(self, can_id: int, data: bytes) -> tuple[str, str | None]:
        for first, last, name, fn in self.entries:
            if first <= can_id <= last:
                try:
                    text = fn(can_id, data)
                except (ValueError, IndexError, KeyError) as exc:
                    return name, f"undecodable: {exc}"
                if text is not None:
                    return name, text
        return "", None


_REGISTRY = DecoderRegistry()


def register_decoder(first_id: int, last_id: int, name: str, fn: Decoder) -> None:
    """Register a decoder with the default registry."""
    _REGISTRY.register(first_id, last_id, name, fn)


# -- CANopen / SuperB ------------------------------------------------------------------------------
_NMT_STATES = {0x00: "boot-up", 0x04: "stopped", 0x05: "operational", 0x7F: "pre-operational"}
_NMT_COMMANDS = {0x01: "start", 0x02: "stop", 0x80: "enter pre-operational",
                 0x81: "reset node", 0x82: "reset communication"}


def _object_text(index: int, sub: int, payload: bytes | None) -> str:
    obj = objs.BY_ADDRESS.get((index, sub))
    name = f"{index:04X}:{sub:02X}" + (f" {obj.key}" if obj else "")
    if obj is None or payload is None:
        return name
    try:
        value = objs.decode(obj, payload)
    except objs.DecodeError as exc:
        return f"{name} = ? ({exc})"
    return f"{name} = {value:g} {obj.unit}".rstrip() if isinstance(value, float) \
        else f"{name} = {value} {obj.unit}".rstrip()


def decode_sdo(can_id: int, data: bytes) -> str | None:
    if len(data) < 4:
        return f"SDO node {can_id & 0x7F}: short frame"
    node = can_id & 0x7F
    cs = data[0]
    index = int.from_bytes(data[1:3], "little")
    sub = data[3]
    if can_id & 0x780 == 0x600:
        kind = objs.sdo_request_kind(data)
        if kind in ("upload", "download", "abort", "block-upload", "block-download"):
            extra = ""
            if kind == "abort" and len(data) >= 8:
                extra = f" code 0x{int.from_bytes(data[4:8], 'little'):08X}"
            return f"SDO request node {node}: {kind} {_object_text(index, sub, None)}{extra}"
        return f"SDO request node {node}: {kind}"
    scs = cs >> 5
    if scs == 2:  # initiate upload response
        if cs & 0x02:
            size = 4 - ((cs >> 2) & 0x3) if cs & 0x01 else 4
            return f"SDO response node {node}: {_object_text(index, sub, bytes(data[4:4 + size]))}"
        return f"SDO response node {node}: segmented {_object_text(index, sub, None)}"
    if scs == 4 and len(data) >= 8:
        code = int.from_bytes(data[4:8], "little")
        return (f"SDO abort node {node}: {_object_text(index, sub, None)} 0x{code:08X} "
                f"{objs.ABORT_NAMES.get(code, '')}").rstrip()
    if scs == 0:
        return f"SDO response node {node}: upload segment"
    return f"SDO response node {node}: command 0x{cs:02X}"


def decode_canopen(can_id: int, data: bytes) -> str | None:
    func, node = can_id & 0x780, can_id & 0x7F
    if can_id == 0:
        cmd = _NMT_COMMANDS.get(data[0], f"0x{data[0]:02X}") if data else "?"
        return f"NMT {cmd} node {data[1] if len(data) > 1 else '?'}"
    if can_id == 0x80:
        return "SYNC"
    if func == 0x80:
        return f"EMCY node {node}: {data.hex()}"
    if func in (0x180, 0x280, 0x380, 0x480):
        return f"TPDO{(func - 0x100) // 0x100} node {node}: {data.hex()}"
    if func in (0x580, 0x600):
        return decode_sdo(can_id, data)
    if func == 0x700:
        state = data[0] if data else None
        return f"heartbeat node {node}: " + (_NMT_STATES.get(state, f"0x{state:02X}")
                                             if state is not None else "empty")
    return None


register_decoder(0x000, 0x7FF, "canopen", decode_canopen)


def load_plugins(registry: DecoderRegistry | None = None) -> list[str]:
    """Import the modules of :data:`DECODER_MODULES` and let them register decoders."""
    loaded = []
    for name in DECODER_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError:
            log.debug("decoder module %s not present", name)
            continue
        register = getattr(mod, "register", None)
        if register is not None:
            register(registry or _REGISTRY)
            loaded.append(name)
    return loaded


def format_frame(msg: can.Message, registry: DecoderRegistry | None = None,
                 as_json: bool = False) -> str:
    reg = registry or _REGISTRY
    data = bytes(msg.data[: msg.dlc])
    if msg.is_error_frame:
        text: str | None = "error frame"
        name = "can"
    elif msg.is_extended_id:
        name, text = "", None
    else:
        name, text = reg.decode(msg.arbitration_id, data)
    if as_json:
        out: dict[str, Any] = {"t": round(msg.timestamp, 6), "id": msg.arbitration_id,
                               "ext": msg.is_extended_id, "data": data.hex(), "decoder": name,
                               "text": text}
        return json.dumps(out)
    ident = f"{msg.arbitration_id:08X}" if msg.is_extended_id else f"{msg.arbitration_id:03X}"
    return f"{msg.timestamp:.6f} {ident} [{msg.dlc}] {data.hex(' '):<23} {text or ''}".rstrip()


def monitor(bus: can.BusABC, out: TextIO, *, count: int = 0, duration: float = 0.0,
            as_json: bool = False, registry: DecoderRegistry | None = None,
            stop: Callable[[], bool] | None = None) -> int:
    """Print frames until ``count`` frames, ``duration`` seconds or ``stop()``; returns count."""
    seen = 0
    end = time.monotonic() + duration if duration > 0 else None
    while (stop is None or not stop()) and (not count or seen < count):
        timeout = 0.2 if end is None else max(0.0, min(0.2, end - time.monotonic()))
        if end is not None and time.monotonic() >= end:
            break
        msg = bus.recv(timeout)
        if msg is None:
            continue
        out.write(format_frame(msg, registry, as_json) + "\n")
        out.flush()
        seen += 1
    return seen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Print and decode the frames on a CAN interface "
                                             "(listen only).")
    ap.add_argument("interface", nargs="?", default="vecan0",
                    help="vecan0, can1, or interface:channel such as slcan:/dev/ttyACM0")
    ap.add_argument("--bitrate", type=int, default=None)
    ap.add_argument("--count", type=int, default=0, help="stop after this many frames")
    ap.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds")
    ap.add_argument("--json", action="store_true", help="one JSON object per frame")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from driver.canbus import open_bus

    load_plugins()
    try:
        bus = open_bus(args.interface, args.bitrate)
    except (can.CanError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    stopped = False

    def stop(*_: object) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stderr.write(f"listening on {args.interface}\n")
    sys.stderr.flush()
    try:
        monitor(bus, sys.stdout, count=args.count, duration=args.duration, as_json=args.json,
                stop=lambda: stopped)
    except can.CanError as exc:
        log.error("receiving failed: %s", exc)
        return 1
    finally:
        bus.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
