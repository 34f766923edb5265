"""The whole CanBridge system as real processes, for the fault-injection matrix.

:class:`FaultSystem` runs, on this machine only (unix sockets and 127.0.0.1):

* a private ``dbus-daemon`` on a fixed unix socket in the test's directory, so it can be
  stopped and started again at the same address (:class:`RestartableBus`);
* the settings service (stand-in, or real localsettings with ``LOCALSETTINGS``);
* the loopback CAN hub, the simulated SuperB batteries (nodes 1-3 on ``vecan0``) and the
  simulated Sunny Island (``can1``);
* ``dbus-superb`` (aggregate mode) and ``dbus-sma`` (fed by the aggregate battery service),
  each under Debian's real daemontools ``supervise`` with a run script generated here
  (:class:`Supervised`); ``dbus-sma`` keeps its energy counters on a 64 KiB tmpfs;
* a CAN sniffer on ``can1`` recording every frame with its arrival time (:class:`Sniffer`) and a
  D-Bus monitor sampling the battery, vebus and manager services five times a second
  (:class:`Monitor`), from which the tests take detection and recovery times and check that
  nothing unsafe was sent.

Every driver and simulator process runs with an ``LD_PRELOAD`` shim (``walljump.c``) that can
shift its *wall* clock (CLOCK_REALTIME) by a signed offset written to a shared file; with the
offset 0 (all faults but the clock jump) it changes nothing.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import can
import dbus

from driver.schema import load_schema
from tests.fixtures.canlink import CanLink, start_canlink
from tests.fixtures.procs import Proc, child_env, python_cmd
from tests.fixtures.venus import (
    DBUS_CONFIG,
    DbusDaemon,
    SettingsService,
    real_localsettings,
    require_tool,
)

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BUSITEM = "com.victronenergy.BusItem"
SETTINGS = "com.victronenergy.settings"
AGGREGATE = "com.victronenergy.battery.superb_aggregate"
MANAGER = "com.victronenergy.canbridge.superb"
VEBUS = "com.victronenergy.vebus.canbridge_sma_can1"
SERIAL_BASE = 2300000
NODES = (1, 2, 3)

#: the configured charge current limit of the bridge; no 0x351 may ever carry more
SMA_MAX_CCL = 60.0
SEND_INTERVAL = 1.0
#: how late a battery-service limit may reach 0x351: the bridge reads the battery once a
#: second, sends once a second, and the monitor samples every 0.2 s
LIMIT_LAG_S = 2.5

#: Settings of the system under test. SuperB: the schema's defaults for polling and offline
#: detection (PollInterval 1 s, SdoTimeout 0.3 s, 3 timeouts, HeartbeatTimeout 3.5 s) so the
#: measured detection times are those of a real installation; 48 V packs as in sim/demo.py.
#: Sunny Island: SendInterval 1 s (as on a real installation), the safety ladder scaled down to
#: its minimum settings (2/5/10 s instead of 10/25/40 s) to keep the suite short; the energy
#: counters persisted every 10 s (the minimum) so the disk-full fault is seen quickly.
SYSTEM_SETTINGS: dict[str, Any] = {
    "Superb/NodeIds": "1,2,3",
    "Superb/Mode": 1,
    "Superb/ChargeVoltage": 56.8,
    "Superb/BatteryLowVoltage": 46.0,
    "Superb/Alarms/LowVoltage": 46.5,
    "Superb/Alarms/HighVoltage": 58.4,
    "Sma/BatteryService": AGGREGATE,
    "Sma/SendInterval": SEND_INTERVAL,
    "Sma/MaxChargeCurrent": SMA_MAX_CCL,
    "Sma/StaleWarningTime": 2.0,
    "Sma/StaleAlarmTime": 5.0,
    "Sma/StopTime": 10.0,
    "Sma/EnergyPersistInterval": 10.0,
    "Sma/CurrentSlewRate": 20.0,
}


def battery_service(node: int) -> str:
    return f"com.victronenergy.battery.superb_{SERIAL_BASE + node}"


def unwrap(v: Any) -> Any:
    if isinstance(v, dbus.Array) and len(v) == 0:
        return None
    if isinstance(v, dbus.Boolean):
        return bool(v)
    if isinstance(v, (dbus.Int16, dbus.Int32, dbus.Int64, dbus.UInt16, dbus.UInt32,
                      dbus.UInt64, dbus.Byte)):
        return int(v)
    if isinstance(v, dbus.Double):
        return float(v)
    if isinstance(v, dbus.String):
        return str(v)
    if isinstance(v, dbus.Dictionary):
        return {str(k): unwrap(x) for k, x in v.items()}
    if isinstance(v, dbus.Array):
        return [unwrap(x) for x in v]
    return v


class RestartableBus(DbusDaemon):
    """A private dbus-daemon on a fixed socket path that can be stopped and started again."""

    @classmethod
    def launch(cls, workdir: Path) -> RestartableBus:
        sock = workdir / "bus.sock"
        conf = workdir / "bus.conf"
        conf.write_text(DBUS_CONFIG.format(socket=sock))
        bus = cls(address=f"unix:path={sock}", workdir=workdir, proc=None)  # type: ignore[arg-type]
        bus.start()
        return bus

    def start(self) -> None:
        exe = require_tool("dbus-daemon")
        sock = self.workdir / "bus.sock"
        if sock.exists():
            sock.unlink()  # a killed daemon leaves its socket behind
        self.proc = subprocess.Popen(
            [exe, "--nofork", "--nopidfile", f"--config-file={self.workdir / 'bus.conf'}",
             "--print-address=1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        if not self.proc.stdout.readline().strip():
            raise AssertionError("dbus-daemon did not start")

    def kill(self) -> None:
        """Stop the daemon the hard way (as if it crashed)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class Supervised:
    """One driver under daemontools ``supervise``, with a run script generated here.

    The driver's output reaches this test through supervise's inherited stdout, line by line
    with arrival times (one :class:`Proc` for supervise, across all restarts of the driver).
    """

    def __init__(self, name: str, workdir: Path, argv: list[str], env: dict[str, str],
                 preload: dict[str, str]) -> None:
        for tool in ("supervise", "svc", "svstat"):
            require_tool(tool)
        self.name = name
        self.dir = workdir / "service" / name
        self.dir.mkdir(parents=True)
        pre = " ".join(f"{k}={v}" for k, v in preload.items())
        run = self.dir / "run"
        run.write_text("#!/bin/sh\nexec 2>&1\n"
                       f"exec env {pre} {' '.join(argv)}\n")
        run.chmod(0o755)
        self.proc = Proc(["supervise", str(self.dir)], env, name)

    def status(self) -> tuple[str, int | None]:
        res = subprocess.run(["svstat", str(self.dir)], capture_output=True, text=True,
                             check=False)
        m = re.search(r": up \(pid (\d+)\)", res.stdout)
        return ("up", int(m.group(1))) if m else ("down", None)

    def pid(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state, pid = self.status()
            if state == "up" and pid is not None:
                return pid
            time.sleep(0.05)
        raise AssertionError(f"{self.name} is not up under supervise")

    def new_pid(self, old: int, timeout: float) -> tuple[float, int]:
        """Wait until supervise runs a process other than ``old``: (time seen, pid)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state, pid = self.status()
            if state == "up" and pid is not None and pid != old:
                return time.monotonic(), pid
            time.sleep(0.02)
        raise AssertionError(f"{self.name} was not restarted by supervise within {timeout} s")

    def stop(self) -> None:
        """``svc -dx``: TERM the driver, then supervise exits."""
        subprocess.run(["svc", "-dx", str(self.dir)], capture_output=True, check=False)
        try:
            self.proc.proc.wait(15)
        except subprocess.TimeoutExpired:
            _state, pid = self.status()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            self.proc.proc.kill()
        self.proc.stop()


class Sniffer(can.Listener):
    """Records every frame on a channel of the loopback link: (monotonic time, id, data)."""

    def __init__(self, channel: str) -> None:
        self.bus = can.Bus(interface="canlink", channel=channel)
        self.frames: list[tuple[float, int, bytes]] = []
        self.lock = threading.Lock()
        self.notifier = can.Notifier(self.bus, [self], timeout=0.1)

    def on_message_received(self, msg: can.Message) -> None:
        with self.lock:
            self.frames.append((time.monotonic(), msg.arbitration_id, bytes(msg.data)))

    def of(self, fid: int, since: float = 0.0, until: float = float("inf")
           ) -> list[tuple[float, bytes]]:
        with self.lock:
            return [(t, d) for t, i, d in self.frames if i == fid and since <= t <= until]

    def close(self) -> None:
        self.notifier.stop()
        self.bus.shutdown()


def ccl_of(data: bytes) -> float:
    """0x351 bytes 2-3: charge current limit, s16, 0.1 A."""
    return float(struct.unpack_from("<h", data, 2)[0]) / 10.0


def dcl_of(data: bytes) -> float:
    return float(struct.unpack_from("<h", data, 4)[0]) / 10.0


#: what the monitor samples: key -> (service, path); "vebus" and "settings" are GetItems
WATCH: dict[str, tuple[str, str]] = {
    "agg/Connected": (AGGREGATE, "/Connected"),
    "agg/Ccl": (AGGREGATE, "/Info/MaxChargeCurrent"),
    "agg/Dcl": (AGGREGATE, "/Info/MaxDischargeCurrent"),
    "agg/BmsCable": (AGGREGATE, "/Alarms/BmsCable"),
    "agg/Soc": (AGGREGATE, "/Soc"),
    "agg/Online": (AGGREGATE, "/System/NrOfModulesOnline"),
    "mgr/Nodes": (MANAGER, "/Status/Nodes"),
    **{f"bat{n}/Connected": (battery_service(n), "/Connected") for n in NODES},
    **{f"bat{n}/Temperature": (battery_service(n), "/Dc/0/Temperature") for n in NODES},
    # aggregate mode: a battery's own CCL is on its service's custom path (not a BMS)
    **{f"bat{n}/Ccl": (battery_service(n), "/CanBridge/MaxChargeCurrent") for n in NODES},
}
VEBUS_KEYS = ("/CanBridge/Ladder", "/Alarms/BmsConnectionLost", "/CanBridge/DataAge",
              "/CanBridge/Implausible", "/Ac/Out/P", "/State")
ENERGY = ("AcIn1ToAcOut", "AcIn1ToInverter", "AcOutToAcIn1", "InverterToAcIn1",
          "InverterToAcOut", "OutToInverter")


class Monitor(threading.Thread):
    """Samples the services every ``period`` s on its own connection (reconnects after a
    D-Bus restart). Missing service or path = ``None`` ("absent")."""

    def __init__(self, address: str, period: float = 0.2) -> None:
        super().__init__(daemon=True, name="monitor")
        self.address = address
        self.period = period
        self.samples: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.RLock()  # predicates passed to wait() may call latest()
        self.cond = threading.Condition(self.lock)
        self._halt = threading.Event()
        self._bus: Any = None

    def _get(self, service: str, path: str) -> Any:
        try:
            obj = self._bus.get_object(service, path, introspect=False)
            return unwrap(obj.GetValue(dbus_interface=BUSITEM, timeout=1.0))
        except dbus.exceptions.DBusException as exc:
            if "Disconnected" in (exc.get_dbus_name() or "") or "NoReply" in str(exc):
                raise
            return None

    def sample(self) -> dict[str, Any]:
        if self._bus is None:
            self._bus = dbus.bus.BusConnection(self.address)
        out = {k: self._get(s, p) for k, (s, p) in WATCH.items()}
        try:
            obj = self._bus.get_object(VEBUS, "/", introspect=False)
            items = obj.GetItems(dbus_interface=BUSITEM, timeout=1.0)
            vals = {str(k): unwrap(v["Value"]) for k, v in items.items()}
        except dbus.exceptions.DBusException:
            vals = {}
        for k in VEBUS_KEYS:
            out["vebus" + k] = vals.get(k)
        for e in ENERGY:
            out[f"energy/{e}"] = vals.get(f"/Energy/{e}")
        return out

    def run(self) -> None:
        while not self._halt.is_set():
            t = time.monotonic()
            try:
                values = self.sample()
            except (dbus.exceptions.DBusException, OSError):
                values = {}
                if self._bus is not None:
                    try:
                        self._bus.close()
                    except Exception:  # noqa: BLE001 - closing a dead connection
                        pass
                    self._bus = None
            with self.cond:
                self.samples.append((t, values))
                self.cond.notify_all()
            self._halt.wait(max(0.0, self.period - (time.monotonic() - t)))

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        if self._bus is not None:
            self._bus.close()

    def latest(self, key: str) -> Any:
        with self.lock:
            for _, v in reversed(self.samples):
                if v:
                    return v.get(key)
        return None

    def wait(self, key: str, pred: Callable[[Any], bool], timeout: float,
             since: float | None = None) -> float:
        """The time of the first sample at or after ``since`` whose ``key`` matches."""
        since = time.monotonic() if since is None else since
        deadline = time.monotonic() + timeout
        with self.cond:
            i = 0
            while True:
                while i < len(self.samples):
                    t, v = self.samples[i]
                    i += 1
                    if t >= since and v and pred(v.get(key)):
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    last = self.samples[-1][1].get(key) if self.samples else None
                    raise AssertionError(f"{key} did not match within {timeout} s "
                                         f"(last {last!r})")
                self.cond.wait(min(left, 0.5))

    def series(self, key: str, since: float = 0.0, until: float = float("inf")
               ) -> list[tuple[float, Any]]:
        with self.lock:
            return [(t, v.get(key)) for t, v in self.samples if v and since <= t <= until]


@dataclass
class Safety:
    """What the sniffer saw on can1 during a window."""

    frames: int
    max_ccl: float
    max_dcl: float
    max_gap: float
    ccl_above_battery: list[tuple[float, float, float]]   # (t, sent, battery limit)

    def as_dict(self) -> dict[str, Any]:
        return {"bms_frames_0x351": self.frames, "max_ccl_a": self.max_ccl,
                "max_dcl_a": self.max_dcl, "max_gap_s": round(self.max_gap, 3),
                "ccl_above_battery_limit": len(self.ccl_above_battery)}


class FaultSystem:
    """The running system plus the helpers the matrix tests use."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []
        self.supervised: dict[str, Supervised] = {}
        self.mounted: Path | None = None
        self.link: CanLink | None = None
        self.sniffer: Sniffer | None = None
        self.monitor: Monitor | None = None
        self.bus: RestartableBus | None = None
        self.settings: SettingsService | None = None
        self.sim_address = ""
        self.offset_file = workdir / "walljump.offset"
        self.preload: dict[str, str] = {}
        self.state_dir = workdir / "state"
        #: windows in which a gap in the BMS frames is expected and measured instead
        self.expected_gaps: list[tuple[float, float]] = []

    # -- start and stop -------------------------------------------------------------------
    def start(self) -> None:
        self._build_shim()
        self.bus = RestartableBus.launch(self.workdir)
        self.link = start_canlink()
        os.environ["CANBRIDGE_CANLINK"] = self.link.address
        (self.workdir / "conf").mkdir()
        self.settings = SettingsService(daemon=self.bus, datadir=self.workdir / "conf",
                                        real=real_localsettings(),
                                        log=self.workdir / "settings.log")
        self.settings.start()
        self.seed_settings(SYSTEM_SETTINGS)
        self._mount_state_dir()
        env = self.env()
        sim = Proc(python_cmd("sim.superb", "--nodes", "1,2,3", "--channel", "vecan0",
                              "--nominal-voltage", "51.2", "--control-port", "0"),
                   self.env(preload=True), "sim.superb")
        self.procs.append(sim)
        _, line = sim.wait_for(r"SIMCONTROL=", 20)
        self.sim_address = line.split("=", 1)[1].strip()
        # The two simulators are not coupled: the SuperB packs' current follows its own cycle,
        # not the Sunny Island's. Hold them at a small charge current (below the bridge's
        # PlausibleCurrentBand) so the sign-plausibility check, which stays enabled, does not
        # fire on the simulators' disagreement.
        for n in NODES:
            self.sim(f"set {n} current 1")
            self.sim(f"hold {n} 1")
        si = Proc(python_cmd("sim.sma", "--channel", "can1", "--control",
                             str(self.workdir / "si_control.json")),
                  self.env(preload=True), "sim.sma")
        self.procs.append(si)
        si.wait_for("simulated Sunny Island on", 20)
        self.sniffer = Sniffer("can1")
        self.supervised["dbus-superb"] = Supervised(
            "dbus-superb", self.workdir, python_cmd("driver.superb.main"), env, self.preload)
        self.supervised["dbus-sma"] = Supervised(
            "dbus-sma", self.workdir,
            python_cmd("driver.sma.main", "--state-dir", str(self.state_dir)), env,
            self.preload)
        self.monitor = Monitor(self.bus.address)
        self.monitor.start()

    def _build_shim(self) -> None:
        gcc = require_tool("gcc")
        so = self.workdir / "walljump.so"
        res = subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o",
                              str(so), str(HERE / "walljump.c"), "-ldl"],
                             capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise AssertionError(f"cannot build the wall-clock shim:\n{res.stderr}")
        self.offset_file.write_bytes(struct.pack("<q", 0))
        self.preload = {"LD_PRELOAD": str(so), "WALLJUMP_FILE": str(self.offset_file)}

    def jump_wall_clock(self, seconds: float) -> None:
        """Shift the wall clock of every driver and simulator process by ``seconds``."""
        with open(self.offset_file, "r+b") as f:
            f.write(struct.pack("<q", int(seconds * 1e9)))

    def _mount_state_dir(self) -> None:
        """A 64 KiB tmpfs for dbus-sma's energy counters (the disk-full fault fills it)."""
        self.state_dir.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs",
                              str(self.state_dir)], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise AssertionError("cannot mount a small tmpfs for the disk-full fault "
                                 f"(needs root and mount permission): {res.stderr.strip()}")
        self.mounted = self.state_dir

    def env(self, preload: bool = False) -> dict[str, str]:
        assert self.bus is not None and self.link is not None
        env = child_env(self.bus.env(), CANBRIDGE_CANLINK=self.link.address)
        if preload:
            env.update(self.preload)
        return env

    def stop(self) -> None:
        """Stop everything this system started; every step runs even if one fails."""
        steps: list[Callable[[], None]] = []
        if self.monitor is not None:
            steps.append(self.monitor.stop)
        steps += [s.stop for s in reversed(list(self.supervised.values()))]
        steps += [p.stop for p in reversed(self.procs)]
        if self.sniffer is not None:
            steps.append(self.sniffer.close)
        if self.settings is not None and self.settings.proc is not None:
            steps.append(self.settings.stop)
        if self.link is not None:
            link = self.link
            steps.append(lambda: _terminate(link.proc))
        if self.bus is not None:
            steps.append(self.bus.stop)
        if self.mounted is not None:
            mounted = self.mounted
            steps.append(lambda: _umount(mounted))
        steps.append(self._save_logs)
        errors = []
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                errors.append(repr(exc))
        if errors:
            raise AssertionError(f"errors while stopping the system: {errors}")

    def _save_logs(self) -> None:
        """Every process's output, for the record (artifacts/faults/logs/)."""
        logs = ROOT / "artifacts" / "faults" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for p in [*self.procs, *(s.proc for s in self.supervised.values())]:
            (logs / f"{p.name}.log").write_text(p.output + "\n")

    # -- D-Bus helpers ------------------------------------------------------------------------
    def call(self, service: str, path: str, method: str, *args: Any) -> Any:
        assert self.bus is not None
        bus = dbus.bus.BusConnection(self.bus.address)
        try:
            obj = bus.get_object(service, path, introspect=False)
            return getattr(obj, method)(*args, dbus_interface=BUSITEM, timeout=5.0)
        finally:
            bus.close()

    def seed_settings(self, values: dict[str, Any]) -> None:
        """Register and set settings (typed from the schema), as a user would have them."""
        assert self.bus is not None
        schema = load_schema()
        bus = dbus.bus.BusConnection(self.bus.address)
        try:
            entries = []
            for key in values:
                s = schema.by_key[key]
                entries.append({"path": s.path, "default": s.dbus_default(),
                                "min": s.dbus_min(), "max": s.dbus_max()})
            bus.call_blocking(SETTINGS, "/", "com.victronenergy.Settings", "AddSettings",
                              "aa{sv}", [entries])
            for key, value in values.items():
                s = schema.by_key[key]
                typed = s.typed(value)
                wrapped = dbus.Double(typed) if isinstance(typed, float) else (
                    dbus.Int32(typed) if isinstance(typed, int) else dbus.String(typed))
                assert bus.call_blocking(SETTINGS, s.path, BUSITEM, "SetValue", "v",
                                         [wrapped]) == 0
        finally:
            bus.close()

    def settings_snapshot(self) -> dict[str, Any]:
        """Every CanBridge and device setting with its value."""
        items = unwrap(self.call(SETTINGS, "/", "GetItems"))
        return {k: v["Value"] for k, v in items.items()
                if k.startswith(("/Settings/CanBridge/", "/Settings/Devices/"))}

    def sim(self, line: str) -> str:
        from sim.superb import control

        answer = control(self.sim_address, line)
        assert answer.startswith("OK"), f"simulator refused {line!r}: {answer}"
        return answer[2:].strip()

    def nodes(self) -> dict[str, Any]:
        raw = self.monitor.latest("mgr/Nodes") if self.monitor else None
        return dict(json.loads(raw)) if raw else {}

    # -- steady state and the safety checks ------------------------------------------------------
    def wait_steady(self, timeout: float = 40.0) -> float:
        """All batteries online, the bridge's ladder normal, BMS frames flowing."""
        m = self.monitor
        assert m is not None
        t0 = time.monotonic()
        for n in NODES:
            m.wait(f"bat{n}/Connected", lambda v: v == 1, timeout, since=t0)
        m.wait("agg/Online", lambda v: v == len(NODES), timeout, since=t0)
        m.wait("vebus/CanBridge/Ladder", lambda v: v == "normal", timeout, since=t0)
        m.wait("agg/Ccl", lambda v: v is not None and v > 0, timeout, since=t0)
        return time.monotonic()

    def safety(self, since: float, until: float | None = None) -> Safety:
        """CCL, DCL and gaps of the 0x351 frames sent in [since, until] (gaps counted from the
        last frame before ``since``), excluding the expected-gap windows."""
        assert self.sniffer is not None and self.monitor is not None
        until = time.monotonic() if until is None else until
        before = self.sniffer.of(0x351, 0.0, since)
        frames = self.sniffer.of(0x351, since, until)
        times = ([before[-1][0]] if before else []) + [t for t, _ in frames] + [until]
        gaps = [b - a for a, b in itertools.pairwise(times)
                if not any(s <= b and a <= e for s, e in self.expected_gaps)]
        limits = self.monitor.series("agg/Ccl", since - LIMIT_LAG_S, until)
        above: list[tuple[float, float, float]] = []
        for t, d in frames:
            window = [(tt, v) for tt, v in limits if t - LIMIT_LAG_S <= tt <= t]
            # only where the battery's limit was published over the whole lag window (not in
            # the first seconds after a start, when the bridge cannot have read it yet)
            if not window or window[0][0] > t - LIMIT_LAG_S + 0.5 or any(
                    v is None for _, v in window):
                continue
            if ccl_of(d) > max(v for _, v in window) + 0.05:
                above.append((round(t, 2), ccl_of(d), max(v for _, v in window)))
        return Safety(frames=len(frames),
                      max_ccl=max((ccl_of(d) for _, d in frames), default=0.0),
                      max_dcl=max((dcl_of(d) for _, d in frames), default=0.0),
                      max_gap=max(gaps, default=0.0), ccl_above_battery=above)

    def assert_safe(self, since: float, until: float | None = None) -> Safety:
        s = self.safety(since, until)
        assert s.frames > 0, "no BMS frames at all"
        assert s.max_ccl <= SMA_MAX_CCL, f"CCL {s.max_ccl} A above the configured {SMA_MAX_CCL}"
        assert not s.ccl_above_battery, f"CCL above the battery's limit: {s.ccl_above_battery}"
        assert s.max_gap <= 2 * SEND_INTERVAL, f"BMS frames paused {s.max_gap:.2f} s"
        return s

    def energy(self) -> dict[str, float]:
        assert self.monitor is not None
        return {e: self.monitor.latest(f"energy/{e}") for e in ENERGY}

    def energy_sample(self) -> tuple[float, dict[str, float]]:
        """The energy counters of the latest D-Bus sample, with the time it was taken."""
        assert self.monitor is not None
        with self.monitor.lock:
            t, values = next((t, v) for t, v in reversed(self.monitor.samples) if v)
        return t, {e: values.get(f"energy/{e}") for e in ENERGY}

    def energy_drops(self, since: float, until: float | None = None
                     ) -> list[tuple[str, float, float]]:
        """Counters that went down on D-Bus in the window: (flow, before, after)."""
        assert self.monitor is not None
        drops = []
        for e in ENERGY:
            vals = [v for _, v in self.monitor.series(f"energy/{e}", since,
                                                      until or float("inf"))
                    if v is not None]
            drops += [(e, a, b) for a, b in itertools.pairwise(vals) if b < a - 1e-9]
        return drops


def log_time(proc: Proc, pattern: str, since: float, timeout: float) -> float:
    """Arrival time of the first output line matching ``pattern`` received after ``since``."""
    with proc._cond:
        start = next((i for i, (t, _) in enumerate(proc.lines) if t >= since), len(proc.lines))
    t, _ = proc.wait_for(pattern, timeout, start)
    return t



def _terminate(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(5)


def _umount(path: Path) -> None:
    for _ in range(20):
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode \
                == 0:
            return
        time.sleep(0.25)  # busy: a process of ours is still exiting
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
