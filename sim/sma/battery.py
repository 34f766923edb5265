"""A simulated ``com.victronenergy.battery`` service (``python -m sim.sma.battery``).

With ``--follow CHANNEL`` it mirrors the simulated Sunny Island's battery from its 0x305 frames
(voltage, current, SoC, temperature), so ``dbus-sma`` sees a battery that responds to charging.
Every data path is writeable (tests change limits, alarms, ``/Connected``); ``/Test/Hold`` = 1
stops the mirroring so a test can write implausible values. It uses velib through the Venus
edge like the drivers do.

With ``--system`` it publishes ``com.victronenergy.system`` instead, as Venus's systemcalc
does: ``/ActiveBatteryService`` (``class/instance``, e.g. ``com.victronenergy.battery/512`` or,
without a battery monitor, the vebus ``com.victronenergy.vebus/<its instance>``) and the
battery under ``/Dc/Battery/*``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import can

from sim.sma import wire

log = logging.getLogger("sim.sma.battery")

PATHS: dict[str, Any] = {
    "/Dc/0/Voltage": 52.0, "/Dc/0/Current": 0.0, "/Dc/0/Power": 0.0,
    "/Dc/0/Temperature": 20.0, "/Soc": 60.0, "/Soh": 100.0, "/InstalledCapacity": 100.0,
    "/Capacity": 100.0, "/Info/MaxChargeVoltage": 57.6, "/Info/MaxChargeCurrent": 150.0,
    "/Info/MaxDischargeCurrent": 200.0, "/Info/BatteryLowVoltage": 44.0,
    "/Io/AllowToCharge": 1, "/Io/AllowToDischarge": 1,
    "/Alarms/LowVoltage": 0, "/Alarms/HighVoltage": 0, "/Alarms/HighChargeCurrent": 0,
    "/Alarms/LowTemperature": 0, "/Alarms/HighTemperature": 0, "/Alarms/BmsCable": 0,
    "/Alarms/InternalFailure": 0, "/Test/Hold": 0, "/Test/DcCurrent": 0.0,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Simulated battery service.")
    ap.add_argument("--name", default="com.victronenergy.battery.sim_sma")
    ap.add_argument("--instance", type=int, default=512)
    ap.add_argument("--follow", help="CAN channel of the simulated Sunny Island to mirror")
    ap.add_argument("--system", action="store_true",
                    help="publish com.victronenergy.system (systemcalc) instead: "
                    "/ActiveBatteryService and /Dc/Battery/*")
    ap.add_argument("--active", default="com.victronenergy.battery/512",
                    help="systemcalc's /ActiveBatteryService (class/instance) with --system")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from gi.repository import GLib

    from driver.venus import dbusconn, velib
    from driver.venus.mainloop import MainLoop
    from driver.venus.service import PRODUCT_ID_BMS, create_service

    loop = MainLoop()
    vl = velib.load()
    name = "com.victronenergy.system" if args.system else args.name
    svc = create_service(vl, name, processname="sim.sma.battery", processversion="1",
                         connection="simulated", deviceinstance=0 if args.system else
                         args.instance, productid=PRODUCT_ID_BMS,
                         productname="Simulated battery", firmwareversion=1,
                         hardwareversion=None, connected=1)
    # The system service carries the battery under /Dc/Battery (systemcalc's layout).
    where = {"/Dc/0/Voltage": "/Dc/Battery/Voltage", "/Dc/0/Current": "/Dc/Battery/Current",
             "/Dc/0/Power": "/Dc/Battery/Power", "/Dc/0/Temperature": "/Dc/Battery/Temperature",
             "/Soc": "/Dc/Battery/Soc"} if args.system else {}
    for path, value in PATHS.items():
        if args.system and path not in where and not path.startswith("/Test/"):
            continue
        svc.add_path(where.get(path, path), value, writeable=True)
    if args.system:
        svc.add_path("/ActiveBatteryService", args.active, writeable=True)
        svc.add_path("/Control/Dvcc", 1, writeable=True)
        # systemcalc publishes 1 while it writes /BatteryOperationalLimits/* (a BMS selected),
        # 0 with "No BMS" or DVCC off (dbus-systemcalc-py delegates/dvcc.py)
        svc.add_path("/Control/BmsParameters", 1, writeable=True)
    svc.register()
    log.info("battery service %s registered", name)

    def mirror(values: dict[str, Any]) -> None:
        if svc["/Test/Hold"]:
            return
        v, i = values["voltage"], values["current"]
        # DC-coupled solar: the battery sees the Sunny Island's current plus the solar
        # chargers' (set with /Test/DcCurrent), which 0x305 does not carry
        extra = svc["/Test/DcCurrent"] or 0.0
        if i is not None:
            i = round(i + extra, 1)
        with svc as s:
            for path, value in (("/Dc/0/Voltage", v), ("/Dc/0/Current", i),
                                ("/Soc", values["soc"]),
                                ("/Dc/0/Temperature", values["temperature"]),
                                ("/Dc/0/Power",
                                 None if v is None or i is None else round(v * i, 1))):
                s[where.get(path, path)] = value

    notifier = None
    if args.follow:
        from driver.canbus import open_bus

        bus = open_bus(args.follow, 500000)

        def on_msg(msg: can.Message) -> None:
            if msg.arbitration_id == 0x305 and len(msg.data) >= 8:
                dbusconn.call_soon(mirror, wire.decode_305(bytes(msg.data)))

        notifier = can.Notifier(bus, [on_msg], timeout=0.2)
        loop.on_stop(lambda: (notifier.stop(), bus.shutdown()))
    GLib.idle_add(lambda: log.info("running") and False)
    return loop.run()


if __name__ == "__main__":
    raise SystemExit(main())
