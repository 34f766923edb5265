"""The SuperB driver's D-Bus services (through :mod:`driver.venus` only).

* :class:`BatteryService` — one ``com.victronenergy.battery`` service (a battery, or the
  aggregate), registered once with every path, updated in one batch per poll;
* :class:`ManagerService` — ``com.victronenergy.canbridge.superb``: driver status, per-node
  diagnostics and the battery scan (not a battery-class name, so systemcalc ignores it; it
  reaches MQTT like every ``com.victronenergy.*`` service). Paths in docs/superb.md.

Everything here runs on the GLib main loop thread.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from driver import __version__
from driver.venus.mainloop import guarded
from driver.venus.service import PRODUCT_ID_BMS, create_service, remove_service

log = logging.getLogger("canbridge.superb")

PROCESS = "dbus-superb"
MANAGER_SERVICE = "com.victronenergy.canbridge.superb"

_UNITS = {"/Dc/0/Voltage": ("V", 2), "/Dc/0/Current": ("A", 1), "/Dc/0/Power": ("W", 0),
          "/Dc/0/Temperature": ("°C", 1), "/Soc": ("%", 1), "/Capacity": ("Ah", 1),
          "/InstalledCapacity": ("Ah", 0), "/ConsumedAmphours": ("Ah", 1), "/TimeToGo": ("s", 0),
          "/Info/MaxChargeVoltage": ("V", 2), "/Info/MaxChargeCurrent": ("A", 1),
          "/Info/MaxDischargeCurrent": ("A", 1), "/Info/BatteryLowVoltage": ("V", 2),
          "/System/MinCellVoltage": ("V", 3), "/System/MaxCellVoltage": ("V", 3),
          "/System/MinCellTemperature": ("°C", 1), "/System/MaxCellTemperature": ("°C", 1)}


_UNSET = object()


def _text(path: str, value: Any) -> str:
    unit = _UNITS.get(path)
    if unit is None or not isinstance(value, int | float):
        return str(value)
    return f"{value:.{unit[1]}f}{unit[0]}"


class BatteryService:
    """A registered ``com.victronenergy.battery`` service."""

    def __init__(self, app: Any, uid: str, suffix: str, *, productname: str, connection: str,
                 paths: Iterable[str], serial: str, firmware: str | None,
                 extra: Mapping[str, Any] | None = None) -> None:
        self.app = app
        self.uid = uid
        self.name = f"com.victronenergy.battery.{suffix}"
        instance = app.settings.device_instance(uid, "battery", 512)
        self._name_setting = f"/Settings/Devices/{uid}/CustomName"
        custom = app.settings.add(self._name_setting, "", 0, 0,
                                  guarded(self._name_changed, "custom name changed"))
        svc = create_service(app.velib, self.name, processname=PROCESS,
                             processversion=__version__, connection=connection,
                             deviceinstance=instance, productid=PRODUCT_ID_BMS,
                             productname=productname, firmwareversion=firmware, connected=0)
        svc.add_path("/CustomName", custom or "", writeable=True,
                     onchangecallback=guarded(self._custom_name_written, "custom name written"))
        svc.add_path("/Serial", serial)
        for path, value in (extra or {}).items():
            svc.add_path(path, value)
        self.paths = tuple(paths)
        self._pathset = frozenset(self.paths)
        self._last: dict[str, Any] = {}
        for path in self.paths:
            svc.add_path(path, None, gettextcallback=_text)
        svc.register()
        self.svc = svc
        self.instance = instance
        log.info("published %s (instance %d)", self.name, instance)

    def _custom_name_written(self, path: str, value: Any) -> bool:
        if not isinstance(value, str) or len(value) > 64:
            return False
        return bool(self.app.settings.set(self._name_setting, value) == 0)

    def _name_changed(self, path: str, old: Any, new: Any) -> None:
        if self.svc is not None:
            self.svc["/CustomName"] = new or ""

    def update(self, values: Mapping[str, Any], connected: bool) -> None:
        """Publish new values (one ItemsChanged); paths not in ``values`` are left alone.

        Nothing is done when nothing changed since the last update (the tick refreshes every
        battery twice a second; most of the time its values are the same)."""
        wanted = {p: v for p, v in values.items() if p in self._pathset}
        wanted["/Connected"] = int(connected)
        if wanted == self._last:
            return
        with self.svc as s:
            for path, value in wanted.items():
                if self._last.get(path, _UNSET) != value or path not in self._last:
                    s[path] = value
        self._last.update(wanted)

    def remove(self) -> None:
        if self.svc is not None:
            remove_service(self.svc)
            self.svc = None


class ManagerService:
    """``com.victronenergy.canbridge.superb``: status, diagnostics, scan."""

    def __init__(self, app: Any, start_scan: Callable[[], bool]) -> None:
        self._start_scan = start_scan
        svc = create_service(app.velib, MANAGER_SERVICE, processname=PROCESS,
                             processversion=__version__, connection="CANopen",
                             deviceinstance=0, productid=0, productname="CanBridge SuperB driver")
        for path, value in (("/Status/Can", ""), ("/Status/CanOpen", 0), ("/Status/Mode", None),
                            ("/Status/ModeNote", ""),
                            ("/Status/NodeIds", ""), ("/Status/NodeIdsError", ""),
                            ("/Status/Online", 0), ("/Status/Nodes", "{}"),
                            ("/Status/Services", "[]"), ("/Scan/Running", 0),
                            ("/Scan/Progress", None), ("/Scan/Result", "[]"),
                            ("/Scan/Range", ""), ("/Scan/LastError", "")):
            svc.add_path(path, value)
        svc.add_path("/Scan/Start", 0, writeable=True,
                     onchangecallback=guarded(self._scan_written, "scan start written"))
        svc.register()
        self.svc = svc

    def _scan_written(self, path: str, value: Any) -> bool:
        try:
            want = int(value)
        except (TypeError, ValueError):
            return False
        if want == 1:
            return self._start_scan()
        return want == 0

    def update(self, values: Mapping[str, Any]) -> None:
        with self.svc as s:
            for path, value in values.items():
                s[path] = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) \
                    else value

    def remove(self) -> None:
        remove_service(self.svc)
