"""``dbus-sma``: the SMA Sunny Island bridge (external BMS and vebus service).

Threads: the GLib main loop (all D-Bus: settings, battery source, vebus service, energy
counters), python-can's Notifier (received frames -> :class:`SiState`), and the BMS sender
(controller + frames on a monotonic schedule). The sender starts before anything else, with the
schema defaults, so conservative BMS frames go out while the settings service and the battery
are still being found.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from driver import __version__
from driver import app as appmod
from driver.canbus import open_bus
from driver.sma import energy, frames, vebus
from driver.sma.controller import (
    Battery,
    Config,
    ConfigError,
    Dvcc,
    Inputs,
    Level,
    Output,
)
from driver.sma.sender import BmsSender, CanLink
from driver.sma.sistate import SiState

log = logging.getLogger("canbridge.sma")

SYSTEM_SERVICE = "com.victronenergy.system"
DEFAULT_STATE_DIR = "/data/conf/canbridge"
ENERGY_FILE = "sma_energy.json"
POLL_S = 1.0
VEBUS_DEFAULT_INSTANCE = 20  # below 256: Modbus-TCP unit ID = instance (docs/paths.md)
CERBO_VEBUS_INSTANCE = 276
DVCC_PATHS = {
    "/BatteryOperationalLimits/MaxChargeVoltage": "max_charge_voltage",
    "/BatteryOperationalLimits/MaxChargeCurrent": "max_charge_current",
    "/BatteryOperationalLimits/MaxDischargeCurrent": "max_discharge_current",
    "/BatteryOperationalLimits/BatteryLowVoltage": "battery_low_voltage",
    "/Dc/0/MaxChargeCurrent": "dc_max_charge_current",
}
BATTERY_ALARMS = ("LowVoltage", "HighVoltage", "LowCellVoltage", "HighCellVoltage",
                  "HighChargeCurrent", "HighDischargeCurrent", "LowTemperature",
                  "HighTemperature", "LowChargeTemperature", "HighChargeTemperature",
                  "InternalFailure", "BmsCable", "CellImbalance")
CHARGE_KEYS = {f.metadata["key"] for f in Config.__dataclass_fields__.values()}


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def parse_battery(values: Any, system: bool, at: float) -> Battery | None:
    """A :class:`Battery` from a ``GetValue`` of a battery service's ``/`` (or the system
    service's ``/Dc/Battery``); None when the reply is not a dict."""
    if not isinstance(values, dict):
        return None
    if system:
        return Battery(at=at, voltage=_num(values.get("Voltage")),
                       current=_num(values.get("Current")),
                       temperature=_num(values.get("Temperature")),
                       soc=_num(values.get("Soc")), product="system battery")
    connected = values.get("Connected")
    if connected is not None and not connected:
        # an offline battery keeps its service; its values are no data
        return Battery(at=at, voltage=None, current=None, temperature=None, soc=None)
    alarms = {name: int(v) for name in BATTERY_ALARMS
              if isinstance(v := values.get(f"Alarms/{name}"), (int, float))}
    atc, atd = values.get("Io/AllowToCharge"), values.get("Io/AllowToDischarge")
    return Battery(
        at=at, voltage=_num(values.get("Dc/0/Voltage")), current=_num(values.get("Dc/0/Current")),
        temperature=_num(values.get("Dc/0/Temperature")), soc=_num(values.get("Soc")),
        soh=_num(values.get("Soh")), capacity=_num(values.get("InstalledCapacity"))
        or _num(values.get("Capacity")),
        max_charge_voltage=_num(values.get("Info/MaxChargeVoltage")),
        max_charge_current=_num(values.get("Info/MaxChargeCurrent")),
        max_discharge_current=_num(values.get("Info/MaxDischargeCurrent")),
        battery_low_voltage=_num(values.get("Info/BatteryLowVoltage")),
        allow_to_charge=atc is None or bool(atc), allow_to_discharge=atd is None or bool(atd),
        alarms=alarms, product=str(values.get("ProductName") or ""))


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
        self._energy_path = state_dir / ENERGY_FILE
        self.counters = energy.EnergyCounters(energy.load(self._energy_path))
        self._energy_tick = time.monotonic()
        self._persist_source: int | None = None
        self._bms_lost = 0
        self._last_level: Level | None = None
        self.config = self._read_config() or Config()
        iface = self.get("Sma/CanInterface")
        self.link = CanLink(lambda: open_bus(self.get("Sma/CanInterface"),
                                             int(self.get("Sma/Bitrate"))),
                            self._on_frame, describe=iface)
        self.sender = BmsSender(
            self.link, Inputs(self.config), float(self.get("Sma/SendInterval")),
            max_failure_time=float(self.get("Sma/MaxSendFailureTime")), on_fatal=self._fatal,
            on_output=self._on_output)
        self.sender.start()
        GLib.timeout_add(int(POLL_S * 1000), self._poll)
        app.loop.on_stop(self._on_stop)

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
        if key == "Sma/BatteryService":
            self._poll()

    # -- vebus service ------------------------------------------------------------------------
    def _create_service(self) -> None:
        if self.svc is not None:
            return
        from driver.venus.service import create_service

        iface = re.sub(r"[^A-Za-z0-9_]", "_", str(self.get("Sma/CanInterface")))
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
        vebus.CustomName(self.app.settings, uid).add_to(svc)
        svc.add_path("/Serial", uid)
        for path, value in vebus.STATIC_PATHS.items():
            svc.add_path(path, value, gettextcallback=vebus.text)
        svc.add_path("/Mode", self._mode, writeable=True, onchangecallback=self._mode_written,
                     gettextcallback=vebus.text)
        for path in DVCC_PATHS:
            svc.add_path(path, None, writeable=True, onchangecallback=self._dvcc_written,
                         gettextcallback=vebus.text)
        for flow in energy.FLOWS:
            svc.add_path(f"/Energy/{flow}", round(self.counters.kwh[flow], 6),
                         gettextcallback=vebus.text)
        svc.register()
        self.svc = svc
        log.info("published com.victronenergy.vebus.%s (instance %d)", uid, inst)

    def _mode_written(self, path: str, value: Any) -> bool:
        if value not in (vebus.MODE_ON, vebus.MODE_OFF):
            return False  # charger-only / inverter-only are not available
        self._mode = int(value)
        log.info("/Mode set to %s", "on" if value == vebus.MODE_ON else "off")
        self.sender.set_inputs(replace(self.sender.inputs, mode_on=value == vebus.MODE_ON),
                               immediate=True)
        if value == vebus.MODE_ON:
            self.sender.request_start()
        return True

    def _dvcc_written(self, path: str, value: Any) -> bool:
        num = _num(value)
        if value is not None and (num is None or num < 0):
            return False
        self._dvcc = replace(self._dvcc, **{DVCC_PATHS[path]: num})
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

            call_soon(self._publish)

    # -- periodic work on the main loop ---------------------------------------------------------
    def _poll(self) -> bool:
        """Every second: read the battery source, publish, integrate energy."""
        now = time.monotonic()
        snap = self.si.snapshot()
        self.sender.set_inputs(replace(self.sender.inputs, si=snap.measurement(now)))
        self._read_battery()
        self._integrate(snap, now)
        self._publish()
        return True

    def _read_battery(self) -> None:
        if self._poll_inflight or self.app.settings is None or not self.app.settings.ready:
            return
        from driver.venus.reader import get_value_async

        name = str(self.get("Sma/BatteryService")).strip()
        system = not name
        service, path = (SYSTEM_SERVICE, "/Dc/Battery") if system else (name, "/")
        self._poll_inflight = True

        def got(values: Any) -> None:
            self._poll_inflight = False
            b = parse_battery(values, system, time.monotonic())
            if b is None:
                return
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
            get_value_async(self.app.bus, self.app.velib, service, path, on_value=got,
                            on_error=failed, timeout=POLL_S * 2)
        except Exception as exc:  # noqa: BLE001 - a dead connection must not stop the loop
            self._poll_inflight = False
            failed(str(exc))

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
        values = vebus.paths(snap, now, int(self.get("Sma/Phases")), out, self._bms_lost)
        values["/CanBridge/TxFrames"] = self.sender.stats.frames
        values["/CanBridge/TxFailures"] = self.sender.stats.failures
        values["/CanBridge/Reopens"] = max(0, self.link.reopens - 1)
        values["/Mode"] = self._mode
        for flow in energy.FLOWS:
            values[f"/Energy/{flow}"] = round(self.counters.kwh[flow], 6)
        with self.svc as s:
            for path, v in values.items():
                s[path] = v

    def _log_level(self, out: Output) -> None:
        self._bms_lost = {Level.STALE: 1, Level.ALARM: 2, Level.STOPPED: 2}.get(out.level, 0)
        if out.level == Level.STARTUP and out.data_age >= self.config.stale_warning_time:
            self._bms_lost = 1
        self._last_level = out.level

    # -- persistence and shutdown ---------------------------------------------------------------
    def _schedule_persist(self) -> None:
        if self._persist_source is not None:
            self.GLib.source_remove(self._persist_source)
        interval = float(self.get("Sma/EnergyPersistInterval"))
        self._persist_source = self.GLib.timeout_add(int(interval * 1000), self._persist_tick)

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

    app = appmod.start("dbus-sma", args, ("Sma/",), on_change=changed, on_ready=ready)
    if app is None:
        return appmod.run(app)
    holder["bridge"] = Bridge(app, Path(args.state_dir))
    if pending["ready"] or app.settings.ready:
        holder["bridge"].settings_ready()
    return appmod.run(app)


if __name__ == "__main__":
    sys.exit(main())
