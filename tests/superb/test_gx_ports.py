"""dbus-superb on simulated GX models: CAN ports found, resolved, refused, retried (issue 15).

The GX's CAN interfaces come from a fake sysfs/udev root (``tests/fake_gx.py``, written from
Venus's udev rules); their traffic runs on the loopback hub's channels of the same names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fake_gx import make_can_root
from tests.superb.conftest import FAST, MANAGER, SERIAL_BASE, System

SVC1 = f"com.victronenergy.battery.superb_{SERIAL_BASE + 1}"


@pytest.fixture
def superb_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The seeded settings: one battery, and the CanInterface a test gives (else the default)."""
    return dict(FAST, NodeIds="1", **getattr(request, "param", {}))


def _on_gx(superb: System, root: Path) -> None:
    superb.env = dict(superb.env, CANBRIDGE_SYSROOT=str(root))


@pytest.mark.parametrize("superb_settings", [{"CanInterface": "vecan0"}], indirect=True)
def test_cerbo_gx_mk1_old_default_missing_auto_works_bms_port_refused(
        superb: System, tmp_path: Path) -> None:
    root = make_can_root(tmp_path / "cerbo", "cerbo-gx-mk1")
    _on_gx(superb, root)
    c = superb.client
    # the old default, vecan0: there is no vecan0 on a Cerbo GX (MK1)
    superb.start_sim("--nodes", "1", "--channel", "can0")
    superb.start_driver()
    c.wait("error on the service", lambda: "'vecan0' does not exist on this GX" in
           c.value(MANAGER, "/Status/CanError"), 10)
    assert "can0 (VE.Can port), can1 (BMS-Can port)" in c.value(MANAGER, "/Status/CanError")
    assert "does not exist" in c.value(MANAGER, "/Status/Can")
    found = json.loads(c.value(MANAGER, "/CanInterfaces"))
    assert [(p["interface"], p["name"], p["bmsOnly"]) for p in found] == [
        ("can0", "VE.Can port", 0), ("can1", "BMS-Can port", 1)]
    assert c.value(MANAGER, "/Status/CanOpen") == 0
    # the BMS-only port is refused with a message
    assert c.setting("CanInterface", "can1") == 0
    c.wait("refusal", lambda: "reserved by Venus for CAN-bus BMS" in
           c.value(MANAGER, "/Status/CanError"), 10)
    assert c.value(MANAGER, "/Status/CanOpen") == 0
    # "auto" is the VE.Can port of this model: can0
    assert c.setting("CanInterface", "auto") == 0
    c.wait_value(MANAGER, "/Status/CanInterface", lambda v: v == "can0", 10)
    c.wait_value(SVC1, "/Connected", lambda v: v == 1, 15)
    assert c.value(MANAGER, "/Status/CanError") == ""


def test_ekrano_auto_is_vecan0(superb: System, tmp_path: Path) -> None:
    _on_gx(superb, make_can_root(tmp_path / "ekrano", "ekrano"))
    c = superb.client
    superb.start_sim("--nodes", "1", "--channel", "vecan0")
    superb.start_driver()  # CanInterface keeps its default, "auto"
    c.wait_value(SVC1, "/Connected", lambda v: v == 1, 15)
    assert c.value(MANAGER, "/Status/CanInterface") == "vecan0"


@pytest.mark.parametrize("superb_settings", [{"CanInterface": "can9"}], indirect=True)
def test_a_port_that_appears_later_is_picked_up_without_a_restart(
        superb: System, tmp_path: Path) -> None:
    """A USB adapter configured before it is plugged in: error, retries, then connects."""
    root = make_can_root(tmp_path / "cerbo", "cerbo-gx-mk1")
    _on_gx(superb, root)
    c = superb.client
    superb.start_sim("--nodes", "1", "--channel", "can9")
    driver = superb.start_driver()
    c.wait("error on the service", lambda: "'can9' does not exist" in
           c.value(MANAGER, "/Status/CanError"), 10)
    make_can_root(root, "cerbo-gx-mk1", usb_adapter=True)  # plugged in
    c.wait_value(SVC1, "/Connected", lambda v: v == 1, 30)
    c.wait_value(MANAGER, "/Status/CanError", lambda v: v == "", 5)
    assert driver.proc.poll() is None
