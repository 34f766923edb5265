"""``dbus-sma``: the SMA Sunny Island bridge (external BMS and vebus service).

Threads: the GLib main loop (all D-Bus: settings, battery source, vebus service, energy
counters), python-can's Notifier (received frames -> :class:`SiState`), and the BMS sender
(controller + frames on a monotonic schedule). The sender starts before anything else, with the
schema defaults, so conservative BMS frames go out while the settings service and the battery
are still being found.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from driver import __version__, canports, safety
from driver import app as appmod
from driver.canbus import open_bus
from driver.sma import energy, frames, vebus
from driver.sma.controller import (
    CHARGE_BLOCKING,
    Battery,
    Config,
    ConfigError,
    Dvcc,
    Inputs,
    Level,
    Output,
)
from driver.sma.sender import BmsSender, CanLink, check_injection
from driver.sma.sistate import SiState
from driver.venus.mainloop import guarded

log = logging.getLogger("canbridge.sma")

SYSTEM_SERVICE = "com.victronenergy.system"
DEFAULT_STATE_DIR = "/data/conf/canbridge"
ENERGY_FILE = "sma_energy.json"
POLL_S = 1.0
VEBUS_DEFAULT_INSTANCE = 20  # below 256: Modbus-TCP unit ID = instance (docs/paths.md)
CERBO_VEBUS_INSTANCE = 276
#: diagnostics paths of this module (battery source, SoC source, sender, receive)
EXTRA_PATHS: dict[str, Any] = {
    "/CanBridge/BatterySource": "", "/CanBridge/BatterySourceReason": "",
    "/CanBridge/SocSource": "", "/CanBridge/SocSourceReason": "",
    "/CanBridge/BatteryServices": "[]", "/CanBridge/BuildFailures": 0,
    "/CanBridge/StartCommands": 0, "/CanBridge/RxTooShort": 0,
    "/CanBridge/ChargeReasons": "",
}
#: how often the battery services and their device instances are listed
SCAN_S = 10.0
DVCC_PATHS = {
    "/BatteryOperationalLimits/MaxChargeVoltage": "max_charge_voltage",
    "/BatteryOperationalLimits/MaxChargeCurrent": "max_charge_current",
    "/BatteryOperationalLimits/MaxDischargeCurrent": "max_discharge_current",
    "/BatteryOperationalLimits/BatteryLowVoltage": "battery_low_voltage",
    "/Dc/0/MaxChargeCurrent": "dc_max_charge_current",
}
#: systemcalc's flag that it still writes these DVCC fields (docs/sma.md, DVCC)
DVCC_REFRESH: dict[str, tuple[str, ...]] = {
    "/Control/Dvcc": ("dc_max_charge_current",),
    "/Control/BmsParameters": ("max_charge_voltage", "max_charge_current",
                               "max_discharge_current", "battery_low_voltage"),
}
BATTERY_ALARMS = ("LowVoltage", "HighVoltage", "LowCellVoltage", "HighCellVoltage",
                  "HighChargeCurrent", "HighDischargeCurrent", "LowTemperature",
                  "HighTemperature", "LowChargeTemperature", "HighChargeTemperature",
                  "InternalFailure", "BmsCable", "CellImbalance")
CHARGE_KEYS = {f.metadata["key"] for f in Config.__dataclass_fields__.values()}
#: the user's copy of the Sunny Island's grid (232.03) and generator (234.03) current limits,
#: published as /Ac/In/1 and /Ac/In/2 /CurrentLimit (docs/paths.md)
INPUT_LIMIT_KEYS = ("Sma/AcIn1CurrentLimit", "Sma/AcIn2CurrentLimit")


#: battery paths whose invalid value blocks charging (a published limit, flag or alarm that
#: cannot be read is not "no limit"); temperatures are not here: without a usable one the
#: Sunny Island's own 0x305 temperature is used, else there is no charging
SAFETY_PATHS = ("Info/MaxChargeVoltage", "Info/MaxChargeCurrent", "Io/AllowToCharge",
                *(f"Alarms/{a}" for a in CHARGE_BLOCKING))


def _num(v: Any, rng: safety.Range = safety.ANY) -> float | None:
    """A D-Bus number parsed at the edge (finite, in range) or None."""
    return safety.parse_number(v, rng)


def parse_battery(values: Any, at: float, updated: float | None = None) -> Battery | None:
    """A :class:`Battery` from a ``GetValue`` of a battery service's ``/``; None when the reply
    is not a dict. Every value is parsed at the edge (:mod:`driver.safety`): NaN, +-inf,
    strings, empty arrays (Venus's invalid), bools where numbers belong and out-of-range values
    become None; a safety-relevant path published with such a value is named in
    ``Battery.invalid`` (it blocks charging)."""
    if not isinstance(values, dict):
        return None
    connected = values.get("Connected")
    if "Connected" in values and safety.parse_flag(connected) is not True:
        # an offline battery keeps its service; its values are no data
        return Battery(at=at, voltage=None, current=None, temperature=None, soc=None)
    bad: set[str] = set()

    def num(key: str, rng: safety.Range = safety.ANY) -> float | None:
        if key not in values:
            return None
        v = safety.parse_number(values[key], rng)
        if v is None and key in SAFETY_PATHS:
            bad.add(key)
        return v

    def flag(key: str) -> bool | None:
        if key not in values:
            return True  # not published: this battery does not gate it
        v = safety.parse_flag(values[key])
        if v is None and key in SAFETY_PATHS:
            bad.add(key)
        return v

    alarms: dict[str, int] = {}
    for name in BATTERY_ALARMS:
        key = f"Alarms/{name}"
        if key in values:
            lvl = safety.parse_level(values[key])
            if lvl is None:
                if key in SAFETY_PATHS:
                    bad.add(key)
            else:
                alarms[name] = lvl
    capacity = num("InstalledCapacity", safety.CAPACITY)
    if capacity is None:
        capacity = num("Capacity", safety.CAPACITY)
    return Battery(
        at=at, voltage=num("Dc/0/Voltage", safety.VOLTAGE),
        current=num("Dc/0/Current", safety.CURRENT),
        temperature=num("Dc/0/Temperature", safety.TEMPERATURE),
        soc=num("Soc"), soh=num("Soh", safety.PERCENT), capacity=capacity,
        max_charge_voltage=num("Info/MaxChargeVoltage", safety.VOLTAGE),
        max_charge_current=num("Info/MaxChargeCurrent", safety.LIMIT_CURRENT),
        max_discharge_current=num("Info/MaxDischargeCurrent", safety.LIMIT_CURRENT),
        battery_low_voltage=num("Info/BatteryLowVoltage", safety.VOLTAGE),
        allow_to_charge=flag("Io/AllowToCharge"), allow_to_discharge=flag("Io/AllowToDischarge"),
        alarms=alarms, product=safety.parse_text(values.get("ProductName")) or "",
        cell_temperature_min=num("System/MinCellTemperature", safety.TEMPERATURE),
        cell_temperature_max=num("System/MaxCellTemperature", safety.TEMPERATURE),
        invalid=frozenset(bad), updated=updated)


_logged: dict[tuple[int, str], str] = {}


def log_once(owner: object, key: str, message: str) -> None:
    """Log ``message`` as a warning when it differs from the last one under ``key``."""
    k = (id(owner), key)
    if _logged.get(k, "") != message:
        _logged[k] = message
        if message:
            log.warning("%s", message)


def measured(values: Any) -> tuple[Any, ...]:
    """The measured values whose change proves the source is alive (frozen-data check)."""
    if not isinstance(values, dict):
        return ()
    return tuple(repr(values.get(k)) for k in ("Dc/0/Voltage", "Dc/0/Current", "Soc",
                                                "Dc/0/Temperature", "Dc/0/Power"))


def source_class(name: str) -> str:
    """``com.victronenergy.battery`` of ``com.victronenergy.battery.ttyS5`` (or of systemcalc's
    ``com.victronenergy.battery/512``)."""
    base = name.split("/", 1)[0]
    parts = base.split(".")
    return ".".join(parts[:3])


def refuse_source(name: str, own: tuple[str, str] = ("", "")) -> str:
    """Why ``name`` (a service name, or systemcalc's ``class/instance``) cannot be the battery
    source ('' if it can). ``own`` = this bridge's vebus (service name, "class/instance")."""
    if source_class(name) == "com.victronenergy.vebus":
        mine = name in own and name != ""
        what = "this bridge's own vebus service" if mine else "a vebus service"
        return (f"{name} is {what}: its SoC and voltage are the Sunny Island's, it has no "
                f"BMS limits, alarms or temperature")
    return ""


class Bridge:
    """Everything ``dbus-sma`` runs, wired together on the main loop."""

    def __init__(self, app: appmod.App, state_dir: Path) -> None:
        from gi.repository import GLib

        self.app = app
        self.GLib = GLib
        self.state_dir = state_dir
        self.si = SiState()
        self.svc: Any = None
        self._publish_pending = False
        self._published_values: Any = None
        self._mode = vebus.MODE_ON
        self._dvcc = Dvcc()
        self._poll_inflight = False
        self._last_battery_error = ""
        # battery source (resolved every poll) and the SoC source
        self.source = ""                  # service in use ('' = none)
        self.source_reason = "not resolved yet"
        self.soc_source = ""
        self.soc_reason = ""
        self._instances: dict[str, int] = {}   # service name -> /DeviceInstance
        self._battery_names: list[str] = []
        self._scan_at = -math.inf
        self._scan_inflight = False
        self._measured: tuple[Any, ...] = ()
        self._updated: float | None = None
        self._soc_value: float | None = None
        self._soc_at = -math.inf
        self._dvcc_expired: tuple[str, ...] = ()
        self._own: tuple[str, str] = ("", "")
        self._energy_path = state_dir / ENERGY_FILE
        self.counters = energy.EnergyCounters(energy.load(self._energy_path))
        self._energy_tick = time.monotonic()
        self._persist_source: int | None = None
        self._bms_lost = 0
        self._last_level: Level | None = None
        self.config = self._read_config() or Config()
        iface = self.get("Sma/CanInterface")
        self.can_error = ""  # why the CAN link cannot be opened ("" when it is open)
        self._port_watch = canports.PortWatch()  # the GX's CAN interfaces, published
        self.link = CanLink(self._open_link, self._on_frame, describe=iface)
        self.sender = BmsSender(
            self.link, Inputs(self.config), float(self.get("Sma/SendInterval")),
            max_failure_time=float(self.get("Sma/MaxSendFailureTime")), on_fatal=self._fatal,
            on_output=self._on_output)
        self.sender.start()
        GLib.timeout_add(int(POLL_S * 1000), guarded(self._poll, "dbus-sma poll"))
        app.loop.on_stop(self._on_stop)

    def _open_link(self) -> Any:
        """Open the Sunny Island's bus (sender thread); remembers why it failed, for D-Bus.
        "auto", a missing port or a typo fail with a message and the sender keeps retrying."""
        try:
            bus = open_bus(self.get("Sma/CanInterface"), int(self.get("Sma/Bitrate")),
                           role=canports.ROLE_SMA)
        except Exception as exc:
            self.can_error = str(exc)
            raise
        self.can_error = ""
        return bus

    # -- settings ----------------------------------------------------------------------------
    def get(self, key: str) -> Any:
        """A setting by key; the schema default until the settings service has answered."""
        if self.app.settings is not None and self.app.settings.ready:
            return self.app.settings[key]
        return self.app.schema.by_key[key].dbus_default()

    def _read_config(self) -> Config | None:
        try:
            return Config.from_settings(self.get)
        except ConfigError as exc:
            log.error("%s; keeping the previous charge settings", exc)
            return None

    def settings_ready(self) -> None:
        self.changed("", None, None)
        self._create_service()
        self._schedule_persist()

    def changed(self, path: str, old: Any, new: Any) -> None:
        """A setting changed (or all of them, ``path`` empty): apply it now."""
        if path:
            log.info("setting %s changed: %r -> %r", path, old, new)
        key = path.rsplit("/Settings/CanBridge/", 1)[-1] if path else ""
        if not key or key.split("/", 1)[-1] in CHARGE_KEYS:
            cfg = self._read_config()
            if cfg is not None and cfg != self.config:
                self.config = cfg
                self.sender.set_inputs(replace(self.sender.inputs, config=cfg), immediate=True)
        if not key or key == "Sma/SendInterval":
            self.sender.set_interval(float(self.get("Sma/SendInterval")))
        if not key or key == "Sma/MaxSendFailureTime":
            self.sender.max_failure_time = float(self.get("Sma/MaxSendFailureTime"))
        if key in ("Sma/CanInterface", "Sma/Bitrate") or (
                not key and self.get("Sma/CanInterface") != self.link.describe):
            self.link.describe = self.get("Sma/CanInterface")
            self.link.broken = True  # the sender thread reopens with the new setting
        if key == "Sma/EnergyPersistInterval":
            self._schedule_persist()
        if key in INPUT_LIMIT_KEYS:
            self._request_publish()  # shown on the vebus service now, not at the next poll
        if key in ("Sma/BatteryService", "Sma/SocService"):
            self._measured, self._updated = (), None
            self._soc_value = None
            self._poll()

    # -- vebus service ------------------------------------------------------------------------
    def _create_service(self) -> None:
        if self.svc is not None:
            return
        from driver.venus.service import create_service

        setting = str(self.get("Sma/CanInterface"))
        try:  # the device identity follows the port ("auto" is the port it resolves to)
            setting = canports.resolve(setting, canports.ROLE_SMA)
        except canports.CanPortError:
            pass
        iface = re.sub(r"[^A-Za-z0-9_]", "_", setting)
        uid = f"canbridge_sma_{iface}"
        inst = self.app.settings.device_instance(uid, "vebus", VEBUS_DEFAULT_INSTANCE)
        if inst >= CERBO_VEBUS_INSTANCE:
            log.error("vebus instance %d is not below %d (the Cerbo's own VE.Bus); set "
                      "/Settings/Devices/%s/ClassAndVrmInstance lower", inst,
                      CERBO_VEBUS_INSTANCE, uid)
        svc = create_service(
            self.app.velib, f"com.victronenergy.vebus.{uid}", processname="dbus-sma",
            processversion=__version__,
            connection=f"Sunny Island on {self.get('Sma/CanInterface')}",
            deviceinstance=inst, productid=vebus.PRODUCT_ID, productname=vebus.PRODUCT_NAME,
            firmwareversion=vebus.FIRMWARE_VERSION, hardwareversion=None, connected=1)
        # velib adds /FirmwareVersion without a text callback ("16777215"); put it back, before
        # registering, with the vebus texts ("unknown") through velib's own delete and add
        del svc["/FirmwareVersion"]
        svc.add_path("/FirmwareVersion", vebus.FIRMWARE_VERSION, gettextcallback=vebus.text)
        vebus.CustomName(self.app.settings, uid).add_to(svc)
        svc.add_path("/Serial", uid)
        # the current limits hold the settings' values from the start (no input known yet)
        statics = {**vebus.STATIC_PATHS, **vebus.input_limits(None, *self._input_limits())}
        for path, value in statics.items():
            svc.add_path(path, value, gettextcallback=vebus.text)
        for path, value in EXTRA_PATHS.items():
            svc.add_path(path, value)
        svc.add_path("/Mode", self._mode, writeable=True,
                     onchangecallback=guarded(self._mode_written, "/Mode write"),
                     gettextcallback=vebus.text)
        # the CAN interfaces of this GX and why the link is not open (docs/install.md)
        svc.add_path("/CanBridge/CanInterfaces", "[]")
        svc.add_path("/CanBridge/CanError", "")
        for path in DVCC_PATHS:
            # /Dc/0/MaxChargeCurrent holds a number from the start: systemcalc only writes it
            # when it already holds one (docs/sma.md, DVCC). The value is our own maximum.
            initial = self.config.max_charge_current if path == "/Dc/0/MaxChargeCurrent" \
                else None
            svc.add_path(path, initial, writeable=True,
                         onchangecallback=guarded(self._dvcc_written, "DVCC write"),
                         gettextcallback=vebus.text)
        for flow in energy.FLOWS:
            svc.add_path(f"/Energy/{flow}", round(self.counters.kwh[flow], 6),
                         gettextcallback=vebus.text)
        svc.register()
        self.svc = svc
        self._own = (f"com.victronenergy.vebus.{uid}", f"com.victronenergy.vebus/{inst}")
        log.info("published com.victronenergy.vebus.%s (instance %d)", uid, inst)

    def _mode_written(self, path: str, value: Any) -> bool:
        mode = safety.parse_number(value)
        if mode not in (vebus.MODE_ON, vebus.MODE_OFF):
            return False  # charger-only / inverter-only are not available
        value = int(mode)  # type: ignore[arg-type]
        self._mode = value
        log.info("/Mode set to %s", "on" if value == vebus.MODE_ON else "off")
        self.sender.set_inputs(replace(self.sender.inputs, mode_on=value == vebus.MODE_ON),
                               immediate=True)
        if value == vebus.MODE_ON:
            self.sender.request_start()
        return True

    def _dvcc_written(self, path: str, value: Any) -> bool:
        rng = safety.VOLTAGE if "Voltage" in path else safety.LIMIT_CURRENT
        num = _num(value, rng)
        if value is not None and num is None:
            return False  # NaN, a string, a negative current: refused at the edge
        name = DVCC_PATHS[path]
        written = dict(self._dvcc.written)
        written[name] = time.monotonic()
        self._dvcc = replace(self._dvcc, **{name: num}, written=written)
        self.sender.set_inputs(replace(self.sender.inputs, dvcc=self._dvcc), immediate=True)
        return True

    # -- CAN receive (Notifier thread) ---------------------------------------------------------
    def _on_frame(self, msg: Any) -> None:
        if self.si.feed(msg):
            self._request_publish()

    def _on_output(self, out: Output) -> None:
        # Sender thread: when what we send changed (a setting, a DVCC write, the ladder), show
        # it on D-Bus now rather than with the Sunny Island's next frame (up to a period later).
        if out.values != self._published_values or out.level != self._last_level:
            self._request_publish()

    def _request_publish(self) -> None:
        if not self._publish_pending:
            self._publish_pending = True
            from driver.venus.dbusconn import call_soon

            call_soon(guarded(self._publish, "vebus publish"))

    # -- periodic work on the main loop ---------------------------------------------------------
    def _poll(self) -> bool:
        """Every second: read the battery source, publish, integrate energy."""
        check_injection("poll")
        now = time.monotonic()
        snap = self.si.snapshot()
        self.sender.set_inputs(replace(self.sender.inputs, si=snap.measurement(now)))
        self._read_battery()
        self._refresh_dvcc()
        self._integrate(snap, now)
        self._publish()
        return True

    def _read_battery(self) -> None:
        """Resolve the battery source, then read it (and the SoC source), asynchronously."""
        if self._poll_inflight or self.app.settings is None or not self.app.settings.ready:
            return
        now = time.monotonic()
        if now - self._scan_at >= SCAN_S and not self._scan_inflight:
            self._scan()
        name = str(self.get("Sma/BatteryService")).strip()
        if name:
            self._use_source(name, "set in Sma/BatteryService")
            return
        from driver.venus.reader import get_value_async

        self._poll_inflight = True

        def got(value: Any) -> None:
            self._poll_inflight = False
            active = safety.parse_text(value) or ""
            if not active or "/" not in active:
                self._set_source("", f"systemcalc has no battery ({value!r} in "
                                     f"/ActiveBatteryService)")
                return
            cls, _, inst = active.partition("/")
            why = refuse_source(active, self._own)
            if why:
                self._set_source("", f"systemcalc's battery refused: {why}")
                return
            found = [n for n, i in self._instances.items()
                     if source_class(n) == cls and str(i) == inst]
            if not found:
                self._set_source("", f"systemcalc's battery {active} not found on D-Bus")
                self._scan_at = -math.inf
                return
            self._use_source(found[0], f"systemcalc's /ActiveBatteryService {active}")

        def failed(why: str) -> None:
            self._poll_inflight = False
            self._set_source("", f"cannot read {SYSTEM_SERVICE} /ActiveBatteryService: {why}")

        try:
            get_value_async(self.app.bus, self.app.velib, SYSTEM_SERVICE,
                            "/ActiveBatteryService",
                            on_value=guarded(got, "battery source reply"),
                            on_error=guarded(failed, "battery source error"),
                            timeout=POLL_S * 2)
        except Exception as exc:  # noqa: BLE001 - a dead connection must not stop the loop
            failed(str(exc))

    def _refresh_dvcc(self) -> None:
        """Keep DVCC's written limits alive while systemcalc still writes them.

        systemcalc rewrites its limits every few seconds, but velib calls our write callback
        only when a value *changes*, so a steady limit looks unrefreshed. What systemcalc
        publishes about its own writing is the refresh instead (docs/sma.md, DVCC):
        ``/Control/Dvcc`` = 1 for ``/Dc/0/MaxChargeCurrent`` (written with DVCC on, BMS or
        not) and ``/Control/BmsParameters`` = 1 for ``/BatteryOperationalLimits/*`` (written
        only while a BMS is selected: with "No BMS" systemcalc stops writing them and
        publishes 0). Values whose flag is not 1 — systemcalc gone, hung, DVCC off, no BMS —
        expire after ``DvccTimeout``.
        """
        if not self._dvcc.written:
            return
        from driver.venus.reader import get_value_async

        def refresh(names: tuple[str, ...]) -> Callable[[Any], None]:
            def got(value: Any) -> None:
                if safety.parse_flag(value) is not True:
                    return
                now = time.monotonic()
                written = {k: (now if k in names else at)
                           for k, at in self._dvcc.written.items()
                           if getattr(self._dvcc, k) is not None}
                self._dvcc = replace(self._dvcc, written=written)
                self.sender.set_inputs(replace(self.sender.inputs, dvcc=self._dvcc))
            return got

        for flag, names in DVCC_REFRESH.items():
            try:
                get_value_async(self.app.bus, self.app.velib, SYSTEM_SERVICE, flag,
                                on_value=guarded(refresh(names), "DVCC state reply"),
                                on_error=lambda _why: None, timeout=POLL_S * 2)
            except Exception as exc:  # noqa: BLE001 - a dead connection must not stop the loop
                log.debug("cannot ask systemcalc for %s: %s", flag, exc)

    def _set_source(self, service: str, reason: str) -> None:
        if (service, reason) != (self.source, self.source_reason):
            if service:
                log.info("battery source: %s (%s)", service, reason)
            else:
                log.warning("no battery source: %s; no charging, the ladder escalates", reason)
            if service != self.source:
                self._measured, self._updated = (), None
        self.source, self.source_reason = service, reason

    def _use_source(self, service: str, reason: str) -> None:
        why = refuse_source(service, self._own)
        if why:
            self._set_source("", f"refused: {why}")
            return
        self._set_source(service, reason)
        self._read_source(service)
        soc_name = str(self.get("Sma/SocService")).strip()
        if soc_name and soc_name != service:
            self._read_soc(soc_name)
        else:
            self.soc_source, self.soc_reason = service, "the battery source"

    def _read_source(self, service: str) -> None:
        from driver.venus.reader import get_value_async

        self._poll_inflight = True

        def got(values: Any) -> None:
            self._poll_inflight = False
            if service != self.source:
                return  # the source changed meanwhile
            now = time.monotonic()
            m = measured(values)
            if m != self._measured:
                self._measured, self._updated = m, now
            b = parse_battery(values, now, self._updated)
            if b is None:
                return
            if b.invalid:
                log_once(self, "invalid", f"battery {service} publishes invalid "
                         f"{', '.join(sorted(b.invalid))}: no charging until it is valid")
            else:
                log_once(self, "invalid", "")
            b = self._with_soc(b, now)
            if self._last_battery_error:
                log.info("battery source %s answers again", service)
                self._last_battery_error = ""
            self.sender.set_inputs(replace(self.sender.inputs, battery=b))

        def failed(why: str) -> None:
            self._poll_inflight = False
            if why != self._last_battery_error:
                log.warning("cannot read battery source %s: %s", service, why)
                self._last_battery_error = why

        try:
            get_value_async(self.app.bus, self.app.velib, service, "/",
                            on_value=guarded(got, "battery reply"),
                            on_error=guarded(failed, "battery read error"),
                            timeout=POLL_S * 2)
        except Exception as exc:  # noqa: BLE001 - a dead connection must not stop the loop
            self._poll_inflight = False
            failed(str(exc))

    def _with_soc(self, b: Battery, now: float) -> Battery:
        """The battery reading with the SoC source's SoC when one is set and fresh."""
        soc_name = str(self.get("Sma/SocService")).strip()
        if not soc_name or soc_name == self.source:
            return b
        if self._soc_value is not None and now - self._soc_at <= 3 * POLL_S:
            self.soc_source, self.soc_reason = soc_name, "set in Sma/SocService"
            return replace(b, soc=self._soc_value)
        self.soc_source = self.source
        self.soc_reason = f"{soc_name} has no valid /Soc; using the battery source's"
        return b

    def _read_soc(self, service: str) -> None:
        from driver.venus.reader import get_value_async

        why = refuse_source(service, self._own)
        if why:
            self._soc_value = None
            self.soc_reason = f"refused: {why}"
            return

        def got(value: Any) -> None:
            self._soc_value = safety.parse_number(value, safety.PERCENT)
            self._soc_at = time.monotonic()

        def failed(why: str) -> None:
            self._soc_value = None

        try:
            get_value_async(self.app.bus, self.app.velib, service, "/Soc",
                            on_value=guarded(got, "SoC reply"),
                            on_error=guarded(failed, "SoC read error"), timeout=POLL_S * 2)
        except Exception as exc:  # noqa: BLE001
            failed(str(exc))

    def _scan(self) -> None:
        """List the battery services and their device instances (for systemcalc's
        ``class/instance`` and the source pickers)."""
        self._scan_inflight = True
        self._scan_at = time.monotonic()

        def names(reply: Any) -> None:
            self._scan_inflight = False
            batteries = sorted(str(n) for n in reply
                               if str(n).startswith("com.victronenergy.battery."))
            self._battery_names = batteries
            for n in list(self._instances):
                if n not in batteries:
                    del self._instances[n]
            from driver.venus.reader import get_value_async

            for n in batteries:
                def inst(value: Any, n: str = n) -> None:
                    v = safety.parse_number(value)
                    if v is not None:
                        self._instances[n] = int(v)
                get_value_async(self.app.bus, self.app.velib, n, "/DeviceInstance",
                                on_value=guarded(inst, "device instance reply"),
                                on_error=lambda _why: None, timeout=POLL_S * 2)

        def failed(exc: Any) -> None:
            self._scan_inflight = False
            log.debug("cannot list D-Bus names: %s", exc)

        try:
            self.app.bus.call_async("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                    "org.freedesktop.DBus", "ListNames", "", [],
                                    guarded(names, "name list reply"),
                                    guarded(failed, "name list error"), timeout=POLL_S * 2)
        except Exception as exc:  # noqa: BLE001
            failed(exc)

    def _integrate(self, snap: Any, now: float) -> None:
        dt = now - self._energy_tick
        self._energy_tick = now
        phases = int(self.get("Sma/Phases"))
        powers = vebus.phase_powers(snap, now, phases)
        fl = snap.get(0x307, now)
        if powers is None or fl is None:
            return
        ai = vebus.active_input(fl["flags"])
        self.counters.add(powers, {vebus.INPUT_GRID: 1, vebus.INPUT_GENERATOR: 2}.get(ai), dt)

    def _publish(self) -> None:
        self._publish_pending = False
        out = self.sender.output
        if out is not None:
            self._log_level(out)
            self._published_values = out.values
        if self.svc is None:
            return
        now = time.monotonic()
        snap = self.si.snapshot()
        values = vebus.paths(snap, now, int(self.get("Sma/Phases")), out, self._bms_lost,
                             limits=self._input_limits())
        values["/CanBridge/TxFrames"] = self.sender.stats.frames
        values["/CanBridge/TxFailures"] = self.sender.stats.failures
        values["/CanBridge/Reopens"] = max(0, self.link.reopens - 1)
        values["/CanBridge/CanInterfaces"] = json.dumps(
            [p.to_dict() for p in self._port_watch.ports()], sort_keys=True)
        values["/CanBridge/CanError"] = self.can_error
        values["/CanBridge/BuildFailures"] = self.sender.stats.build_failures
        values["/CanBridge/RxTooShort"] = snap.too_short
        if out is not None:
            values["/CanBridge/StartCommands"] = out.start_commands
            values["/CanBridge/ChargeReasons"] = "; ".join(out.reasons)
        values["/CanBridge/BatterySource"] = self.source
        values["/CanBridge/BatterySourceReason"] = self.source_reason
        values["/CanBridge/SocSource"] = self.soc_source
        values["/CanBridge/SocSourceReason"] = self.soc_reason
        values["/CanBridge/BatteryServices"] = json.dumps(self._battery_names)
        values["/Mode"] = self._mode
        for flow in energy.FLOWS:
            values[f"/Energy/{flow}"] = round(self.counters.kwh[flow], 6)
        with self.svc as s:
            for path, v in values.items():
                s[path] = v

    def _input_limits(self) -> tuple[float | None, float | None]:
        """(grid, generator) AC input current limits from the settings, read on every publish
        so a change shows within a second; a value outside the schema's range is invalid."""
        limits = []
        for key in INPUT_LIMIT_KEYS:
            s = self.app.schema.by_key[key]
            rng = (-math.inf if s.min is None else s.min, math.inf if s.max is None else s.max)
            limits.append(_num(self.get(key), rng))
        return limits[0], limits[1]

    def _log_dvcc(self, out: Output) -> None:
        if out.dvcc_expired != self._dvcc_expired:
            new = set(out.dvcc_expired) - set(self._dvcc_expired)
            if new:
                log.warning("DVCC has not refreshed %s for %.0f s: back to the bridge's own "
                            "limits", ", ".join(sorted(new)), self.config.dvcc_timeout)
            self._dvcc_expired = out.dvcc_expired

    def _log_level(self, out: Output) -> None:
        self._log_dvcc(out)
        self._bms_lost = {Level.STALE: 1, Level.ALARM: 2, Level.STOPPED: 2}.get(out.level, 0)
        if out.level == Level.STARTUP and out.data_age >= self.config.stale_warning_time:
            self._bms_lost = 1
        self._last_level = out.level

    # -- persistence and shutdown ---------------------------------------------------------------
    def _schedule_persist(self) -> None:
        if self._persist_source is not None:
            self.GLib.source_remove(self._persist_source)
        interval = float(self.get("Sma/EnergyPersistInterval"))
        self._persist_source = self.GLib.timeout_add(
            int(interval * 1000), guarded(self._persist_tick, "energy persistence"))

    def _persist_tick(self) -> bool:
        self.persist()
        return True

    def persist(self) -> None:
        try:
            energy.save(self._energy_path, self.counters.kwh)
            log.debug("energy counters saved to %s", self._energy_path)
        except OSError as exc:
            log.error("cannot save energy counters to %s: %s", self._energy_path, exc)

    def _fatal(self, why: str) -> None:
        from driver.venus.dbusconn import call_soon

        call_soon(self.app.loop.fail, why)

    def _on_stop(self) -> None:
        self._integrate(self.si.snapshot(), time.monotonic())
        self.persist()
        log.info("energy counters saved to %s", self._energy_path)
        final = []
        if int(self.get("Sma/ShutdownAction")) == 1:
            log.warning("commanding the Sunny Island to standby before exiting")
            final = [frames.encode_startstop(False), frames.encode_quickstop()]
        else:
            log.info("leaving the Sunny Island running on its last frames")
        self.sender.stop(final)


def main(argv: list[str] | None = None) -> int:
    ap: argparse.ArgumentParser = appmod.common_args(__doc__ or "dbus-sma")
    ap.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                    help="where the energy counters are kept (default %(default)s)")
    args = ap.parse_args(argv)
    # The BMS sender thread must get the GIL quickly when its deadline comes, even while the
    # main loop is busy with D-Bus work (default switch interval: 5 ms).
    sys.setswitchinterval(0.0005)
    holder: dict[str, Bridge] = {}
    pending = {"ready": False}

    def changed(path: str, old: object, new: object) -> None:
        if "bridge" in holder:
            holder["bridge"].changed(path, old, new)

    def ready(_app: appmod.App) -> None:
        if "bridge" in holder:
            holder["bridge"].settings_ready()
        else:
            pending["ready"] = True

    app = appmod.start("dbus-sma", args, ("Sma/",),
                       on_change=guarded(changed, "setting change"),
                       on_ready=guarded(ready, "settings ready"))
    if app is None:
        return appmod.run(app)
    holder["bridge"] = Bridge(app, Path(args.state_dir))
    if pending["ready"] or app.settings.ready:
        holder["bridge"].settings_ready()
    return appmod.run(app)


if __name__ == "__main__":
    sys.exit(main())
