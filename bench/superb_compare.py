"""Benchmark: dbus-superb's CPU and resident memory, this checkout against another one, measured
at the same time (paired), so both see the same machine.

    .venv/bin/python -m bench.superb_compare --other /path/to/old/checkout \\
        [--batteries 16] [--duration 100] [--mode 1] [--other-mode 1] [--other-mode 0]

Each run is a whole simulated SuperB system (private dbus-daemon, settings service, loopback CAN
hub, ``sim.superb`` with N batteries, ``dbus-superb`` at a 1 s poll) started from its checkout;
all runs go at once. After every battery is on D-Bus and 10 s of warm-up, the driver's CPU time
is read per thread from ``/proc/<pid>/task/*/stat`` at the start and the end of ``--duration``
seconds (main thread = the D-Bus/GLib side; the others: CAN receive and one poller per battery),
and its ``VmRSS``/``RssAnon`` at the end. Timings of a shared 2-core machine move by 10-20 %
from one minute to the next; comparing runs made at the same time removes most of that.

``--other-mode`` may be given more than once (e.g. an older checkout in individual mode 0 and in
aggregate mode 1: this checkout always runs one aggregate battery with more than one battery).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

#: run inside the checkout under test (its own bench.superb_system, tests fixtures, driver)
PROBE = r'''
import json, os, sys, time
from bench.superb_system import SuperbSystem
n, duration, mode = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
nodes = list(range(1, n + 1)); ids = ",".join(map(str, nodes))
system = SuperbSystem({"NodeIds": ids, "PollInterval": 1.0, "Mode": mode}, ["--nodes", ids])
def ticks(pid):
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = open(f"/proc/{pid}/task/{tid}/stat").read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(tid)] = int(fields[11]) + int(fields[12])
    return out
try:
    system.wait_connected(nodes)
    time.sleep(10)
    pid = system.driver.proc.pid
    a, t0 = ticks(pid), time.monotonic()
    time.sleep(duration)
    b, el = ticks(pid), time.monotonic() - t0
    hz = os.sysconf("SC_CLK_TCK")
    pct = {tid: (b[tid] - a.get(tid, 0)) / hz / el * 100 for tid in b}
    main = pct.pop(pid)
    mem = {line.split(":")[0]: int(line.split()[1]) for line in open(f"/proc/{pid}/status")
           if line.startswith(("VmRSS", "RssAnon", "RssFile"))}
    print(json.dumps({"cpu": round(main + sum(pct.values()), 2), "main": round(main, 2),
                      "threads": round(sum(pct.values()), 2), **mem}))
finally:
    system.close()
'''


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--other", required=True, help="the other checkout (its own .venv not needed)")
    ap.add_argument("--batteries", type=int, default=16)
    ap.add_argument("--duration", type=float, default=100.0)
    ap.add_argument("--mode", type=int, default=1, help="Superb/Mode of this checkout")
    ap.add_argument("--other-mode", type=int, action="append",
                    help="Superb/Mode of the other checkout (repeatable; default 1)")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args(argv)
    runs = [("this", HERE, args.mode)] + [
        (f"other (Mode {m})", Path(args.other).resolve(), m) for m in args.other_mode or [1]]
    procs = []
    for name, tree, mode in runs:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        procs.append((name, subprocess.Popen(
            [sys.executable, "-c", PROBE, str(args.batteries), str(args.duration), str(mode)],
            cwd=tree, env=env, stdout=subprocess.PIPE, text=True)))
    results = {}
    deadline = time.monotonic() + args.duration + 180
    for name, proc in procs:
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        line = out.strip().splitlines()[-1] if out.strip() else "{}"
        results[name] = json.loads(line)
        if proc.returncode != 0 or not results[name]:
            print(f"{name}: failed (exit {proc.returncode})", file=sys.stderr)
            return 1
    print(f"{args.batteries} batteries, {args.duration:.0f} s, all at once "
          f"(load average {os.getloadavg()[0]:.2f}):")
    for name, r in results.items():
        print(f"  {name:16s} CPU {r['cpu']:5.2f} % (main {r['main']:.2f}, other threads "
              f"{r['threads']:.2f})  RSS {r['VmRSS'] / 1024:6.2f} MiB "
              f"(anon {r['RssAnon'] / 1024:.2f}, file {r['RssFile'] / 1024:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
