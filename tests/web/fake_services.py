"""Fake battery, Sunny Island and SuperB management services for the web page's tests.

Run as ``python -m tests.web.fake_services [--battery NAME] [--vebus NAME] [--manager NAME]``
with ``DBUS_SESSION_BUS_ADDRESS`` set. Published through velib (the stand-in off the GX) with
``driver.venus.service.create_service``, one private connection per service, like the drivers:

* a battery whose values move every ``--interval`` seconds and whose ``/Info/MaxChargeVoltage``
  follows ``/Settings/CanBridge/Superb/ChargeVoltage`` (what dbus-superb does);
* a vebus (Sunny Island) service with AC, DC, state and energy counters;
* a ``com.victronenergy.canbridge.superb*`` management service with a node scan: writing 1 to
  ``/Scan/Start`` runs a one-second scan that finds nodes 1, 2 and 3, plus link counters.

Prints ``ready`` when every service is registered; exits on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from typing import Any

CHARGE_VOLTAGE = "/Settings/CanBridge/Superb/ChargeVoltage"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--battery", default="com.victronenergy.battery.fake_superb_1")
    ap.add_argument("--vebus", default="com.victronenergy.vebus.fake_si")
    ap.add_argument("--manager", default="com.victronenergy.canbridge.superb_fake")
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--steady", action="store_true",
                    help="the battery's values never change (but it is still read: the "
                         "manager's per-node read counter moves every interval)")
    args = ap.parse_args()

    from gi.repository import GLib

    from driver.venus import velib as velib_mod
    from driver.venus.dbusconn import init_mainloop, shared_bus
    from driver.venus.service import PRODUCT_ID_BMS, create_service

    init_mainloop()
    velib = velib_mod.load()
    bus = shared_bus()

    def setting_value() -> Any:
        try:
            return velib.ve_utils.unwrap_dbus_value(bus.call_blocking(
                "com.victronenergy.settings", CHARGE_VOLTAGE, "com.victronenergy.BusItem",
                "GetValue", "", []))
        except Exception:  # noqa: BLE001 - not registered yet: no limit published yet
            return None

    bat = create_service(velib, args.battery, processname="fake_services",
                         processversion="1.0", connection="CANopen node 1", deviceinstance=512,
                         productid=PRODUCT_ID_BMS, productname="Fake SuperB Epsilon",
                         firmwareversion="1.2.3", connected=1)
    paths: dict[str, Any] = {
        "/CustomName": "House battery", "/Serial": "SB123456", "/Soc": 80.0, "/Soh": 100.0,
        "/Dc/0/Voltage": 13.2, "/Dc/0/Current": 5.0, "/Dc/0/Power": 66.0,
        "/Dc/0/Temperature": 21.5, "/InstalledCapacity": 100.0, "/ConsumedAmphours": -20.0,
        "/Info/MaxChargeVoltage": setting_value(), "/Info/MaxChargeCurrent": 100.0,
        "/Info/MaxDischargeCurrent": 150.0, "/Info/BatteryLowVoltage": 11.5,
        "/Io/AllowToCharge": 1, "/Io/AllowToDischarge": 1, "/Alarms/LowVoltage": 0,
        "/Alarms/HighVoltage": 0, "/Alarms/HighTemperature": 1, "/Alarms/BmsCable": 0,
    }
    for p, v in paths.items():
        bat.add_path(p, v)
    bat.register()

    def follow(changes: Any, path: str | None = None) -> None:
        if "Value" in changes:
            bat["/Info/MaxChargeVoltage"] = velib.ve_utils.unwrap_dbus_value(changes["Value"])

    bus.add_signal_receiver(follow, signal_name="PropertiesChanged",
                            dbus_interface="com.victronenergy.BusItem",
                            bus_name="com.victronenergy.settings", path=CHARGE_VOLTAGE,
                            path_keyword="path")

    def refresh_limit() -> bool:
        value = setting_value()
        if value is not None:
            bat["/Info/MaxChargeVoltage"] = value
        return False

    GLib.idle_add(refresh_limit)

    si = create_service(velib, args.vebus, processname="fake_services", processversion="1.0",
                        connection="CAN can1", deviceinstance=275, productid=0xB0FF,
                        productname="Fake Sunny Island", firmwareversion=0x500, connected=1)
    si_paths: dict[str, Any] = {
        "/State": 9, "/Mode": 3, "/Ac/ActiveIn/ActiveInput": 0, "/Ac/ActiveIn/Connected": 1,
        "/Ac/ActiveIn/L1/V": 230.0, "/Ac/ActiveIn/L1/I": 2.0, "/Ac/ActiveIn/L1/F": 50.0,
        "/Ac/ActiveIn/L1/P": 460.0, "/Ac/ActiveIn/P": 460.0, "/Ac/Out/L1/V": 230.0,
        "/Ac/Out/L1/I": 1.5, "/Ac/Out/L1/F": 50.0, "/Ac/Out/L1/P": 345.0, "/Ac/Out/P": 345.0,
        "/Ac/NumberOfPhases": 1, "/Dc/0/Voltage": 52.1, "/Dc/0/Current": -10.0,
        "/Dc/0/Power": -521.0, "/Dc/0/Temperature": 25.0, "/Soc": 70.0,
        "/Energy/AcIn1ToAcOut": 12.5, "/Energy/InverterToAcOut": 3.25,
        "/CanBridge/Ladder": "normal", "/CanBridge/ChargePhase": "absorption",
        "/CanBridge/BatterySource": "com.victronenergy.battery.superb_aggregate",
        "/CanBridge/BatterySourceReason": "systemcalc's /ActiveBatteryService",
        "/CanBridge/SocSource": "com.victronenergy.battery.ttyS5",
    }
    for p, v in si_paths.items():
        si.add_path(p, v)
    si.register()

    mgr = create_service(velib, args.manager, processname="fake_services",
                         processversion="1.0", connection="CAN vecan0", deviceinstance=0,
                         productid=0, productname="Fake SuperB manager", connected=1)
    scan = {"left": 0}

    def start_scan(_path: str, value: Any) -> bool:
        if value != 1 or scan["left"]:
            mgr["/Scan/LastError"] = "a scan is already running" if scan["left"] else ""
            return value == 0
        scan["left"] = 5
        mgr["/Scan/Running"] = 1
        mgr["/Scan/Progress"] = 0
        mgr["/Scan/Result"] = "[]"

        def step() -> bool:
            scan["left"] -= 1
            mgr["/Scan/Progress"] = (5 - scan["left"]) * 20
            if scan["left"] == 0:
                mgr["/Scan/Result"] = json.dumps([
                    {"node": n, "serial": f"SB00{n}", "firmware": "1.2.3"} for n in (1, 2, 3)])
                mgr["/Scan/Running"] = 0
                mgr["/Scan/Start"] = 0
                return False
            return True

        GLib.timeout_add(200, step)
        return True

    mgr.add_path("/Scan/Start", 0, writeable=True, onchangecallback=start_scan)
    for p, v in {"/Scan/Running": 0, "/Scan/Progress": None, "/Scan/Result": "",
                 "/Scan/Range": "1-32", "/Scan/LastError": "", "/Link/vecan0/FramesReceived": 0,
                 "/Link/vecan0/ErrorFrames": 0, "/Node/1/SdoTimeouts": 0,
                 "/Node/1/SdoAborts": 0,
                 "/Status/Nodes": json.dumps({"1": {"state": "operational", "online": 1,
                                                    "serial": "SB123456", "sdo_ok": 0,
                                                    "sdo_timeouts": 2, "sdo_aborts": 1}})}.items():
        mgr.add_path(p, v)
    mgr.register()

    tick = {"n": 0}

    def move() -> bool:
        tick["n"] += 1
        t = tick["n"]
        # dbus-superb's per-node counters: one more successful read every cycle
        mgr["/Status/Nodes"] = json.dumps({"1": {"state": "operational", "online": 1,
                                                 "serial": "SB123456", "sdo_ok": t * 12,
                                                 "sdo_timeouts": 2, "sdo_aborts": 1}})
        if args.steady:
            return True
        with bat as s:
            s["/Soc"] = round(80.0 + 5 * math.sin(t / 10), 1)
            s["/Dc/0/Voltage"] = round(13.2 + 0.2 * math.sin(t / 5), 3)
            s["/Dc/0/Current"] = round(5.0 * math.cos(t / 7), 2)
            s["/Dc/0/Power"] = round(s["/Dc/0/Voltage"] * s["/Dc/0/Current"], 1)
        si["/Dc/0/Voltage"] = round(52.0 + 0.3 * math.sin(t / 4), 2)
        si["/Ac/Out/L1/P"] = 300.0 + t % 50
        mgr["/Link/vecan0/FramesReceived"] = t * 17
        return True

    GLib.timeout_add(int(args.interval * 1000), move)
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, lambda: loop.quit() or False)
    print("ready", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
