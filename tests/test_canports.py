"""CAN interfaces discovered per GX model, and the CanInterface setting resolved on each."""

from __future__ import annotations

from pathlib import Path

import can
import pytest

from driver import canports
from driver.canbus import open_bus
from driver.canports import ROLE_SMA, ROLE_SUPERB, CanPortError, discover, resolve
from tests.fake_gx import make_can_root


@pytest.fixture
def cerbo(tmp_path: Path) -> Path:
    return make_can_root(tmp_path / "cerbo", "cerbo-gx-mk1")


@pytest.fixture
def ekrano(tmp_path: Path) -> Path:
    return make_can_root(tmp_path / "ekrano", "ekrano")


def test_discovery_on_a_cerbo_gx_mk1(cerbo: Path) -> None:
    ports = discover(cerbo, profiles={"can0": 2})
    assert [(p.interface, p.name, p.config, p.bms_only, p.profile) for p in ports] == [
        ("can0", "VE.Can port", None, False, 2),
        ("can1", "BMS-Can port", "bms-only", True, None)]
    assert ports[0].to_dict() == {"interface": "can0", "name": "VE.Can port", "config": "",
                                  "bmsOnly": 0, "up": 1, "profile": 2,
                                  "label": "can0 (VE.Can port)"}


def test_discovery_on_an_ekrano(ekrano: Path) -> None:
    assert [(p.interface, p.name) for p in discover(ekrano)] == [
        ("vecan0", "VE.Can port 1"), ("vecan1", "VE.Can port 2")]


def test_discovery_without_sysfs_or_udev(tmp_path: Path) -> None:
    assert discover(tmp_path) == []
    root = make_can_root(tmp_path / "x", "cerbo-gx-mk1")
    for f in (root / "run/udev/data").iterdir():
        f.unlink()
    assert [(p.interface, p.name) for p in discover(root)] == [("can0", None), ("can1", None)]


def test_the_ve_can_port_is_resolved_per_device(cerbo: Path, ekrano: Path) -> None:
    """Issue 15: the default named vecan0, which does not exist on a Cerbo GX (MK1)."""
    assert resolve("auto", ROLE_SUPERB, discover(cerbo), canlink=False) == "can0"
    assert resolve("auto", ROLE_SUPERB, discover(ekrano), canlink=False) == "vecan0"
    assert resolve("auto", ROLE_SMA, discover(cerbo), canlink=False) == "can1"
    assert resolve("auto", ROLE_SMA, discover(ekrano), canlink=False) == "vecan1"


def test_the_bms_only_port_is_refused_for_superb(cerbo: Path) -> None:
    with pytest.raises(CanPortError) as exc:
        resolve("can1", ROLE_SUPERB, discover(cerbo), canlink=False)
    msg = str(exc.value)
    assert "can1 (BMS-Can port)" in msg and "CAN-bus BMS" in msg
    assert "VE.Can port (can0 (VE.Can port))" in msg


def test_an_interface_that_does_not_exist_is_a_clear_error(cerbo: Path) -> None:
    with pytest.raises(CanPortError, match=r"'vecan0' does not exist on this GX \(CAN "
                                           r"interfaces: can0 \(VE.Can port\), can1 "
                                           r"\(BMS-Can port\)\)"):
        resolve("vecan0", ROLE_SUPERB, discover(cerbo), canlink=False)
    with pytest.raises(CanPortError, match="no CAN interface configured"):
        resolve("  ", ROLE_SMA, discover(cerbo), canlink=False)


def test_usb_adapters_and_other_interfaces(tmp_path: Path) -> None:
    root = make_can_root(tmp_path / "c", "cerbo-gx-mk1", usb_adapter=True)
    ports = discover(root)
    assert [p.interface for p in ports] == ["can0", "can1", "can9"]
    assert resolve("can9", ROLE_SUPERB, ports, canlink=False) == "can9"
    assert resolve("slcan:/dev/ttyACM0", ROLE_SMA, ports, canlink=False) == "slcan:/dev/ttyACM0"
    # a GX without udev names and one plain CAN interface: that one is "the VE.Can port"
    assert canports.vecan_port([canports.CanPort("can0")]) == canports.CanPort("can0")
    assert canports.vecan_port([canports.CanPort("can0"), canports.CanPort("can1")]) is None


def test_off_the_gx_the_loopback_canlink_keeps_working(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.delenv("CANBRIDGE_SYSROOT", raising=False)
    monkeypatch.setenv("CANBRIDGE_CANLINK", "127.0.0.1:1")
    assert resolve("auto", ROLE_SUPERB) == "vecan0"
    assert resolve("auto", ROLE_SMA) == "can1"
    assert resolve("vecan7", ROLE_SUPERB) == "vecan7"
    # a simulated GX (its sysfs given): checked as on the GX, traffic on the hub's channels
    monkeypatch.setenv("CANBRIDGE_SYSROOT", str(make_can_root(tmp_path / "e", "ekrano")))
    assert resolve("auto", ROLE_SUPERB) == "vecan0"
    assert resolve("auto", ROLE_SMA) == "vecan1"
    with pytest.raises(CanPortError, match="'can0' does not exist"):
        resolve("can0", ROLE_SUPERB)


def test_open_bus_refuses_with_the_message(monkeypatch: pytest.MonkeyPatch, cerbo: Path) -> None:
    monkeypatch.delenv("CANBRIDGE_CANLINK", raising=False)
    monkeypatch.setenv("CANBRIDGE_SYSROOT", str(cerbo))
    with pytest.raises(can.CanInitializationError, match="'vecan0' does not exist"):
        open_bus("vecan0", 250000, role=ROLE_SUPERB)
    with pytest.raises(can.CanInitializationError, match="reserved by Venus"):
        open_bus("can1", 250000, role=ROLE_SUPERB)
    # an interface that exists is handed to python-can (a virtual bus stands in for SocketCAN)
    bus = open_bus("virtual:x", 250000, role=ROLE_SUPERB)
    bus.shutdown()


def test_port_watch_rereads_sysfs_only_after_its_age() -> None:
    """A driver publishes the ports every second; sysfs is read again only after max_age."""
    calls: list[int] = []
    now = [100.0]
    watch = canports.PortWatch(max_age=2.0, clock=lambda: now[0],
                               source=lambda: calls.append(1) or [])
    for t in (100.0, 100.5, 101.9):
        now[0] = t
        watch.ports()
    assert len(calls) == 1
    now[0] = 102.0
    watch.ports()
    assert len(calls) == 2
    watch.invalidate()
    watch.ports()
    assert len(calls) == 3
