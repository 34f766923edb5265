"""Running a CanBridge process: logging, the GLib main loop, signals, a clean exit.

:func:`guarded` is the one guard every GLib callback goes through (timeouts, idle handlers,
D-Bus signal and value-change callbacks): PyGObject prints an exception raised in a callback
and, for a timeout, silently removes the source -- the process stays up and does nothing, so
its supervisor never restarts it. A guarded callback logs the traceback and, with
``exit_on_error`` (the default, like Victron's own ``exit_on_error``), makes the process exit
with code 1 through :meth:`MainLoop.fail` (stop callbacks run: counters persisted, a final frame
sent), so the supervisor starts a fresh one.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
from collections.abc import Callable
from typing import Any, TypeVar

from gi.repository import GLib

from driver.venus.dbusconn import init_mainloop

log = logging.getLogger("canbridge")

F = TypeVar("F", bound=Callable[..., Any])

#: the process's main loop (set by :class:`MainLoop`); :func:`guarded` exits through it
_current: MainLoop | None = None


def _fail(why: str) -> None:
    if _current is not None:
        _current.fail(why)
        return
    # No main loop to end (a callback run outside a CanBridge process): exit hard rather
    # than stay up doing nothing.
    log.critical("%s; no main loop to stop, exiting", why)
    logging.shutdown()
    os._exit(1)


def guarded(fn: F, name: str | None = None, exit_on_error: bool = True, *,
            error_result: Any = False,
            fail: Callable[[str], None] | None = None) -> F:
    """``fn`` wrapped for use as a GLib/D-Bus callback.

    An exception is logged with its traceback and the callback returns ``error_result``
    (False by default: a timeout or idle source is removed). With ``exit_on_error`` the
    process then exits for its supervisor (``fail(why)``, by default :meth:`MainLoop.fail`
    of the running loop). Use ``exit_on_error=False`` only where carrying on is safe (a
    repeating timeout then wants ``error_result=True`` to stay scheduled).
    """
    label = name or getattr(fn, "__qualname__", repr(fn))

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # the point of the guard
            log.exception("error in %s", label)
            if exit_on_error:
                (fail or _fail)(f"{label} failed ({type(exc).__name__}: {exc})")
            return error_result

    return wrapper  # type: ignore[return-value]


class MainLoop:
    """The process's GLib main loop with SIGTERM/SIGINT handled on the loop itself.

    ``on_stop`` callbacks run on the main loop before it quits (persist counters, send a final
    frame); :meth:`fail` ends the loop with a non-zero exit code so the supervisor restarts the
    process.
    """

    def __init__(self) -> None:
        global _current
        init_mainloop()
        self.loop = GLib.MainLoop()
        self.exit_code = 0
        self._on_stop: list[Callable[[], None]] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, self._signal, sig)
        _current = self

    def on_stop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the main loop when the process is asked to stop."""
        self._on_stop.append(fn)

    def _signal(self, sig: int) -> bool:
        log.info("received %s, stopping", signal.Signals(sig).name)
        self.stop()
        return True

    def stop(self, code: int = 0) -> None:
        """Run the stop callbacks and end the loop."""
        if code:
            self.exit_code = code
        while self._on_stop:
            fn = self._on_stop.pop()
            try:
                fn()
            except Exception:
                log.exception("error while stopping")
                self.exit_code = self.exit_code or 1
        self.loop.quit()

    def fail(self, why: str) -> None:
        """Stop with exit code 1 so the supervisor restarts the process."""
        log.error("%s; exiting so the supervisor restarts us", why)
        if self.exit_code and not self._on_stop:
            return  # already failing
        self.stop(1)

    def run(self) -> int:
        """Run until stopped; returns the exit code."""
        self.loop.run()
        return self.exit_code
