"""What the Sunny Island last said (0x300-0x30A), with the age of every frame.

:meth:`SiState.feed` runs on python-can's Notifier thread; everything else reads a consistent
:meth:`snapshot`. Frames that are not ours, are too short for their fields or are not data frames
are ignored and counted (``ignored``; too short ones also in ``too_short``); longer frames are
accepted; nothing here touches D-Bus.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import can

from driver.sma import frames
from driver.sma.controller import SiMeasurement

#: a Sunny Island frame older than this makes its values invalid (PROTOCOLS.md §2)
STALE_S = 5.0


@dataclass(frozen=True)
class SiSnapshot:
    """Frames by ID: (monotonic receive time, decoded values); plus debounced states."""

    frames: dict[int, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    grid_lost: bool = False
    received: int = 0
    ignored: int = 0
    too_short: int = 0

    def get(self, fid: int, now: float, stale: float = STALE_S) -> dict[str, Any] | None:
        """Values of frame ``fid`` if it is fresh, else None."""
        entry = self.frames.get(fid)
        if entry is None or now - entry[0] > stale:
            return None
        return entry[1]

    def measurement(self, now: float) -> SiMeasurement | None:
        """The Sunny Island's battery measurement (plausibility, fallback temperature) and its
        Run flag (start repeat); the controller checks their ages."""
        entry = self.frames.get(0x305)
        if entry is None:
            fl = self.frames.get(0x307)
            if fl is None:
                return None
            return SiMeasurement(at=-math.inf, voltage=None, current=None,
                                 run=fl[1]["flags"].run, run_at=fl[0])
        v = entry[1]
        fl = self.frames.get(0x307)
        return SiMeasurement(at=entry[0], voltage=v["SiBatteryVoltage"],
                             current=v["BatteryCurrentCharging"],
                             temperature=v["SiBatteryTemperature"],
                             run=fl[1]["flags"].run if fl else None,
                             run_at=fl[0] if fl else None)


class SiState:
    """Thread-safe store of the Sunny Island's frames."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._frames: dict[int, tuple[float, dict[str, Any]]] = {}
        self._received = 0
        self._ignored = 0
        self._too_short = 0
        self._grid_lost = False
        self._had_grid = False
        self._vf_history: list[bool] = []
        self.last_error = ""

    def feed(self, msg: can.Message) -> bool:
        """Take one received frame; False (and counted) when it is not a usable SI frame."""
        if msg.arbitration_id in frames.BMS_IDS or msg.arbitration_id in (
                frames.ID_STARTSTOP, frames.ID_QUICKSTOP):
            return False  # our own frames or another BMS: not input, not garbage either
        try:
            fid, values = frames.decode_si(msg)
        except frames.FrameError as exc:
            with self._lock:
                self._ignored += 1
                if isinstance(exc, frames.FrameTooShort):
                    self._too_short += 1
                self.last_error = str(exc)
            return False
        now = self._clock()
        with self._lock:
            self._frames[fid] = (now, values)
            self._received += 1
            if fid == 0x307:
                self._debounce(values["flags"].ext_vf_ok)
        return True

    def _debounce(self, ext_vf_ok: bool) -> None:
        # GridLost: an external source that was there is missing in two consecutive 0x307
        # frames; it clears after two consecutive frames with the source back.
        self._vf_history = ([*self._vf_history, ext_vf_ok])[-2:]
        if ext_vf_ok:
            self._had_grid = True
        if len(self._vf_history) == 2:
            if self._had_grid and not any(self._vf_history):
                self._grid_lost = True
            elif all(self._vf_history):
                self._grid_lost = False

    def snapshot(self) -> SiSnapshot:
        with self._lock:
            return SiSnapshot(frames=dict(self._frames), grid_lost=self._grid_lost,
                              received=self._received, ignored=self._ignored,
                              too_short=self._too_short)
