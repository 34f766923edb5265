"""D-Bus connections and the GLib main loop.

On a GX the drivers use the system bus; off the GX (tests, demo) the private session bus named
in ``$DBUS_SESSION_BUS_ADDRESS``. Every published service gets its own private connection, as
Venus requires (one ``VeDbusService`` per connection). All D-Bus work happens on the GLib main
loop thread; other threads hand work over with :func:`call_soon`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import dbus
import dbus.bus
import dbus.mainloop.glib
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

log = logging.getLogger("canbridge.venus")

_main_thread: threading.Thread | None = None


def init_mainloop() -> None:
    """Make GLib the default main loop for dbus-python; remember the main-loop thread."""
    global _main_thread
    # CAN threads never touch D-Bus, but libdbus must be safe should a library do so.
    dbus.mainloop.glib.threads_init()
    DBusGMainLoop(set_as_default=True)
    _main_thread = threading.current_thread()


def on_main_thread() -> bool:
    """True on the thread that runs the GLib main loop (or before it is known)."""
    return _main_thread is None or threading.current_thread() is _main_thread


def assert_main_thread(what: str) -> None:
    """Refuse D-Bus work from any thread but the main loop's."""
    if not on_main_thread():
        raise RuntimeError(f"{what} called off the GLib main loop thread")


def call_soon(fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` once on the GLib main loop (safe from any thread)."""

    def run() -> bool:
        try:
            fn(*args)
        except Exception:
            log.exception("error in main-loop callback %s", getattr(fn, "__name__", fn))
        return False

    GLib.idle_add(run)


def using_session_bus() -> bool:
    """True off the GX: a private session bus is named in the environment."""
    return "DBUS_SESSION_BUS_ADDRESS" in os.environ


def shared_bus() -> dbus.bus.BusConnection:
    """The process's shared connection (for reading other services and settings)."""
    return dbus.SessionBus() if using_session_bus() else dbus.SystemBus()


def private_bus() -> dbus.bus.BusConnection:
    """A new private connection, for exactly one published service."""
    if using_session_bus():
        return dbus.bus.BusConnection(os.environ["DBUS_SESSION_BUS_ADDRESS"])
    return dbus.bus.BusConnection(dbus.bus.BUS_SYSTEM)


def _can_connect() -> bool:
    """True when a D-Bus daemon accepts a new connection (the session or system bus)."""
    try:
        conn = private_bus()
    except dbus.exceptions.DBusException:
        return False
    conn.close()
    return True


def exit_on_bus_loss(bus: dbus.bus.BusConnection, fail: Callable[[str], None],
                     retry_ms: int = 200) -> None:
    """Exit for the supervisor when the D-Bus daemon goes away, once a new one is there.

    Services, bus names and subscriptions cannot move to a new daemon, so the process must
    start again. Until the new daemon accepts connections the process keeps running (dbus-sma's
    BMS sender does not use D-Bus; a restart while the daemon is still down would only crash
    again); then ``fail(why)`` runs the stop callbacks (energy counters persisted) and exits.
    Without this libdbus ends the process on the spot (``_exit``, nothing persisted, no log).
    """
    bus.set_exit_on_disconnect(False)

    def lost(_conn: Any) -> None:
        log.error("lost the connection to the D-Bus daemon; exiting once it is back")

        def check() -> bool:
            if not _can_connect():
                return True
            fail("the D-Bus daemon restarted")
            return False

        GLib.timeout_add(retry_ms, check)

    bus.call_on_disconnection(lost)


def watch_name(bus: dbus.bus.BusConnection, name: str,
               callback: Callable[[bool], None]) -> Any:
    """Call ``callback(present)`` now and whenever ``name`` gains or loses its owner."""
    return bus.watch_name_owner(name, lambda owner: callback(bool(owner)))
