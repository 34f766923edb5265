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

**The sender cannot fail to send.** Whatever raises while the frame set is built (reading the
inputs, the controller, the encoder), a fixed safe set goes out instead
(:func:`~driver.sma.controller.safe_values`: CCL 0, the last SoC sent, the alarm bit); the
failure is counted like a send failure toward ``max_failure_time`` (exit for the supervisor)
and logged with its cause, at most once per :data:`LOG_EVERY_S` per distinct cause.

Fault injection for the process tests: when the environment names a file in
``CANBRIDGE_SMA_INJECT`` and that file holds ``inputs``, ``controller`` or ``encoder``, the
named stage raises on every tick while it does (nothing happens without the variable); ``poll``
makes ``dbus-sma``'s main-loop poll raise (the guarded GLib callback then exits the process).
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
from driver.sma.controller import Controller, Inputs, Level, Output, safe_values

log = logging.getLogger("canbridge.sma")

BACKOFF_MIN = 0.5
BACKOFF_MAX = 5.0
#: after on_fatal, exit hard if the main loop has not ended the process within this time
FATAL_GRACE_S = 10.0
#: a build failure with the same cause is logged at most this often
LOG_EVERY_S = 30.0
INJECT_ENV = "CANBRIDGE_SMA_INJECT"


class InjectedFault(RuntimeError):
    """Raised by the test-only fault injection."""


def check_injection(stage: str, path: str | None = None) -> None:
    """Raise :class:`InjectedFault` when the test-only injection file names ``stage``."""
    target = path if path is not None else os.environ.get(INJECT_ENV, "")
    if not target:
        return
    try:
        with open(target, encoding="utf-8") as f:
            want = f.read().strip()
    except OSError:
        return
    if want == stage:
        raise InjectedFault(f"injected fault in the {stage} stage")


def _static_safe_frames() -> list[can.Message]:
    """The last resort when even the safe set cannot be encoded: bytes written by hand.

    0x351 CVL 54.0 V (540 = 0x021C), CCL 0, DCL 0, DVL 44.8 V (448 = 0x01C0); 0x355 SoC 50 %,
    SoH and high-res SoC invalid; 0x35A general alarm and warning (byte 0/4 = 0b10101001).
    """
    return [can.Message(arbitration_id=0x351, data=bytes.fromhex("1c0200000000c001"),
                        is_extended_id=False),
            can.Message(arbitration_id=0x355, data=bytes.fromhex("3200ffffffff"),
                        is_extended_id=False),
            can.Message(arbitration_id=0x35A, data=bytes.fromhex("a9aaaa02a9aaaa02"),
                        is_extended_id=False)]


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
    build_failures: int = 0    # ticks on which the safe set replaced the normal one
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
        self._build_logged: dict[str, float] = {}
        self.last_build_error = ""
        self._inject = os.environ.get(INJECT_ENV, "")

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
                except Exception:  # the tick itself guards building; this is the backstop
                    log.exception("BMS sender tick failed")
                    self._count_failure(now)
                if periodic:
                    next_t += self.interval
                    if next_t <= now:  # fell behind (suspended machine): resynchronise
                        next_t = now + self.interval
            self._wake.wait(max(0.0, next_t - time.monotonic()))
            self._wake.clear()
        if not self._final:
            # Leaving the Sunny Island running (e.g. exiting for the supervisor after a D-Bus
            # daemon restart): one last frame set right before the link closes, so the pause
            # the Sunny Island sees is the restart time only, not also what was left of the
            # send interval.
            try:
                self._tick(time.monotonic(), False)
            except Exception:  # exiting anyway; the restarted process sends again
                log.exception("last BMS frame set before exit failed")
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

    def _injected(self, stage: str) -> None:
        if self._inject:
            check_injection(stage, self._inject)

    def _build(self) -> tuple[list[can.Message], Output | None]:
        """The frame set for this tick (stages: inputs, controller, encoder)."""
        if self._start_request:
            self._start_request = False
            self.controller.mode_started()
        self._injected("inputs")
        inputs = self._inputs
        out = self.controller.step(inputs)
        self._injected("controller")
        self._injected("encoder")
        msgs = list(frames.encode_bms(out.values))
        if out.command is not None:
            msgs.append(frames.encode_startstop(out.command))
        return msgs, out

    def _safe(self, now: float, exc: BaseException) -> list[can.Message]:
        """The fixed safe set after a build failure; counted and logged (rate-limited)."""
        self.stats.build_failures += 1
        cause = f"{type(exc).__name__}: {exc}"
        self.last_build_error = cause
        last = self._build_logged.get(cause)
        if last is None or now - last >= LOG_EVERY_S:
            self._build_logged[cause] = now
            log.error("building the BMS frames failed (%s); sending the safe set "
                      "(charge current 0, alarm)", cause, exc_info=last is None)
        try:
            cfg = self._inputs.config
            return list(frames.encode_bms(safe_values(self.controller.soc_sent, cfg)))
        except Exception:  # noqa: BLE001 - the hand-written frames cannot fail
            return _static_safe_frames()

    def _tick(self, now: float, periodic: bool) -> None:
        built = True
        try:
            msgs, out = self._build()
        except Exception as exc:  # noqa: BLE001 - whatever failed, the safe set goes out
            msgs, out = self._safe(now, exc), None
            built = False
        if out is not None:
            self.output = out
            if out.level != self._last_level:
                log.info("ladder: %s -> %s (battery data %.1f s old%s)",
                         self._last_level.name.lower() if self._last_level is not None
                         else "-", out.level.name.lower(), out.data_age,
                         f"; {out.implausible}" if out.implausible else "")
                self._last_level = out.level
            if out.command is not None:
                log.warning("commanding the Sunny Island to %s%s",
                            "start" if out.command else "stop",
                            f" (start command {out.start_commands})" if out.command else "")
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
        if sent == len(msgs) and built:
            if self._failing_since is not None:
                log.info("sending to the Sunny Island again")
            self._failing_since = None
            self._fatal_at = None
        else:
            self._count_failure(now)
        if self._on_output is not None and out is not None:
            self._on_output(out)

    def _count_failure(self, now: float) -> None:
        self.stats.failures += 1
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since >= self.max_failure_time:
            self._fatal(now)

    def _fatal(self, now: float) -> None:
        if self._fatal_at is None:
            self._fatal_at = now
            why = f" (last error: {self.last_build_error})" if self.last_build_error else ""
            self._on_fatal(f"cannot send to the Sunny Island for "
                           f"{now - (self._failing_since or now):.0f} s{why}")
        elif now - self._fatal_at > FATAL_GRACE_S:
            log.critical("main loop did not exit; exiting now")
            logging.shutdown()
            os._exit(1)
