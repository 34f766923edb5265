"""Benchmark: how long a value change on the bus takes to reach a D-Bus client.

    .venv/bin/python -m bench.superb_latency [--trials 20] [--interval 1.0]

Starts the simulated system with frozen values, then repeatedly changes battery 1's state of
charge through the simulator's control port and times the moment a client on the bus receives
the change notification of ``/Soc`` (the driver publishes each poll as one batched
``ItemsChanged`` on ``/``, as velib does for ``with service as s`` updates; a
``PropertiesChanged`` on the path is accepted too). Target: at most one poll interval + 50 ms.
Changes are made at random moments relative to the poll cycle.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time

import dbus
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

from bench.superb_system import SuperbSystem
from tests.superb.conftest import battery_service


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--interval", type=float, default=1.0, help="PollInterval setting")
    args = ap.parse_args(argv)
    DBusGMainLoop(set_as_default=True)
    system = SuperbSystem({"NodeIds": "1", "PollInterval": args.interval},
                          ["--nodes", "1", "--hold"])
    results: list[float] = []
    try:
        system.wait_connected([1])
        bus = dbus.bus.BusConnection(system.daemon.address)
        svc = battery_service(1)
        seen = threading.Event()
        box: dict[str, float] = {}

        def items(changes: dict) -> None:  # type: ignore[type-arg]
            if "/Soc" in changes and "want" in box and \
                    float(changes["/Soc"]["Value"]) == box["want"]:
                box["t"] = time.monotonic()
                seen.set()

        def prop(changes: dict) -> None:  # type: ignore[type-arg]
            if "Value" in changes and "want" in box and float(changes["Value"]) == box["want"]:
                box["t"] = time.monotonic()
                seen.set()

        bus.add_signal_receiver(items, "ItemsChanged", "com.victronenergy.BusItem", svc, "/")
        bus.add_signal_receiver(prop, "PropertiesChanged", "com.victronenergy.BusItem", svc,
                                "/Soc")
        ctx = GLib.MainContext.default()
        for k in range(args.trials):
            time.sleep(random.uniform(0, args.interval))
            seen.clear()
            soc = 20 + (k % 2) * 10 + k % 7
            box["want"] = float(soc)
            t0 = time.monotonic()
            system.sim.cmd(f"set 1 soc {soc}")
            deadline = t0 + 5 * args.interval
            while not seen.is_set() and time.monotonic() < deadline:
                ctx.iteration(False) or time.sleep(0.001)
            if not seen.is_set():
                print(f"trial {k}: no notification")
                continue
            results.append(box["t"] - t0)
            print(f"trial {k:2d}: {results[-1] * 1000:7.1f} ms", flush=True)
        bus.close()
    finally:
        system.close()
    limit = args.interval + 0.05
    worst = max(results) if results else float("inf")
    median = statistics.median(results) * 1000
    print(f"{len(results)} trials at {args.interval} s: median {median:.0f}"
          f" ms, max {worst * 1000:.0f} ms (target <= {limit * 1000:.0f} ms)")
    ok = len(results) == args.trials and worst <= limit
    print("targets met" if ok else "TARGETS NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
