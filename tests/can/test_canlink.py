"""The loopback CAN link carries frames between processes, in order, on loopback only."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import can
import pytest

from driver.canbus import bus_spec, open_bus
from sim.canlink import protocol

SENDER = textwrap.dedent(
    """
    import sys, can
    bus = can.Bus(interface="canlink", channel=sys.argv[1])
    for i in range(int(sys.argv[2])):
        bus.send(can.Message(arbitration_id=0x100 + (i % 0x80), is_extended_id=False,
                             data=i.to_bytes(4, "little")))
    bus.shutdown()
    """
)


def test_frames_cross_processes_in_order(canlink):
    rx = open_bus("vecan0")
    other = open_bus("can1")
    try:
        time.sleep(0.1)  # let the hub register both receivers before the sender starts
        n = 2000
        subprocess.run([sys.executable, "-c", SENDER, "vecan0", str(n)], check=True, timeout=30)
        got = []
        deadline = time.monotonic() + 15
        while len(got) < n and time.monotonic() < deadline:
            msg = rx.recv(1.0)
            if msg is not None:
                got.append(msg)
        assert [int.from_bytes(m.data, "little") for m in got] == list(range(n))
        assert all(m.arbitration_id == 0x100 + (i % 0x80) for i, m in enumerate(got))
        assert all(not m.is_extended_id and m.dlc == 4 for m in got)
        # A bus on another channel hears nothing.
        assert other.recv(0.2) is None
    finally:
        rx.shutdown()
        other.shutdown()


def test_sender_does_not_hear_itself_and_peers_do(canlink):
    a = open_bus("vecan0")
    b = open_bus("vecan0")
    try:
        time.sleep(0.05)
        a.send(can.Message(arbitration_id=0x1ABCDEF, is_extended_id=True, data=b"\x01\x02"))
        msg = b.recv(2.0)
        assert msg is not None and msg.arbitration_id == 0x1ABCDEF and msg.is_extended_id
        assert bytes(msg.data) == b"\x01\x02"
        assert a.recv(0.2) is None
    finally:
        a.shutdown()
        b.shutdown()


def test_busoff_drops_frames_and_recovers(canlink):
    a = open_bus("vecan0")
    b = open_bus("vecan0")
    try:
        time.sleep(0.05)
        assert canlink.control("vecan0", "busoff") == "OK"
        a.send(can.Message(arbitration_id=0x10, is_extended_id=False, data=b"\x00"))
        assert b.recv(0.3) is None
        assert canlink.control("vecan0", "buson") == "OK"
        a.send(can.Message(arbitration_id=0x11, is_extended_id=False, data=b"\x00"))
        msg = b.recv(2.0)
        assert msg is not None and msg.arbitration_id == 0x11
    finally:
        a.shutdown()
        b.shutdown()


def test_link_refuses_non_loopback_addresses():
    with pytest.raises(ValueError, match="loopback"):
        protocol.parse_address("192.168.1.10:29536")
    with pytest.raises(ValueError, match="loopback"):
        protocol.parse_address("0.0.0.0:29536")


def test_bus_spec_mapping(monkeypatch):
    monkeypatch.delenv("CANBRIDGE_CANLINK", raising=False)
    assert bus_spec("vecan0") == bus_spec("socketcan:vecan0")
    assert bus_spec("slcan:/dev/ttyACM0", 500000).interface == "slcan"
    monkeypatch.setenv("CANBRIDGE_CANLINK", "127.0.0.1:1")
    assert bus_spec("vecan0").interface == "canlink"
    with pytest.raises(ValueError):
        bus_spec("  ")


def test_missing_hub_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CANBRIDGE_CANLINK", "127.0.0.1:1")
    with pytest.raises(can.CanInitializationError, match="loopback CAN hub"):
        open_bus("vecan0")


def test_unplug_one_process_and_plug_it_back(canlink):
    import os

    a = open_bus("vecan0")
    b = open_bus("vecan0")
    try:
        time.sleep(0.05)
        # Both buses belong to this process: unplugging it drops both and refuses new ones.
        assert canlink.control("vecan0", f"unplug:{os.getpid()}") == "OK"
        with pytest.raises(can.CanOperationError):
            for _ in range(50):
                a.send(can.Message(arbitration_id=0x10, is_extended_id=False, data=b"\x00"))
                time.sleep(0.02)
        with pytest.raises(can.CanInitializationError, match="not available"):
            open_bus("vecan0")
        assert canlink.control("vecan0", f"plug:{os.getpid()}") == "OK"
        d, e = open_bus("vecan0"), open_bus("vecan0")
        try:
            time.sleep(0.05)
            d.send(can.Message(arbitration_id=0x12, is_extended_id=False, data=b"\x01"))
            msg = e.recv(2.0)
            assert msg is not None and msg.arbitration_id == 0x12
        finally:
            d.shutdown()
            e.shutdown()
    finally:
        a.shutdown()
        b.shutdown()
