"""Installer helper: read, write and remove Venus settings over D-Bus.

Used by ``install.sh`` for the CAN port profile of the Sunny Island's port and for
``--uninstall --purge``. Runs with the GX's own Python and dbus-python (standard library
otherwise). Talks to the system bus, or to the private bus named in
``$DBUS_SESSION_BUS_ADDRESS`` (as the drivers do off the GX)::

    venus_settings.py get /Settings/Canbus/can1/Profile       # prints the value
    venus_settings.py set /Settings/Canbus/can1/Profile 8
    venus_settings.py purge                                   # CanBridge's own settings

Exit codes: 0 done, 3 no such setting, 4 the settings service cannot be reached,
1 anything else (the message says what).
"""

from __future__ import annotations

import os
import sys

SETTINGS = "com.victronenergy.settings"
BUSITEM = "com.victronenergy.BusItem"
IFACE = "com.victronenergy.Settings"
# What --purge removes: every CanBridge setting, and the per-device records of CanBridge's
# services (device uids "canbridge_..." from dbus-sma, "superb_..." from dbus-superb).
PURGE_GROUP = "/Settings/CanBridge"
DEVICES_GROUP = "/Settings/Devices"
DEVICE_UID_PREFIXES = ("canbridge_", "superb_")

NO_SETTING = 3
UNREACHABLE = 4


class Unreachable(Exception):
    """No bus, no dbus-python, or no settings service on the bus."""


def _bus():  # type: ignore[no-untyped-def]
    try:
        import dbus
        import dbus.bus
    except ImportError as exc:
        raise Unreachable(f"dbus-python is not available ({exc})") from exc
    try:
        address = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
        bus = dbus.bus.BusConnection(address if address else dbus.bus.BUS_SYSTEM)
        if not bus.name_has_owner(SETTINGS):
            raise Unreachable(f"{SETTINGS} is not running")
    except dbus.exceptions.DBusException as exc:
        raise Unreachable(f"no D-Bus: {exc.get_dbus_message()}") from exc
    return bus


def _call(bus, path: str, method: str, *args, iface: str = BUSITEM):  # type: ignore[no-untyped-def]
    obj = bus.get_object(SETTINGS, path, introspect=False)
    return obj.get_dbus_method(method, iface)(*args)


def _exists(bus, path: str) -> bool:  # type: ignore[no-untyped-def]
    parent, _, name = path.rpartition("/")
    try:
        tree = _call(bus, parent or "/", "GetValue")
    except Exception:  # noqa: BLE001 - an unknown group is "no such setting"
        return False
    return isinstance(tree, dict) and name in tree


def get(path: str) -> object:
    """The value of a setting; raises KeyError if it does not exist."""
    bus = _bus()
    if not _exists(bus, path):
        raise KeyError(path)
    value = _call(bus, path, "GetValue")
    return int(value) if isinstance(value, int) else value


def set_value(path: str, value: str) -> None:
    """Write an existing setting (integers given as text are sent as int32)."""
    import dbus

    bus = _bus()
    if not _exists(bus, path):
        raise KeyError(path)
    try:
        wire: object = dbus.Int32(int(value))
    except ValueError:
        wire = dbus.String(value)
    if int(_call(bus, path, "SetValue", wire)) != 0:
        raise RuntimeError(f"the settings service refused {value!r} for {path}")


def purge() -> int:
    """Remove CanBridge's settings; returns how many were removed."""
    bus = _bus()
    removed = 0
    for group, keep in ((PURGE_GROUP, lambda _rel: True),
                        (DEVICES_GROUP, lambda rel: rel.startswith(DEVICE_UID_PREFIXES))):
        try:
            tree = _call(bus, group, "GetValue")
        except Exception:  # noqa: BLE001 - the group does not exist: nothing to remove
            continue
        paths = sorted(str(rel) for rel in tree if keep(str(rel)))
        if paths:
            codes = _call(bus, group, "RemoveSettings", paths, iface=IFACE)
            removed += sum(1 for c in codes if int(c) == 0)
    return removed


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(args) == 2 and args[0] == "get":
            print(get(args[1]))
        elif len(args) == 3 and args[0] == "set":
            set_value(args[1], args[2])
        elif args == ["purge"]:
            print(purge())
        else:
            print(__doc__, file=sys.stderr)
            return 1
    except Unreachable as exc:
        print(f"settings service unreachable: {exc}", file=sys.stderr)
        return UNREACHABLE
    except KeyError as exc:
        print(f"no such setting: {exc.args[0]}", file=sys.stderr)
        return NO_SETTING
    except Exception as exc:  # noqa: BLE001 - report, the installer decides what to do
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
