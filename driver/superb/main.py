"""``dbus-superb``: SuperB Epsilon V2 batteries over CANopen as Venus battery services.

The process: one :class:`~driver.superb.canport.CanPort` (python-can bus + canopen Network)
for the configured interface with its one SDO thread, one
:class:`~driver.superb.poller.NodePoller` task in it per configured node ID, and on the GLib
main loop the D-Bus services: one battery service per battery, the manager service with status
and scan, and the BMS for DVCC:

* exactly one service is the BMS (publishes ``/Info/MaxCharge*``): with one node configured in
  individual mode, that battery's service; otherwise the aggregate battery, and the per-battery
  services carry no ``/Info/Max*`` paths at all. With more than one node, individual mode is
  refused (logged, shown in ``/Status/ModeNote``): systemcalc follows only one BMS, and a
  second battery's CCL 0 (cold, error, offline) would be ignored (docs/superb.md, "DVCC");
* the aggregate counts every configured node from the first second: a node that has not
  answered yet is offline in it (no share of the charge current).

Every setting applies live.

Every callback the GLib main loop runs (the tick, reports and status handed over from the
poller and port threads, setting changes, scan results) goes through
:func:`driver.venus.mainloop.guarded`: an exception is logged with its traceback and the process
exits for its supervisor instead of staying up with a removed timer and stale services.
Test-only fault injection: when ``$CANBRIDGE_SUPERB_INJECT`` names a file that holds ``tick``,
the tick raises (nothing happens without the variable).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import replace
from typing import Any

from driver import app as appmod
from driver import canports
from driver.canbus import open_bus
from driver.schema import SettingValueError, parse_node_ids
from driver.superb import battery as bat
from driver.superb import scan as scanmod
from driver.superb.canport import CanPort, PortStatus
from driver.superb.poller import NodePoller, NodeReport, PollConfig
from driver.venus.mainloop import guarded

log = logging.getLogger("canbridge.superb")

MODE_INDIVIDUAL, MODE_AGGREGATE = 0, 1
AGGREGATE_UID = "superb_aggregate"
TICK_MS = 500
#: the C heap is trimmed this long after start-up (the batteries identified) and then every
#: TRIM_EVERY_S (driver.app.trim_heap)
TRIM_FIRST_S, TRIM_EVERY_S = 20, 600
INJECT_ENV = "CANBRIDGE_SUPERB_INJECT"


class InjectedFault(RuntimeError):
    """Raised by the test-only fault injection."""


def _injected(stage: str) -> bool:
    path = os.environ.get(INJECT_ENV)
    if not path:
        return False
    try:
        with open(path, encoding="utf-8") as f:
            return stage in f.read().split()
    except OSError:
        return False

_LIMIT_KEYS = {
    "ChargeVoltage": "charge_voltage", "BatteryLowVoltage": "battery_low_voltage",
    "MaxChargeCurrent": "max_charge_current", "MaxDischargeCurrent": "max_discharge_current",
    "TotalMaxChargeCurrent": "total_max_charge_current",
    "TotalMaxDischargeCurrent": "total_max_discharge_current",
    "MinChargeTemperature": "min_charge_temperature",
    "ChargeDerateTemperature": "charge_derate_temperature",
    "MaxChargeTemperature": "max_charge_temperature",
    "MaxDischargeTemperature": "max_discharge_temperature",
    "Alarms/LowVoltage": "alarm_low_voltage", "Alarms/HighVoltage": "alarm_high_voltage",
    "Alarms/LowSoc": "alarm_low_soc", "Alarms/HighTemperature": "alarm_high_temperature",
    "Alarms/LowTemperature": "alarm_low_temperature",
    "InstalledCapacity": "installed_capacity", "SocHoldTime": "soc_hold_time",
    "LimitRampRate": "limit_ramp_rate",
}
_POLL_KEYS = {"PollInterval": "interval", "SlowPollInterval": "slow_interval",
              "MediumPollInterval": "medium_interval",
              "SdoTimeout": "sdo_timeout", "OfflineAfterTimeouts": "offline_after",
              "HeartbeatTimeout": "heartbeat_timeout", "ValueMaxAge": "max_age"}


class SuperbDriver:
    """Ties settings, the CAN port, the pollers and the D-Bus services together (main loop)."""

    def __init__(self, app: appmod.App) -> None:
        from driver.venus import dbusconn

        self.app = app

        def call_soon(fn: Any, *args: Any) -> None:
            # from any thread: run fn on the main loop, behind the guard
            dbusconn.call_soon(guarded(fn, f"dbus-superb {getattr(fn, '__name__', fn)}"),
                               *args)

        self._call_soon = call_soon
        self.port: CanPort | None = None
        self.pollers: dict[int, NodePoller] = {}
        self.reports: dict[int, NodeReport] = {}
        self.services: dict[int, Any] = {}
        self.aggregate: Any = None
        self.aggregator = bat.Aggregator()
        self.last_soc: dict[int, tuple[float, float]] = {}
        #: node -> (values, limits, monotonic time computed)
        self._computed: dict[int, tuple[dict[str, Any], bat.ChargeLimits, float]] = {}
        self._clean: dict[int, tuple[NodeReport, dict[str, Any]]] = {}
        self._ticks = 0
        self.manager: Any = None
        self.port_status = PortStatus()
        self.poll_config = self._poll_config()
        self.limits = self._limits()
        self.node_ids: list[int] = self._node_ids() or []
        self.mode = self._effective_mode()
        self._scan_thread: threading.Thread | None = None
        self._timer: int | None = None
        self._can_ports: tuple[float, dict[str, Any]] | None = None

    # -- settings -------------------------------------------------------------------------------
    def _setting(self, key: str) -> Any:
        return self.app.settings[f"Superb/{key}"]

    def _poll_config(self) -> PollConfig:
        return PollConfig(**{attr: type(getattr(PollConfig(), attr))(self._setting(key))
                             for key, attr in _POLL_KEYS.items()})

    def _limits(self) -> bat.Limits:
        # A safety-relevant value read every cycle that is older than one poll interval plus
        # ValueMaxAge counts as unknown; values read less often (the temperatures) carry their
        # own limit in the report (NodeReport.max_ages), which takes precedence.
        age = float(self._setting("PollInterval")) + float(self._setting("ValueMaxAge"))
        return bat.Limits(**{attr: type(getattr(bat.Limits(), attr))(self._setting(key))
                             for key, attr in _LIMIT_KEYS.items()}, value_max_age=age)

    def _node_ids(self) -> list[int] | None:
        try:
            return parse_node_ids(self._setting("NodeIds"))
        except SettingValueError as exc:  # the schema refuses these already; belt and braces
            log.error("node IDs %r refused: %s", self._setting("NodeIds"), exc)
            return None

    def setting_changed(self, path: str, old: Any, new: Any) -> None:
        """Apply one accepted setting change now (main loop)."""
        key = path.split("/Settings/CanBridge/Superb/", 1)[-1]
        log.info("setting %s changed: %r -> %r", key, old, new)
        if key in ("CanInterface", "Bitrate"):
            self._can_ports = None
            self._restart_port()
        elif key == "NodeIds":
            ids = self._node_ids()
            if ids is not None:
                self._set_nodes(ids)
        elif key == "Mode":
            self._set_mode(self._effective_mode())
        elif key in _POLL_KEYS:
            self.poll_config = self._poll_config()
            self.limits = self._limits()
            for p in self.pollers.values():
                p.wake()
        elif key in _LIMIT_KEYS:
            self.limits = self._limits()
            self._republish_all()
        self._publish_status()

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        from gi.repository import GLib

        from driver.superb.dbus_services import ManagerService

        self.manager = ManagerService(self.app, self.start_scan)
        # the CAN interfaces of this GX and what the setting resolves to (docs/install.md)
        for path, value in (("/CanInterfaces", "[]"), ("/Status/CanInterface", ""),
                            ("/Status/CanError", "")):
            self.manager.svc.add_path(path, value)
        if self.mode == MODE_AGGREGATE:
            self._create_aggregate()
        self._open_port()
        self._timer = GLib.timeout_add(TICK_MS, guarded(self._tick, "dbus-superb tick"))
        # the heap trimmed once after start-up (False: not again), then every TRIM_EVERY_S
        GLib.timeout_add_seconds(TRIM_FIRST_S, guarded(lambda: appmod.trim_heap() and False,
                                                       "heap trim"))
        GLib.timeout_add_seconds(TRIM_EVERY_S, guarded(lambda: appmod.trim_heap() or True,
                                                       "heap trim"))
        self.app.loop.on_stop(self.stop)
        self._publish_status()

    def stop(self) -> None:
        from gi.repository import GLib

        if self._timer is not None:
            GLib.source_remove(self._timer)
            self._timer = None
        self._close_port()

    def _open_port(self) -> None:
        iface = str(self._setting("CanInterface"))
        bitrate = int(self._setting("Bitrate"))

        def factory(interface: str, rate: int) -> Any:
            # resolved on every (re)try: "auto", a missing or a BMS-only port fail with a
            # message (on /Status/Can) and the port keeps retrying, e.g. until a USB adapter
            # is plugged in
            return open_bus(interface, rate, role=canports.ROLE_SUPERB)

        port = CanPort(iface, bitrate, factory,
                       on_status=lambda st: self._call_soon(self._port_status_changed, port,
                                                            replace(st)))
        if os.environ.get(INJECT_ENV):
            port.sdo.inject = lambda: _injected("sdoloop")
        self.port = port
        port.start()
        for n in self.node_ids:
            self._start_poller(n)

    def _close_port(self) -> None:
        for p in self.pollers.values():
            p.stop(join=False)
        for p in self.pollers.values():
            p.stop(join=True)
        self.pollers = {}
        if self.port is not None:
            self.port.stop()
            self.port = None

    def _restart_port(self) -> None:
        log.info("reconnecting the CAN interface")
        self._close_port()
        for n in list(self.reports):
            self.reports[n] = replace(self.reports[n], online=False, values={},
                                      state="bus-down")
        self._republish_all()
        self._open_port()

    def _port_status_changed(self, port: CanPort, status: PortStatus) -> None:
        if port is self.port:
            self.port_status = status
            self._publish_status()

    def _start_poller(self, node: int) -> None:
        assert self.port is not None
        poller: NodePoller

        def report(r: NodeReport) -> None:
            self._call_soon(self._on_report, poller, r)

        poller = NodePoller(node, self.port, lambda: self.poll_config, report)
        self.pollers[node] = poller
        poller.start()

    # -- node list and mode ------------------------------------------------------------------------
    def _set_nodes(self, ids: list[int]) -> None:
        old = set(self.node_ids)
        self.node_ids = ids
        for n in sorted(old - set(ids)):
            p = self.pollers.pop(n, None)
            if p is not None:
                p.stop(join=False)
            self._remove_battery(n)
            self.reports.pop(n, None)
            self.last_soc.pop(n, None)
            self._computed.pop(n, None)
            self._clean.pop(n, None)
        if self.port is not None:
            for n in sorted(set(ids) - old):
                self._start_poller(n)
        log.info("polling nodes %s", ",".join(map(str, ids)))
        self._set_mode(self._effective_mode())
        self._update_aggregate()

    def _effective_mode(self) -> int:
        """Aggregate with more than one node whatever the Mode setting (one BMS for DVCC)."""
        wanted = int(self._setting("Mode"))
        if wanted == MODE_INDIVIDUAL and len(self.node_ids) > 1:
            log.warning("individual mode refused for %d batteries: DVCC follows only one BMS, "
                        "so the aggregate battery is the BMS and the per-battery services carry "
                        "no charge limits", len(self.node_ids))
            return MODE_AGGREGATE
        return wanted

    def mode_note(self) -> str:
        """Why the mode in use is not the Mode setting (empty when it is)."""
        if int(self._setting("Mode")) == MODE_INDIVIDUAL and self.mode == MODE_AGGREGATE:
            return (f"individual mode refused for {len(self.node_ids)} batteries: the aggregate "
                    "battery is the only BMS for DVCC")
        return ""

    def _set_mode(self, mode: int) -> None:
        if mode == self.mode:
            return
        self.mode = mode
        log.info("switching to %s mode", "aggregate" if mode == MODE_AGGREGATE else "individual")
        # Per-battery services change whether they carry /Info/MaxChargeVoltage, which only
        # counts at registration: publish them again. Remove first, so DVCC never sees two BMSes.
        for n in list(self.services):
            self._remove_battery(n)
        if mode == MODE_INDIVIDUAL and self.aggregate is not None:
            self.aggregate.remove()
            self.aggregate = None
        for r in list(self.reports.values()):
            self._update_battery(r)
        if mode == MODE_AGGREGATE:
            self._create_aggregate()

    # -- services ----------------------------------------------------------------------------------
    def _with_cvl(self) -> bool:
        """Whether the per-battery services are the BMS (carry /Info/Max*)."""
        return self.mode == MODE_INDIVIDUAL

    def _create_battery(self, r: NodeReport) -> Any:
        from driver.superb.dbus_services import BatteryService

        assert r.serial is not None
        paths = bat.DATA_PATHS + ((bat.CVL_PATH,) if self._with_cvl() else ())
        if not self._with_cvl():
            paths = tuple(p for p in paths if p not in bat.BMS_LIMIT_PATHS) + tuple(
                bat.OWN_LIMIT_PATHS.values())
        name = r.identity.get("device_name") or "Epsilon V2"
        iface = self.port.interface if self.port is not None else "?"
        return BatteryService(self.app, f"superb_{r.serial}", f"superb_{r.serial}",
                              productname=f"SuperB {name}",
                              connection=f"CANopen node {r.node_id} on {iface}", paths=paths,
                              serial=str(r.serial), firmware=r.firmware,
                              extra={"/NodeId": r.node_id})

    def _create_aggregate(self) -> None:
        from driver.superb.dbus_services import BatteryService

        self.aggregate = BatteryService(self.app, AGGREGATE_UID, AGGREGATE_UID,
                                        productname="SuperB aggregate battery",
                                        connection="CANopen (aggregate)",
                                        paths=bat.AGGREGATE_PATHS, serial=AGGREGATE_UID,
                                        firmware=None)
        self._update_aggregate()

    def _remove_battery(self, node: int) -> None:
        svc = self.services.pop(node, None)
        if svc is not None:
            svc.remove()

    def _on_report(self, poller: NodePoller, r: NodeReport) -> None:
        if self.pollers.get(r.node_id) is not poller:
            return  # a poller that was stopped meanwhile
        self.reports[r.node_id] = r
        if r.online and r.values.get("soc") is not None:
            self.last_soc[r.node_id] = (float(r.values["soc"]), time.monotonic())
        before = self._computed.get(r.node_id)
        self._update_battery(r)
        if self.mode == MODE_AGGREGATE:
            after = self._computed[r.node_id][1]
            # A change of a battery's limits reaches the aggregate at once; its measurements
            # join at the next tick (twice a second) instead of with every battery's report.
            if before is None or before[1] != after:
                self._update_aggregate()

    def _compute(self, r: NodeReport, now: float) -> tuple[dict[str, Any], bat.ChargeLimits]:
        """One battery's values and limits at ``now``, kept for the aggregate and the status
        (each battery is computed once per report and once per tick, not once per member of
        every aggregate update)."""
        # the report's values parsed once (a report is computed again at ticks until the next)
        cached = self._clean.get(r.node_id)
        if cached is None or cached[0] is not r:
            cached = self._clean[r.node_id] = (r, bat.clean_values(r))
        lim = bat.charge_limits(r, self.limits, now, cached[1])
        values = bat.battery_values(r, self.limits, True, now, lim, clean=cached[1])
        self._computed[r.node_id] = (values, lim, now)
        return values, lim

    def _update_battery(self, r: NodeReport) -> None:
        svc = self.services.get(r.node_id)
        if r.serial is not None and (svc is None or svc.uid != f"superb_{r.serial}"):
            if svc is not None:
                self._remove_battery(r.node_id)
            svc = self.services[r.node_id] = self._create_battery(r)
        values = dict(self._compute(r, time.monotonic())[0])
        if svc is not None:
            if not self._with_cvl():  # not the BMS: its own limits under custom paths
                for path, own in bat.OWN_LIMIT_PATHS.items():
                    values[own] = values.pop(path)
            svc.update(values, r.online)  # paths the service does not have are left out

    def _republish_all(self) -> None:
        for r in self.reports.values():
            self._update_battery(r)
        self._update_aggregate()

    def _members(self) -> list[bat.Member]:
        out = []
        for n in self.node_ids:
            r = self.reports.get(n) or NodeReport(node_id=n, online=False)
            soc = self.last_soc.get(n)
            done = self._computed.get(n)
            values = done[0] if done is not None and n in self.reports else \
                self._compute(r, time.monotonic())[0]
            out.append(bat.Member(
                label=f"node {n}" + (f" ({r.serial})" if r.serial is not None else ""),
                report=r, values=values,
                capacity=bat.installed_capacity(r, self.limits),
                last_soc=soc[0] if soc else None, last_soc_time=soc[1] if soc else -1e18))
        return out

    def _update_aggregate(self) -> None:
        if self.aggregate is None:
            return
        values = self.aggregator.compute(self._members(), self.limits, time.monotonic())
        self.aggregate.update(values, connected=True)

    def _tick(self) -> bool:
        if _injected("tick"):
            raise InjectedFault("injected into the tick")
        if self.port is not None and self.port.sdo.ended:
            # No battery would be read again (their values would age to "unknown", CCL 0):
            # exit for the supervisor, which starts a fresh process.
            raise RuntimeError("the SDO loop thread ended")
        # Values age with time, also when no report comes (a poller stuck in a read): a
        # battery without a report for a poll interval is computed again (its values may have
        # become too old); the aggregate follows, its ramps and SoC grace period move with time.
        now = time.monotonic()
        limits_changed = False
        for n, r in list(self.reports.items()):
            done = self._computed.get(n)
            if done is None or now - done[2] >= self.poll_config.interval:
                self._update_battery(r)
                limits_changed |= done is None or done[1] != self._computed[n][1]
        # The aggregate's measurements and ramps and the status follow once a second (every
        # second tick); a battery's limits that changed because its values became too old
        # reach the aggregate at once, like a change by a report (_on_report).
        self._ticks += 1
        if limits_changed or self._ticks % 2 == 0:
            self._update_aggregate()
        if self._ticks % 2 == 0:
            self._publish_status()
        return True

    # -- manager service ---------------------------------------------------------------------------
    def _can_ports_status(self) -> dict[str, Any]:
        """The CAN interfaces found and the resolved setting (sysfs re-read every 2 s)."""
        now = time.monotonic()
        if self._can_ports is not None and now - self._can_ports[0] < 2.0:
            return self._can_ports[1]
        ports = canports.discover()
        try:
            iface = canports.resolve(str(self._setting("CanInterface")), canports.ROLE_SUPERB,
                                     ports)
            error = ""
        except canports.CanPortError as exc:
            iface, error = "", str(exc)
        values = {"/CanInterfaces": [p.to_dict() for p in ports],
                  "/Status/CanInterface": iface, "/Status/CanError": error}
        self._can_ports = (now, values)
        return values

    def _publish_status(self) -> None:
        if self.manager is None:
            return
        nodes: dict[str, dict[str, Any]] = {}
        for n in self.node_ids:
            r = self.reports.get(n)
            if r is None:
                nodes[str(n)] = {"state": "starting"}
                continue
            c = r.counters
            done = self._computed.get(n)
            lim = done[1] if done is not None else bat.charge_limits(r, self.limits,
                                                                     time.monotonic())
            nodes[str(n)] = {
                "state": r.state, "online": r.online, "serial": r.serial,
                "firmware": r.firmware,
                "heartbeat_age": None if r.heartbeat_age is None else round(r.heartbeat_age, 1),
                "heartbeat_state": r.heartbeat_state, "frames": r.frames,
                "sdo_ok": c.sdo_ok, "sdo_timeouts": c.sdo_timeouts, "sdo_aborts": c.sdo_aborts,
                "bad_responses": c.bad_responses, "bus_errors": c.bus_errors,
                "tpdo_frames": c.tpdo_frames, "reboots": c.reboots,
                "cycle_ms": round(r.cycle_time * 1000, 1), "last_error": r.last_error,
                "aborted": {k: f"0x{v:08X}" for k, v in r.aborted.items()},
                "missing": {k: f"0x{v:08X}" for k, v in r.missing.items()},
                "failed_reads": c.failed_reads, "retries": c.retries,
                "transient_aborts": c.transient_aborts, "cycle_errors": c.cycle_errors,
                "sdo_discarded": r.sdo.get("discarded", 0),
                "sdo_malformed": r.sdo.get("malformed", 0),
                "sdo_flushed": r.sdo.get("flushed", 0), "sdo_last_discarded": r.sdo.get("last", ""),
                "tpdo": list(r.tpdo_keys),
                "limits": list(lim.reasons), "ccl": lim.ccl, "dcl": lim.dcl,
            }
        services = sorted(s.name for s in self.services.values())
        if self.aggregate is not None:
            services.append(self.aggregate.name)
        self.manager.update({
            "/Status/Can": self.port_status.text, "/Status/CanOpen": int(self.port_status.open),
            "/Status/Mode": self.mode, "/Status/ModeNote": self.mode_note(),
            "/Status/NodeIds": ",".join(map(str, self.node_ids)),
            "/Status/NodeIdsError": self.app.settings.rejected.get(
                "/Settings/CanBridge/Superb/NodeIds", ""),
            "/Status/Online": sum(1 for n in self.node_ids
                                  if self.reports.get(n) and self.reports[n].online),
            "/Status/Nodes": nodes, "/Status/Services": services,
            **self._can_ports_status(),
        })

    # -- scan --------------------------------------------------------------------------------------
    def start_scan(self) -> bool:
        """Start a scan (main loop); False if one is running or the port is closed."""
        if self._scan_thread is not None and self._scan_thread.is_alive():
            return False
        port = self.port
        if port is None or not port.is_open:
            self.manager.update({"/Scan/LastError": "CAN interface not open"})
            return False
        try:
            nodes = parse_node_ids(str(self._setting("ScanRange")))
        except SettingValueError as exc:
            self.manager.update({"/Scan/LastError": str(exc)})
            return False
        known = {n: dict(r.identity) for n, r in self.reports.items() if r.identity}
        for n in self.node_ids:
            known.setdefault(n, {})
        timeout = min(0.2, self.poll_config.sdo_timeout)
        self.manager.update({"/Scan/Running": 1, "/Scan/Progress": 0, "/Scan/LastError": "",
                             "/Scan/Range": ",".join(map(str, nodes))})

        def progress(pct: int) -> None:
            self._call_soon(self.manager.update, {"/Scan/Progress": pct})

        def run() -> None:
            try:
                result = scanmod.scan(port, nodes, known, timeout=timeout, progress=progress)
                self._call_soon(self._scan_done, result, "")
            except Exception as exc:
                log.exception("scan failed")
                self._call_soon(self._scan_done, None, str(exc))

        self._scan_thread = threading.Thread(target=run, daemon=True, name="superb-scan")
        self._scan_thread.start()
        return True

    def _scan_done(self, result: list[dict[str, Any]] | None, error: str) -> None:
        values: dict[str, Any] = {"/Scan/Running": 0, "/Scan/Start": 0, "/Scan/LastError": error,
                                  "/Scan/Progress": 100}
        if result is not None:
            values["/Scan/Result"] = result
        self.manager.update(values)


def main(argv: list[str] | None = None) -> int:
    args = appmod.common_args(__doc__ or "dbus-superb").parse_args(argv)
    logging.getLogger("canopen").setLevel(logging.CRITICAL)  # we log SDO trouble ourselves
    holder: dict[str, SuperbDriver] = {}

    def changed(path: str, old: object, new: object) -> None:
        drv = holder.get("driver")
        if drv is not None:
            drv.setting_changed(path, old, new)

    def ready(app: appmod.App) -> None:
        if "driver" in holder:
            return
        drv = SuperbDriver(app)
        holder["driver"] = drv
        drv.start()

    app = appmod.start("dbus-superb", args, ("Superb/",),
                       on_change=guarded(changed, "dbus-superb setting change"),
                       on_ready=guarded(ready, "dbus-superb start"),
                       malloc_arenas=1)  # all its threads allocate under the GIL (app.py)
    return appmod.run(app)


if __name__ == "__main__":
    sys.exit(main())
