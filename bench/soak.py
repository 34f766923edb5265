"""Soak: the full simulated system for a long time with seeded random faults.

    .venv/bin/python -m bench.soak --duration 3600 [--seed 8] [--json out.json] [--keep-logs]

Runs :class:`bench.fullsystem.FullSystem` (what ``make demo`` runs, supervised: an exited driver,
web page or settings service is started again after 1 s, as daemontools does) with a
browser-like client on ``/api/status``, and injects one fault after another, chosen and timed
by a seeded random generator (same seed, same schedule): every kind once in a random order
first, then at random with the weights of ``FAULTS``:

==================  ======================================================================
battery-vanish      a SuperB battery stops answering and its heartbeat stops; back after 5-20 s
battery-slow        a battery answers every SDO after 150 ms; normal again after 10-30 s
battery-abort       a battery answers one object (6060 voltage or 6081 temperature) with an
                    SDO abort; normal again after 10-30 s
battery-nohb        a battery's heartbeat stops (SDO still answered); back after 5-15 s
battery-reboot      a battery sends a boot-up message
garbage             a burst of malformed frames on vecan0 or can1
busoff              vecan0 or can1 bus-off for 0.5-3 s
settings-restart    the settings service is stopped (SIGTERM) and restarted by the supervisor
term                SIGTERM to dbus-superb, dbus-sma or canbridge-web (a ``svc -t``)
kill                SIGKILL to dbus-superb, dbus-sma or canbridge-web
==================  ======================================================================

Every ``--sample`` seconds it records the resident memory of every process (psutil), the
vebus service's ``/Energy/*`` counters and whether the simulated Sunny Island has logged an
event. At the end it checks:

* **memory**: for every process that lived at least ``warm-up + 2 × sample`` s, RSS (mean of
  its last 3 samples) minus RSS (mean of its first 3 samples after ``--warmup`` s of its life)
  is at most ``--max-growth-mb`` (2 MB);
* **logs**: no unexpected exception in any log. Counted: a line ``Traceback (most recent call
  last)`` (``logger.exception`` and uncaught exceptions both print one), a ``CRITICAL`` line,
  and a ``Fatal Python error``. Not counted: WARNING/ERROR lines without a traceback (an injected
  fault is expected to log some: "cannot open", "send failed", "timeout"); they are reported
  per process;
* **energy**: every ``/Energy/*`` counter never decreases between two samples of the same
  ``dbus-sma`` process, nor across a restart after SIGTERM (it saves on the way out). After a
  SIGKILL it restarts from its last save (``EnergyPersistInterval``, 60 s by default: "at most
  this much counting is lost on a power cut"); such a drop is reported and allowed only up to
  what was counted in that interval before the kill;
* **Sunny Island**: the simulator never logged ``SI event: ExtBMSTimeout`` and never reported
  ``timeout=1`` in a status line;
* **supervision**: no unsupervised component exited; every supervised exit was an injected one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.fullsystem import BATTERY, MANAGER, VEBUS, FullSystem, ResourceSampler, load_average
from sim.canlink.hub import control as hub_control
from sim.superb import control as sim_control

#: relative weights of the fault kinds
FAULTS: dict[str, float] = {
    "battery-vanish": 3, "battery-slow": 2, "battery-abort": 2, "battery-nohb": 2,
    "battery-reboot": 1, "garbage": 2, "busoff": 2, "settings-restart": 1, "term": 1,
    "kill": 1,
}
NODES = (1, 2, 3)
DRIVERS = ("dbus-superb", "dbus-sma", "canbridge-web")
PERSIST_INTERVAL = 60.0  # the EnergyPersistInterval default
UNEXPECTED = re.compile(r"Traceback \(most recent call last\)|\bCRITICAL\b|Fatal Python error")
ERROR_LINE = re.compile(r"\bERROR\b")


@dataclass
class Fault:
    t: float
    kind: str
    target: str
    detail: str = ""
    ended: float | None = None
    wall: str = ""


@dataclass
class SoakResult:
    duration: float
    seed: int
    faults: list[Fault] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(self.checks.values())


class Soak:
    def __init__(self, duration: float, seed: int, *, sample: float, warmup: float,
                 mean_gap: float, max_growth_mb: float) -> None:
        self.duration = duration
        self.rng = random.Random(seed)
        self.sample_s = sample
        self.warmup = warmup
        self.mean_gap = mean_gap
        self.max_growth = max_growth_mb
        self.system = FullSystem()
        self.sampler = ResourceSampler(self.system)
        self.result = SoakResult(duration, seed)
        self.energy: list[tuple[float, int, dict[str, float]]] = []
        self.loads: list[float] = []
        self._undo: list[tuple[float, Any]] = []
        self._deck = self.rng.sample(list(FAULTS), len(FAULTS))
        self.t0 = 0.0

    # -- faults -----------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self.t0

    def inject(self) -> Fault:
        if self._deck:  # every kind once first (a seeded order), then at random by weight
            kind = self._deck.pop()
        else:
            kind = self.rng.choices(list(FAULTS), weights=list(FAULTS.values()))[0]
        node = self.rng.choice(NODES)
        sim = self.system.simcontrol
        hub = self.system.demo.canlink
        f = Fault(round(self.now(), 1), kind, str(node),
                  wall=time.strftime("%H:%M:%S", time.gmtime()))
        if kind == "battery-vanish":
            hold = self.rng.uniform(5, 20)
            sim_control(sim, f"vanish {node}")
            self._later(hold, lambda: sim_control(sim, f"back {node}"), f)
        elif kind == "battery-slow":
            sim_control(sim, f"slow {node} 150")
            self._later(self.rng.uniform(10, 30), lambda: sim_control(sim, f"slow {node} 2"), f)
        elif kind == "battery-abort":
            obj = self.rng.choice(["6060 0", "6081 0"])
            f.detail = obj
            sim_control(sim, f"abort {node} {obj}")
            self._later(self.rng.uniform(10, 30),
                        lambda: sim_control(sim, f"unabort {node} {obj}"), f)
        elif kind == "battery-nohb":
            sim_control(sim, f"nohb {node}")
            self._later(self.rng.uniform(5, 15), lambda: sim_control(sim, f"hb {node}"), f)
        elif kind == "battery-reboot":
            sim_control(sim, f"reboot {node}")
        elif kind == "garbage":
            f.target = self.rng.choice(["vecan0", "can1"])
            hub_control(hub, f.target, "garbage")
        elif kind == "busoff":
            f.target = ch = self.rng.choice(["vecan0", "can1"])
            hub_control(hub, ch, "busoff")
            self._later(self.rng.uniform(0.5, 3), lambda: hub_control(hub, ch, "buson"), f)
        elif kind == "settings-restart":
            f.target = "settings"
            f.detail = f"pid {self.system.kill('settings', signal.SIGTERM)}"
        elif kind in ("term", "kill"):
            f.target = self.rng.choice(DRIVERS)
            sig = signal.SIGTERM if kind == "term" else signal.SIGKILL
            f.detail = f"pid {self.system.kill(f.target, sig)}"
        self.result.faults.append(f)
        return f

    def _later(self, delay: float, fn: Any, fault: Fault) -> None:
        def undo() -> None:
            fn()
            fault.ended = round(self.now(), 1)

        self._undo.append((self.now() + delay, undo))

    def _run_due(self) -> None:
        now = self.now()
        due = [u for u in self._undo if u[0] <= now]
        self._undo = [u for u in self._undo if u[0] > now]
        for _, fn in due:
            fn()

    # -- sampling ---------------------------------------------------------------------------
    def sample(self) -> None:
        t = self.now()
        self.sampler.sample(t)
        self.loads.append(os.getloadavg()[0])
        items = self.system.items(VEBUS)
        if items:
            e = {k: v for k, v in items.items() if k.startswith("/Energy/") and v is not None}
            self.energy.append((t, self.system.child("dbus-sma").proc.pid, e))

    # -- run ----------------------------------------------------------------------------------
    def run(self, keep_logs: bool = False) -> SoakResult:
        try:
            self.system.start()
            self.system.start_browser()
            self.t0 = time.monotonic()
            next_sample = 0.0
            next_fault = min(30.0, self.duration / 10)  # a quiet start for the baselines
            next_print = 0.0
            while self.now() < self.duration:
                self._run_due()
                self.system.supervise()
                if self.now() >= next_sample:
                    self.sample()
                    next_sample += self.sample_s
                # no new fault while one is being undone, nor in the last 20 s (recovery)
                if (self.now() >= next_fault and not self._undo
                        and self.now() < self.duration - 20):
                    self.inject()
                    next_fault = self.now() + self.rng.expovariate(1 / self.mean_gap) + 2
                if self.now() >= next_print:
                    print(f"[{self.now():6.0f} s] load {load_average()} faults "
                          f"{len(self.result.faults)} restarts {len(self.system.restarts)}",
                          flush=True)
                    next_print += 60
                time.sleep(0.2)
            for _, fn in self._undo:  # anything still pending
                fn()
            self._undo = []
            self.sample()
            self.check()
            self.check_recovered()
        finally:
            self.system.stop(keep=True)
            self.check_logs_after_stop()
            if keep_logs:
                self.result.details["logs"] = str(self.system.workdir)
            else:
                shutil.rmtree(self.system.workdir, ignore_errors=True)
        return self.result

    # -- checks -------------------------------------------------------------------------------
    def check(self) -> None:
        r = self.result
        r.details["load_mean"] = round(statistics.mean(self.loads), 2) if self.loads else None
        r.details["load_max"] = round(max(self.loads), 2) if self.loads else None
        r.details["params"] = {"mean_gap_s": self.mean_gap, "sample_s": self.sample_s,
                               "warmup_s": self.warmup, "max_growth_mb": self.max_growth}
        # memory
        growth: dict[str, Any] = {}
        ok = True
        for name in self.sampler.samples:
            best = None
            for seg in self.sampler.segments(name):
                after = [s for s in seg if s.t >= seg[0].t + self.warmup]
                if len(after) < 5:
                    continue
                g = statistics.mean(s.rss_mb for s in after[-3:]) - statistics.mean(
                    s.rss_mb for s in after[:3])
                span = after[-1].t - after[0].t
                if best is None or span > best["span_s"]:
                    best = {"pid": seg[0].pid, "span_s": round(span), "growth_mb": round(g, 2),
                            "rss_mb": after[-1].rss_mb}
                if g > self.max_growth:
                    ok = False
            growth[name] = best
        r.checks["memory"] = ok
        r.details["memory"] = growth
        # energy
        drops: list[dict[str, Any]] = []
        bad: list[dict[str, Any]] = []
        kills = [f for f in r.faults if f.kind == "kill" and f.target == "dbus-sma"]
        for (t1, p1, e1), (t2, p2, e2) in zip(self.energy, self.energy[1:], strict=False):
            for k, v2 in e2.items():
                v1 = e1.get(k)
                if v1 is None or v2 >= v1 - 1e-6:
                    continue
                d = {"path": k, "t": round(t2, 1), "from": v1, "to": v2}
                kill = next((f for f in kills if t1 - self.sample_s <= f.t <= t2), None)
                if p1 != p2 and kill is not None:
                    # what was counted in the persist interval before the kill
                    before = [e.get(k, 0.0) for t, _, e in self.energy
                              if t <= kill.t - PERSIST_INTERVAL - self.sample_s]
                    allowed = v1 - (before[-1] if before else 0.0)
                    d["allowed"] = round(allowed, 6)
                    (drops if v1 - v2 <= allowed + 1e-6 else bad).append(d)
                else:
                    bad.append(d)
        r.checks["energy_monotonic"] = not bad
        r.details["energy_samples"] = len(self.energy)
        r.details["energy_bad"] = bad
        r.details["energy_drops_after_sigkill"] = drops
        if self.energy:
            r.details["energy_last"] = self.energy[-1][2]
        r.checks["energy_sampled"] = len(self.energy) >= 0.8 * (self.duration / self.sample_s)
        # Sunny Island
        si_log = self.system.child("sim-sma").logfile.read_text(errors="replace")
        events = [ln for ln in si_log.splitlines() if "SI event:" in ln]
        timeouts = [ln for ln in si_log.splitlines()
                    if "ExtBMSTimeout" in ln or " timeout=1 " in ln]
        r.checks["sunny_island_no_timeout"] = not timeouts
        r.details["si_events"] = events[:20]
        # supervision
        injected = {int(f.detail.split()[1]) for f in r.faults if f.detail.startswith("pid ")}
        unexpected = [asdict(x) for x in self.system.restarts if x.old_pid not in injected]
        r.checks["no_unexpected_exit"] = not self.system.failures and not unexpected
        r.details["restarts"] = [asdict(x) for x in self.system.restarts]
        r.details["unexpected_exits"] = unexpected + [{"failure": f}
                                                     for f in self.system.failures]
        r.details["browser"] = {"requests": self.system.browser_requests,
                                "errors": self.system.browser_errors}

    def check_recovered(self) -> None:
        """After the last fault (none in the last 20 s) everything is back."""
        sys_ = self.system
        tx = sys_.value(VEBUS, "/CanBridge/TxFrames")
        ok = sys_.wait(lambda: sys_.value(BATTERY, "/Connected") == 1
                       and sys_.value(MANAGER, "/Status/Online") == len(NODES) + 1  # + quirky 4
                       and (sys_.value(VEBUS, "/CanBridge/TxFrames") or 0) > (tx or 0), 30,
                       "recovered", quiet=True)
        self.result.checks["recovered"] = ok
        self.result.details["final"] = {
            "battery_connected": sys_.value(BATTERY, "/Connected"),
            "superb_online": sys_.value(MANAGER, "/Status/Online"),
            "sma_ladder": sys_.value(VEBUS, "/CanBridge/Ladder")}
        # how often the bridge's safety ladder changed level (informative)
        text = sys_.child("dbus-sma").logfile.read_text(errors="replace")
        self.result.details["ladder_changes"] = text.count("ladder: ")

    def check_logs_after_stop(self) -> None:
        """Scan every log, including what the processes wrote while stopping."""
        r = self.result
        found: list[dict[str, Any]] = []
        errors: dict[str, int] = {}
        scanned = set()
        for child in self.system.demo.children:
            if child.logfile in scanned:  # a restarted process appends to the same log
                continue
            scanned.add(child.logfile)
            lines = child.logfile.read_text(errors="replace").splitlines()
            for i, ln in enumerate(lines):
                if UNEXPECTED.search(ln):
                    found.append({"process": child.name, "line": ln,
                                  "context": lines[i:i + 25]})
                elif ERROR_LINE.search(ln):
                    errors[child.name] = errors.get(child.name, 0) + 1
        r.checks["logs_scanned"] = len(scanned) >= 8
        r.checks["no_exceptions"] = not found
        r.details["exceptions"] = found[:20]
        r.details["error_lines"] = errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=3600.0)
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=60.0,
                    help="seconds of each process's life before its memory baseline")
    ap.add_argument("--mean-gap", type=float, default=15.0, help="mean seconds between faults")
    ap.add_argument("--max-growth-mb", type=float, default=2.0)
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--keep-logs", action="store_true")
    args = ap.parse_args(argv)
    soak = Soak(args.duration, args.seed, sample=args.sample, warmup=args.warmup,
                mean_gap=args.mean_gap, max_growth_mb=args.max_growth_mb)
    res = soak.run(keep_logs=args.keep_logs)
    kinds: dict[str, int] = {}
    for f in res.faults:
        kinds[f.kind] = kinds.get(f.kind, 0) + 1
    print(f"soak {args.duration:.0f} s, seed {args.seed}: {len(res.faults)} faults {kinds}")
    print(f"load average mean {res.details.get('load_mean')} max {res.details.get('load_max')}")
    for name, g in res.details.get("memory", {}).items():
        print(f"  memory {name}: {g}")
    for k in ("final", "ladder_changes", "energy_samples", "energy_drops_after_sigkill",
              "energy_bad", "si_events", "restarts", "unexpected_exits", "error_lines",
              "browser", "logs"):
        if k in res.details:
            print(f"  {k}: {res.details[k]}")
    for e in res.details.get("exceptions", []):
        print(f"  EXCEPTION in {e['process']}:")
        for ln in e["context"]:
            print(f"    {ln}")
    for name, ok in res.checks.items():
        print(f"  {name}: {'pass' if ok else 'FAIL'}")
    print("soak passed" if res.ok else "SOAK FAILED", flush=True)
    if args.json:
        out = asdict(res)
        out["ok"] = res.ok
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
