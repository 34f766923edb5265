"""Watching other services' values, a clean-room stand-in for velib_python's ``dbusmonitor``.

Written from the observable behaviour of Victron's velib_python; names, arguments and callback
signatures are kept. ``DbusMonitor(dbusTree, ...)`` watches every service whose class (the
first three dotted parts of its name, e.g. ``com.victronenergy.battery``) is a key of
``dbusTree``; the value of that key maps the paths to watch to caller-defined options.

* Services are scanned with one blocking ``GetItems`` on ``/`` (falling back to ``GetValue``
  and ``GetText`` per path). A service whose scan shows no ``/DeviceInstance`` is ignored until
  it leaves and reappears — so services must publish it BEFORE claiming their name.
* ``deviceAddedCallback(service, instance)`` and ``deviceRemovedCallback(service, instance)``
  follow ``NameOwnerChanged`` (handled from a GLib idle callback).
* ``valueChangedCallback(service, path, options, changes, instance)`` is called from a GLib idle
  callback for watched paths whose value really changed (``PropertiesChanged`` and
  ``ItemsChanged``); ``changes`` holds the unwrapped ``Value`` and the ``Text``.
* An exception in any of these callbacks ends the process (``exit_on_error``).

The bus is a private connection to the session bus when ``DBUS_SESSION_BUS_ADDRESS`` is set,
else to the system bus.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import dbus
import dbus.bus
import dbus.exceptions
from gi.repository import GLib
from ve_utils import (
    add_name_owner_changed_receiver,
    exit_on_error,
    unwrap_dbus_value,
    wrap_dbus_value,
)

VE_INTERFACE = "com.victronenergy.BusItem"

logger = logging.getLogger(__name__)

_MISSING: Any = object()

# Services that have no /DeviceInstance of their own but are always accepted, with instance 0.
_INSTANCE_ZERO = ("com.victronenergy.settings", "com.victronenergy.platform")


class SystemBus(dbus.bus.BusConnection):
    """A private (not shared) connection to the system bus."""

    def __new__(cls) -> SystemBus:
        return dbus.bus.BusConnection.__new__(cls, dbus.bus.BusConnection.TYPE_SYSTEM)


class SessionBus(dbus.bus.BusConnection):
    """A private (not shared) connection to the session bus."""

    def __new__(cls) -> SessionBus:
        return dbus.bus.BusConnection.__new__(cls, dbus.bus.BusConnection.TYPE_SESSION)


class MonitoredValue:
    """The last known value and text of one watched path, plus the caller's options."""

    def __init__(self, value: Any, text: Any, options: Any) -> None:
        self.value = value
        self.text = text
        self.options = options

    def __iter__(self) -> Iterator[Any]:
        return iter((self.value, self.text, self.options))


class Service:
    """A scanned service: its unique bus id, name, device instance and watched paths."""

    def __init__(self, id: str, serviceName: str, deviceInstance: int) -> None:
        self.id = id
        self.name = serviceName
        self.deviceInstance = deviceInstance
        self.paths: dict[str, MonitoredValue] = {}
        self._seen: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        return self.__dict__[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.__dict__[key] = value

    def set_seen(self, path: str) -> None:
        self._seen.add(path)

    def seen(self, path: str) -> bool:
        return path in self._seen

    @property
    def service_class(self) -> str:
        return ".".join(self.name.split(".")[:3])


class DbusMonitor:
    """Scans and follows the services named by ``dbusTree``; see the module docstring."""

    def __init__(  # noqa: PLR0917 - velib_python takes these positionally
        self,
        dbusTree: dict[str, dict[str, Any]],
        valueChangedCallback: Callable[..., Any] | None = None,
        deviceAddedCallback: Callable[[str, int], Any] | None = None,
        deviceRemovedCallback: Callable[[str, int], Any] | None = None,
        namespace: str = "com.victronenergy",
        ignoreServices: list[str] | tuple[str, ...] = (),
    ) -> None:
        self.valueChangedCallback = valueChangedCallback
        self.deviceAddedCallback = deviceAddedCallback
        self.deviceRemovedCallback = deviceRemovedCallback
        self.dbusTree = dbusTree
        self.ignoreServices = list(ignoreServices)
        self.servicesByName: dict[str, Service] = {}
        self.servicesById: dict[str, Service] = {}
        self.servicesByClass: defaultdict[str, list[Service]] = defaultdict(list)
        self.serviceWatches: defaultdict[str, list[Any]] = defaultdict(list)

        self.dbusConn = SessionBus() if "DBUS_SESSION_BUS_ADDRESS" in os.environ else SystemBus()
        add_name_owner_changed_receiver(self.dbusConn, self.dbus_name_owner_changed, namespace)
        self.dbusConn.add_signal_receiver(
            self.handler_value_changes,
            dbus_interface=VE_INTERFACE,
            signal_name="PropertiesChanged",
            path_keyword="path",
            sender_keyword="senderId",
        )
        self.dbusConn.add_signal_receiver(
            self.handler_item_changes,
            dbus_interface=VE_INTERFACE,
            signal_name="ItemsChanged",
            path="/",
            sender_keyword="senderId",
        )
        self._scan_dbus()

    # ---- scanning -------------------------------------------------------------------------

    def _scan_dbus(self) -> None:
        for name in self.wanted_service_names():
            self.scan_dbus_service(name)

    @staticmethod
    def make_service(serviceId: str, serviceName: str, deviceInstance: int) -> Service:
        """Factory for the per-service record; override to use another class."""
        return Service(serviceId, serviceName, deviceInstance)

    def make_monitor(
        self, service: Service, path: str, value: Any, text: Any, options: Any
    ) -> MonitoredValue:
        """Factory for the per-path record; override to use another class."""
        return MonitoredValue(unwrap_dbus_value(value), unwrap_dbus_value(text), options)

    def service_wanted(self, serviceName: str) -> bool:
        if any(serviceName.startswith(prefix) for prefix in self.ignoreServices):
            return False
        if not serviceName.startswith("com.victronenergy."):
            return False
        return ".".join(serviceName.split(".")[:3]) in self.dbusTree

    def wanted_service_names(self) -> list[str]:
        return [str(n) for n in self.dbusConn.list_names() if self.service_wanted(str(n))]

    def scan_dbus_service(self, serviceName: str) -> bool:
        """Scan one service (blocking); False when it is skipped or the scan failed."""
        name = str(serviceName)
        try:
            return self.scan_dbus_service_inner(name)
        except Exception:
            logger.exception("ignoring %s: error while scanning", name)
            return False

    def scan_dbus_service_inner(self, serviceName: str) -> bool:
        try:
            items = self.dbusConn.call_blocking(serviceName, "/", VE_INTERFACE, "GetItems", "", [])
        except dbus.exceptions.DBusException:
            return self.scan_dbus_service_legacy(serviceName)
        owner = self.dbusConn.get_name_owner(serviceName)
        return self.scan_dbus_service_getitems_done(serviceName, owner, items) is not None

    def _instance_for(self, serviceName: str, lookup: Callable[[], Any]) -> int | None:
        if serviceName in _INSTANCE_ZERO or serviceName.startswith("com.victronenergy.vecan."):
            return 0
        value = lookup()
        return None if value is None else int(value)

    def scan_dbus_service_getitems_done(
        self,
        serviceName: str,
        serviceId: str,
        values: dict[str, dict[str, Any]],
    ) -> int | None:
        """Record a service from its ``GetItems`` answer; the device instance, or None."""

        def lookup() -> Any:
            entry = values.get("/DeviceInstance")
            return None if entry is None or "Value" not in entry else entry["Value"]

        instance = self._instance_for(serviceName, lookup)
        if instance is None:
            logger.info("%s skipped: it has no /DeviceInstance", serviceName)
            return None
        service = self.make_service(serviceId, serviceName, instance)
        watched = self.dbusTree.get(service.service_class, {})
        for path, options in watched.items():
            entry = values.get(path, _MISSING)
            if entry is _MISSING:
                service.paths[path] = self.make_monitor(service, path, None, None, options)
                continue
            service.set_seen(path)
            service.paths[path] = self.make_monitor(
                service, path, entry.get("Value"), entry.get("Text"), options
            )
        self._add_service(service)
        return instance

    def scan_dbus_service_legacy(self, serviceName: str) -> bool:
        """Scan a service that has no ``GetItems``, path by path."""

        def call(path: str, method: str) -> Any:
            return self.dbusConn.call_blocking(serviceName, path, VE_INTERFACE, method, "", [])

        def lookup() -> Any:
            try:
                return call("/DeviceInstance", "GetValue")
            except dbus.exceptions.DBusException:
                return None

        instance = self._instance_for(serviceName, lookup)
        if instance is None:
            return False
        owner = self.dbusConn.get_name_owner(serviceName)
        service = self.make_service(owner, serviceName, instance)
        watched = self.dbusTree.get(service.service_class)
        if watched is None:
            return False
        for path, options in watched.items():
            try:
                value = call(path, "GetValue")
                service.set_seen(path)
                text = call(path, "GetText")
            except dbus.exceptions.DBusException as exc:
                if exc.get_dbus_name() in (
                    "org.freedesktop.DBus.Error.ServiceUnknown",
                    "org.freedesktop.DBus.Error.Disconnected",
                ):
                    raise
                value = text = None
            service.paths[path] = self.make_monitor(service, path, value, text, options)
        self._add_service(service)
        return True

    def _add_service(self, service: Service) -> None:
        self.servicesByName[service.name] = service
        self.servicesById[service.id] = service
        self.servicesByClass[service.service_class].append(service)

    # ---- bus events -----------------------------------------------------------------------

    def dbus_name_owner_changed(self, name: str, oldowner: str, newowner: str) -> None:
        if self.service_wanted(str(name)):
            GLib.idle_add(
                exit_on_error,
                self._process_name_owner_changed,
                str(name),
                str(oldowner),
                str(newowner),
            )

    def _process_newowner(self, name: str) -> None:
        if self.scan_dbus_service(name) and self.deviceAddedCallback is not None:
            self.deviceAddedCallback(name, self.get_device_instance(name))

    def _process_name_owner_changed(self, name: str, oldowner: str, newowner: str) -> None:
        if newowner != "":
            self._process_newowner(name)
            return
        service = self.servicesByName.pop(name, None)
        if service is None:
            return
        self.servicesById.pop(service.id, None)
        for watch in self.serviceWatches.pop(name, []):
            watch.remove()
        self.servicesByClass[service.service_class].remove(service)
        if self.deviceRemovedCallback is not None:
            self.deviceRemovedCallback(name, service.deviceInstance)

    def handler_item_changes(self, items: Any, senderId: str) -> None:
        if not isinstance(items, dict):
            return
        service = self.servicesById.get(senderId)
        if service is None:
            return
        for path, changes in items.items():
            try:
                value = unwrap_dbus_value(changes["Value"])
            except (KeyError, TypeError):
                continue
            text = changes["Text"] if "Text" in changes else str(value)
            self._handler_value_changes(service, str(path), value, text)

    def handler_value_changes(self, changes: Any, path: str, senderId: str) -> None:
        if "Value" not in changes:
            return
        service = self.servicesById.get(senderId)
        if service is None:
            return
        value = unwrap_dbus_value(changes["Value"])
        text = changes["Text"] if "Text" in changes else str(value)
        self._handler_value_changes(service, str(path), value, text)

    def _handler_value_changes(self, service: Service, path: str, value: Any, text: Any) -> None:
        monitored = service.paths.get(path)
        if monitored is None:
            return
        service.set_seen(path)
        if monitored.value == value:
            return
        monitored.value = value
        monitored.text = text
        if self.valueChangedCallback is not None:
            GLib.idle_add(
                exit_on_error,
                self._execute_value_changes,
                service.name,
                path,
                {"Value": value, "Text": text},
                monitored.options,
            )

    def _execute_value_changes(
        self,
        serviceName: str,
        objectPath: str,
        changes: dict[str, Any],
        options: Any,
    ) -> None:
        if serviceName not in self.servicesByName or self.valueChangedCallback is None:
            return
        self.valueChangedCallback(
            serviceName, objectPath, options, changes, self.get_device_instance(serviceName)
        )

    # ---- queries --------------------------------------------------------------------------

    def get_value(self, serviceName: str, objectPath: str, default_value: Any = None) -> Any:
        """The cached value, or ``default_value`` when unknown, unwatched or invalid."""
        service = self.servicesByName.get(serviceName)
        if service is None:
            return default_value
        monitored = service.paths.get(objectPath)
        if monitored is None or monitored.value is None:
            return default_value
        return monitored.value

    def exists(self, serviceName: str, objectPath: str) -> bool:
        """Whether the path answers ``GetValue`` now (blocking)."""
        try:
            self.dbusConn.call_blocking(serviceName, objectPath, VE_INTERFACE, "GetValue", "", [])
        except dbus.exceptions.DBusException:
            return False
        return True

    def seen(self, serviceName: str, objectPath: str) -> bool:
        """Whether the path was ever found in a scan or a change signal (even if invalid)."""
        service = self.servicesByName.get(serviceName)
        return service is not None and service.seen(objectPath)

    def set_value(self, serviceName: str, objectPath: str, value: Any) -> int:
        """Blocking ``SetValue``; -1 when the service or path is not monitored."""
        service = self.servicesByName.get(serviceName)
        if service is None or objectPath not in service.paths:
            return -1
        return self.dbusConn.call_blocking(
            serviceName,
            objectPath,
            dbus_interface=VE_INTERFACE,
            method="SetValue",
            signature=None,
            args=[wrap_dbus_value(value)],
        )

    def set_value_async(
        self,
        serviceName: str,
        objectPath: str,
        value: Any,
        reply_handler: Callable[..., Any] | None = None,
        error_handler: Callable[[Exception], Any] | None = None,
    ) -> None:
        """Non-blocking ``SetValue``; ``error_handler(TypeError)`` when not monitored."""
        service = self.servicesByName.get(serviceName)
        if service is not None and objectPath in service.paths:
            self.dbusConn.call_async(
                serviceName,
                objectPath,
                dbus_interface=VE_INTERFACE,
                method="SetValue",
                signature=None,
                args=[wrap_dbus_value(value)],
                reply_handler=reply_handler,
                error_handler=error_handler,
            )
            return
        if error_handler is not None:
            error_handler(TypeError(f"not monitored: service={serviceName}, path={objectPath}"))

    def get_service_list(self, classfilter: str | None = None) -> dict[str, int]:
        """``{service name: device instance}``, optionally only one class of services."""
        if classfilter is None:
            return {name: s.deviceInstance for name, s in self.servicesByName.items()}
        return {s.name: s.deviceInstance for s in self.servicesByClass.get(classfilter, [])}

    def get_device_instance(self, serviceName: str) -> int:
        """The device instance of a known service (``KeyError`` when unknown)."""
        return self.servicesByName[serviceName].deviceInstance

    def track_value(
        self,
        serviceName: str,
        objectPath: str,
        callback: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """Call ``callback(*args, changes, **kwargs)`` on every change of one path; the watch
        is dropped when the service leaves the bus."""
        bound = partial(callback, *args, **kwargs)

        def on_items(items: Any) -> None:
            try:
                change = items[objectPath]
                value = unwrap_dbus_value(change["Value"])
            except (KeyError, TypeError):
                return
            if "Text" in change:
                bound({"Value": value, "Text": change["Text"]})
            else:
                bound({"Value": value})

        self.serviceWatches[serviceName].extend(
            (
                self.dbusConn.add_signal_receiver(
                    bound,
                    dbus_interface=VE_INTERFACE,
                    signal_name="PropertiesChanged",
                    path=objectPath,
                    bus_name=serviceName,
                ),
                self.dbusConn.add_signal_receiver(
                    on_items,
                    dbus_interface=VE_INTERFACE,
                    signal_name="ItemsChanged",
                    path="/",
                    bus_name=serviceName,
                ),
            )
        )

    def set_device_added_callback(self, callback: Callable[[str, int], Any] | None) -> None:
        self.deviceAddedCallback = callback
