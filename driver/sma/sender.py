"""The BMS sender: its own thread, a monotonic schedule, nothing on it can be blocked by D-Bus.

Each tick the thread runs the (pure) :class:`~driver.sma.controller.Controller` on the latest
immutable :class:`~driver.sma.controller.Inputs` snapshot (swapped in by the main loop with one
reference assignment), encodes the six BMS frames and sends them, plus a 0x35C start/stop when
the controller decides one. Because the ladder runs here, it keeps advancing even if the GLib
main loop is stuck: the battery reading simply ages.

The thread also owns the CAN link (:class:`CanLink`): python-can's Notifier delivers received
frames to a listener (event-driven), and when sending fails or the Notifier reports the bus
broken the link is reopened with back-off. If nothing can be sent for ``max_failure_time``
the ``on_fatal`` callback asks the process to exit for its supervisor.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import can

from driver.sma import frames
from driver.sma.controller import Controller, Inputs, Level, Output

log = logging.getLogger("canbridge.sma")

BACKOFF_MIN = 0.5
BACKOFF_MAX = 5.0
#: after on_fatal, exit hard if the main loop has not ended the process within this time
FATAL_GRACE_S = 10.0


class _Listener(can.Listener):
    def __init__(self, link: CanLink) -> None:
        self._link = link

    def on_message_received(self, msg: can.Message) -> None:
        self._link.on_frame(msg)

    def on_error(self, exc: Exception) -> None:
        # The Notifier keeps calling recv() after a handled error: log once, mark the link
        # broken (the sender thread reopens it) and do not spin.
        if not self._link.broken:
            log.error("CAN receive failed: %s", exc)
        self._link.broken = True
        time.sleep(0.2)


class CanLink:
    """A python-can bus plus its Notifier; opened, closed and reopened by the sender thread."""

    def __init__(self, opener: Callable[[], can.BusABC], on_frame: Callable[[can.Message], Any],
                 describe: str = "") -> None:
        self._opener = opener
        self.on_frame = on_frame
        self.describe = describe
        self.bus: can.BusABC | None = None
        self.notifier: can.Notifier | None = None
        self.broken = False
        self.reopens = 0

    def open(self) -> None:
        bus = self._opener()
        self.bus = bus
        self.notifier = can.Notifier(bus, [_Listener(self)], timeout=0.5)
        self.broken = False
        log.info("CAN link %s open", self.describe)

    def close(self) -> None:
        if self.notifier is not None:
            try:
                self.notifier.stop(timeout=1.0)
            except Exception as exc:  # noqa: BLE001 - closing a broken link
                log.debug("stopping notifier: %s", exc)
        if self.bus is not None:
            try:
                self.bus.shutdown()
            except Exception as exc:  # noqa: BLE001
                log.debug("closing bus: %s", exc)
        self.bus = None
        self.notifier = None

    def send(self, msg: can.Message) -> None:
        if self.bus is None or self.broken:
            raise can.CanOperationError("CAN link is not open")
        self.bus.send(msg, timeout=0.2)


@dataclass
class SendStats:
    ticks: int = 0
    frames: int = 0
    failures: int = 0
    #: monotonic time of each periodic tick's first send (bounded; for benches and tests)
    tick_times: list[float] | None = None


class BmsSender:
    """The thread that sends the BMS frames; see the module docstring."""

    def __init__(self, link: CanLink, inputs: Inputs, interval: float, *,
                 max_failure_time: float, on_fatal: Callable[[str], None],
                 on_output: Callable[[Output], None] | None = None,
                 controller: Controller | None = None, record_ticks: bool = False) -> None:
        self.link = link
        self.controller = controller or Controller()
        self._inputs = inputs
        self.interval = interval
        self.max_failure_time = max_failure_time
        self._on_fatal = on_fatal
        self._on_output = on_output
        self.output: Output | None = None
        self.stats = SendStats(tick_times=[] if record_ticks else None)
        self._wake = threading.Event()
        self._now_flag = False
        self._stopping = False
        self._start_request = False
        self._failing_since: float | None = None
        self._fatal_at: float | None = None
        self._backoff = BACKOFF_MIN
        self._next_open = 0.0
        self._final: list[can.Message] = []
        self._thread = threading.Thread(target=self._run, name="bms-sender", daemon=True)
        self._last_level: Level | None = None

    # -- main-loop side --------------------------------------------------------------------
    @property
    def inputs(self) -> Inputs:
        return self._inputs

    def set_inputs(self, inputs: Inputs, immediate: bool = False) -> None:
        """Swap in a new snapshot; ``immediate`` sends a frame set now (a setting change)."""
        self._inputs = inputs
        if immediate:
            self._now_flag = True
            self._wake.set()

    def set_interval(self, seconds: float) -> None:
        self.interval = seconds
        self._wake.set()

    def request_start(self) -> None:
        """The user switched the Sunny Island on (/Mode 3): send start commands."""
        self._start_request = True
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self, final: list[can.Message] | None = None, timeout: float = 3.0) -> None:
        """Stop after sending ``final`` frames (e.g. a standby command); closes the link."""
        self._final = list(final or [])
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    # -- thread side -------------------------------------------------------------------------
    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stopping:
            now = time.monotonic()
            periodic = now >= next_t
            if periodic or self._now_flag:
                self._now_flag = False
                try:
                    self._tick(now, periodic)
                except Exception:
                    log.exception("BMS sender tick failed")
                if periodic:
                    next_t += self.interval
                    if next_t <= now:  # fell behind (suspended machine): resynchronise
                        next_t = now + self.interval
            self._wake.wait(max(0.0, next_t - time.monotonic()))
            self._wake.clear()
        for msg in self._final:
            try:
                self.link.send(msg)
            except can.CanError as exc:
                log.error("cannot send final frame 0x%03X: %s", msg.arbitration_id, exc)
        self.link.close()

    def _ensure_link(self, now: float) -> bool:
        if self.link.bus is not None and not self.link.broken:
            return True
        if now < self._next_open:
            return False
        self.link.close()
        try:
            self.link.open()
        except (can.CanError, OSError, ValueError) as exc:
            log.error("cannot open CAN link %s: %s (retrying in %.1f s)",
                      self.link.describe, exc, self._backoff)
            self._next_open = now + self._backoff
            self._backoff = min(BACKOFF_MAX, self._backoff * 2)
            return False
        self.link.reopens += 1
        self._backoff = BACKOFF_MIN
        return True

    def _tick(self, now: float, periodic: bool) -> None:
        if self._start_request:
            self._start_request = False
            self.controller.mode_started()
        out = self.controller.step(self._inputs)
        self.output = out
        if out.level != self._last_level:
            log.info("ladder: %s -> %s (battery data %.1f s old%s)",
                     self._last_level.name.lower() if self._last_level is not None else "-",
                     out.level.name.lower(), out.data_age,
                     f"; {out.implausible}" if out.implausible else "")
            self._last_level = out.level
        msgs = list(frames.encode_bms(out.values))
        if out.command is not None:
            msgs.append(frames.encode_startstop(out.command))
            log.warning("commanding the Sunny Island to %s",
                        "start" if out.command else "stop")
        sent = 0
        if self._ensure_link(now):
            for m in msgs:
                try:
                    self.link.send(m)
                    sent += 1
                except can.CanError as exc:
                    log.error("CAN send failed: %s", exc)
                    self.link.broken = True
                    break
        if periodic and self.stats.tick_times is not None and sent:
            self.stats.tick_times.append(now)
            del self.stats.tick_times[:-20000]
        self.stats.ticks += 1
        self.stats.frames += sent
        if sent == len(msgs):
            if self._failing_since is not None:
                log.info("sending to the Sunny Island again")
            self._failing_since = None
            self._fatal_at = None
        else:
            self.stats.failures += 1
            if self._failing_since is None:
                self._failing_since = now
            elif now - self._failing_since >= self.max_failure_time:
                self._fatal(now)
        if self._on_output is not None:
            self._on_output(out)

    def _fatal(self, now: float) -> None:
        if self._fatal_at is None:
            self._fatal_at = now
            self._on_fatal(f"cannot send to the Sunny Island for "
                           f"{now - (self._failing_since or now):.0f} s")
        elif now - self._fatal_at > FATAL_GRACE_S:
            log.critical("main loop did not exit; exiting now")
            logging.shutdown()
            os._exit(1)
