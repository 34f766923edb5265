"""Benchmark: CPU and resident memory of ``dbus-superb`` with N batteries at a 1 s poll interval.

    .venv/bin/python -m bench.superb_resources [--batteries 3] [--duration 600] [--sample 10]

Starts the simulated system (bench/superb_system.py), waits until all batteries are on
D-Bus, then samples the driver process with psutil every ``--sample`` seconds: CPU (percent of
one core over the interval) and RSS. Targets: CPU <= 2 % of one core, RSS <= 40 MB, flat (the
last sample's RSS within 2 MB of the first after warm-up).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import psutil

from bench.superb_system import SuperbSystem


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds to measure")
    ap.add_argument("--sample", type=float, default=10.0, help="seconds per sample")
    ap.add_argument("--batteries", type=int, default=3, help="simulated batteries (node 1-N)")
    ap.add_argument("--json", help="write the samples here too")
    args = ap.parse_args(argv)
    nodes = list(range(1, args.batteries + 1))
    ids = ",".join(map(str, nodes))
    system = SuperbSystem({"NodeIds": ids, "PollInterval": 1.0}, ["--nodes", ids])
    try:
        system.wait_connected(nodes)
        proc = psutil.Process(system.driver.proc.pid)
        time.sleep(min(10.0, args.sample))  # warm-up
        proc.cpu_percent(None)
        samples = []
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            time.sleep(min(args.sample, max(0.1, end - time.monotonic())))
            samples.append({"t": round(args.duration - (end - time.monotonic()), 1),
                            "cpu": proc.cpu_percent(None),
                            "rss_mb": round(proc.memory_info().rss / 2**20, 2)})
            print(f"{samples[-1]['t']:7.1f} s  cpu {samples[-1]['cpu']:5.2f} %  "
                  f"rss {samples[-1]['rss_mb']:6.2f} MB", flush=True)
        online = system.client.value("com.victronenergy.canbridge.superb", "/Status/Online")
        assert online == len(nodes), f"{online} of {len(nodes)} batteries online at the end"
    finally:
        system.close()
    cpu = statistics.mean(s["cpu"] for s in samples)
    rss = [s["rss_mb"] for s in samples]
    growth = rss[-1] - rss[0]
    print(f"duration {args.duration:.0f} s: mean CPU {cpu:.2f} % of one core (max "
          f"{max(s['cpu'] for s in samples):.2f} %), RSS {rss[0]:.1f} -> {rss[-1]:.1f} MB "
          f"(max {max(rss):.1f} MB, growth {growth:+.2f} MB)")
    ok = cpu <= 2.0 and max(rss) <= 40.0 and abs(growth) <= 2.0
    print("targets met" if ok else "TARGETS NOT MET")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(samples, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
