"""Running a CanBridge process: logging, the GLib main loop, signals, a clean exit."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

from gi.repository import GLib

from driver.venus.dbusconn import init_mainloop

log = logging.getLogger("canbridge")


class MainLoop:
    """The process's GLib main loop with SIGTERM/SIGINT handled on the loop itself.

    ``on_stop`` callbacks run on the main loop before it quits (persist counters, send a final
    frame); :meth:`fail` ends the loop with a non-zero exit code so the supervisor restarts the
    process.
    """

    def __init__(self) -> None:
        init_mainloop()
        self.loop = GLib.MainLoop()
        self.exit_code = 0
        self._on_stop: list[Callable[[], None]] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, self._signal, sig)

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
        self.stop(1)

    def run(self) -> int:
        """Run until stopped; returns the exit code."""
        self.loop.run()
        return self.exit_code
