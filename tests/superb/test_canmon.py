"""The CAN monitor: decoding with the object table, pluggable decoders, the command itself."""

from __future__ import annotations

import json

import can

from driver import canmon
from tests.fixtures.procs import Proc, python_cmd
from tests.superb.conftest import System


def _msg(can_id: int, data: bytes) -> can.Message:
    return can.Message(arbitration_id=can_id, data=data, is_extended_id=False, timestamp=1.0)


def test_decodes_canopen_with_object_table() -> None:
    reg = canmon.DecoderRegistry()
    reg.register(0, 0x7FF, "canopen", canmon.decode_canopen)
    resp = bytes([0x43, 0x60, 0x60, 0x00]) + (13 * 1024).to_bytes(4, "little")
    assert "6060:00 voltage = 13 V" in canmon.format_frame(_msg(0x581, resp), reg)
    req = bytes([0x40, 0x10, 0x20, 0, 0, 0, 0, 0])
    assert "SDO request node 2: upload 2010:00 current" in canmon.format_frame(_msg(0x602, req),
                                                                               reg)
    abort = bytes([0x80, 0x51, 0x60, 0]) + (0x06020000).to_bytes(4, "little")
    assert "object does not exist" in canmon.format_frame(_msg(0x583, abort), reg)
    assert "heartbeat node 5: operational" in canmon.format_frame(_msg(0x705, b"\x05"), reg)
    assert "NMT reset node node 3" in canmon.format_frame(_msg(0x000, b"\x81\x03"), reg)


def test_plugged_decoder_takes_its_range() -> None:
    reg = canmon.DecoderRegistry()
    reg.register(0, 0x7FF, "canopen", canmon.decode_canopen)
    reg.register(0x300, 0x35F, "sma", lambda i, d: f"SMA 0x{i:03X}")
    line = json.loads(canmon.format_frame(_msg(0x351, b"\x00" * 8), reg, as_json=True))
    assert line["decoder"] == "sma" and line["text"] == "SMA 0x351"
    assert "heartbeat" in canmon.format_frame(_msg(0x701, b"\x05"), reg)


def test_command_prints_live_frames(superb: System) -> None:
    mon = Proc(python_cmd("driver.canmon", "vecan0", "--count", "3"), superb.env, "canmon")
    superb.procs.append(mon)
    mon.wait_for("listening on vecan0", 10)
    superb.start_sim("--nodes", "4", "--heartbeat", "0.2")
    mon.wait_for(r"704 \[1\] 05 +heartbeat node 4: operational", 10)
    assert mon.proc.wait(10) == 0
