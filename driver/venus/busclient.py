"""Blocking D-Bus clients for command-line tools (``canbridge-config``, ``canbridge-diag``).

The drivers and the web page do all their D-Bus work on a GLib main loop. A command-line tool
that reads or writes a few settings and takes one snapshot needs no main loop: it makes
blocking calls on a private connection of its own and closes it. Nothing here publishes a
service or subscribes to signals, so running a tool never disturbs the drivers.

On a GX the tools use the system bus; off the GX the private bus named in
``$DBUS_SESSION_BUS_ADDRESS`` (the demo's, or a test's), or an explicit address.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import dbus
import dbus.bus

from driver.schema import Schema, Setting

SETTINGS_SERVICE = "com.victronenergy.settings"
BUSITEM = "com.victronenergy.BusItem"
SETTINGS_IFACE = "com.victronenergy.Settings"
#: the processes whose services a diagnostic snapshot takes (their /Mgmt/ProcessName)
CANBRIDGE_PROCESSES = ("dbus-superb", "dbus-sma", "canbridge-web")


class BusUnavailable(Exception):
    """The D-Bus daemon or the settings service cannot be reached; nothing was written."""


def connect(address: str | None = None) -> dbus.bus.BusConnection:
    """A private connection: ``address``, else ``$DBUS_SESSION_BUS_ADDRESS``, else the system
    bus (as on a GX)."""
    addr = address or os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    try:
        if addr:
            return dbus.bus.BusConnection(addr)
        return dbus.bus.BusConnection(dbus.bus.BUS_SYSTEM)
    except dbus.exceptions.DBusException as exc:
        raise BusUnavailable(f"cannot connect to D-Bus: {exc.get_dbus_message()}") from None


def plain(value: Any) -> Any:
    """A received D-Bus value as plain Python; the invalid marker (empty array) is ``None``."""
    if isinstance(value, dbus.Array):
        return [plain(v) for v in value] if len(value) else None
    if isinstance(value, dbus.Dictionary):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (dbus.Boolean, dbus.Byte, dbus.Int16, dbus.UInt16, dbus.Int32,
                          dbus.UInt32, dbus.Int64, dbus.UInt64)):
        return int(value)
    if isinstance(value, dbus.Double):
        return float(value)
    if isinstance(value, (dbus.String, dbus.ObjectPath, dbus.Signature)):
        return str(value)
    return value


def typed_variant(kind: str, value: Any) -> Any:
    """``value`` with the D-Bus type of schema type ``kind`` (the settings service keeps a
    setting's type from its default, so every write must carry that type)."""
    if kind == "i":
        return dbus.Int32(int(value), variant_level=1)
    if kind == "f":
        return dbus.Double(float(value), variant_level=1)
    return dbus.String(str(value), variant_level=1)


class SettingsClient:
    """The CanBridge settings in ``com.victronenergy.settings``, read and written blocking.

    Implements what :func:`driver.configio.apply_document` needs: :meth:`settings_available`,
    :meth:`settings` and :meth:`set_setting`.
    """

    def __init__(self, schema: Schema, address: str | None = None, timeout: float = 5.0,
                 bus: dbus.bus.BusConnection | None = None) -> None:
        self.schema = schema
        self.timeout = timeout
        self._own = bus is None
        self.bus = bus if bus is not None else connect(address)

    def close(self) -> None:
        if self._own:
            self.bus.close()

    def __enter__(self) -> SettingsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def settings_available(self) -> bool:
        try:
            return bool(self.bus.name_has_owner(SETTINGS_SERVICE))
        except dbus.exceptions.DBusException:
            return False

    def register(self) -> dict[str, int]:
        """Register every schema setting (``AddSettings`` with the schema's typed default, min
        and max, as the drivers do; a setting that exists keeps its value). Returns the
        settings the service refused to register, with its error code."""
        entries = []
        for s in self.schema:
            entry: dict[str, Any] = {"path": dbus.String(s.path),
                                     "default": typed_variant(s.type, s.default)}
            if s.type != "s":
                entry["min"] = typed_variant(s.type, s.dbus_min())
                entry["max"] = typed_variant(s.type, s.dbus_max())
            if s.silent:
                entry["silent"] = dbus.Int32(1, variant_level=1)
            entries.append(dbus.Dictionary(entry, signature="sv"))
        try:
            results = self.bus.call_blocking(
                SETTINGS_SERVICE, "/", SETTINGS_IFACE, "AddSettings", "aa{sv}",
                [dbus.Array(entries, signature="a{sv}")], timeout=self.timeout)
        except dbus.exceptions.DBusException as exc:
            raise BusUnavailable(f"{SETTINGS_SERVICE}: AddSettings failed: "
                                 f"{exc.get_dbus_message()}") from None
        return {str(r.get("path")): int(r.get("error", 0)) for r in results
                if int(r.get("error", 0)) != 0}

    def get(self, path: str) -> Any:
        """One setting's value; ``None`` when it does not exist."""
        try:
            return plain(self.bus.call_blocking(SETTINGS_SERVICE, path, BUSITEM, "GetValue",
                                                "", [], timeout=self.timeout))
        except dbus.exceptions.DBusException as exc:
            if (exc.get_dbus_name() or "").endswith(("UnknownObject", "UnknownMethod")):
                return None
            raise BusUnavailable(f"{SETTINGS_SERVICE}: GetValue {path}: "
                                 f"{exc.get_dbus_message()}") from None

    def settings(self) -> dict[str, Any]:
        """Every schema setting's value by path (``None``: not registered)."""
        if not self.settings_available():
            raise BusUnavailable(f"{SETTINGS_SERVICE} is not running")
        return {s.path: self.get(s.path) for s in self.schema}

    def set_setting(self, setting: Setting, value: Any) -> int:
        """Write one setting; the settings service's answer (0 ok, -1 refused)."""
        try:
            return int(self.bus.call_blocking(SETTINGS_SERVICE, setting.path, BUSITEM,
                                              "SetValue", "v",
                                              [typed_variant(setting.type, value)],
                                              timeout=self.timeout))
        except dbus.exceptions.DBusException as exc:
            raise BusUnavailable(f"{SETTINGS_SERVICE}: SetValue {setting.path}: "
                                 f"{exc.get_dbus_message()}") from None

    def reset_to_defaults(self, settings: Iterable[Setting] | None = None) -> dict[str, int]:
        """``SetDefault`` on each setting (all of the schema by default): answers by path."""
        out = {}
        for s in settings if settings is not None else self.schema:
            out[s.path] = int(self.bus.call_blocking(SETTINGS_SERVICE, s.path, BUSITEM,
                                                     "SetDefault", "", [],
                                                     timeout=self.timeout))
        return out


def list_services(bus: dbus.bus.BusConnection, prefix: str = "com.victronenergy.") -> list[str]:
    """The well-known names on the bus that start with ``prefix``, sorted."""
    return sorted(str(n) for n in bus.list_names() if str(n).startswith(prefix))


def get_items(bus: dbus.bus.BusConnection, service: str,
              timeout: float = 5.0) -> dict[str, dict[str, Any]]:
    """``GetItems`` of a service: path -> {"Value", "Text"} as plain Python.

    Services older than ``GetItems`` answer ``GetValue`` on ``/`` with the whole tree (values
    only). Raises :class:`dbus.exceptions.DBusException` when the service does not answer.
    """
    try:
        items = bus.call_blocking(service, "/", BUSITEM, "GetItems", "", [], timeout=timeout)
        return {str(p): {"Value": plain(d.get("Value")),
                         "Text": str(d["Text"]) if "Text" in d else None}
                for p, d in items.items()}
    except dbus.exceptions.DBusException as exc:
        if not (exc.get_dbus_name() or "").endswith("UnknownMethod"):
            raise
    tree = bus.call_blocking(service, "/", BUSITEM, "GetValue", "", [], timeout=timeout)
    return {"/" + str(p).lstrip("/"): {"Value": plain(v), "Text": None}
            for p, v in tree.items()}


def canbridge_snapshot(bus: dbus.bus.BusConnection,
                       timeout: float = 5.0) -> dict[str, Any]:
    """``GetItems`` of every CanBridge service: ``com.victronenergy.canbridge.*`` and each
    battery / vebus service whose ``/Mgmt/ProcessName`` is a CanBridge process.

    A service that does not answer is recorded with its error instead of its items, so one
    hung service never stops a diagnostic bundle.
    """
    out: dict[str, Any] = {}
    for name in list_services(bus):
        ours = name.startswith("com.victronenergy.canbridge.")
        if not ours and name.startswith(("com.victronenergy.battery.",
                                         "com.victronenergy.vebus.")):
            # one cheap read decides; other drivers' services are not walked
            try:
                process = plain(bus.call_blocking(name, "/Mgmt/ProcessName", BUSITEM,
                                                  "GetValue", "", [], timeout=timeout))
            except dbus.exceptions.DBusException:
                continue
            ours = process in CANBRIDGE_PROCESSES
        if not ours:
            continue
        try:
            out[name] = {"items": get_items(bus, name, timeout)}
        except dbus.exceptions.DBusException as exc:
            out[name] = {"error": f"{exc.get_dbus_name()}: {exc.get_dbus_message()}"}
    return out
