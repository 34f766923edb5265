"""Wire format of the loopback CAN link (off-GX only).

The link is a hub process listening on 127.0.0.1; each python-can bus object connects to it over
TCP, names the CAN channel it is on (``vecan0``, ``can1``, ...) and then exchanges fixed-size
frame records. The hub forwards each record to every other connection on the same channel, in
the order it received them, so frames cross process boundaries like on a real bus and never
leave this machine. The hub answers the greeting with ``OK`` (or ``NO ...`` when the test
has unplugged that process's interface), so opening a bus fails the way opening a missing
SocketCAN interface does.
"""

from __future__ import annotations

import struct

MAGIC = b"CANLINK1"
#: timestamp (s), arbitration id, flags, dlc, 8 data bytes
RECORD = struct.Struct("<dIBB8s")
RECORD_SIZE = RECORD.size

FLAG_EXTENDED = 0x01
FLAG_REMOTE = 0x02
FLAG_ERROR = 0x04

#: the hub's answer to a hello: the link is up, or this interface is unplugged
ACCEPTED = b"OK\n"
REFUSED = b"NO unplugged\n"

DEFAULT_PORT = 29536
ENV_VAR = "CANBRIDGE_CANLINK"


def hello(channel: str, pid: int) -> bytes:
    """The greeting a client sends first: magic, channel name, the client's pid, newline.

    The pid lets tests unplug one process's interface (``CONTROL <channel> unplug:<pid>``).
    """
    name = channel.encode("ascii")
    if b"\n" in name or b" " in name or len(name) > 64 or not name:
        raise ValueError(f"bad channel name {channel!r}")
    return MAGIC + b" " + name + b" " + str(pid).encode() + b"\n"


def pack(timestamp: float, arbitration_id: int, flags: int, data: bytes) -> bytes:
    """One frame record."""
    if len(data) > 8:
        raise ValueError("classic CAN frames carry at most 8 bytes")
    return RECORD.pack(timestamp, arbitration_id, flags, len(data), bytes(data).ljust(8, b"\0"))


def unpack(record: bytes) -> tuple[float, int, int, bytes]:
    """(timestamp, arbitration id, flags, data) of one record."""
    ts, arb, flags, dlc, data = RECORD.unpack(record)
    return ts, arb, flags, data[: min(dlc, 8)]


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` (host must be a loopback address) -> (host, port)."""
    host, _, port = text.rpartition(":")
    host = host or "127.0.0.1"
    if not (host.startswith("127.") or host in ("localhost", "::1", "[::1]")):
        raise ValueError(f"the loopback CAN link only runs on loopback addresses, not {host}")
    return host.strip("[]"), int(port)
