"""Settings access for drivers, a clean-room stand-in for velib_python's ``settingsdevice``.

Written from the observable behaviour of Victron's velib_python; names and arguments are kept
so that driver code is the same on and off the GX. Behaviour a caller must know:

* the constructor BLOCKS (``time.sleep``) up to ``timeout`` seconds until the settings service
  is on the bus, then raises ``Exception``; ``timeout=0`` checks once;
* all settings are created or looked up with one blocking ``AddSettings`` call; re-adding an
  existing setting keeps its stored value;
* ``settings[name]`` is a cache that is only updated when the settings service's
  ``PropertiesChanged`` signal is received, so it LAGS the driver's own writes until the main
  loop has run, and ``eventCallback(name, old, new)`` is called for the driver's own writes too;
* ``settings[name] = v`` is a blocking ``SetValue`` and raises ``AssertionError`` when the
  settings service refuses it (out of range, wrong type).

Unlike the original, the signal subscriptions belong to each ``SettingsDevice`` (on the bus it
was given) instead of to the class, so several instances can coexist.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import dbus
from ve_utils import unwrap_dbus_value, wrap_dbus_value
from vedbus import VeDbusItemImport

PATH = 0
VALUE = 1
MINIMUM = 2
MAXIMUM = 3
SILENT = 4

VE_INTERFACE = "com.victronenergy.BusItem"
SETTINGS_INTERFACE = "com.victronenergy.Settings"

logger = logging.getLogger(__name__)

ChangeCallback = Callable[[str, str, dict[str, Any]], Any]


class VeDbusSettingItem:
    """A light proxy for one setting: a cached value plus blocking ``SetValue``/``SetDefault``.

    The cache is changed only by :meth:`_update` (called from the owner's signal handlers).
    """

    def __init__(
        self,
        bus: dbus.bus.BusConnection,
        servicename: str,
        path: str,
        callback: ChangeCallback,
        initial_value: Any = None,
    ) -> None:
        self._bus = bus
        self._servicename = servicename
        self._path = path
        self._callback = callback
        self._value = initial_value

    def _update(self, value: Any, text: Any) -> None:
        self._value = unwrap_dbus_value(value)
        if text is None:
            text = str(self._value)
        self._callback(self._servicename, self._path, {"Value": self._value, "Text": text})

    def get_value(self) -> Any:
        return self._value

    def set_value(self, v: Any) -> int:
        return self._bus.call_blocking(
            self._servicename,
            self._path,
            dbus_interface=VE_INTERFACE,
            method="SetValue",
            signature="v",
            args=[wrap_dbus_value(v)],
        )

    def set_default(self) -> Any:
        return self._bus.call_blocking(
            self._servicename,
            self._path,
            dbus_interface=VE_INTERFACE,
            method="SetDefault",
            signature="",
            args=[],
        )


class SettingsDevice:
    """Registers a driver's settings with ``com.victronenergy.settings`` and tracks them.

    ``supportedSettings`` maps a short name to ``[path, default, min, max]`` or
    ``[path, default, min, max, silent]``; the D-Bus type of the setting follows the Python type
    of ``default`` (``55`` is an integer setting, ``55.0`` a float one).
    ``eventCallback(name, old, new)`` is called whenever a tracked setting changes, including
    changes this object made itself.
    """

    def __init__(
        self,
        bus: dbus.bus.BusConnection,
        supportedSettings: dict[str, list[Any]],
        eventCallback: Callable[[str, Any, Any], Any] | None,
        name: str = "com.victronenergy.settings",
        timeout: float = 0,
    ) -> None:
        self._bus = bus
        self._dbus_name = name
        self._eventCallback = eventCallback
        self._values: dict[str, Any] = {}
        self._settings: dict[str, VeDbusSettingItem] = {}
        self._by_path: dict[str, VeDbusSettingItem] = {}

        deadline = time.monotonic() + timeout
        while name not in self._bus.list_names():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Exception(f"The settings service {name} does not exist!")
            logger.info("waiting for %s", name)
            time.sleep(min(0.1, remaining))

        self._matches: list[Any] = []
        self.addSettings(supportedSettings)

    def _subscribe(self) -> None:
        self._matches = [
            self._bus.add_signal_receiver(
                self._on_properties_changed,
                signal_name="PropertiesChanged",
                dbus_interface=VE_INTERFACE,
                bus_name=self._dbus_name,
                path_keyword="path",
            ),
            self._bus.add_signal_receiver(
                self._on_items_changed,
                signal_name="ItemsChanged",
                dbus_interface=VE_INTERFACE,
                bus_name=self._dbus_name,
                path="/",
            ),
        ]

    def _on_properties_changed(self, changes: Any, path: str | None = None) -> None:
        item = self._by_path.get(str(path))
        if item is None or not isinstance(changes, dict) or "Value" not in changes:
            return
        item._update(changes["Value"], changes.get("Text"))

    def _on_items_changed(self, items: Any) -> None:
        if not isinstance(items, dict):
            return
        for path, changes in items.items():
            item = self._by_path.get(str(path))
            if item is None or not isinstance(changes, dict) or "Value" not in changes:
                continue
            item._update(changes["Value"], changes.get("Text"))

    def addSettings(self, settings: dict[str, list[Any]]) -> None:
        """Create (or look up) several settings with one ``AddSettings`` call."""
        name_of_path = {options[PATH]: setting for setting, options in settings.items()}
        request = [
            {
                "path": options[PATH],
                "default": options[VALUE],
                "min": options[MINIMUM],
                "max": options[MAXIMUM],
                "silent": len(options) > SILENT and options[SILENT],
            }
            for options in settings.values()
        ]
        result = self._bus.call_blocking(
            self._dbus_name, "/", SETTINGS_INTERFACE, "AddSettings", "aa{sv}", [request]
        )
        if not self._matches:
            # Subscribe only now, as velib_python does: a change signal the settings service sent
            # while answering AddSettings is then never delivered to us.
            self._subscribe()
        for entry in result:
            error = entry["error"]
            if error != 0:
                logger.error("Failed to add setting %s, error %s", entry["path"], error)
                continue
            path = str(entry["path"])
            setting = name_of_path[path]
            item = VeDbusSettingItem(
                self._bus,
                self._dbus_name,
                path,
                callback=partial(self.handleChangedSetting, setting),
                initial_value=unwrap_dbus_value(entry["value"]),
            )
            self._settings[setting] = item
            self._by_path[path] = item
            self._values[setting] = item.get_value()

    def addSetting(
        self,
        path: str,
        value: Any,
        _min: Any,
        _max: Any,
        silent: bool = False,
        callback: Callable[[str, str, dict[str, Any]], Any] | None = None,
    ) -> VeDbusItemImport:
        """Create one setting with the older ``AddSetting`` call; returns an importer for it.

        Nothing is added when the setting exists with the same default, min, max and silent.
        """
        item = VeDbusItemImport(self._bus, self._dbus_name, path, callback)
        if item.exists and (value, _min, _max, silent) == item._proxy.GetAttributes():
            return item
        if isinstance(value, int):
            item_type = "i"
        elif isinstance(value, float):
            item_type = "f"
        else:
            item_type = "s"
        group = VeDbusItemImport(self._bus, self._dbus_name, "/Settings", createsignal=False)
        relative = path.replace("/Settings/", "", 1)
        method = "AddSilentSetting" if silent else "AddSetting"
        getattr(group._proxy, method)("", relative, value, item_type, _min, _max)
        return VeDbusItemImport(self._bus, self._dbus_name, path, callback)

    def handleChangedSetting(
        self, setting: str, servicename: str, path: str, changes: dict[str, Any]
    ) -> None:
        """Record a change of ``setting`` and report ``(setting, old, new)`` to the owner."""
        old = self._values.get(setting)
        self._values[setting] = changes["Value"]
        if self._eventCallback is not None:
            self._eventCallback(setting, old, changes["Value"])

    def setDefault(self, path: str) -> None:
        """Reset the setting at ``path`` to its default (blocking)."""
        VeDbusItemImport(self._bus, self._dbus_name, path, createsignal=False).set_default()

    def __getitem__(self, setting: str) -> Any:
        return self._settings[setting].get_value()

    def __setitem__(self, setting: str, newvalue: Any) -> None:
        result = self._settings[setting].set_value(newvalue)
        if result != 0:
            raise AssertionError(
                f"settings service refused {setting} = {newvalue!r} (SetValue returned {result})"
            )
