"""Reading values of other services without blocking the main loop.

:func:`get_value_async` issues one asynchronous ``GetValue`` (any path; ``/`` or a subtree
returns ``{relative path: value}``) and calls back on the main loop with plain Python values
(velib's unwrapping: invalid = ``None``). A reply also proves that the service is alive, which a
cached value (``DbusMonitor``, ``VeDbusItemImport``) cannot: a frozen process keeps its name and
its last values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dbus

from driver.venus.dbusconn import assert_main_thread
from driver.venus.velib import Velib

BUSITEM = "com.victronenergy.BusItem"


def get_value_async(bus: dbus.bus.BusConnection, velib: Velib, service: str, path: str, *,
                    on_value: Callable[[Any], None], on_error: Callable[[str], None],
                    timeout: float = 2.0) -> None:
    """``GetValue`` of ``service`` ``path``; ``on_value(value)`` or ``on_error(message)``."""
    assert_main_thread("get_value_async")

    def reply(value: Any) -> None:
        on_value(velib.ve_utils.unwrap_dbus_value(value))

    def error(exc: dbus.exceptions.DBusException) -> None:
        on_error(exc.get_dbus_message() or exc.get_dbus_name() or str(exc))

    bus.call_async(service, path, BUSITEM, "GetValue", "", [], reply, error, timeout=timeout)
