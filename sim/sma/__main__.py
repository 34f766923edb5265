"""Run the simulated Sunny Island: ``python -m sim.sma --channel can1 [options]``.

It sends 0x300-0x30A every ``--period`` seconds on the loopback CAN link, obeys the BMS frames
it receives, and prints one status line per second (``SI run=... soc=... v=... i=...``) and
one line per event (``SI event: ExtBMSTimeout ...``) for tests and the demo. ``--control FILE``
names a JSON file re-read when it changes: ``{"grid": true, "generator": false,
"load_w": 800, "soc": 60, "pv_w": 2000, "dc_load_w": 0}`` (any subset; ``pv_w`` is DC-coupled solar
into the battery, which 0x305 does not see).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import can

from driver.canbus import open_bus
from sim.sma.model import SunnyIsland

log = logging.getLogger("sim.sma")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Simulated SMA Sunny Island (loopback CAN).")
    ap.add_argument("--channel", default="can1", help="CAN channel (default can1)")
    ap.add_argument("--period", type=float, default=1.0, help="frame period, s")
    ap.add_argument("--bms-timeout", type=float, default=60.0,
                    help="ExtBMSTimeout after this many seconds without BMS frames")
    ap.add_argument("--capacity", type=float, default=100.0, help="battery capacity, Ah")
    ap.add_argument("--soc", type=float, default=60.0, help="initial state of charge, %%")
    ap.add_argument("--load", type=float, default=800.0, help="AC load, W")
    ap.add_argument("--no-grid", action="store_true", help="start without grid")
    ap.add_argument("--generator", action="store_true", help="a generator is available")
    ap.add_argument("--phases", type=int, default=1, choices=(1, 2, 3))
    ap.add_argument("--speed", type=float, default=1.0,
                    help="battery model time factor (charge faster than real time)")
    ap.add_argument("--control", type=Path, help="JSON control file, re-read on change")
    ap.add_argument("--restart-delay", type=float, default=2.0,
                    help="a start command within this many seconds of a stop is lost")
    ap.add_argument("--pv", type=float, default=0.0, help="DC-coupled solar power, W")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    si = SunnyIsland(capacity_ah=args.capacity, soc=args.soc, load_w=args.load,
                     grid=not args.no_grid, generator=args.generator, phases=args.phases,
                     bms_timeout=args.bms_timeout, started=time.monotonic(),
                     restart_delay=args.restart_delay, pv_w=args.pv)
    bus = open_bus(args.channel, 500000)
    lock = threading.Lock()
    stop = threading.Event()

    def on_msg(msg: can.Message) -> None:
        with lock:
            si.receive(msg, time.monotonic())

    notifier = can.Notifier(bus, [on_msg], timeout=0.2)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("simulated Sunny Island on %s (external-BMS timeout after %.0f s)", args.channel,
             args.bms_timeout)
    ctl_mtime = 0.0
    last = time.monotonic()
    next_tx = last
    next_status = last
    while not stop.is_set():
        now = time.monotonic()
        if args.control is not None:
            try:
                m = os.stat(args.control).st_mtime
                if m != ctl_mtime:
                    ctl_mtime = m
                    ctl = json.loads(args.control.read_text())
                    with lock:
                        for key in ("grid", "generator", "load_w", "soc", "pv_w", "dc_load_w"):
                            if key in ctl:
                                setattr(si, key, ctl[key])
                    log.info("control: %s", ctl)
            except (OSError, ValueError):
                pass
        with lock:
            si.step(now, (now - last) * args.speed)
            for e in si.events:
                log.warning("SI event: %s", e)
            si.events.clear()
            out = si.frames() if now >= next_tx else []
            status = now >= next_status
            line = (f"SI run={int(si.running)} timeout={int(si.ext_bms_timeout)} "
                    f"soc={si.soc:.2f} v={si.voltage:.2f} i={si.current:.1f} "
                    f"ibat={si.battery_current:.1f} "
                    f"cvl={si.limits.cvl} ccl={si.limits.ccl} dcl={si.limits.dcl} "
                    f"bmssoc={si.limits.soc} grid={int(si.grid)} gen={int(si.generator)} "
                    f"pin={si.p_in:.0f} pinv={si.p_inv:.0f}")
        last = now
        for msg in out:
            try:
                bus.send(msg)
            except can.CanError as exc:
                log.error("send failed: %s", exc)
                break
        if out:
            next_tx += args.period
            if next_tx <= now:
                next_tx = now + args.period
        if status:
            log.info("%s", line)
            next_status += 1.0
        stop.wait(0.1)
    notifier.stop()
    bus.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
