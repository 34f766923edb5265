"""The full simulated system for benchmarks and the soak, and its 10-minute resource run.

    .venv/bin/python -m bench.fullsystem [--duration 600] [--sample 10] [--json out.json]

:class:`FullSystem` starts exactly what ``make demo`` starts (``sim.demo.start_system``: private
dbus-daemon, settings service with the GX seed, loopback CAN hub, 3 simulated SuperB batteries in
aggregate mode, the simulated Sunny Island, ``dbus-superb``, ``dbus-sma``, ``canbridge-web``),
with the web page on a free port, and adds what a GX has around it: a supervisor that restarts
an exited driver after a second (as daemontools' ``supervise`` does) and a browser-like client
that reads ``/api/status`` once a second.

The resource run samples CPU time and resident memory (psutil) of every process of the system
for ``--duration`` seconds after a warm-up, and prints / writes per-process CPU (% of one core)
and RSS (first, last, max after warm-up).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import logging
import os
import re
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dbus
import psutil

from sim.demo import Child, Demo, start_system

log = logging.getLogger("bench.fullsystem")

BATTERY = "com.victronenergy.battery.superb_aggregate"
VEBUS = "com.victronenergy.vebus.canbridge_sma_can1"
MANAGER = "com.victronenergy.canbridge.superb"
#: components a supervisor restarts when they exit (on a GX: daemontools; the settings
#: service is localsettings, also supervised)
SUPERVISED = ("settings", "dbus-superb", "dbus-sma", "canbridge-web")


def wait_for_line(path: Path, pattern: str, timeout: float) -> re.Match[str]:
    """Wait until a line of the log file ``path`` matches ``pattern``."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for line in path.read_text(errors="replace").splitlines():
                m = rx.search(line)
                if m:
                    return m
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"no line matching {pattern!r} in {path} after {timeout} s")


@dataclass
class Restart:
    """A supervised component that exited and was started again."""

    t: float
    name: str
    old_pid: int
    code: int | None
    new_pid: int = 0


@dataclass
class FullSystem:
    """The simulated system of ``make demo``, supervised, with helpers to measure it."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cb-full-")))
    demo: Demo = field(init=False)
    web_port: int = 0
    simcontrol: str = ""
    t0: float = 0.0
    restarts: list[Restart] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _expect_exit: set[str] = field(default_factory=set)
    _dead_since: dict[str, float] = field(default_factory=dict)
    _bus: Any = None
    _browser: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    browser_errors: int = 0
    browser_requests: int = 0

    def __post_init__(self) -> None:
        self.demo = Demo(self.workdir)

    # -- life cycle -------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        # a fixed free port, as on a GX (the Web/Port setting): a restarted web page is found
        # where it was
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.t0 = time.monotonic()
        start_system(self.demo, port)
        m = wait_for_line(self.child("sim-superb").logfile, r"SIMCONTROL=(127\.0\.0\.1:\d+)", 30)
        self.simcontrol = m.group(1)
        m = wait_for_line(self.child("canbridge-web").logfile,
                          r"listening on http://127\.0\.0\.1:(\d+)/", 30)
        self.web_port = int(m.group(1))
        self._bus = dbus.bus.BusConnection(self.demo.address)
        self.wait(lambda: self.value(BATTERY, "/Connected") == 1
                  and self.value(VEBUS, "/CanBridge/Ladder") == "normal", timeout,
                  "aggregate battery connected and the Sunny Island bridge normal")

    def start_browser(self, period: float = 1.0) -> None:
        """A browser-like client: ``GET /api/status`` every ``period`` seconds."""

        def run() -> None:
            conn: http.client.HTTPConnection | None = None
            while not self._stop.wait(period):
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=5)
                    conn.request("GET", "/api/status")
                    r = conn.getresponse()
                    r.read()
                    self.browser_requests += 1
                    if r.status != 200:
                        self.browser_errors += 1
                except (OSError, http.client.HTTPException):
                    # the web process may be restarting (a fault of the soak)
                    self.browser_errors += 1
                    conn = None

        self._browser = threading.Thread(target=run, daemon=True, name="browser")
        self._browser.start()

    def stop(self, keep: bool = False) -> None:
        self._stop.set()
        if self._browser is not None:
            self._browser.join(5)
        if self._bus is not None:
            self._bus.close()
            self._bus = None
        self.demo.stop_all()
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- components ---------------------------------------------------------------------------
    def child(self, name: str) -> Child:
        """The current (latest started) process of component ``name``."""
        for c in reversed(self.demo.children):
            if c.name == name:
                return c
        raise KeyError(name)

    def names(self) -> list[str]:
        seen: list[str] = []
        for c in self.demo.children:
            if c.name not in seen:
                seen.append(c.name)
        return seen

    def pids(self) -> dict[str, int]:
        return {n: self.child(n).proc.pid for n in self.names()}

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to component ``name`` (its supervisor restarts it)."""
        c = self.child(name)
        os.kill(c.proc.pid, sig)
        return c.proc.pid

    def supervise(self, delay: float = 1.0) -> None:
        """One supervisor pass: restart a supervised component ``delay`` s after it exited."""
        now = time.monotonic()
        for name in self.names():
            c = self.child(name)
            code = c.proc.poll()
            if code is None:
                continue
            if name not in SUPERVISED:
                msg = f"{name} exited with code {code}"
                if msg not in self.failures:
                    self.failures.append(msg)
                continue
            since = self._dead_since.setdefault(name, now)
            if now - since < delay:
                continue
            del self._dead_since[name]
            new = self.demo.spawn(name, c.argv)
            self.restarts.append(Restart(round(now - self.t0, 1), name, c.proc.pid, code,
                                         new.proc.pid))

    # -- D-Bus ----------------------------------------------------------------------------------
    def items(self, service: str) -> dict[str, Any] | None:
        """``GetItems`` of ``service`` as {path: python value}; None if it is not there."""
        try:
            raw = self._bus.call_blocking(service, "/", "com.victronenergy.BusItem", "GetItems",
                                          "", [], timeout=5)
        except dbus.exceptions.DBusException:
            return None
        return {str(k): _py(v["Value"]) for k, v in raw.items()}

    def value(self, service: str, path: str) -> Any:
        try:
            v = self._bus.call_blocking(service, path, "com.victronenergy.BusItem", "GetValue",
                                        "", [], timeout=5)
        except dbus.exceptions.DBusException:
            return None
        return _py(v)

    def set_value(self, service: str, path: str, value: Any) -> int:
        return int(self._bus.call_blocking(service, path, "com.victronenergy.BusItem",
                                           "SetValue", "v", [value], timeout=5))

    @staticmethod
    def wait(cond: Any, timeout: float, what: str, quiet: bool = False) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if cond():
                    return True
            except Exception:  # noqa: BLE001 - polled until the deadline
                pass
            time.sleep(0.2)
        if quiet:
            return False
        raise TimeoutError(f"{what}: not reached in {timeout} s")


def _py(v: Any) -> Any:
    if isinstance(v, dbus.Array) and len(v) == 0:
        return None  # velib's invalid value
    if isinstance(v, (dbus.Double, float)):
        return float(v)
    if isinstance(v, (dbus.Int16, dbus.Int32, dbus.Int64, dbus.UInt16, dbus.UInt32, dbus.UInt64,
                      dbus.Byte, dbus.Boolean, int)):
        return int(v)
    if isinstance(v, (dbus.String, str)):
        return str(v)
    return v


@dataclass
class ProcSample:
    t: float
    pid: int
    rss_mb: float
    cpu_s: float


class ResourceSampler:
    """RSS and cumulative CPU time of every component's current process, by name."""

    def __init__(self, system: FullSystem) -> None:
        self.system = system
        self.samples: dict[str, list[ProcSample]] = {}
        self._procs: dict[int, psutil.Process] = {}

    def sample(self, t: float) -> None:
        for name, pid in self.system.pids().items():
            p = self._procs.get(pid)
            if p is None:
                p = self._procs[pid] = psutil.Process(pid)
            try:
                with p.oneshot():
                    ct = p.cpu_times()
                    rss = p.memory_info().rss / 2**20
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            self.samples.setdefault(name, []).append(
                ProcSample(round(t, 1), pid, round(rss, 2), ct.user + ct.system))

    def cpu_percent(self, name: str) -> float:
        """Mean CPU (% of one core) over the sampled span, summed over restarts."""
        s = self.samples.get(name, [])
        if len(s) < 2:
            return float("nan")
        busy = 0.0
        for a, b in itertools.pairwise(s):
            if a.pid == b.pid:
                busy += b.cpu_s - a.cpu_s
        return 100.0 * busy / (s[-1].t - s[0].t)

    def segments(self, name: str) -> list[list[ProcSample]]:
        """The samples of ``name`` split by process (a restart starts a new segment)."""
        out: list[list[ProcSample]] = []
        for s in self.samples.get(name, []):
            if not out or out[-1][0].pid != s.pid:
                out.append([])
            out[-1].append(s)
        return out


def load_average() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def resource_run(duration: float, sample: float, warmup: float) -> dict[str, Any]:
    system = FullSystem()
    loads: list[float] = []
    try:
        system.start()
        system.start_browser()
        time.sleep(warmup)
        sampler = ResourceSampler(system)
        t0 = time.monotonic()
        sampler.sample(0.0)
        while time.monotonic() - t0 < duration:
            time.sleep(min(sample, max(0.1, duration - (time.monotonic() - t0))))
            sampler.sample(time.monotonic() - t0)
            system.supervise()
            loads.append(os.getloadavg()[0])
            print(f"{time.monotonic() - t0:6.0f} s  load {load_average()}  " + "  ".join(
                f"{n} {v[-1].rss_mb:.1f}" for n, v in sampler.samples.items()), flush=True)
        procs = {}
        for name, s in sampler.samples.items():
            rss = [x.rss_mb for x in s]
            procs[name] = {"cpu_pct": round(sampler.cpu_percent(name), 2),
                           "rss_first_mb": rss[0], "rss_last_mb": rss[-1],
                           "rss_max_mb": max(rss), "pids": len(sampler.segments(name))}
        return {"duration_s": duration, "warmup_s": warmup, "sample_s": sample,
                "load_mean": round(statistics.mean(loads), 2) if loads else None,
                "load_max": round(max(loads), 2) if loads else None,
                "restarts": [r.name for r in system.restarts], "failures": system.failures,
                "browser_requests": system.browser_requests,
                "browser_errors": system.browser_errors, "processes": procs,
                "samples": {n: [[x.t, x.rss_mb, round(x.cpu_s, 3)] for x in s]
                            for n, s in sampler.samples.items()}}
    finally:
        system.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--sample", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=30.0)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    res = resource_run(args.duration, args.sample, args.warmup)
    print(f"{'process':<14} {'CPU %':>6} {'RSS first':>9} {'last':>6} {'max':>6}")
    for name, p in res["processes"].items():
        print(f"{name:<14} {p['cpu_pct']:>6.2f} {p['rss_first_mb']:>9.1f} "
              f"{p['rss_last_mb']:>6.1f} {p['rss_max_mb']:>6.1f}")
    print(f"load average mean {res['load_mean']} max {res['load_max']}; restarts "
          f"{res['restarts']}; failures {res['failures']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0 if not res["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
