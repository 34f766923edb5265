"""One CAN interface shared by every battery on it: a python-can bus and a canopen Network.

:class:`CanPort` opens the bus in its own thread, retrying with back-off when the interface is
missing (a clear status, no crash loop), reopens it when receiving fails, tracks the heartbeats
and frame counts of every node on the bus, and runs the SDO uploads of every node on it in one
thread (:attr:`CanPort.sdo`, a :class:`~driver.superb.sdoloop.SdoLoop`: the pollers' tasks, and
:meth:`CanPort.upload` for a blocking read). It never sends anything else: no SDO download, no
NMT, no PDO configuration (the battery is read-only).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import can
import canopen

from driver.superb.sdo import (  # the errors of a read, where the pollers and the scan look
    BadResponse,
    BusDown,
    PortError,
    SdoAbort,
    SdoDiag,
    SdoTimeout,
    Upload,
)
from driver.superb.sdoloop import SdoLoop, Task

log = logging.getLogger("canbridge.superb.can")

BusFactory = Callable[[str, int], can.BusABC]
FrameCallback = Callable[[int, bytearray, float], None]


@dataclass
class NodeSeen:
    """What the port has heard from one node ID (written on the receive thread)."""

    heartbeat_time: float | None = None  #: monotonic time of the last heartbeat
    heartbeat_state: int | None = None
    boot_count: int = 0  #: boot-up messages (heartbeat state 0) seen
    frames: int = 0


@dataclass
class _Sub:
    can_id: int
    callback: FrameCallback


@dataclass
class PortStatus:
    open: bool = False
    text: str = "not started"
    opens: int = 0
    errors: int = 0
    last_error: str = ""
    retry_in: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class _Listener(can.Listener):
    def __init__(self, port: CanPort, generation: int) -> None:
        self.port = port
        self.generation = generation
        self.notifier: can.Notifier | None = None

    def on_message_received(self, msg: can.Message) -> None:
        if msg.is_error_frame or msg.is_remote_frame or msg.is_extended_id:
            return
        self.port._heard(msg.arbitration_id, bytes(msg.data), msg.timestamp)

    def on_error(self, exc: Exception) -> None:
        # Receiving failed (interface gone, hub gone): stop this notifier's loop (it would spin
        # on the same error) and let the port reopen the bus.
        if self.notifier is not None:
            self.notifier._stopped = True
        self.port._failed(self.generation, f"receive failed: {exc}")


__all__ = ["BadResponse", "BusDown", "CanPort", "NodeSeen", "PortError", "PortStatus", "SdoAbort",
           "SdoTimeout", "upload_task"]


class CanPort:
    """A shared CAN interface with back-off reconnect.

    ``on_status(status)`` is called from the port's thread whenever the port opens, fails or
    gives up for a while; hand it to the main loop before touching D-Bus.
    """

    BACKOFF = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)

    def __init__(self, interface: str, bitrate: int, bus_factory: BusFactory,
                 on_status: Callable[[PortStatus], None] | None = None) -> None:
        self.interface = interface
        self.bitrate = bitrate
        self._factory = bus_factory
        self._on_status = on_status
        self._lock = threading.Lock()
        self._network: canopen.Network | None = None
        self._diag: dict[int, SdoDiag] = {}
        self._subs: list[_Sub] = []
        self._seen: dict[int, NodeSeen] = {}
        self._hb_callbacks: dict[int, list[Callable[[int, int], None]]] = {}
        self._generation = 0
        self._broken = threading.Event()
        self._stop = threading.Event()
        self._opened = threading.Event()
        self.status = PortStatus()
        self._thread = threading.Thread(target=self._supervise, daemon=True,
                                        name=f"canport-{interface}")
        self.sdo = SdoLoop(interface, self._send_sdo, self.sdo_diag, self._has_diag)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.sdo.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._broken.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.sdo.stop()
        self._close()

    def wait_open(self, timeout: float) -> bool:
        return self._opened.wait(timeout)

    @property
    def is_open(self) -> bool:
        return self._opened.is_set()

    def _report(self) -> None:
        if self._on_status is not None:
            try:
                self._on_status(self.status)
            except Exception:
                log.exception("port status callback failed")

    def _supervise(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                self._open()
            except (can.CanError, OSError, ValueError) as exc:
                delay = self.BACKOFF[min(attempt, len(self.BACKOFF) - 1)]
                attempt += 1
                self.status.open = False
                self.status.errors += 1
                self.status.last_error = str(exc)
                self.status.retry_in = delay
                self.status.text = f"cannot open {self.interface}: {exc}; retrying in {delay:g} s"
                log.error("CAN interface %s: %s; retrying in %g s", self.interface, exc, delay)
                self._report()
                if self._stop.wait(delay):
                    return
                continue
            attempt = 0
            self.status.open = True
            self.status.opens += 1
            self.status.retry_in = 0.0
            self.status.text = f"open: {self.interface}"
            log.info("CAN interface %s open", self.interface)
            self._report()
            self._broken.wait()
            if self._stop.is_set():
                return
            self._broken.clear()
            self._close()
            self.status.open = False
            self.status.text = f"{self.interface} failed: {self.status.last_error}; reopening"
            self._report()
            if self._stop.wait(1.0):
                return

    def _open(self) -> None:
        bus = self._factory(self.interface, self.bitrate)
        net = canopen.Network(bus)
        with self._lock:
            self._generation += 1
            listener = _Listener(self, self._generation)
            net.listeners.append(listener)  # type: ignore[arg-type]
            net.connect()
            listener.notifier = net.notifier
            for sub in self._subs:
                net.subscribe(sub.can_id, sub.callback)
            self._network = net
        self._opened.set()

    def _close(self) -> None:
        with self._lock:
            net, self._network = self._network, None
        self._opened.clear()
        if net is not None:
            try:
                net.disconnect()
            except (can.CanError, OSError, RuntimeError) as exc:
                log.debug("closing %s: %s", self.interface, exc)

    def _failed(self, generation: int, why: str) -> None:
        if generation != self._generation:
            return
        self.status.errors += 1
        self.status.last_error = why
        log.error("CAN interface %s: %s", self.interface, why)
        self._opened.clear()
        self._broken.set()

    # -- receive side (notifier thread) -----------------------------------------------------------
    def _heard(self, can_id: int, data: bytes, timestamp: float) -> None:
        node = can_id & 0x7F
        func = can_id & 0x780
        if node == 0 or func == 0x600:
            return
        seen = self._seen.get(node)
        if seen is None:
            seen = self._seen.setdefault(node, NodeSeen())
        seen.frames += 1
        if func == 0x580:
            self.sdo.frame(node, data)
        elif func == 0x700 and data:
            seen.heartbeat_time = time.monotonic()
            seen.heartbeat_state = data[0]
            if data[0] == 0:
                seen.boot_count += 1
            for cb in self._hb_callbacks.get(node, ()):
                cb(node, data[0])

    def on_heartbeat(self, node_id: int, callback: Callable[[int, int], None]) -> None:
        """Call ``callback(node_id, state)`` (receive thread) on every heartbeat of a node."""
        with self._lock:
            cbs = dict(self._hb_callbacks)
            cbs[node_id] = [*cbs.get(node_id, []), callback]
            self._hb_callbacks = cbs

    def drop_heartbeat(self, node_id: int, callback: Callable[[int, int], None]) -> None:
        with self._lock:
            cbs = dict(self._hb_callbacks)
            cbs[node_id] = [c for c in cbs.get(node_id, []) if c is not callback]
            self._hb_callbacks = cbs

    def seen(self, node_id: int) -> NodeSeen:
        """What has been heard from ``node_id`` (a copy)."""
        s = self._seen.get(node_id)
        return NodeSeen(**vars(s)) if s is not None else NodeSeen()

    def heard_nodes(self) -> list[int]:
        return sorted(self._seen)

    def subscribe(self, can_id: int, callback: FrameCallback) -> None:
        """Receive frames with ``can_id`` (TPDOs), also after the bus is reopened."""
        with self._lock:
            self._subs.append(_Sub(can_id, callback))
            if self._network is not None:
                self._network.subscribe(can_id, callback)

    def unsubscribe(self, can_id: int, callback: FrameCallback) -> None:
        with self._lock:
            self._subs = [s for s in self._subs
                          if not (s.can_id == can_id and s.callback is callback)]
            if self._network is not None:
                try:
                    self._network.unsubscribe(can_id, callback)
                except (KeyError, ValueError):
                    pass

    # -- SDO upload ------------------------------------------------------------------------------
    def sdo_diag(self, node_id: int) -> SdoDiag:
        """The counts of answers discarded for ``node_id`` (kept across reopens)."""
        with self._lock:
            diag = self._diag.get(node_id)
            if diag is None:
                diag = self._diag[node_id] = SdoDiag()
            return diag

    def _has_diag(self, node_id: int) -> bool:
        return node_id in self._diag

    def forget(self, node_id: int) -> None:
        """Drop what is kept for a node that is not polled (its SDO counts)."""
        with self._lock:
            self._diag.pop(node_id, None)

    def _send_sdo(self, node_id: int, frame: bytes) -> None:
        """Send an SDO request to 0x600+node (SdoLoop thread). Raises :class:`BusDown`."""
        if node_id not in self._diag:
            self.sdo_diag(node_id)  # answers from now on are counted
        net = self._network
        if net is None:
            raise BusDown(f"{self.interface} is not open")
        try:
            net.send_message(0x600 + node_id, frame)
        except (can.CanError, OSError) as exc:
            # canopen re-raises the receive thread's exception after sending: the bus is gone
            self.status.errors += 1
            self.status.last_error = f"send failed: {exc}"
            if net.notifier is not None and net.notifier.exception is not None:
                self._failed(self._generation, f"receive failed: {exc}")
            raise BusDown(f"send failed: {exc}") from None
        except RuntimeError as exc:  # "Not connected to CAN bus" during a reopen
            raise BusDown(str(exc)) from None

    def upload(self, node_id: int, index: int, subindex: int, timeout: float) -> bytes:
        """Read one object by SDO upload (the data only); see :meth:`read`."""
        return self.read(node_id, index, subindex, timeout)[0]

    def read(self, node_id: int, index: int, subindex: int,
             timeout: float) -> tuple[bytes, bool]:
        """Read one object by SDO upload, waiting for it (not from the SDO loop's thread).

        Returns the data and whether the node indicated its size. Raises :class:`SdoAbort`,
        :class:`SdoTimeout`, :class:`BadResponse` or :class:`BusDown`, and nothing else.
        """
        result: tuple[bytes, bool] = self.sdo.call(node_id, upload_task(index, subindex, timeout))
        return result


def upload_task(index: int, subindex: int, timeout: float) -> Task:
    """A task of one upload: returns (data, sized) or raises the read's :class:`PortError`."""
    result = yield Upload(index, subindex, timeout)
    return result
