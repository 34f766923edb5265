"""python-can interface ``canlink``: a bus on the loopback CAN hub (off-GX only).

Registered as a python-can interface through the ``can.interface`` entry point, so
``can.Bus(interface="canlink", channel="vecan0")`` works in every process once the package is
installed. The hub address comes from the ``address`` argument or ``$CANBRIDGE_CANLINK``
(``127.0.0.1:port``).
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from typing import Any

import can

from sim.canlink import protocol


class CanLinkBus(can.BusABC):
    """A CAN bus whose frames travel through the loopback hub."""

    def __init__(self, channel: Any = "vecan0", address: str | None = None,
                 receive_own_messages: bool = False, **kwargs: Any) -> None:
        self.channel_info = f"canlink {channel}"
        self._channel = str(channel)
        addr = address or os.environ.get(protocol.ENV_VAR) or f"127.0.0.1:{protocol.DEFAULT_PORT}"
        host, port = protocol.parse_address(addr)
        try:
            self._sock = socket.create_connection((host, port), timeout=5)
        except OSError as exc:
            raise can.CanInitializationError(
                f"cannot reach the loopback CAN hub at {host}:{port}: {exc}"
            ) from exc
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self._sock.sendall(protocol.hello(self._channel, os.getpid()))
            answer = b""
            while not answer.endswith(b"\n") and len(answer) < 64:
                chunk = self._sock.recv(1)
                if not chunk:
                    break
                answer += chunk
        except OSError as exc:
            self._sock.close()
            raise can.CanInitializationError(f"loopback CAN hub refused: {exc}") from exc
        if answer != protocol.ACCEPTED:
            self._sock.close()
            raise can.CanInitializationError(
                f"canlink {self._channel}: interface not available "
                f"({answer.decode(errors='replace').strip() or 'no answer'})")
        self._sock.setblocking(False)
        self._buf = bytearray()
        self._send_lock = threading.Lock()
        self._own = receive_own_messages
        self._own_queue: list[can.Message] = []
        self._closed = False
        super().__init__(channel=channel, **kwargs)

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._own_queue:
                return self._own_queue.pop(0), False
            if len(self._buf) >= protocol.RECORD_SIZE:
                rec = bytes(self._buf[: protocol.RECORD_SIZE])
                del self._buf[: protocol.RECORD_SIZE]
                ts, arb, flags, data = protocol.unpack(rec)
                msg = can.Message(
                    timestamp=ts,
                    arbitration_id=arb,
                    is_extended_id=bool(flags & protocol.FLAG_EXTENDED),
                    is_remote_frame=bool(flags & protocol.FLAG_REMOTE),
                    is_error_frame=bool(flags & protocol.FLAG_ERROR),
                    dlc=len(data),
                    data=data,
                    channel=self._channel,
                    check=False,
                )
                return msg, False
            if self._closed:
                return None, False
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                ready, _, _ = select.select([self._sock], [], [], remaining)
            except (OSError, ValueError):
                raise can.CanOperationError("loopback CAN link closed") from None
            if not ready:
                return None, False
            try:
                chunk = self._sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise can.CanOperationError(f"loopback CAN link failed: {exc}") from exc
            if not chunk:
                raise can.CanOperationError("loopback CAN hub went away")
            self._buf += chunk

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        flags = (
            (protocol.FLAG_EXTENDED if msg.is_extended_id else 0)
            | (protocol.FLAG_REMOTE if msg.is_remote_frame else 0)
            | (protocol.FLAG_ERROR if msg.is_error_frame else 0)
        )
        ts = msg.timestamp or time.time()
        rec = protocol.pack(ts, msg.arbitration_id, flags, bytes(msg.data[: msg.dlc]))
        deadline = time.monotonic() + (timeout if timeout is not None else 5.0)
        with self._send_lock:
            view = memoryview(rec)
            while view:
                try:
                    n = self._sock.send(view)
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise can.CanOperationError("loopback CAN send timed out") from None
                    select.select([], [self._sock], [], 0.05)
                    continue
                except OSError as exc:
                    raise can.CanOperationError(f"loopback CAN send failed: {exc}") from exc
                view = view[n:]
        if self._own:
            self._own_queue.append(
                can.Message(timestamp=ts, arbitration_id=msg.arbitration_id,
                            is_extended_id=msg.is_extended_id, dlc=msg.dlc,
                            data=bytes(msg.data[: msg.dlc]), channel=self._channel,
                            is_rx=False, check=False)
            )

    def shutdown(self) -> None:
        self._closed = True
        try:
            self._sock.close()
        finally:
            super().shutdown()

    def fileno(self) -> int:
        return self._sock.fileno()
