"""Run Victron's real dbus-systemcalc-py (DVCC) against the simulated CanBridge system.

    .venv/bin/python scripts/check_real_systemcalc.py \\
        --systemcalc /path/to/dbus-systemcalc-py --velib /path/to/velib_python \\
        [--localsettings /path/to/localsettings/localsettings.py] [--json out.json] [--keep-logs]

Nothing is downloaded: the three paths are checkouts you already have (see docs/venus-check.md).
The script starts what ``sim/demo.py`` starts (a private dbus-daemon, the settings service —
Victron's localsettings with ``--localsettings``, else the project's stand-in —, the loopback
CAN hub, three simulated SuperB batteries, the simulated Sunny Island, dbus-superb in aggregate
mode and dbus-sma, both on the given velib_python), then the real ``dbus_systemcalc.py`` on the
same bus, and reports what systemcalc makes of it:

* baseline: ``com.victronenergy.system`` /ActiveBatteryService, /Dvcc/Alarms/*, /Control/*,
  /Dc/Battery/*, and what systemcalc wrote into our vebus service;
* (a) individual mode with three batteries: still exactly one BMS (no MultipleBatteries alarm);
* (b) one battery cold, then one offline: the aggregate CCL drops and reaches the vebus
  /BatteryOperationalLimits/MaxChargeCurrent, dbus-sma's CCL and the 0x351 frame;
* (c) the user's DVCC limit /Settings/SystemSetup/MaxChargeCurrent with a BMS and with
  BmsInstance = "No BMS": it reaches /Dc/0/MaxChargeCurrent or the BOL path and the 0x351 CCL.

What a real GX has and this machine lacks is provided as the GX would have it and listed in the
report ("provided"). Exit code 0 when every check passed, 1 otherwise, 2 when the system could
not be started. Everything runs on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sim.demo import Demo, python, wait_name  # noqa: E402
from sim.venus.dbusd import DBUS_CONFIG  # noqa: E402

SETTINGS = "com.victronenergy.settings"
SYSTEM = "com.victronenergy.system"
AGGREGATE = "com.victronenergy.battery.superb_aggregate"
MANAGER = "com.victronenergy.canbridge.superb"
BUSITEM = "com.victronenergy.BusItem"

#: the CanBridge settings of this check (48 V packs, as in ``make demo``); Sma/BatteryService is
#: left empty so dbus-sma follows systemcalc's /ActiveBatteryService like a default install
CANBRIDGE_SETTINGS: dict[str, object] = {
    "/Settings/CanBridge/Superb/NodeIds": "1,2,3",
    "/Settings/CanBridge/Superb/Mode": 1,
    "/Settings/CanBridge/Superb/ChargeVoltage": 56.8,
    "/Settings/CanBridge/Superb/BatteryLowVoltage": 46.0,
    "/Settings/CanBridge/Superb/Alarms/LowVoltage": 46.5,
    "/Settings/CanBridge/Superb/Alarms/HighVoltage": 58.4,
    # shorter than the default 60 s so an unrefreshed DVCC value's expiry is seen quickly
    "/Settings/CanBridge/Sma/DvccTimeout": 10.0,
}
#: GX settings a user sets (systemcalc registers them itself with its own defaults)
DVCC_ON = ("/Settings/Services/Bol", 1)
USER_MCC = "/Settings/SystemSetup/MaxChargeCurrent"
BMS_INSTANCE = "/Settings/SystemSetup/BmsInstance"
NO_BMS = -255  # systemcalc's BMSSERVICE_NOBMS
DEFAULT_BMS = -1


# -- D-Bus access -------------------------------------------------------------------------------
def unwrap(v: Any) -> Any:
    """A dbus-python value as plain Python; Venus's invalid (an empty array) as None."""
    import dbus

    if isinstance(v, dbus.Array):
        return None if len(v) == 0 else [unwrap(x) for x in v]
    if isinstance(v, dbus.Dictionary):
        return {str(k): unwrap(x) for k, x in v.items()}
    if isinstance(v, dbus.Boolean):
        return bool(v)
    if isinstance(v, (dbus.Int16, dbus.Int32, dbus.Int64, dbus.UInt16, dbus.UInt32,
                      dbus.UInt64, dbus.Byte)):
        return int(v)
    if isinstance(v, dbus.Double):
        return float(v)
    if isinstance(v, (dbus.String, dbus.ObjectPath)):
        return str(v)
    return v


class Bus:
    """A blocking client connection to the private bus."""

    def __init__(self, address: str) -> None:
        import dbus

        self.dbus = dbus
        self.conn = dbus.bus.BusConnection(address)

    def names(self, prefix: str = "com.victronenergy.") -> list[str]:
        return sorted(str(n) for n in self.conn.list_names() if str(n).startswith(prefix))

    def get(self, service: str, path: str) -> Any:
        """The value at ``service`` ``path``; None when invalid, absent or not answering."""
        try:
            return unwrap(self.conn.call_blocking(service, path, BUSITEM, "GetValue", "", [],
                                                  timeout=3))
        except self.dbus.exceptions.DBusException:
            return None

    def exists(self, service: str, path: str) -> bool:
        try:
            self.conn.call_blocking(service, path, BUSITEM, "GetValue", "", [], timeout=3)
            return True
        except self.dbus.exceptions.DBusException:
            return False

    def items(self, service: str) -> dict[str, Any]:
        try:
            raw = self.conn.call_blocking(service, "/", BUSITEM, "GetItems", "", [], timeout=3)
        except self.dbus.exceptions.DBusException:
            return {}
        return {str(k): unwrap(v.get("Value")) for k, v in raw.items()}

    def set(self, service: str, path: str, value: object) -> int:
        d = self.dbus
        wrapped = (d.Double(value) if isinstance(value, float) else
                   d.Int32(value) if isinstance(value, int) else d.String(str(value)))
        return int(self.conn.call_blocking(service, path, BUSITEM, "SetValue", "v", [wrapped],
                                           timeout=5))

    def add_settings(self, entries: list[dict[str, object]]) -> None:
        self.conn.call_blocking(SETTINGS, "/", "com.victronenergy.Settings", "AddSettings",
                                "aa{sv}", [entries], timeout=10)


def wait_for(what: str, cond: Callable[[], Any], timeout: float, step: float = 0.25) -> Any:
    """Poll ``cond`` until it returns something truthy; None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            return None
        time.sleep(step)


# -- the 0x351 frame on the loopback link ---------------------------------------------------------
class Frame351Listener:
    """Every 0x351 (SMA external BMS: CVL, CCL, DCL, DVL) dbus-sma sends on ``can1``.

    Decoded by hand from the SMA/SI BMS protocol: four little-endian 16-bit fields, CVL and DVL
    unsigned in 0.1 V, CCL and DCL signed in 0.1 A.
    """

    def __init__(self, canlink: str) -> None:
        os.environ["CANBRIDGE_CANLINK"] = canlink
        from driver.canbus import open_bus

        self.bus = open_bus("can1", 500000)
        self.last: dict[str, float] | None = None
        self.last_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rx-0x351")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.bus.recv(0.2)
            if msg is None or msg.arbitration_id != 0x351 or len(msg.data) < 8:
                continue
            cvl, ccl, dcl, dvl = struct.unpack("<HhhH", bytes(msg.data[:8]))
            self.last = {"cvl": cvl / 10, "ccl": ccl / 10, "dcl": dcl / 10, "dvl": dvl / 10}
            self.last_at = time.monotonic()

    def fresh(self, max_age: float = 3.0) -> dict[str, float] | None:
        return self.last if self.last and time.monotonic() - self.last_at < max_age else None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.bus.shutdown()


# -- report -------------------------------------------------------------------------------------
@dataclass
class Report:
    checks: list[dict[str, Any]] = field(default_factory=list)
    snapshots: dict[str, Any] = field(default_factory=dict)
    provided: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

    def check(self, scenario: str, name: str, ok: bool, detail: str) -> bool:
        self.checks.append({"scenario": scenario, "check": name, "ok": bool(ok),
                            "detail": detail})
        print(f"  [{'PASS' if ok else 'FAIL'}] {scenario}: {name} — {detail}", flush=True)
        return bool(ok)

    @property
    def failed(self) -> int:
        return sum(1 for c in self.checks if not c["ok"])


def git_commit(path: Path) -> str:
    """The commit of a checkout, when it is a git work tree; else "unknown (not a git tree)"."""
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown (not a git work tree)"


# -- the system ---------------------------------------------------------------------------------
class System:
    """The simulated system plus real systemcalc, started like ``sim/demo.py`` does."""

    def __init__(self, args: argparse.Namespace, report: Report) -> None:
        self.args = args
        self.report = report
        self.workdir = Path(tempfile.mkdtemp(prefix="cb-realsc-"))
        self.demo = Demo(self.workdir)
        self.bus: Bus | None = None
        self.simcontrol = ""
        self.vebus = ""
        self.rx: Frame351Listener | None = None

    # environment for our own processes: the given velib_python, as on a GX
    def env(self) -> dict[str, str]:
        env = self.demo.env()
        env["VELIB_PYTHON"] = str(self.args.velib)
        return env

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              cwd: Path = ROOT, pipe: bool = False) -> subprocess.Popen[bytes]:
        from sim.demo import Child

        logfile = self.workdir / f"{name}.log"
        log = open(logfile, "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(argv, env=env or self.env(), cwd=cwd,
                                stdout=subprocess.PIPE if pipe else log, stderr=log,
                                start_new_session=True)
        log.close()
        self.demo.children.append(Child(name, proc, logfile, list(argv)))
        return proc

    def start(self) -> None:
        a = self.args
        dbus_exe = shutil.which("dbus-daemon")
        if dbus_exe is None:
            raise RuntimeError("dbus-daemon is not installed (scripts/setup-system.sh)")
        conf = self.workdir / "bus.conf"
        conf.write_text(DBUS_CONFIG.format(socket=self.workdir / "bus.sock"))
        bus_child = self.demo.spawn("dbus-daemon", [dbus_exe, "--nofork", "--nopidfile",
                                                    f"--config-file={conf}", "--print-address=1"],
                                    stdout=subprocess.PIPE)
        assert bus_child.proc.stdout is not None
        self.demo.address = bus_child.proc.stdout.readline().decode().strip()
        hub = self.demo.spawn("canlink-hub", python("sim.canlink.hub", "--port", "0"),
                              stdout=subprocess.PIPE)
        assert hub.proc.stdout is not None
        self.demo.canlink = hub.proc.stdout.readline().decode().strip().split("=", 1)[1]
        conf_dir = self.workdir / "conf"
        conf_dir.mkdir()
        (self.workdir / "state").mkdir()
        if a.localsettings:
            env = self.env()
            env["PYTHONPATH"] = os.pathsep.join([str(a.velib), env["PYTHONPATH"]])
            self.spawn("settings", [sys.executable, str(a.localsettings), f"--path={conf_dir}",
                                    "--no-delay"], env=env, cwd=Path(a.localsettings).parent)
        else:
            self.spawn("settings", python("sim.venus.settings_service", "--path", str(conf_dir),
                                          "--no-delay"))
        if not wait_name(self.demo.address, SETTINGS, 20):
            raise RuntimeError(f"settings service did not start; see {self.workdir}/settings.log")
        self.bus = Bus(self.demo.address)
        self.seed_canbridge_settings()

        sim = self.spawn("sim-superb", python("sim.superb", "--nodes", "1,2,3", "--channel",
                                              "vecan0", "--nominal-voltage", "51.2",
                                              "--follow-si", "can1"), pipe=True)
        assert sim.stdout is not None
        line = sim.stdout.readline().decode().strip()
        if not line.startswith("SIMCONTROL="):
            raise RuntimeError(f"sim.superb did not print its control port: {line!r}")
        self.simcontrol = line.split("=", 1)[1]
        self.spawn("sim-sma", python("sim.sma", "--channel", "can1"))
        self.spawn("dbus-superb", python("driver.superb.main"))
        self.spawn("dbus-sma", python("driver.sma.main", "--state-dir",
                                      str(self.workdir / "state")))
        self.rx = Frame351Listener(self.demo.canlink)
        # systemcalc: its own directory first on sys.path (delegates, sc_utils), then
        # ext/velib_python (empty unless the submodule is checked out), then --velib.
        sc_env = self.env()
        sc_env["PYTHONPATH"] = str(a.velib)
        sc_env.pop("VELIB_PYTHON", None)
        sc_env.pop("CANBRIDGE_CANLINK", None)
        argv = [sys.executable, "-u", str(a.systemcalc / "dbus_systemcalc.py")]
        proc = self.spawn("systemcalc", argv, env=sc_env, cwd=a.systemcalc)
        if wait_name(self.demo.address, SYSTEM, 60):
            return
        # Seen with real localsettings on an empty settings file: an exception in systemcalc's
        # device-added handler for com.victronenergy.settings (batterydata re-binding a
        # battery configuration whose service name had become "") leaves velib's scan
        # unfinished, so com.victronenergy.system is never registered. With the settings now
        # stored, a second start does not meet it. Reported, then started once more.
        text = (self.workdir / "systemcalc.log").read_text(errors="replace")
        hint = ("Configuration//Service" in text and "batterydata" in text)
        self.report.notes.append(
            "systemcalc did not register com.victronenergy.system within 60 s of its first "
            "start" + (" (traceback: batterydata bind_settings, invalid object path "
                       "'/Settings/SystemSetup/Batteries/Configuration//Service'; velib's "
                       "startup scan never completed)" if hint else "")
            + "; stopped and started once more")
        os.killpg(proc.pid, 15)
        proc.wait(10)
        self.demo.children = [c for c in self.demo.children if c.proc is not proc]
        (self.workdir / "systemcalc.log").rename(self.workdir / "systemcalc-first.log")
        self.spawn("systemcalc", argv, env=sc_env, cwd=a.systemcalc)
        if not wait_name(self.demo.address, SYSTEM, 60):
            raise RuntimeError(f"dbus_systemcalc.py did not start; see {self.workdir}/"
                               "systemcalc.log")

    def seed_canbridge_settings(self) -> None:
        from driver.schema import load_schema

        assert self.bus is not None
        schema = load_schema()
        entries = []
        for path in CANBRIDGE_SETTINGS:
            s = schema.by_path[path]
            entries.append({"path": path, "default": s.dbus_default(), "min": s.dbus_min(),
                            "max": s.dbus_max()})
        self.bus.add_settings(entries)
        for path, value in CANBRIDGE_SETTINGS.items():
            self.bus.set(SETTINGS, path, schema.by_path[path].typed(value))

    def stop(self) -> None:
        if self.rx is not None:
            self.rx.close()
        if self.bus is not None:
            self.bus.conn.close()
        self.demo.stop_all()
        if not self.args.keep_logs:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def alive(self) -> list[str]:
        """Names of children that exited."""
        return [f"{c.name} (exit {c.proc.returncode})" for c in self.demo.children
                if c.proc.poll() is not None]

    def sim(self, line: str) -> str:
        host, port = self.simcontrol.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(line.encode() + b"\n")
            return s.makefile().readline().strip()


# -- scenarios ----------------------------------------------------------------------------------
def system_snapshot(sys_: System) -> dict[str, Any]:
    """What the brief asks to report from com.victronenergy.system and our vebus service."""
    b = sys_.bus
    assert b is not None
    items = b.items(SYSTEM)
    keep = {k: v for k, v in items.items()
            if k.startswith(("/Dvcc/", "/Control/", "/Dc/Battery/"))
            or k in ("/ActiveBatteryService", "/ActiveBmsService", "/ActiveBmsInstance",
                     "/AvailableBmsServices", "/AutoSelectedBatteryService", "/VebusService")}
    vebus = b.items(sys_.vebus) if sys_.vebus else {}
    vb = {k: v for k, v in vebus.items()
          if k.startswith(("/BatteryOperationalLimits/", "/CanBridge/C", "/CanBridge/Battery"))
          or k in ("/Dc/0/MaxChargeCurrent", "/FirmwareFeatures/BolFrame")}
    agg = {k: v for k, v in b.items(AGGREGATE).items()
           if k.startswith("/Info/") or k in ("/Dc/0/Voltage", "/Soc", "/DeviceInstance",
                                              "/Connected")}
    return {"system": keep, "vebus": vb, "aggregate": agg,
            "0x351": sys_.rx.fresh() if sys_.rx else None}


def bms_services(b: Bus) -> list[str]:
    """Battery services publishing a valid /Info/MaxChargeVoltage (systemcalc's is_bms)."""
    return [n for n in b.names("com.victronenergy.battery.")
            if b.get(n, "/Info/MaxChargeVoltage") is not None]


def near(a: Any, b: Any, tol: float) -> bool:
    return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= tol


def baseline(s: System, r: Report) -> None:
    b = s.bus
    assert b is not None
    sc = "baseline (aggregate, 3 batteries)"
    r.check(sc, "DVCC on in systemcalc", wait_for(
        "Control/Dvcc", lambda: b.get(SYSTEM, "/Control/Dvcc") == 1, 30) is not None,
        f"/Control/Dvcc = {b.get(SYSTEM, '/Control/Dvcc')}")
    inst = wait_for("aggregate", lambda: b.get(AGGREGATE, "/DeviceInstance"), 60)
    active = wait_for("active", lambda: b.get(SYSTEM, "/ActiveBatteryService")
                      == f"com.victronenergy.battery/{inst}", 30)
    r.check(sc, "ActiveBatteryService is the aggregate", active is not None,
            f"/ActiveBatteryService = {b.get(SYSTEM, '/ActiveBatteryService')!r}, aggregate "
            f"instance {inst}")
    s.vebus = b.get(SYSTEM, "/VebusService") or next(iter(b.names("com.victronenergy.vebus.")),
                                                      "")
    got = wait_for("BOL", lambda: b.get(SYSTEM, "/Control/BmsParameters") == 1
                   and b.get(s.vebus, "/BatteryOperationalLimits/MaxChargeCurrent") is not None,
                   30)
    r.check(sc, "systemcalc writes BOL to our vebus", got is not None,
            f"/Control/BmsParameters = {b.get(SYSTEM, '/Control/BmsParameters')}, vebus "
            f"{s.vebus}")
    time.sleep(7)  # two DVCC rounds (ADJUST 3 s), so alarms and BOL are current
    snap = system_snapshot(s)
    r.snapshots["baseline"] = snap
    alarms = {k: v for k, v in snap["system"].items() if k.startswith("/Dvcc/Alarms/")}
    r.check(sc, "no DVCC alarm", bool(alarms) and all(v == 0 for v in alarms.values()),
            json.dumps(alarms))
    agg, vb = snap["aggregate"], snap["vebus"]
    r.check(sc, "BOL MaxChargeVoltage = aggregate CVL",
            near(vb.get("/BatteryOperationalLimits/MaxChargeVoltage"),
                 agg.get("/Info/MaxChargeVoltage"), 0.01),
            f"{vb.get('/BatteryOperationalLimits/MaxChargeVoltage')} vs "
            f"{agg.get('/Info/MaxChargeVoltage')}")
    # The aggregate's limits move (per-battery limits, LimitRampRate) and systemcalc copies
    # them every ADJUST (3 s): the copy must match within one or two rounds, not at an
    # arbitrary instant.
    pairs = (("/BatteryOperationalLimits/MaxChargeCurrent", "/Info/MaxChargeCurrent", 1.0),
             ("/BatteryOperationalLimits/MaxDischargeCurrent", "/Info/MaxDischargeCurrent", 0.05),
             ("/BatteryOperationalLimits/BatteryLowVoltage", "/Info/BatteryLowVoltage", 0.01))
    for bol_path, info, tol in pairs:
        seen: list[tuple[Any, Any]] = []

        def same(bol_path: str = bol_path, info: str = info, tol: float = tol,
                 seen: list[tuple[Any, Any]] = seen) -> bool:
            pair = (b.get(s.vebus, bol_path), b.get(AGGREGATE, info))
            seen.append(pair)
            return near(pair[0], pair[1], tol)

        ok = wait_for(bol_path, same, 15) is not None
        r.check(sc, f"vebus {bol_path} follows aggregate {info}", ok,
                f"last {seen[-1][0]} vs {seen[-1][1]} ({len(seen)} samples)")
    r.check(sc, "/Dc/Battery/Voltage follows the aggregate",
            near(snap["system"].get("/Dc/Battery/Voltage"), agg.get("/Dc/0/Voltage"), 0.5),
            f"{snap['system'].get('/Dc/Battery/Voltage')} vs {agg.get('/Dc/0/Voltage')}")
    f = snap["0x351"]
    r.check(sc, "0x351 CCL within the BOL limit",
            f is not None and f["ccl"] <= (vb.get("/BatteryOperationalLimits/MaxChargeCurrent")
                                          or 0) + 0.05,
            f"0x351 {f}, /CanBridge/Ccl {vb.get('/CanBridge/Ccl')}")


def individual_mode(s: System, r: Report) -> None:
    b = s.bus
    assert b is not None
    sc = "(a) individual mode, 3 batteries"
    b.set(SETTINGS, "/Settings/CanBridge/Superb/Mode", 0)
    wait_for("mode", lambda: b.get(MANAGER, "/Status/Mode") is not None, 10)
    time.sleep(3)
    wait_for("3 battery services", lambda: len(b.names("com.victronenergy.battery.")) >= 3, 30)
    time.sleep(8)  # the alarm is computed every ADJUST (3 s)
    snap = system_snapshot(s)
    r.snapshots["individual"] = snap | {
        "battery_services": b.names("com.victronenergy.battery."),
        "bms_services": bms_services(b), "mode_status": b.get(MANAGER, "/Status/Mode"),
        "mode_note": b.get(MANAGER, "/Status/ModeNote")}
    avail = b.get(SYSTEM, "/AvailableBmsServices")
    r.check(sc, "exactly one BMS (no MultipleBatteries alarm)",
            b.get(SYSTEM, "/Dvcc/Alarms/MultipleBatteries") == 0
            and len(bms_services(b)) == 1,
            f"MultipleBatteries = {b.get(SYSTEM, '/Dvcc/Alarms/MultipleBatteries')}, BMS "
            f"services {bms_services(b)}, /AvailableBmsServices {avail}, /Status/Mode "
            f"{b.get(MANAGER, '/Status/Mode')}")
    b.set(SETTINGS, "/Settings/CanBridge/Superb/Mode", 1)
    back = wait_for("aggregate back", lambda: b.get(AGGREGATE, "/Info/MaxChargeCurrent")
                    is not None and b.get(SYSTEM, "/ActiveBatteryService", ) ==
                    f"com.victronenergy.battery/{b.get(AGGREGATE, '/DeviceInstance')}", 60)
    r.check(sc, "back to aggregate: active battery is the aggregate again", back is not None,
            f"/ActiveBatteryService = {b.get(SYSTEM, '/ActiveBatteryService')!r}")


def cold_and_offline(s: System, r: Report) -> None:
    b = s.bus
    assert b is not None
    sc = "(b) one battery cold / offline"
    bol = "/BatteryOperationalLimits/MaxChargeCurrent"
    before = wait_for("ccl", lambda: b.get(AGGREGATE, "/Info/MaxChargeCurrent"), 20)
    bol_before = b.get(s.vebus, bol)
    for cmd in ("hold 2 1", "set 2 temperature -5", "set 2 cell_temperature_min -5.5",
                "set 2 cell_temperature_max -4.5"):
        s.sim(cmd)
    t0 = time.monotonic()
    agg0 = wait_for("agg 0", lambda: b.get(AGGREGATE, "/Info/MaxChargeCurrent") == 0, 30)
    t_agg = time.monotonic() - t0
    bol0 = wait_for("bol 0", lambda: b.get(s.vebus, bol) == 0, 30)
    t_bol = time.monotonic() - t0
    ccl0 = wait_for("351 0", lambda: (f := s.rx.fresh() if s.rx else None) and f["ccl"] == 0,
                    30)
    t_can = time.monotonic() - t0
    r.snapshots["cold"] = system_snapshot(s)
    r.check(sc, "node 2 at -5 °C: aggregate CCL 0", agg0 is not None,
            f"{before} A -> {b.get(AGGREGATE, '/Info/MaxChargeCurrent')} A after {t_agg:.1f} s")
    r.check(sc, "systemcalc passes 0 to vebus BOL MaxChargeCurrent", bol0 is not None,
            f"{bol_before} -> {b.get(s.vebus, bol)} after {t_bol:.1f} s")
    r.check(sc, "0x351 CCL 0", ccl0 is not None,
            f"0x351 {s.rx.fresh() if s.rx else None} after {t_can:.1f} s")
    for cmd in ("set 2 temperature 21", "set 2 cell_temperature_min 20.5",
                "set 2 cell_temperature_max 21.5", "hold 2 0"):
        s.sim(cmd)
    warm = wait_for("warm", lambda: (b.get(s.vebus, bol) or 0) > 0, 60)
    r.check(sc, "warm again: BOL MaxChargeCurrent back above 0", warm is not None,
            f"{b.get(s.vebus, bol)} (aggregate {b.get(AGGREGATE, '/Info/MaxChargeCurrent')})")
    # let the aggregate ramp back to its warm limit (LimitRampRate) before the next step
    wait_for("full", lambda: near(b.get(AGGREGATE, "/Info/MaxChargeCurrent"), before, 0.5), 60)
    full = b.get(AGGREGATE, "/Info/MaxChargeCurrent")
    s.sim("vanish 3")
    t0 = time.monotonic()
    dropped = wait_for("offline", lambda: (v := b.get(AGGREGATE, "/Info/MaxChargeCurrent"))
                       is not None and v < (full or 0) - 0.5, 60)
    t_off = time.monotonic() - t0
    follows = wait_for("bol follows", lambda: near(b.get(s.vebus, bol),
                                                    b.get(AGGREGATE, "/Info/MaxChargeCurrent"),
                                                    1.0), 30)
    r.snapshots["offline"] = system_snapshot(s) | {
        "online": b.get(MANAGER, "/Status/Online"),
        "bmscable": b.get(AGGREGATE, "/Alarms/BmsCable")}
    r.check(sc, "node 3 offline: aggregate CCL drops", dropped is not None,
            f"{full} A -> {b.get(AGGREGATE, '/Info/MaxChargeCurrent')} A after {t_off:.1f} s "
            f"(online {b.get(MANAGER, '/Status/Online')}, BmsCable "
            f"{b.get(AGGREGATE, '/Alarms/BmsCable')})")
    r.check(sc, "systemcalc passes the lower CCL to vebus BOL", follows is not None,
            f"BOL {b.get(s.vebus, bol)} vs aggregate "
            f"{b.get(AGGREGATE, '/Info/MaxChargeCurrent')}; 0x351 "
            f"{s.rx.fresh() if s.rx else None}")
    r.check(sc, "still one BMS with a battery offline",
            b.get(SYSTEM, "/Dvcc/Alarms/MultipleBatteries") == 0,
            f"MultipleBatteries = {b.get(SYSTEM, '/Dvcc/Alarms/MultipleBatteries')}")
    s.sim("back 3")
    wait_for("back", lambda: b.get(MANAGER, "/Status/Online") == 3, 60)


def user_limit(s: System, r: Report) -> None:
    b = s.bus
    assert b is not None
    sc = "(c) DVCC max charge current setting"
    bol = "/BatteryOperationalLimits/MaxChargeCurrent"
    dc = "/Dc/0/MaxChargeCurrent"
    limit = 20
    b.set(SETTINGS, USER_MCC, limit)
    got = wait_for("bol 20", lambda: b.get(s.vebus, bol) == limit, 30)
    can = wait_for("351 <= 20", lambda: (f := s.rx.fresh() if s.rx else None)
                   and f["ccl"] <= limit, 30)
    r.snapshots["user_limit_bms"] = system_snapshot(s)
    r.check(sc, f"with BMS: BOL MaxChargeCurrent = {limit}", got is not None,
            f"BOL {b.get(s.vebus, bol)}, {dc} {b.get(s.vebus, dc)}, aggregate CCL "
            f"{b.get(AGGREGATE, '/Info/MaxChargeCurrent')}")
    r.check(sc, f"with BMS: 0x351 CCL <= {limit}", can is not None,
            f"0x351 {s.rx.fresh() if s.rx else None}, /CanBridge/Ccl "
            f"{b.get(s.vebus, '/CanBridge/Ccl')}, reasons "
            f"{b.get(s.vebus, '/CanBridge/ChargeReasons')!r}")

    b.set(SETTINGS, BMS_INSTANCE, NO_BMS)
    nobms = wait_for("no bms", lambda: b.get(SYSTEM, "/ActiveBmsService") is None
                     and b.get(s.vebus, dc) == limit, 30)
    limit2 = 15
    b.set(SETTINGS, USER_MCC, limit2)
    got2 = wait_for("dc 15", lambda: b.get(s.vebus, dc) == limit2, 30)
    can2 = wait_for("351 <= 15", lambda: (f := s.rx.fresh() if s.rx else None)
                    and f["ccl"] <= limit2, 30)
    r.snapshots["user_limit_nobms"] = system_snapshot(s)
    r.check(sc, f"no BMS: systemcalc writes {dc} = user limit", nobms is not None
            and got2 is not None,
            f"/ActiveBmsService {b.get(SYSTEM, '/ActiveBmsService')!r}, {dc} "
            f"{b.get(s.vebus, dc)}, BOL {b.get(s.vebus, bol)}")
    r.check(sc, f"no BMS: 0x351 CCL <= {limit2}", can2 is not None,
            f"0x351 {s.rx.fresh() if s.rx else None}, /CanBridge/Ccl "
            f"{b.get(s.vebus, '/CanBridge/Ccl')}")
    b.set(SETTINGS, USER_MCC, -1)
    maxed = wait_for("dc max", lambda: (b.get(s.vebus, dc) or 0) > limit2, 30)
    own = b.get(SETTINGS, "/Settings/CanBridge/Sma/MaxChargeCurrent")
    freed = wait_for("351 up", lambda: (f := s.rx.fresh() if s.rx else None)
                     and f["ccl"] > limit2, 60)
    r.snapshots["user_limit_off_nobms"] = system_snapshot(s)
    r.check(sc, "no BMS, limit removed: the limit is lifted", maxed is not None
            and freed is not None,
            f"{dc} {b.get(s.vebus, dc)}, 0x351 {s.rx.fresh() if s.rx else None} (own maximum "
            f"{own}), reasons {b.get(s.vebus, '/CanBridge/ChargeReasons')!r}")
    # The BOL values systemcalc wrote while a BMS was selected (MaxChargeCurrent = the user's
    # 20 A) are not written any more with "No BMS" (systemcalc publishes /Control/BmsParameters
    # 0): like every DVCC value systemcalc stops refreshing they must expire (DvccTimeout).
    stale = b.get(s.vebus, bol)
    timeout = float(b.get(SETTINGS, "/Settings/CanBridge/Sma/DvccTimeout") or 60.0)
    t0 = time.monotonic()
    above = wait_for("351 above stale BOL", lambda: (f := s.rx.fresh() if s.rx else None)
                     and isinstance(stale, (int, float)) and f["ccl"] > stale + 1,
                     timeout + 20)
    r.snapshots["user_limit_off_nobms_later"] = system_snapshot(s)
    r.check(sc, "no BMS: the BOL limit systemcalc stopped writing expires", above is not None,
            f"BOL MaxChargeCurrent {stale} (written while the BMS was selected), "
            f"/Control/BmsParameters {b.get(SYSTEM, '/Control/BmsParameters')}; 0x351 "
            f"{s.rx.fresh() if s.rx else None} after {time.monotonic() - t0:.1f} s "
            f"(DvccTimeout {timeout:g} s)")
    b.set(SETTINGS, BMS_INSTANCE, DEFAULT_BMS)
    again = wait_for("bms back", lambda: b.get(SYSTEM, "/Control/BmsParameters") == 1
                     and b.get(SYSTEM, "/ActiveBmsService") == AGGREGATE, 30)
    r.check(sc, "BMS automatic again: BmsParameters 1", again is not None,
            f"/ActiveBmsService {b.get(SYSTEM, '/ActiveBmsService')!r}")


# -- main ---------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    report = Report()
    report.sources = {"dbus-systemcalc-py": f"{args.systemcalc} @ {git_commit(args.systemcalc)}",
                      "velib_python": f"{args.velib} @ {git_commit(args.velib)}",
                      "localsettings": (f"{args.localsettings} @ "
                                        f"{git_commit(Path(args.localsettings).parent)}"
                                        if args.localsettings else
                                        "stand-in (sim/venus/settings_service.py)")}
    report.provided = [
        "a private dbus-daemon; every service on it as the session bus "
        "(systemcalc uses the session bus when DBUS_SESSION_BUS_ADDRESS is set)",
        f"{DVCC_ON[0]} = {DVCC_ON[1]} (DVCC on: the user's switch; a SuperB product id is not "
        "on systemcalc's forced-on list)",
        "systemcalc's other settings: registered by systemcalc itself with its defaults",
        "no /opt/victronenergy/version (firmware version 0), no /sbin/get-unique-id "
        "(portal id from eth0), no /usr/bin/product-id: velib's fallbacks",
    ]
    system = System(args, report)
    code = 0
    try:
        try:
            system.start()
        except RuntimeError as exc:
            print(f"cannot start: {exc}", file=sys.stderr)
            return 2
        b = system.bus
        assert b is not None
        if wait_for("Bol", lambda: b.exists(SETTINGS, DVCC_ON[0]), 30) is None:
            print("systemcalc did not register /Settings/Services/Bol", file=sys.stderr)
            return 2
        b.set(SETTINGS, DVCC_ON[0], DVCC_ON[1])
        print(f"bus {system.demo.address}; logs in {system.workdir}", flush=True)
        for scenario in (baseline, individual_mode, cold_and_offline, user_limit):
            print(f"-- {scenario.__name__}", flush=True)
            try:
                scenario(system, report)
            except Exception as exc:  # noqa: BLE001 - report and go on with the next one
                report.check(scenario.__name__, "scenario ran", False, repr(exc))
            dead = system.alive()
            if dead:
                report.check(scenario.__name__, "every process still running", False,
                             ", ".join(dead))
        code = 1 if report.failed else 0
    finally:
        system.stop()
    summary = {"sources": report.sources, "provided": report.provided, "notes": report.notes,
               "checks": report.checks, "snapshots": report.snapshots,
               "failed": report.failed, "logs": str(system.workdir) if args.keep_logs else None}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    for note in report.notes:
        print(f"  NOTE: {note}", flush=True)
    print(f"{len(report.checks) - report.failed}/{len(report.checks)} checks passed", flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--systemcalc", type=Path, required=True,
                    help="a dbus-systemcalc-py checkout (the directory of dbus_systemcalc.py)")
    ap.add_argument("--velib", type=Path, required=True, help="a velib_python checkout")
    ap.add_argument("--localsettings", type=Path, default=None,
                    help="Victron's localsettings.py (default: the project's stand-in)")
    ap.add_argument("--json", default="", help="write the full report (snapshots too) here")
    ap.add_argument("--keep-logs", action="store_true")
    args = ap.parse_args(argv)
    for p, what in ((args.systemcalc / "dbus_systemcalc.py", "dbus_systemcalc.py"),
                    (args.velib / "vedbus.py", "velib_python's vedbus.py")):
        if not p.is_file():
            ap.error(f"{what} not found at {p}")
    if args.localsettings and not args.localsettings.is_file():
        ap.error(f"localsettings.py not found at {args.localsettings}")
    args.systemcalc = args.systemcalc.resolve()
    args.velib = args.velib.resolve()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
