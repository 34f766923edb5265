"""Benchmark: a full poll cycle over N simulated batteries, concurrent vs sequential.

    .venv/bin/python -m bench.superb_poll [--nodes 1,3,8,16,32] [--latency-ms 2] [--cycles 5]

Everything runs in this process on a python-can virtual bus: the simulated batteries
(``sim.superb``, every SDO answered after ``--latency-ms``) and the driver's own
:class:`~driver.superb.canport.CanPort` and :class:`~driver.superb.poller.NodePoller`s. For each
battery count it measures, in the same run and with the same pollers:

* concurrent: every node's poll cycle starts at the same time in the port's SDO loop (what the
  driver does: one thread per interface, one transfer open per node);
* sequential: the nodes' cycles one after another (reading the same objects one after
  another).

A cycle is the fast objects plus the slow ones (slow ones are due on every measured cycle).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import threading
import time

import can

from driver.superb.canport import CanPort
from driver.superb.poller import NodePoller, PollConfig
from sim.superb import Simulator, make_batteries


def measure(n: int, latency: float, cycles: int) -> dict[str, float]:
    channel = f"bench-{n}"
    sim = Simulator(can.Bus(interface="virtual", channel=channel),
                    make_batteries(list(range(1, n + 1)), latency=latency))
    sim.start()
    port = CanPort(channel, 250000, lambda i, b: can.Bus(interface="virtual", channel=i))
    port.start()
    assert port.wait_open(2)
    cfg = PollConfig(interval=1.0, slow_interval=0.0, sdo_timeout=0.5)
    pollers = [NodePoller(k, port, lambda: cfg, lambda r: None) for k in range(1, n + 1)]
    for p in pollers:  # identify every node first (not part of the measured cycle)
        p.cycle()
    objects = sum(len(p._fast) + len(p._slow) for p in pollers)

    def concurrent() -> float:
        t0 = time.perf_counter()
        threads = [threading.Thread(target=p.cycle) for p in pollers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - t0

    def sequential() -> float:
        t0 = time.perf_counter()
        for p in pollers:
            p.cycle()
        return time.perf_counter() - t0

    conc, seq = [], []
    for _ in range(cycles):  # interleaved, so load on the machine hits both alike
        conc.append(concurrent())
        seq.append(sequential())
    port.stop()
    sim.close()
    c, s = statistics.median(conc), statistics.median(seq)
    return {"nodes": n, "objects_per_cycle": objects, "concurrent_ms": round(c * 1000, 1),
            "sequential_ms": round(s * 1000, 1), "ratio": round(c / s, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", default="1,3,8,16,32")
    ap.add_argument("--latency-ms", type=float, default=2.0)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("canopen").setLevel(logging.CRITICAL)
    logging.getLogger("canbridge").setLevel(logging.WARNING)
    rows = [measure(int(n), args.latency_ms / 1000, args.cycles) for n in args.nodes.split(",")]
    print(f"{'nodes':>5} {'objects':>8} {'concurrent ms':>14} {'sequential ms':>14} {'ratio':>6}")
    for r in rows:
        print(f"{r['nodes']:>5} {r['objects_per_cycle']:>8} {r['concurrent_ms']:>14} "
              f"{r['sequential_ms']:>14} {r['ratio']:>6}")
    ok = all(r["ratio"] <= 0.4 for r in rows if r["nodes"] >= 3) and all(
        r["ratio"] <= 1.1 for r in rows if r["nodes"] == 1)
    print("targets met" if ok else "TARGETS NOT MET")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
