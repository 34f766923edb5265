"""A VeDbusService in a child process, driven by JSON lines on stdin (test helper).

Usage: ``python velib_service_host.py VELIB_DIR SERVICE_NAME INSTANCE`` with
``DBUS_SESSION_BUS_ADDRESS`` set. ``INSTANCE`` = ``none`` publishes no ``/DeviceInstance``.
The service uses its own private connection and two-phase registration, prints ``ready`` once
its name is claimed, then handles one command per stdin line and answers ``ok``:

* ``{"set": {path: value, ...}}``: ``service[path] = value`` one by one (PropertiesChanged);
* ``{"batch": {path: value, ...}}``: the same inside one ``with service as s:`` (ItemsChanged).

It exits when stdin closes.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def main() -> None:
    velib, name, instance = sys.argv[1], sys.argv[2], sys.argv[3]
    sys.path.insert(0, velib)
    import dbus
    from dbus.mainloop.glib import DBusGMainLoop
    from gi.repository import GLib

    DBusGMainLoop(set_as_default=True)
    from vedbus import VeDbusService

    bus = dbus.bus.BusConnection(os.environ["DBUS_SESSION_BUS_ADDRESS"])
    service = VeDbusService(name, bus, register=False)
    service.add_path("/Mgmt/ProcessName", "velib_service_host")
    service.add_path("/Mgmt/ProcessVersion", "1.0")
    service.add_path("/Mgmt/Connection", "test")
    if instance != "none":
        service.add_path("/DeviceInstance", int(instance))
    service.add_path("/ProductId", 0xBA77)
    service.add_path("/ProductName", "Test battery")
    service.add_path("/Connected", 1)
    service.add_path("/Soc", 50, writeable=True)
    service.add_path("/Dc/0/Voltage", 52.5)
    service.add_path("/Invalid", None)
    service.add_path(
        "/Limited", 10, writeable=True, onchangecallback=lambda _path, value: value <= 100
    )
    service.register()
    print("ready", flush=True)

    loop = GLib.MainLoop()

    def on_stdin(_source: Any, _condition: Any) -> bool:
        line = sys.stdin.readline()
        if not line:
            loop.quit()
            return False
        command = json.loads(line)
        for path, value in command.get("set", {}).items():
            service[path] = value
        if "batch" in command:
            with service as s:
                for path, value in command["batch"].items():
                    s[path] = value
        print("ok", flush=True)
        return True

    GLib.io_add_watch(sys.stdin, GLib.IO_IN | GLib.IO_HUP, on_stdin)
    loop.run()


if __name__ == "__main__":
    main()
