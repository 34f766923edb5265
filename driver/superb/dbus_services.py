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
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from driver import __version__
from driver.venus.mainloop import guarded
from driver.venus.service import PRODUCT_ID_BMS, create_service, remove_service

log = logging.getLogger("canbridge.superb")

PROCESS = "dbus-superb"
MANAGER_SERVICE = "com.victronenergy.canbridge.superb"

_UNITS = {"/Dc/0/Voltage": ("V", 2), "/Dc/0/Current": ("A", 1), "/Dc/0/Power": ("W", 0),
          "/Dc/0/Temperature": ("°C", 1), "/Soc": ("%", 1), "/Capacity": ("Ah", 0),
          "/InstalledCapacity": ("Ah", 0), "/ConsumedAmphours": ("Ah", 1), "/TimeToGo": ("s", 0),
          "/Info/MaxChargeVoltage": ("V", 2), "/Info/MaxChargeCurrent": ("A", 1),
          "/Info/MaxDischargeCurrent": ("A", 1), "/Info/BatteryLowVoltage": ("V", 2),
          "/System/MinCellVoltage": ("V", 3), "/System/MaxCellVoltage": ("V", 3),
          "/System/MinCellTemperature": ("°C", 1), "/System/MaxCellTemperature": ("°C", 1),
          "/History/TotalAhCharged": ("Ah", 1), "/History/AhReturnedLastCharge": ("Ah", 1),
          "/History/AhSinceEqualization": ("Ah", 1),
          "/CanBridge/RemainingCapacity": ("Ah", 1)}

#: Default VRM device instance of every CanBridge battery: below 256, so dbus_modbustcp
#: reaches it with unit ID = instance (docs/paths.md, "Device instances"); the settings service
#: moves a clash to the next free one, and Venus's device-instance setting still changes it.
BATTERY_DEFAULT_INSTANCE = 40


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
        instance = app.settings.device_instance(uid, "battery", BATTERY_DEFAULT_INSTANCE)
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
        self.is_aggregate = "/System/NrOfBatteries" in self.paths
        for path in self.paths:
            svc.add_path(path, None, gettextcallback=_text)
        self.contract_paths = _contract_paths(self.paths, self.is_aggregate)
        for path in self.contract_paths:
            svc.add_path(path, None, gettextcallback=_text)
        svc.register()
        self.svc = svc
        self.instance = instance
        self.history: dict[str, float] = {}
        self.cells: int | None = None
        _SERVICES.setdefault(id(app), {})[uid] = self
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

        Only what changed since the last update is set, and nothing at all when nothing
        changed (the tick refreshes batteries; most of the time their values are the same)."""
        merged = {path: value for path, value in values.items() if path in self._pathset}
        merged.update(self._contract_values(values, connected))
        merged["/Connected"] = int(connected)
        if merged == self._last:
            return
        with self.svc as s:
            for path, value in merged.items():
                if path not in self._last or self._last[path] != value:
                    s[path] = value
        self._last.update(merged)

    def _contract_values(self, values: Mapping[str, Any], connected: bool) -> dict[str, Any]:
        """The Venus-contract paths derived from ``values`` (docs/paths.md): ``/State``,
        ``/Capacity`` as the Lynx publishes it, short cell ids, the aggregate's ``/System``
        rows and ``/History``. Overrides win over ``values``."""
        # last known: an offline battery keeps its history and cell count (neither runs back)
        for path in HISTORY_PATHS:
            if values.get(path) is not None:
                self.history[path] = float(values[path])
        if isinstance(values.get("/System/NrOfCellsPerBattery"), int):
            self.cells = int(values["/System/NrOfCellsPerBattery"])
        out: dict[str, Any] = {}
        out["/State"] = battery_state(values, connected, self.is_aggregate)
        if "/Capacity" in self.paths:
            out["/Capacity"] = values.get("/InstalledCapacity")
            out["/CanBridge/RemainingCapacity"] = values.get("/Capacity")
        if self.is_aggregate:
            members = [m for m in _SERVICES.get(id(self.app), {}).values() if not m.is_aggregate]
            count = values.get("/System/NrOfBatteries")
            out.update(aggregate_system(values, [m.cells for m in members], count))
            out.update(aggregate_history([m.history for m in members], count))
            for path in CELL_ID_PATHS:
                short, long_ = cell_id(values.get(path))
                out[path] = short
                out["/CanBridge/" + path.rsplit("/", 1)[1]] = long_
        return {k: v for k, v in out.items() if k in self.contract_paths or k in self.paths}

    def remove(self) -> None:
        _SERVICES.get(id(self.app), {}).pop(self.uid, None)
        if self.svc is not None:
            remove_service(self.svc)
            self.svc = None


# -- the Venus path contract (docs/paths.md) ---------------------------------------------------
# Kept apart from the values the battery model computes: these are presentation rules that make
# the services read like a Lynx Smart BMS to gui-v2, dbus_modbustcp, systemcalc and VRM.

#: /State values (dbus_modbustcp attributes.csv, Lynx Smart BMS): 9 running, 10 error
STATE_RUNNING = 9
STATE_ERROR = 10

#: the per-battery history the aggregate combines (SuperB objects 2014/6050/6052); a battery's
#: AhSinceEqualization is not combined (see aggregate_history)
HISTORY_PATHS = ("/History/ChargeCycles", "/History/TotalAhCharged",
                 "/History/AhReturnedLastCharge")
CELL_ID_PATHS = ("/System/MinVoltageCellId", "/System/MaxVoltageCellId",
                 "/System/MinTemperatureCellId", "/System/MaxTemperatureCellId")
#: Modbus-TCP holds a cell id in 4 registers (string[4]): 8 characters
CELL_ID_MAX = 8

#: every live BatteryService of a driver process (by id of its app), so the aggregate can read
#: its members' published history and cell counts without a change to the driver's data flow
_SERVICES: dict[int, dict[str, BatteryService]] = {}


def _contract_paths(paths: tuple[str, ...], aggregate: bool) -> tuple[str, ...]:
    extra = ["/State"]
    if "/Capacity" in paths:
        extra.append("/CanBridge/RemainingCapacity")
    if aggregate:
        extra += ["/System/NrOfCellsPerBattery", "/System/BatteriesParallel",
                  "/System/BatteriesSeries", *HISTORY_PATHS]
        extra += ["/CanBridge/" + p.rsplit("/", 1)[1] for p in CELL_ID_PATHS]
    return tuple(p for p in extra if p not in paths)


def battery_state(values: Mapping[str, Any], connected: bool, aggregate: bool) -> int:
    """``/State``: running while the battery (for the aggregate: any member) answers, error
    while it is offline (BmsCable alarm)."""
    if aggregate:
        online = values.get("/System/NrOfModulesOnline")
        return STATE_RUNNING if isinstance(online, int) and online > 0 else STATE_ERROR
    return STATE_RUNNING if connected else STATE_ERROR


def cell_id(label: Any) -> tuple[str | None, str | None]:
    """(short id, long form) of the battery that holds an extreme cell: ``"node 3 (2300003)"``
    -> ``("B3", "node 3 (2300003)")``. SuperB reports the extreme cell values per battery but
    not which cell, so the short id names the battery by node id (≤ 8 characters)."""
    if label is None:
        return None, None
    text = str(label)
    m = re.match(r"node (\d+)", text)
    short = f"B{m.group(1)}" if m else text
    return short[:CELL_ID_MAX], text


def aggregate_system(values: Mapping[str, Any], cells: list[Any],
                     count: Any) -> dict[str, Any]:
    """The aggregate's System page rows: the members are one parallel bank."""
    n = count if isinstance(count, int) and count > 0 else None
    known = {c for c in cells if isinstance(c, int)}
    same = len(known) == 1 and n is not None and len(cells) == n \
        and all(isinstance(c, int) for c in cells)
    return {"/System/BatteriesParallel": n, "/System/BatteriesSeries": 1 if n else None,
            "/System/NrOfCellsPerBattery": known.pop() if same else None}


def aggregate_history(members: list[Mapping[str, float]], count: Any) -> dict[str, Any]:
    """The aggregate's ``/History``: only what combines honestly, and only when every member's
    value is known (a member never read could hold any value).

    * ChargeCycles: the maximum (the bank's batteries cycle together; a sum would count each
      cycle once per battery, the maximum is the most worn battery);
    * TotalAhCharged, AhReturnedLastCharge: sums (Ah into a parallel bank add up);
    * AhSinceEqualization: left out (each battery's equalisation happens at its own time).
    """
    out: dict[str, Any] = dict.fromkeys(HISTORY_PATHS)
    n = count if isinstance(count, int) and count > 0 else None
    if n is None or len(members) != n:
        return out
    combine: Callable[[list[float]], float]
    for path, combine in (("/History/ChargeCycles", max),
                          ("/History/TotalAhCharged", sum),
                          ("/History/AhReturnedLastCharge", sum)):
        vals = [m[path] for m in members if path in m]
        if len(vals) == n:
            v = combine(vals)
            out[path] = int(v) if path == "/History/ChargeCycles" else round(v, 1)
    return out


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
