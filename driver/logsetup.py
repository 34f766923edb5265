"""Logging for every CanBridge process.

Each process logs through :mod:`logging` to stderr with a timestamp, so the GX's ``multilog``
keeps it under ``/var/log/<service>``. The level comes from the setting
``/Settings/CanBridge/General/LogLevel`` (applied live with :func:`set_level_from_setting`).

Repeats are rate-limited: the same message (same logger, level and text) is written at most once
per ``window`` seconds; the next one that gets through says how many were suppressed. A missing
device therefore logs one line a minute, not one per poll, while distinct events all show.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

LEVELS = {0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR}
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RepeatFilter(logging.Filter):
    """Let a given (logger, level, message text) through at most once per ``window`` seconds."""

    def __init__(self, window: float = 60.0, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.window = window
        self._clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO or getattr(record, "no_ratelimit", False):
            return True
        key = (record.name, record.levelno, record.getMessage())
        now = self._clock()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last[0] < self.window:
                self._seen[key] = (last[0], last[1] + 1)
                return False
            suppressed = last[1] if last is not None else 0
            self._seen[key] = (now, 0)
            if len(self._seen) > 2000:
                cutoff = now - self.window
                self._seen = {k: v for k, v in self._seen.items() if v[0] >= cutoff}
        if suppressed:
            record.msg = f"{record.getMessage()} ({suppressed} repeats suppressed)"
            record.args = None
        return True


def setup_logging(name: str, level: int = logging.INFO, window: float = 60.0) -> logging.Logger:
    """Configure the root logger for process ``name`` and return that process's logger."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RepeatFilter(window))
    root.addHandler(handler)
    root.setLevel(level)
    return logging.getLogger(name)


def set_level_from_setting(value: object) -> None:
    """Apply the ``General/LogLevel`` setting (0 debug, 1 info, 2 warning, 3 error)."""
    try:
        level = LEVELS[int(value)]  # type: ignore[call-overload]
    except (KeyError, TypeError, ValueError):
        logging.getLogger("canbridge").warning("ignoring unknown log level %r", value)
        return
    logging.getLogger().setLevel(level)
