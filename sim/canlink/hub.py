"""The loopback CAN hub: carries CAN frames between processes on this machine only.

Run as ``python -m sim.canlink.hub --port 29536``. It binds 127.0.0.1 (never another address),
accepts any number of bus connections, and forwards every frame to all other connections on
the same channel in arrival order. It can also inject faults for tests through a control
connection (``CONTROL <channel> <command>`` lines): ``busoff`` (drop every frame on the
channel), ``buson``, ``garbage`` (send a burst of malformed frames), ``unplug:<pid>`` (close
that process's connections on the channel and refuse it until ``plug:<pid>``: its interface
disappears), ``stats``.
"""

from __future__ import annotations

import argparse
import logging
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from sim.canlink import protocol

log = logging.getLogger("canlink.hub")


@dataclass
class _Conn:
    sock: socket.socket
    channel: str | None = None
    pid: int = 0
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    control: bool = False


@dataclass
class ChannelStats:
    frames: int = 0
    busoff: bool = False


class Hub:
    """A single-threaded, selector-driven frame forwarder."""

    MAX_OUTBUF = 4 * 1024 * 1024

    def __init__(self, host: str = "127.0.0.1", port: int = protocol.DEFAULT_PORT) -> None:
        protocol.parse_address(f"{host}:{port}")  # refuses non-loopback hosts
        self.sel = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.conns: dict[int, _Conn] = {}
        self.channels: dict[str, ChannelStats] = {}
        self.unplugged: set[tuple[str, int]] = set()
        self.running = True

    def close(self) -> None:
        for c in list(self.conns.values()):
            self._drop(c)
        self.sel.unregister(self.listener)
        self.listener.close()

    def _drop(self, c: _Conn) -> None:
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        self.conns.pop(id(c), None)

    def _want_write(self, c: _Conn) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.outbuf else 0)
        try:
            self.sel.modify(c.sock, events, c)
        except (KeyError, ValueError):
            pass

    def _send(self, c: _Conn, data: bytes) -> None:
        if len(c.outbuf) > self.MAX_OUTBUF:
            log.warning("client on %s is not reading; dropping it", c.channel)
            self._drop(c)
            return
        if not c.outbuf:
            try:
                n = c.sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError:
                self._drop(c)
                return
            data = data[n:]
        if data:
            c.outbuf += data
            self._want_write(c)

    def _forward(self, src: _Conn, records: bytes) -> None:
        stats = self.channels.setdefault(src.channel or "", ChannelStats())
        if stats.busoff:
            return
        stats.frames += len(records) // protocol.RECORD_SIZE
        for c in list(self.conns.values()):
            if c is not src and c.channel == src.channel and not c.control:
                self._send(c, records)

    def _control(self, c: _Conn, line: str) -> None:
        parts = line.split()
        if len(parts) != 3 or parts[0] != "CONTROL":
            self._send(c, b"ERR\n")
            return
        _, channel, cmd = parts
        stats = self.channels.setdefault(channel, ChannelStats())
        if cmd == "busoff":
            stats.busoff = True
        elif cmd == "buson":
            stats.busoff = False
        elif cmd == "garbage":
            now = time.time()
            junk = b"".join(
                protocol.pack(now, 0x7FF - i, 0, os.urandom(i % 9)) for i in range(20)
            )
            for other in list(self.conns.values()):
                if other.channel == channel and not other.control:
                    self._send(other, junk)
        elif cmd.startswith(("unplug:", "plug:")):
            try:
                pid = int(cmd.split(":", 1)[1])
            except ValueError:
                self._send(c, b"ERR\n")
                return
            if cmd.startswith("unplug:"):
                self.unplugged.add((channel, pid))
                for other in list(self.conns.values()):
                    if other.channel == channel and other.pid == pid:
                        self._drop(other)
            else:
                self.unplugged.discard((channel, pid))
        elif cmd == "stats":
            self._send(c, f"OK {stats.frames} {int(stats.busoff)}\n".encode())
            return
        else:
            self._send(c, b"ERR\n")
            return
        self._send(c, b"OK\n")

    def _readable(self, c: _Conn) -> None:
        try:
            data = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(c)
            return
        c.inbuf += data
        if c.channel is None and not c.control:
            nl = c.inbuf.find(b"\n")
            if nl < 0:
                if len(c.inbuf) > 200:
                    self._drop(c)
                return
            line = bytes(c.inbuf[:nl]).decode("ascii", "replace")
            del c.inbuf[: nl + 1]
            if line.startswith(protocol.MAGIC.decode() + " "):
                parts = line.split(" ")
                c.channel = parts[1]
                c.pid = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
                if (c.channel, c.pid) in self.unplugged:
                    try:
                        c.sock.send(protocol.REFUSED)
                    except OSError:
                        pass
                    self._drop(c)
                    return
                self.channels.setdefault(c.channel, ChannelStats())
                self._send(c, protocol.ACCEPTED)
            elif line.startswith("CONTROL"):
                c.control = True
                self._control(c, line)
            else:
                self._drop(c)
                return
        if c.control:
            while (nl := c.inbuf.find(b"\n")) >= 0:
                line = bytes(c.inbuf[:nl]).decode("ascii", "replace")
                del c.inbuf[: nl + 1]
                self._control(c, line)
            return
        n = len(c.inbuf) - len(c.inbuf) % protocol.RECORD_SIZE
        if n:
            records = bytes(c.inbuf[:n])
            del c.inbuf[:n]
            self._forward(c, records)

    def _writable(self, c: _Conn) -> None:
        try:
            n = c.sock.send(c.outbuf)
        except BlockingIOError:
            return
        except OSError:
            self._drop(c)
            return
        del c.outbuf[:n]
        self._want_write(c)

    def serve_forever(self) -> None:
        while self.running:
            for key, events in self.sel.select(timeout=0.5):
                if key.data is None:
                    try:
                        sock, _ = self.listener.accept()
                    except BlockingIOError:
                        continue
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    c = _Conn(sock)
                    self.conns[id(c)] = c
                    self.sel.register(sock, selectors.EVENT_READ, c)
                    continue
                c = key.data
                if id(c) not in self.conns:
                    continue
                if events & selectors.EVENT_READ:
                    self._readable(c)
                if id(c) in self.conns and events & selectors.EVENT_WRITE:
                    self._writable(c)


def control(address: str, channel: str, command: str, timeout: float = 5.0) -> str:
    """Send one control command to a running hub and return its answer line."""
    host, port = protocol.parse_address(address)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"CONTROL {channel} {command}\n".encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(256)
            if not chunk:
                break
            buf += chunk
    return buf.decode().strip()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the hub until SIGTERM/SIGINT."""
    ap = argparse.ArgumentParser(description="Loopback CAN hub (127.0.0.1 only).")
    ap.add_argument("--port", type=int, default=protocol.DEFAULT_PORT,
                    help="TCP port on 127.0.0.1 (0 picks a free one and prints it)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    hub = Hub("127.0.0.1", args.port)

    def stop(*_: object) -> None:
        hub.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stdout.write(f"CANLINK=127.0.0.1:{hub.port}\n")
    sys.stdout.flush()
    log.info("loopback CAN hub on 127.0.0.1:%d", hub.port)
    try:
        hub.serve_forever()
    finally:
        hub.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
