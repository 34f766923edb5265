"""The whole simulated system on one machine: ``make demo``.

Starts, as separate processes: a private ``dbus-daemon``, the settings service stand-in, the
loopback CAN hub (127.0.0.1 only), the simulated SuperB batteries and Sunny Island, both
drivers with the same arguments they have on a GX, and the web page on 127.0.0.1. Prints
``DBUS_SESSION_BUS_ADDRESS=<address>`` on a line of its own, then a short live status.
Ctrl-C, SIGTERM or ``--duration`` ends it; every child is stopped (process groups, SIGTERM then
SIGKILL) so nothing is left behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sim.venus.dbusd import DBUS_CONFIG

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = "com.victronenergy.settings"
#: a realistic settings file of a real GX, used as the demo's starting point when present
SEED = ROOT.parent / "shared" / "reference" / "venus-settings-seed.xml"
log = logging.getLogger("demo")
#: what the other components run on; stopped last
PLATFORM = ("dbus-daemon", "canlink-hub", "settings")


#: Settings the demo starts with (simulated 48 V packs feeding a 48 V Sunny Island).
DEMO_SETTINGS: dict[str, object] = {
    "/Settings/CanBridge/Superb/NodeIds": "1,2,3,4",
    "/Settings/CanBridge/Superb/Mode": 1,
    "/Settings/CanBridge/Superb/ChargeVoltage": 56.8,
    "/Settings/CanBridge/Superb/BatteryLowVoltage": 46.0,
    "/Settings/CanBridge/Superb/Alarms/LowVoltage": 46.5,
    "/Settings/CanBridge/Superb/Alarms/HighVoltage": 58.4,
    "/Settings/CanBridge/Sma/BatteryService": "com.victronenergy.battery.superb_aggregate",
}


@dataclass
class Child:
    """A started component."""

    name: str
    proc: subprocess.Popen[bytes]
    logfile: Path
    argv: list[str] = field(default_factory=list)


@dataclass
class Demo:
    workdir: Path
    children: list[Child] = field(default_factory=list)
    address: str = ""
    canlink: str = ""
    web_url: str = ""

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DBUS_SESSION_BUS_ADDRESS"] = self.address
        env["CANBRIDGE_CANLINK"] = self.canlink
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH")] if p)
        env["PYTHONUNBUFFERED"] = "1"
        # the drivers keep their last good settings here (on a GX: /data/conf/canbridge)
        env["CANBRIDGE_STATE_DIR"] = str(self.workdir / "state")
        return env

    def spawn(self, name: str, argv: list[str], stdout: int | IO[bytes] | None = None) -> Child:
        logfile = self.workdir / f"{name}.log"
        out = stdout if stdout is not None else open(logfile, "ab")  # noqa: SIM115
        proc = subprocess.Popen(argv, env=self.env() if self.address else None, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT if stdout is None
                                else open(logfile, "ab"),  # noqa: SIM115
                                start_new_session=True)
        child = Child(name, proc, logfile, list(argv))
        self.children.append(child)
        log.info("started %s (pid %d, log %s)", name, proc.pid, logfile)
        return child

    def stop_all(self) -> None:
        """Stop every child: first the drivers, simulators and web page, then the platform
        pieces they use (settings service, CAN hub, dbus-daemon), as a GX stops its services
        before its buses go away: a simulator whose CAN hub vanished under it while stopping
        would log a traceback that is not a fault of anything under test."""
        self._stop([c for c in self.children if c.name not in PLATFORM])
        self._stop([c for c in self.children if c.name in PLATFORM])

    def _stop(self, children: list[Child]) -> None:
        for child in reversed(children):
            if child.proc.poll() is None:
                try:
                    os.killpg(child.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for child in reversed(children):
            left = max(0.1, deadline - time.monotonic())
            try:
                child.proc.wait(left)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", child.name)
            try:
                os.killpg(child.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            child.proc.wait(5)


def python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def module_exists(module: str) -> bool:
    rel = Path(*module.split("."))
    return (ROOT / rel.with_suffix(".py")).is_file() or (ROOT / rel / "__main__.py").is_file()


def wait_name(address: str, name: str, timeout: float) -> bool:
    import dbus

    bus = dbus.bus.BusConnection(address)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if bus.name_has_owner(name):
                return True
            time.sleep(0.05)
        return False
    finally:
        bus.close()


def seed_settings(address: str) -> None:
    """Register and set the demo's starting settings (typed from the schema)."""
    import dbus

    from driver.schema import load_schema

    schema = load_schema()
    bus = dbus.bus.BusConnection(address)
    try:
        entries = []
        for path in DEMO_SETTINGS:
            s = schema.by_path[path]
            entries.append({"path": path, "default": s.dbus_default(), "min": s.dbus_min(),
                            "max": s.dbus_max()})
        bus.call_blocking(SETTINGS, "/", "com.victronenergy.Settings", "AddSettings", "aa{sv}",
                          [entries])
        for path, value in DEMO_SETTINGS.items():
            typed = schema.by_path[path].typed(value)
            wrapped = dbus.Double(typed) if isinstance(typed, float) else (
                dbus.Int32(typed) if isinstance(typed, int) else dbus.String(typed))
            bus.call_blocking(SETTINGS, path, "com.victronenergy.BusItem", "SetValue", "v",
                              [wrapped])
    finally:
        bus.close()


def status_line(address: str) -> str:
    """A one-line summary of what is on the bus."""
    import dbus

    bus = dbus.bus.BusConnection(address)
    parts = []
    try:
        names = sorted(n for n in bus.list_names() if n.startswith("com.victronenergy."))
        for name in names:
            if not name.startswith(("com.victronenergy.battery.", "com.victronenergy.vebus.")):
                continue
            try:
                items = bus.call_blocking(name, "/", "com.victronenergy.BusItem", "GetItems", "",
                                          [], timeout=2)
            except dbus.exceptions.DBusException:
                continue

            def text(path: str, items=items) -> str:
                v = items.get(path)
                return str(v["Text"]) if v is not None else "-"

            short = name.split(".", 3)[-1]
            if ".battery." in name:
                parts.append(f"{short}: {text('/Soc')} {text('/Dc/0/Voltage')} "
                             f"{text('/Dc/0/Current')}")
            else:
                parts.append(f"{short}: state {text('/State')} out {text('/Ac/Out/P')} "
                             f"dc {text('/Dc/0/Voltage')}")
        if not parts:
            parts.append(f"{len(names)} Venus services, no battery or vebus yet")
    finally:
        bus.close()
    return " | ".join(parts)


def start_system(demo: Demo, web_port: int, replay: Path | None = None) -> None:
    """Start every component of the simulated system into ``demo`` (its ``workdir`` exists).

    Shared by ``make demo`` and the benchmarks / soak (bench/fullsystem.py). Raises
    :class:`RuntimeError` when a platform piece cannot start; the caller stops what started.
    With ``replay`` (a diagnostic bundle, ``make replay``) the settings come from the bundle
    and its CAN capture is replayed in a loop instead of running the simulators (sim/replay.py).
    """
    workdir = demo.workdir
    dbus_exe = shutil.which("dbus-daemon")
    if dbus_exe is None:
        raise RuntimeError("dbus-daemon is not installed; run 'make deps'")
    conf = workdir / "bus.conf"
    conf.write_text(DBUS_CONFIG.format(socket=workdir / "bus.sock"))
    bus_child = demo.spawn("dbus-daemon", [dbus_exe, "--nofork", "--nopidfile",
                                           f"--config-file={conf}", "--print-address=1"],
                           stdout=subprocess.PIPE)
    assert bus_child.proc.stdout is not None
    demo.address = bus_child.proc.stdout.readline().decode().strip()
    hub = demo.spawn("canlink-hub", python("sim.canlink.hub", "--port", "0"),
                     stdout=subprocess.PIPE)
    assert hub.proc.stdout is not None
    demo.canlink = hub.proc.stdout.readline().decode().strip().split("=", 1)[1]
    (workdir / "conf").mkdir()
    seed_args = ["--seed", str(SEED)] if SEED.is_file() else []
    demo.spawn("settings", python("sim.venus.settings_service", "--path",
                                  str(workdir / "conf"), *seed_args))
    if not wait_name(demo.address, SETTINGS, 15):
        raise RuntimeError(f"the settings service did not start; see {workdir / 'settings.log'}")
    if replay is not None:
        from sim.replay import import_settings

        import_settings(replay, demo.address)
    else:
        seed_settings(demo.address)

    state = workdir / "state"
    state.mkdir()
    components: list[tuple[str, str, list[str]]] = [
        # the SuperB packs are the Sunny Island's battery: they carry its current
        ("sim-superb", "sim.superb", ["--nodes", "1,2,3", "--channel", "vecan0",
                                      "--nominal-voltage", "51.2", "--follow-si", "can1",
                                      "--si-batteries", "4"]),
        # node 4: a quirky embedded stack (stale and late answers, jitter; sim/superb_quirky.py)
        ("sim-superb-quirky", "sim.superb_quirky", [
            "--nodes", "4", "--channel", "vecan0", "--nominal-voltage", "51.2", "--moving",
            "--follow-si", "can1", "--si-batteries", "4"]),
        ("sim-sma", "sim.sma", ["--channel", "can1"]),
        ("dbus-superb", "driver.superb.main", []),
        ("dbus-sma", "driver.sma.main", ["--state-dir", str(state)]),
        ("canbridge-web", "webui.main", ["--listen", "127.0.0.1", "--port", str(web_port),
                                         "--password-file", str(workdir / "password")]),
    ]
    if replay is not None:
        components = [c for c in components if not c[0].startswith("sim-")]
        components.append(("replay", "sim.replay", [str(replay), "--for", "all", "--loop"]))
    (workdir / "password").write_text("")  # empty file: no password, as on a fresh GX
    for name, module, args in components:
        if module_exists(module):
            demo.spawn(name, python(module, *args))
        else:
            log.info("%s is not part of this build yet (%s)", name, module)
    if module_exists("webui.main"):
        demo.web_url = f"http://127.0.0.1:{web_port}/"


def pick_web_port(preferred: int, host: str = "127.0.0.1") -> int:
    """``preferred`` if it is free on ``host``, else a free port the system picks."""
    import socket

    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free TCP port on 127.0.0.1")


def run(duration: float, web_port: int, keep: bool, replay: Path | None = None) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="canbridge-demo-"))
    demo = Demo(workdir)
    stopping = {"flag": False}

    def on_signal(signum: int, _frame: object) -> None:
        stopping["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    try:
        port = pick_web_port(web_port)
        if port != web_port:
            print(f"Port {web_port} is taken; the web page uses port {port}", flush=True)
        try:
            start_system(demo, port, replay)
        except RuntimeError as exc:
            log.error("%s", exc)
            return 1
        print(f"DBUS_SESSION_BUS_ADDRESS={demo.address}", flush=True)
        print(f"CANBRIDGE_CANLINK={demo.canlink}", flush=True)
        if demo.web_url:
            print(f"Web page: {demo.web_url} (no password in the demo)", flush=True)
        print(f"Logs: {workdir}", flush=True)
        t0 = time.monotonic()
        next_status = t0 + 2
        while not stopping["flag"]:
            if duration and time.monotonic() - t0 >= duration:
                break
            for child in demo.children:
                if child.proc.poll() is not None:
                    log.error("%s exited with code %s; see %s", child.name,
                              child.proc.returncode, child.logfile)
                    code = 1
                    stopping["flag"] = True
            if time.monotonic() >= next_status:
                try:
                    print(f"[{time.monotonic() - t0:5.0f} s] {status_line(demo.address)}",
                          flush=True)
                except Exception as exc:  # noqa: BLE001 - status is best effort
                    print(f"status unavailable: {exc}", flush=True)
                next_status += 5
            time.sleep(0.2)
    finally:
        demo.stop_all()
        if code == 0 and not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}", flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--duration", type=float, default=0, help="seconds to run (0: until Ctrl-C)")
    ap.add_argument("--web-port", type=int, default=8090)
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("--replay", type=Path, metavar="BUNDLE",
                    help="a diagnostic bundle (canbridge-diag): its settings and CAN capture "
                         "replace the simulators")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return run(args.duration, args.web_port, args.keep_logs, args.replay)


if __name__ == "__main__":
    sys.exit(main())
