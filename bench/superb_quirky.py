"""Benchmark: dbus-superb's reading side against quirky nodes, and the bus load it causes.

    .venv/bin/python -m bench.superb_quirky [--duration 120] [--batteries 3]
    .venv/bin/python -m bench.superb_quirky --load 1,3,8,16,32,64 [--load-duration 20]

Everything in this process on a python-can virtual bus: quirky SuperB nodes
(``sim/superb_quirky.py``: python-can, its own hand-written dictionary) and the driver's own
:class:`~driver.superb.canport.CanPort`, :class:`~driver.superb.poller.NodePoller`s, battery
model and :class:`~driver.superb.battery.Aggregator` (the D-Bus publishing is left out), with the
driver's default timing: 1 s poll, 0.3 s SDO timeout, 3 failed reads to offline, 3 s value age.

**Quirks** (``--duration``): every node answers after 3 ms + up to 4 ms jitter, repeats its
previous answer before every 7th, answers every 5th 450 ms late (after the client's timeout) and
has no 2014:00. Each poll cycle's report is checked against the node's values, written here by
hand: *complete and correct* = online and every fast value present and equal; *wrong* = any
value present (fast or slow) that differs; *missing* = an object that exists taken for missing.
The aggregate over all batteries is computed after every report: its CCL against the target
(the sum of the batteries' 100 A limits: 300 A for 3).

**Bus load** (``--load``): N nodes without quirks (2 ms latency), frames counted on the bus for
``--load-duration`` seconds after identification; bits per frame 47 + 8 × DLC (11-bit id, no
stuff bits; worst-case stuffing adds up to about 20 %), as a share of 250 kbit/s.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import threading
import time
from typing import Any

import can

from driver.superb import battery as bat
from driver.superb.canport import CanPort
from driver.superb.poller import NodePoller, NodeReport, PollConfig
from sim.superb_quirky import QuirkyNode, QuirkyPeer

#: the quirky node's values as published, by hand (sim/superb_quirky.py QuirkyNode defaults)
EXPECTED_FAST = {"voltage": 13.25, "current": 0.0, "soc": 64, "temperature": 20.5, "errors": 0,
                 "warnings": 0, "max_discharge_current": 150.0, "max_charge_current": 100.0,
                 "cell_temperature_min": 20.0, "cell_temperature_max": 21.0}
EXPECTED_SLOW = {"cycles_6050": 37, "ah_expended": 10.0, "ah_returned": 25.0,
                 "ah_since_equalization": 30.0, "charge_current_request": 50.0,
                 "cell_voltage_min": 3.305, "cell_voltage_max": 3.318, "awake": 1}
EXPECTED_MISSING = {"cycles"}  # 2014:00, the one object the nodes lack


def _close(a: Any, b: float) -> bool:
    return isinstance(a, int | float) and abs(float(a) - b) < 1e-6


def _start(channel: str, nodes: list[QuirkyNode]) -> tuple[QuirkyPeer, CanPort]:
    """The nodes on a virtual bus and the driver's port open on it."""
    peer = QuirkyPeer(can.Bus(interface="virtual", channel=channel), nodes)
    peer.start()
    port = CanPort(channel, 250000, lambda i, b: can.Bus(interface="virtual", channel=i))
    port.start()
    assert port.wait_open(2)
    return peer, port


def quirks(batteries: int, duration: float) -> dict[str, Any]:
    channel = "bench-quirky"
    nodes = [QuirkyNode(n, 2300000 + n, latency=0.003, jitter=0.004, stale_every=7,
                        late_every=5, late=0.45, missing={(0x2014, 0)}, seed=n)
             for n in range(1, batteries + 1)]
    peer, port = _start(channel, nodes)
    cfg = PollConfig(interval=1.0, slow_interval=30.0, sdo_timeout=0.3, offline_after=3,
                     heartbeat_timeout=3.5, max_age=3.0)
    limits = bat.Limits(value_max_age=cfg.interval + cfg.max_age, limit_ramp_rate=10.0)
    lock = threading.Lock()
    latest: dict[int, NodeReport] = {}
    stats = {"cycles": 0, "complete": 0, "wrong": 0, "missing": 0, "offline": 0}
    wrong: list[str] = []
    ccl: list[float] = []
    agg = bat.Aggregator()
    started = time.monotonic()
    measuring = threading.Event()

    def got(r: NodeReport) -> None:
        now = time.monotonic()
        with lock:
            latest[r.node_id] = r
            if not measuring.is_set():
                return
            stats["cycles"] += 1
            v = r.values
            if not r.online:
                stats["offline"] += 1
            if r.online and all(_close(v.get(k), x) for k, x in EXPECTED_FAST.items()):
                stats["complete"] += 1
            for k, x in {**EXPECTED_FAST, **EXPECTED_SLOW}.items():
                if v.get(k) is not None and not _close(v[k], x):
                    stats["wrong"] += 1
                    wrong.append(f"node {r.node_id} {k}={v[k]!r}")
            if set(r.missing) - EXPECTED_MISSING:
                stats["missing"] += 1
            members = [bat.Member(f"node {n}", rep, bat.battery_values(rep, limits, True, now),
                                  bat.installed_capacity(rep, limits))
                       for n, rep in sorted(latest.items())]
            if len(members) == batteries:
                ccl.append(agg.compute(members, limits, now)["/Info/MaxChargeCurrent"] or 0.0)

    pollers = [NodePoller(n.node_id, port, lambda: cfg, got) for n in nodes]
    for p in pollers:
        p.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with lock:
            if len(latest) == batteries and all(r.online for r in latest.values()):
                break
        time.sleep(0.1)
    identified_s = time.monotonic() - started
    time.sleep(2.0)  # the aggregate ramps up to its target (10 A/s from the first battery)
    measuring.set()
    time.sleep(duration)
    measuring.clear()
    for p in pollers:
        p.stop(join=False)
    for p in pollers:
        p.stop()
    diag = {n.node_id: port.sdo_diag(n.node_id).snapshot() for n in nodes}
    sent = {n.node_id: dict(n.stats) for n in nodes}
    port.stop()
    peer.close()
    target = 100.0 * batteries
    with lock:
        cycles = max(1, stats["cycles"])
        return {
            "batteries": batteries, "duration_s": duration, "identified_s": round(identified_s, 2),
            "cycles": stats["cycles"], "complete_pct": round(100 * stats["complete"] / cycles, 2),
            "wrong_values": stats["wrong"], "wrong_examples": wrong[:5],
            "existing_marked_missing": stats["missing"], "offline_reports": stats["offline"],
            "ccl_target": target, "ccl_mean": round(statistics.mean(ccl), 1) if ccl else None,
            "ccl_min": min(ccl) if ccl else None,
            "ccl_below_90pct": sum(1 for x in ccl if x < 0.9 * target),
            "ccl_samples": len(ccl),
            "stale_sent": sum(s.get("stale sent", 0) for s in sent.values()),
            "late_sent": sum(s.get("late sent", 0) for s in sent.values()),
            "uploads": sum(s.get("upload", 0) for s in sent.values()),
            "discarded": sum(int(d["discarded"]) + int(d["flushed"]) for d in diag.values()),
        }


def load(batteries: int, duration: float) -> dict[str, Any]:
    channel = f"bench-load-{batteries}"
    nodes = [QuirkyNode(n, 2300000 + n, latency=0.002, missing={(0x2014, 0)}, seed=n)
             for n in range(1, batteries + 1)]
    peer, port = _start(channel, nodes)
    cfg = PollConfig(interval=1.0, slow_interval=30.0, sdo_timeout=0.3)
    online: set[int] = set()
    lock = threading.Lock()

    def got(r: NodeReport) -> None:
        with lock:
            if r.online:
                online.add(r.node_id)

    pollers = [NodePoller(n.node_id, port, lambda: cfg, got) for n in nodes]
    for p in pollers:
        p.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(online) < batteries:
        time.sleep(0.1)
    spy = can.Bus(interface="virtual", channel=channel)
    frames = bits = 0
    cycle_ms: list[float] = []
    t_end = time.monotonic() + duration
    while time.monotonic() < t_end:
        msg = spy.recv(0.1)
        if msg is None:
            continue
        frames += 1
        bits += 47 + 8 * msg.dlc
    spy.shutdown()
    for p in pollers:
        p.stop(join=False)
    for p in pollers:
        p.stop()
    port.stop()
    peer.close()
    fps = frames / duration
    kbit = bits / duration / 1000
    del cycle_ms
    return {"batteries": batteries, "online": len(online), "frames_per_s": round(fps, 1),
            "frames_per_s_per_battery": round(fps / batteries, 2),
            "kbit_per_s": round(kbit, 1), "bus_pct": round(100 * kbit / 250.0, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--batteries", type=int, default=3)
    ap.add_argument("--load", default="", help="battery counts for the bus-load run")
    ap.add_argument("--load-duration", type=float, default=20.0)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("canopen").setLevel(logging.CRITICAL)
    out: dict[str, Any] = {}
    ok = True
    if args.load:
        rows = [load(int(n), args.load_duration) for n in args.load.split(",")]
        out["load"] = rows
        print(f"{'batteries':>9} {'online':>6} {'frames/s':>9} {'per battery':>11} "
              f"{'kbit/s':>7} {'% of 250k':>9}")
        for r in rows:
            print(f"{r['batteries']:>9} {r['online']:>6} {r['frames_per_s']:>9} "
                  f"{r['frames_per_s_per_battery']:>11} {r['kbit_per_s']:>7} {r['bus_pct']:>9}")
    else:
        r = quirks(args.batteries, args.duration)
        out["quirks"] = r
        print(json.dumps(r, indent=1))
        ok = (r["complete_pct"] >= 99.0 and r["wrong_values"] == 0
              and r["existing_marked_missing"] == 0 and r["ccl_below_90pct"] == 0)
        print("targets met" if ok else "TARGETS NOT MET")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
