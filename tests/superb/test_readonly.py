"""The driver is read-only on the battery: it sends SDO upload requests and nothing else.

A listener (``canbridge-canmon --json``) captures every frame on the bus while the driver
starts, polls three batteries (one with TPDOs, one with old firmware), meets timeouts, aborts
and a reboot, runs a scan and is switched to aggregate mode. Every frame not sent by a
simulated battery must be an SDO upload (initiate or segment) or the abort the SDO client sends
after a timeout of its own upload.
"""

from __future__ import annotations

import json

from tests.fixtures.procs import Proc, python_cmd
from tests.superb.conftest import AGGREGATE, MANAGER, System, battery_service

SIM_FUNCTIONS = (0x080, 0x180, 0x280, 0x380, 0x480, 0x580, 0x700)  # EMCY, TPDOs, SDO tx, HB
CLIENT_KINDS = {"upload", "upload-segment"}


def test_driver_sends_only_sdo_uploads(superb: System) -> None:
    cap = Proc(python_cmd("driver.canmon", "vecan0", "--json"), superb.env, "canmon")
    superb.procs.append(cap)
    cap.wait_for("listening on vecan0", 10)
    sim = superb.start_sim("--nodes", "1,2,3", "--tpdo", "2", "--old-firmware", "3")
    superb.start_driver()
    c = superb.client
    for n in (1, 2, 3):
        c.wait(f"node {n}", lambda n=n: c.value(battery_service(n), "/Connected") == 1, 15)
    sim.cmd("abort 1 6010 0")
    sim.cmd("nosdo 3")
    c.wait("node 3 offline", lambda: c.value(battery_service(3), "/Connected") == 0, 10)
    sim.cmd("sdo 3")
    sim.cmd("reboot 1")
    c.wait("node 3 back", lambda: c.value(battery_service(3), "/Connected") == 1, 10)
    assert c.set(MANAGER, "/Scan/Start", 1) == 0
    c.wait("scan done", lambda: c.value(MANAGER, "/Scan/Running") == 0
           and c.value(MANAGER, "/Scan/Result") != "[]", 20)
    assert c.setting("Mode", 1) == 0
    c.wait("aggregate", lambda: c.has(AGGREGATE), 10)
    c.wait("aggregate online", lambda: c.value(AGGREGATE, "/System/NrOfModulesOnline") == 3, 10)
    superb.driver.stop()  # type: ignore[union-attr]
    cap.stop()

    frames = [json.loads(line) for line in cap.output.splitlines() if line.startswith("{")]
    assert len(frames) > 100, "the capture saw too little traffic to mean anything"
    by_driver = [f for f in frames if (f["id"] & 0x780) not in SIM_FUNCTIONS or f["id"] < 0x80]
    assert by_driver, "no frame from the driver captured"
    bad = []
    timeouts_aborted = 0
    for f in by_driver:
        data = bytes.fromhex(f["data"])
        ok = (f["id"] & 0x780) == 0x600 and not f["ext"] and len(data) == 8
        kind = (data[0] >> 5) if data else -1
        if ok and kind in (2, 3):
            continue
        if ok and kind == 4 and int.from_bytes(data[4:8], "little") == 0x05040000:
            timeouts_aborted += 1  # the client's own upload timed out: it aborts it
            continue
        bad.append(f)
    assert not bad, f"driver sent frames other than SDO uploads: {bad[:5]}"
    uploads = [f for f in by_driver if bytes.fromhex(f["data"])[0] >> 5 == 2]
    nodes = {f["id"] & 0x7F for f in uploads}
    assert {1, 2, 3} <= nodes
    assert len(nodes) > 3, "the scan probed other node IDs"
    # no NMT, SYNC, TIME, LSS or SDO download of any kind
    assert not [f for f in frames if f["id"] in (0x000, 0x080, 0x100, 0x7E5)]
