"""dbus-sma on a simulated Cerbo GX (MK1): CAN ports found, "auto" resolved, a missing port
reported on the service (issue 15). The GX's CAN interfaces come from a fake sysfs/udev root
(``tests/fake_gx.py``); their traffic runs on the loopback hub's channels of the same names."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fake_gx import make_can_root
from tests.sma.conftest import VEBUS, SmaSystem, is_351


def test_cerbo_auto_port_published_and_missing_port_reported(sma: SmaSystem,
                                                             tmp_path: Path) -> None:
    root = make_can_root(tmp_path / "cerbo", "cerbo-gx-mk1")
    base_env = sma.env
    sma.env = lambda: dict(base_env(), CANBRIDGE_SYSROOT=str(root))  # type: ignore[method-assign]
    sma.start_si()
    sma.start_battery()
    sma.start_bridge()  # Sma/CanInterface keeps its default, "auto": can1 on this model
    assert VEBUS.endswith("_can1")
    sma.tap.wait(is_351, 10, sma.tap.mark())
    sma.wait_vebus("/CanBridge/CanError", lambda v: v == "", 5)
    found = json.loads(sma.vebus("/CanBridge/CanInterfaces"))
    assert [(p["interface"], p["name"]) for p in found] == [
        ("can0", "VE.Can port"), ("can1", "BMS-Can port")]
    # a port this GX does not have: a clear error on the service, frames stop, no crash
    sma.set_setting("CanInterface", "vecan1")
    sma.wait_vebus("/CanBridge/CanError",
                   lambda v: "'vecan1' does not exist on this GX" in str(v), 10)
    assert sma.bridge is not None and sma.bridge.proc.poll() is None
    sma.set_setting("CanInterface", "auto")
    sma.wait_vebus("/CanBridge/CanError", lambda v: v == "", 10)
    sma.tap.wait(is_351, 10, sma.tap.mark())
